import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { planPlatform } from './plan.ts';
import { readState, removePlatformData, statePath, writeState } from './state.ts';

describe('removePlatformData', () => {
  it('removes the stores and node state a platform left, by name, and keeps the logs and anything else', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'oaknet-state-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    for (const f of ['root.db', 'root.db-wal', 'root.db-shm', 'c1.db', 'c12.db-wal', 'notes.txt', 'n1x'])
      writeFileSync(join(dir, f), 'x');
    for (const d of ['n1/state', 'n17/state', 'delay', 'logs', 'pki', 'c1-pki', 'tokens'])
      mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'n1', 'state', 'node-state.json'), '{}');
    writeFileSync(join(dir, 'logs', 'n1.log'), 'log');
    const removed = removePlatformData(dir).sort();
    assert.deepEqual(removed, [
      'c1-pki',
      'c1.db',
      'c12.db-wal',
      'delay',
      'n1',
      'n17',
      'pki',
      'root.db',
      'root.db-shm',
      'root.db-wal',
      'tokens',
    ]);
    assert.deepEqual(readdirSync(dir).sort(), ['logs', 'n1x', 'notes.txt']);
    assert.deepEqual(readdirSync(join(dir, 'logs')), ['n1.log']);
  });

  it('does nothing for a state dir that does not exist', () => {
    assert.deepEqual(removePlatformData(join(tmpdir(), 'oaknet-no-such-dir-xyz')), []);
  });
});

describe('writeState', () => {
  it('writes platform.json 0600 with the usual umask 022, also over a looser file and a stale temp file', (t) => {
    const umask = process.umask(0o022);
    const dir = mkdtempSync(join(tmpdir(), 'oaknet-state-'));
    t.after(() => {
      process.umask(umask);
      rmSync(dir, { recursive: true, force: true });
    });
    const state = planPlatform({ stateDir: dir, nodes: 1, id: 'tst1' });
    writeState(state);
    assert.equal(statSync(statePath(dir)).mode & 0o777, 0o600);
    chmodSync(statePath(dir), 0o644);
    const tmp = `${statePath(dir)}.tmp-${process.pid}`;
    writeFileSync(tmp, '');
    chmodSync(tmp, 0o666);
    writeState({ ...state, phase: 'ready' });
    assert.equal(statSync(statePath(dir)).mode & 0o777, 0o600);
    assert.equal(readState(dir)?.phase, 'ready');
    assert.deepEqual(readdirSync(dir), ['platform.json']);
  });
});
