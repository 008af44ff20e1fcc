/**
 * `npm run test:unit` (the data plane's engine, the snapshot, the in-memory devices, the NetManager) passes
 * without root and without the compiled addon: it runs here with every capability dropped (setpriv: empty
 * bounding set, no new privileges) and with native addons made unloadable (scripts/no-addon.mjs).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '../..');

describe('npm run test:unit', () => {
  it('passes with no capabilities and no native addon', async () => {
    const child = spawn(
      'setpriv',
      ['--bounding-set=-all', '--inh-caps=-all', '--no-new-privs', 'npm', 'run', '--silent', 'test:unit'],
      // NODE_TEST_CONTEXT would make the inner test runner report to this one instead of printing its summary
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_TEST_CONTEXT: undefined } },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const count = (what: string) => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(out)?.[1] ?? NaN);
    assert.equal(code, 0, out.slice(-4000));
    assert.equal(count('fail'), 0);
    assert.equal(count('skipped'), 0);
    assert.ok(count('pass') >= 250, `${count('pass')} unit tests passed`);
    assert.match(out, /two NetManagers in one process/);
  });
});
