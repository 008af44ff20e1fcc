/**
 * The addon's C under AddressSanitizer and UndefinedBehaviorSanitizer: each harness of native/test is compiled
 * with just the files it tests (no N-API, no libuv: that it compiles proves they need neither) and run with a
 * fixed seed, one test each, concurrently:
 *   - fuzz_offload.c: offload.c and checksum.c (segmenting, coalescing plans, virtio headers, checksums) over
 *     random and malformed super-packets;
 *   - fuzz_udp.c: udp.c's send path (udp_send's gather into the send scratch, send_wire's chunks and GSO runs,
 *     both scratch limits, with and without GSO) over real loopback UDP sockets, sendmmsg wrapped to check
 *     every call and to make some fail;
 *   - fuzz_tun.c: tun.c's read-vnet path (tun_read_batch) over a SOCK_SEQPACKET socketpair, readv wrapped;
 *   - fuzz_wg.c: wg.c (WireGuard transport messages) opening batches of sealed, mutated, replayed and random
 *     datagrams, and sealing in two parts against sealing whole; then udp_send sealing over loopback (no
 *     plaintext of a sealed packet, every wire datagram accounted for); linked with Debian's libcrypto (libssl-dev,
 *     which scripts/ensure-deps.mjs installs), where the addon uses Node's own OpenSSL.
 * Each prints a summary line whose counts must add up. Needs gcc (CI has it) and root (fuzz_udp gives its
 * receivers big buffers with SO_RCVBUFFORCE, so no datagram is lost); never skipped.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from './fixtures.ts';

const execFileAsync = promisify(execFile);
const NATIVE = join(REPO_ROOT, 'native');
const SEED = '0xa4b6e7';
const SUPER_PACKETS = 2000;
const MALFORMED = 20000;
const UDP_ROUNDS = 1000;
const TUN_ROUNDS = 2000;
const WG_ROUNDS = 2000;
const WG_SEND_ROUNDS = 200;

function gccVersion(): string {
  try {
    return execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? '';
  } catch (cause) {
    throw new Error(
      'the sanitizer harnesses (native/test/fuzz_*.c) need gcc with AddressSanitizer and ' +
        'UndefinedBehaviorSanitizer (Debian/Ubuntu: apt-get install gcc), and none was found on PATH',
      { cause },
    );
  }
}

/** A harness: its name (native/test/<name>.c), the addon files it tests, and extra linker flags. */
interface Harness {
  name: string;
  sources: string[];
  linkFlags?: string[];
}

/** Compiles the harness into dir under ASan/UBSan, runs it with args and returns its stdout (its summary). */
async function compileAndRun(t: TestContext, dir: string, harness: Harness, args: string[]): Promise<string> {
  const binary = join(dir, harness.name);
  let started = Date.now();
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
    ...harness.sources.map((f) => join(NATIVE, f)),
    join(NATIVE, 'test', `${harness.name}.c`),
    ...(harness.linkFlags ?? []),
    '-o',
    binary,
  ]);
  const compiled = Date.now() - started;
  started = Date.now();
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(binary, args, {
      // leak checking needs ptrace, which containers may refuse; the harnesses free what they allocate
      env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0', UBSAN_OPTIONS: 'print_stacktrace=1' },
      maxBuffer: 16 << 20,
      timeout: 120_000, // the harnesses stop themselves after 120 s (alarm) too
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
    assert.fail(`${harness.name} exited with ${code ?? signal}:\n${out}${stderr}`);
  }
  t.diagnostic(`${stdout.trim()} (compiled in ${compiled} ms, ran in ${Date.now() - started} ms)`);
  return stdout;
}

/** The numbers a summary line's regular expression captured. */
function summaryNumbers(pattern: RegExp, stdout: string): number[] {
  const summary = pattern.exec(stdout);
  assert.ok(summary, `no summary line in:\n${stdout}`);
  return summary.slice(1).map(Number);
}

