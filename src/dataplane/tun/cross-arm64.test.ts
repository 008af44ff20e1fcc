/**
 * The addon for ARM boxes: native/ cross-compiled for arm64 with Debian's gcc-aarch64-linux-gnu against the
 * running Node's headers, with the sources and flags of native/binding.gyp (so a file or flag added there is
 * compiled here too). It must compile without a warning-as-error, link into an aarch64 shared object that
 * exports the N-API module entry, and need nothing at load time but libc, N-API, libuv and Node's OpenSSL (a
 * symbol from anywhere else would fail to load on a board). Nothing runs it: this machine is x86. Needs
 * aarch64-linux-gnu-gcc (scripts/ensure-deps.mjs installs gcc-aarch64-linux-gnu); never skipped.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from './fixtures.ts';

const exec = promisify(execFile);
const NATIVE = join(REPO_ROOT, 'native');
const CC = 'aarch64-linux-gnu-gcc';

interface Gyp {
  variables: { oaknet_sources: string[]; oaknet_cflags: string[] };
  targets: Array<{ target_name: string; defines: string[] }>;
}

/** The include directories node-gyp gives the addon: the running Node's headers (its nodedir). */
function nodeIncludes(): string[] {
  const config = readFileSync(join(NATIVE, 'build', 'config.gypi'), 'utf8');
  const nodedir = /"nodedir": "([^"]+)"/.exec(config)?.[1];
  assert.ok(nodedir, 'native/build/config.gypi names the nodedir npm install built the addon against');
  return [
    join(nodedir, 'include', 'node'),
    join(nodedir, 'src'),
    join(nodedir, 'deps', 'openssl', 'config'),
    join(nodedir, 'deps', 'openssl', 'openssl', 'include'),
    join(nodedir, 'deps', 'uv', 'include'),
  ];
}

/** What else a Node addon may leave for the loader: N-API, libuv, Node's OpenSSL, the toolchain's hooks. */
const FROM_NODE = /^(napi_|uv_|EVP_|OPENSSL_|CRYPTO_|_ITM_|__gmon_start__$)/;
/** The arm64 libc's exports (the cross toolchain's own libc.so.6). */
const LIBC = '/usr/aarch64-linux-gnu/lib/libc.so.6';

/** The dynamic symbols of an aarch64 ELF file, defined or undefined ones. */
async function symbols(file: string, which: '--defined-only' | '--undefined-only'): Promise<string[]> {
  const { stdout } = await exec('aarch64-linux-gnu-nm', ['-D', which, file], { maxBuffer: 16 * 1024 * 1024 });
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/).at(-1)?.replace(/@.*/, '') ?? '')
    .filter(Boolean);
}

describe('the addon cross-compiled for arm64', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-arm64-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("compiles and links with binding.gyp's sources and flags into an aarch64 N-API module", async () => {
    await exec(CC, ['--version']).catch((cause: unknown) => {
      throw new Error(
        `${CC} not found: apt-get install gcc-aarch64-linux-gnu (scripts/ensure-deps.mjs does)`,
        {
          cause,
        },
      );
    });
    const gyp = JSON.parse(readFileSync(join(NATIVE, 'binding.gyp'), 'utf8')) as Gyp;
    const target = gyp.targets.find((t) => t.target_name === 'oaknet_native');
    assert.ok(target, 'binding.gyp builds oaknet_native');
    const flags = [
      ...gyp.variables.oaknet_cflags,
      '-fPIC',
      '-Werror',
      ...target.defines.map((d) => `-D${d}`),
      ...nodeIncludes().map((i) => `-I${i}`),
    ];
    const objects = await Promise.all(
      gyp.variables.oaknet_sources.map(async (src) => {
        const out = join(dir, `${src}.o`);
        await exec(CC, [...flags, '-c', join(NATIVE, src), '-o', out]);
        return out;
      }),
    );
    const addon = join(dir, 'oaknet_native.node');
    await exec(CC, ['-shared', '-o', addon, ...objects]);

    const { stdout: header } = await exec('aarch64-linux-gnu-readelf', ['-h', addon]);
    assert.match(header, /Machine:\s+AArch64/);
    assert.match(header, /Type:\s+DYN/);
    assert.ok(
      (await symbols(addon, '--defined-only')).includes('napi_register_module_v1'),
      'the N-API entry',
    );
    const libc = new Set(await symbols(LIBC, '--defined-only'));
    assert.ok(libc.has('recvmmsg'), `${LIBC} lists its exports`);
    const foreign = (await symbols(addon, '--undefined-only')).filter(
      (s) => !FROM_NODE.test(s) && !libc.has(s),
    );
    assert.deepEqual(foreign, [], 'symbols from outside libc, N-API, libuv and OpenSSL');
  });
});
