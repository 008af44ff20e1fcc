/**
 * Runs the LinuxTun tests (`linux.netns.ts`) inside a throwaway network namespace, since a TUN device is
 * created in the namespace of the process that opens it. Needs root with /dev/net/tun and the addon.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type TestNetns, canUseNetns, createTestNetns, runTsChild } from './fixtures.ts';
import { nativeIoAvailable } from './native.ts';

// Never skipped: CI runs as root with the addon built by npm install; a missing piece is a failure.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');
if (!canUseNetns()) throw new Error('LinuxTun tests need root, /dev/net/tun and iproute2');

describe('LinuxTun', () => {
  let ns: TestNetns | undefined;
  after(async () => {
    await ns?.delete();
  });

  it('passes the Tun conformance suite and its own tests inside a fresh network namespace', async (t) => {
    ns = await createTestNetns();
    const child = fileURLToPath(new URL('./linux.netns.ts', import.meta.url));
    const result = await runTsChild(child, [], { netns: ns.name, timeoutMs: 60_000 });
    assert.equal(result.timedOut, false, `the child hung:\n${result.output}`);
    assert.equal(result.code, 0, result.output);
    assert.match(result.output, /# fail 0/);
    for (const line of result.output.split('\n')) {
      if (/^# (tests|pass|fail|skipped) /.test(line)) t.diagnostic(`in ${ns.name}: ${line.slice(2)}`);
    }
  });
});
