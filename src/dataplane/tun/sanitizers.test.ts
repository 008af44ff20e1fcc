/**
 * The addon's pure C (native/offload.c and native/checksum.c: segmenting, coalescing plans, virtio headers,
 * checksums) under AddressSanitizer and UndefinedBehaviorSanitizer: compiles native/test/fuzz_offload.c with
 * those two files alone (no N-API, no libuv: that it compiles proves they need neither) and runs it with a
 * fixed seed over random and malformed super-packets. Needs gcc (CI has it); never skipped.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from './fixtures.ts';

const execFileAsync = promisify(execFile);
const NATIVE = join(REPO_ROOT, 'native');
const SEED = '0xa4b6e7';
const SUPER_PACKETS = 2000;
const MALFORMED = 20000;

function gccVersion(): string {
  try {
    return execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? '';
  } catch (cause) {
    throw new Error(
      'the sanitizer harness (native/test/fuzz_offload.c) needs gcc with AddressSanitizer and ' +
        'UndefinedBehaviorSanitizer (Debian/Ubuntu: apt-get install gcc), and none was found on PATH',
      { cause },
    );
  }
}

describe('the offload C under ASan and UBSan (native/test/fuzz_offload.c)', () => {
  it(`segments, coalesces and completes checksums of ${SUPER_PACKETS} random and ${MALFORMED} malformed inputs cleanly`, async (t) => {
    t.diagnostic(gccVersion());
    const dir = mkdtempSync(join(tmpdir(), 'oaknet-fuzz-'));
    try {
      const binary = join(dir, 'fuzz_offload');
      await execFileAsync('gcc', [
        '-std=gnu11',
        '-O1',
        '-g',
        '-Wall',
        '-Wextra',
        '-fsanitize=address,undefined',
        '-fno-sanitize-recover=all',
        '-fno-omit-frame-pointer',
        '-D_GNU_SOURCE',
        '-I',
        NATIVE,
        join(NATIVE, 'checksum.c'),
        join(NATIVE, 'offload.c'),
        join(NATIVE, 'test', 'fuzz_offload.c'),
        '-o',
        binary,
      ]);
      const started = Date.now();
      let stdout: string;
      try {
        ({ stdout } = await execFileAsync(binary, [SEED, String(SUPER_PACKETS), String(MALFORMED)], {
          // leak checking needs ptrace, which containers may refuse, and the code under test never allocates
          env: {
            ...process.env,
            ASAN_OPTIONS: 'detect_leaks=0',
            UBSAN_OPTIONS: 'print_stacktrace=1',
          },
          maxBuffer: 16 << 20,
        }));
      } catch (err) {
        const {
          stdout: out = '',
          stderr = '',
          code,
          signal,
        } = err as {
          stdout?: string;
          stderr?: string;
          code?: number;
          signal?: string;
        };
        assert.fail(`fuzz_offload exited with ${code ?? signal}:\n${out}${stderr}`);
      }
      t.diagnostic(`${stdout.trim()} (${Date.now() - started} ms)`);
      const summary =
        /^fuzz_offload: seed 0xa4b6e7: (\d+) super-packets cut into (\d+) segments, (\d+) coalescing writes \((\d+) runs\), (\d+) malformed inputs, (\d+) checksum completions, (\d+) checksum sums: all checks passed$/m.exec(
          stdout,
        );
      assert.ok(summary, `no summary line in:\n${stdout}`);
      const [superPackets, segments, , runs, malformed] = summary.slice(1).map(Number);
      assert.equal(superPackets, SUPER_PACKETS);
      assert.ok(segments! > 10 * SUPER_PACKETS, `${segments} segments`);
      assert.ok(runs! > 100, `${runs} coalesced runs`);
      assert.ok(malformed! >= MALFORMED, `${malformed} malformed inputs`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