describe("the addon's C under ASan and UBSan (native/test/fuzz_*.c)", { concurrency: true }, () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'oaknet-fuzz-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`segments, coalesces and completes checksums of ${SUPER_PACKETS} random and ${MALFORMED} malformed inputs cleanly`, async (t) => {
    t.diagnostic(gccVersion());
    const stdout = await compileAndRun(
      t,
      dir,
      { name: 'fuzz_offload', sources: ['checksum.c', 'offload.c'] },
      [SEED, String(SUPER_PACKETS), String(MALFORMED)],
    );
    const [superPackets, segments, , runs, malformed] = summaryNumbers(
      /^fuzz_offload: seed 0xa4b6e7: (\d+) super-packets cut into (\d+) segments, (\d+) coalescing writes \((\d+) runs\), (\d+) malformed inputs, (\d+) checksum completions, (\d+) checksum sums: all checks passed$/m,
      stdout,
    );
    assert.equal(superPackets, SUPER_PACKETS);
    assert.ok(segments! > 10 * SUPER_PACKETS, `${segments} segments`);
    assert.ok(runs! > 100, `${runs} coalesced runs`);
    assert.ok(malformed! >= MALFORMED, `${malformed} malformed inputs`);
  });

  it(`sends ${UDP_ROUNDS} batches over loopback (malformed, at both scratch limits, failing sockets) and accounts for every wire datagram`, async (t) => {
    const stdout = await compileAndRun(
      t,
      dir,
      {
        name: 'fuzz_udp',
        sources: ['checksum.c', 'offload.c', 'udp.c'],
        linkFlags: ['-Wl,--wrap=sendmmsg'],
      },
      [SEED, String(UDP_ROUNDS)],
    );
    const [
      rounds,
      packets,
      superPackets,
      dropped,
      datagramLimit,
      headerLimit,
      wire,
      sent,
      rejected,
      busy,
      unsent,
      gsoMessages,
      refusedRuns,
      failures,
      calls,
      received,
    ] = summaryNumbers(
      /^fuzz_udp: seed 0xa4b6e7: (\d+) rounds \(GSO on, GRO on\), (\d+) packets \((\d+) super-packets, (\d+) dropped\), (\d+) batches at the datagram limit, (\d+) at the header limit; (\d+) wire datagrams = (\d+) sent \+ (\d+) rejected \+ (\d+) busy \+ (\d+) unsent; (\d+) GSO messages, (\d+) refused runs, (\d+) socket failures, (\d+) sendmmsg calls; (\d+) datagrams received: all checks passed$/m,
      stdout,
    );
    assert.equal(rounds, UDP_ROUNDS);
    assert.equal(
      sent! + rejected! + busy! + unsent!,
      wire,
      'every wire datagram sent, rejected, busy or unsent',
    );
    assert.equal(received, sent, 'every datagram sent arrived');
    assert.ok(superPackets! > 0 && wire! > packets!, `${packets} packets made ${wire} wire datagrams`);
    for (const [what, n] of Object.entries({
      dropped,
      datagramLimit,
      headerLimit,
      rejected,
      busy,
      unsent,
      gsoMessages,
      refusedRuns,
      failures,
      calls,
    })) {
      assert.ok(n! > 0, `no ${what} in ${UDP_ROUNDS} rounds`);
    }
  });

  it(`opens ${WG_ROUNDS} batches of sealed, mutated, replayed and random datagrams with their verdicts`, async (t) => {
    const stdout = await compileAndRun(
      t,
      dir,
      { name: 'fuzz_wg', sources: ['wg.c', 'udp.c', 'offload.c', 'checksum.c'], linkFlags: ['-lcrypto'] },
      [SEED, String(WG_ROUNDS), String(WG_SEND_ROUNDS)],
    );
    const [
      rounds,
      datagrams,
      opened,
      keepalives,
      malformedOpened,
      mutated,
      replayed,
      headers,
      exhausted,
      other,
      ...verdicts
    ] = summaryNumbers(
      /^fuzz_wg: seed 0xa4b6e7: (\d+) rounds, (\d+) datagrams: (\d+) opened \((\d+) keepalives\), (\d+) authentic but malformed, (\d+) mutated, (\d+) replayed, (\d+) random headers \((\d+) exhausted\), (\d+) other; verdicts (\d+) opened, (\d+) not transport, (\d+) unknown index, (\d+) auth failed, (\d+) replayed, (\d+) malformed, (\d+) exhausted; (\d+) reinstalls; (\d+) sealed-send rounds, (\d+) packets \((\d+) super-packets\), (\d+) wire datagrams: (\d+) sent \((\d+) GSO messages\), (\d+) seal-dropped; (\d+) arrived sealed and opened, (\d+) in plaintext: all checks passed$/m,
      stdout,
    );
    assert.equal(rounds, WG_ROUNDS);
    assert.equal(
      opened! + malformedOpened! + mutated! + replayed! + headers! + other!,
      datagrams,
      'every datagram of one kind',
    );
    assert.equal(
      verdicts.slice(0, 7).reduce((a, b) => a + b, 0),
      datagrams,
      'every datagram one verdict',
    );
    assert.equal(verdicts[0], opened, 'exactly the sealed datagrams opened');
    const [, sendRounds, , , wire, sent, gsoMessages, sealDropped, sealedIn, plainIn] = verdicts.slice(7);
    assert.equal(sendRounds, WG_SEND_ROUNDS);
    assert.equal(sent! + sealDropped!, wire, 'every wire datagram sent or seal-dropped');
    assert.equal(sealedIn! + plainIn!, sent, 'every datagram sent arrived, sealed or unsealed');
    for (const [what, n] of Object.entries({ gsoMessages, sealDropped, sealedIn, plainIn }))
      assert.ok(n! > 0, `no ${what} in ${WG_SEND_ROUNDS} sealed-send rounds`);
    const names = [
      'opened',
      'notTransport',
      'unknownIndex',
      'authFailed',
      'replayed',
      'malformed',
      'exhausted',
    ];
    const byVerdict = Object.fromEntries(names.map((name, k) => [`verdict ${name}`, verdicts[k]]));
    for (const [what, n] of Object.entries({ keepalives, malformedOpened, exhausted, ...byVerdict })) {
      assert.ok(n! > 0, `no ${what} in ${WG_ROUNDS} rounds`);
    }
  });

  it(`reads ${TUN_ROUNDS} batches of vnet records (super-packets, malformed, too long, EINVAL runs) and normalises every one`, async (t) => {
    const stdout = await compileAndRun(
      t,
      dir,
      { name: 'fuzz_tun', sources: ['checksum.c', 'offload.c', 'tun.c'], linkFlags: ['-Wl,--wrap=readv'] },
      [SEED, String(TUN_ROUNDS)],
    );
    const [
      rounds,
      records,
      batches,
      entries,
      words,
      completed,
      unchanged,
      dropped,
      tooLong,
      other,
      einval,
      einvalRunsEnded,
      ,
      eintr,
      failures,
    ] = summaryNumbers(
      /^fuzz_tun: seed 0xa4b6e7: (\d+) rounds, (\d+) records read in (\d+) batches into (\d+) entries: (\d+) super-packets with their gso words, (\d+) checksums completed, (\d+) unchanged, (\d+) dropped \((\d+) too long for the slot\), (\d+) other; (\d+) EINVAL \((\d+) batches ended by (\d+) in a row\), (\d+) EINTR, (\d+) read failures: all checks passed$/m,
      stdout,
    );
    assert.equal(rounds, TUN_ROUNDS);
    assert.equal(entries, records! + einval!, 'an entry per record and per EINVAL');
    assert.equal(words! + completed! + unchanged! + dropped! + other!, records, 'every record checked once');
    for (const [what, n] of Object.entries({
      batches,
      words,
      completed,
      unchanged,
      dropped,
      tooLong,
      einvalRunsEnded,
      eintr,
      failures,
    })) {
      assert.ok(n! > 0, `no ${what} in ${TUN_ROUNDS} rounds`);
    }
  });
});
