import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ModeLog } from '../store/private-files.ts';
import { StateFile, type NodeState } from './state.ts';

const state: NodeState = {
  version: 1,
  workerId: 'w1',
  subnetV4: '10.18.0.0',
  subnetV6: 'fc00::',
  nextSlot: 2,
  freeSlots: [],
  instances: [],
};
const modeOf = (path: string) => statSync(path).mode & 0o777;

describe('StateFile', () => {
  it('keeps node-state.json 0600 in a state dir created 0700, with the usual umask 022', async (t) => {
    const umask = process.umask(0o022);
    const base = mkdtempSync(join(tmpdir(), 'oaknet-nodestate-'));
    t.after(() => {
      process.umask(umask);
      rmSync(base, { recursive: true, force: true });
    });
    const warned: string[] = [];
    const log = { warn: (obj: { path: string }) => warned.push(obj.path) } as unknown as ModeLog;
    const file = new StateFile(join(base, 'node', 'state'), log);
    assert.equal(modeOf(join(base, 'node')), 0o700);
    assert.equal(modeOf(file.dir), 0o700);
    await file.save(state);
    assert.equal(modeOf(file.path), 0o600);
    // a crash left a temporary file others may read: the next save does not hand its mode on
    writeFileSync(`${file.path}.tmp`, '');
    chmodSync(`${file.path}.tmp`, 0o644);
    await file.save({ ...state, nextSlot: 3 });
    assert.equal(modeOf(file.path), 0o600);
    assert.equal(file.load()?.nextSlot, 3);
    assert.deepEqual(warned, [`${file.path}.tmp`]);
  });

  it('tightens a state file an older version left 0644 when it opens the dir, and says so', async (t) => {
    const base = mkdtempSync(join(tmpdir(), 'oaknet-nodestate-'));
    t.after(() => rmSync(base, { recursive: true, force: true }));
    await new StateFile(base).save(state);
    const path = join(base, 'node-state.json');
    chmodSync(path, 0o644);
    const warned: string[] = [];
    const log = { warn: (obj: { path: string }) => warned.push(obj.path) } as unknown as ModeLog;
    const file = new StateFile(base, log);
    assert.equal(modeOf(path), 0o600);
    assert.deepEqual(warned, [path]);
    assert.equal(file.load()?.workerId, 'w1');
  });
});
