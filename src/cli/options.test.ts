import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openStore } from './options.ts';

describe('openStore', () => {
  it('makes the store private with the usual umask 022: directory 0700, root.db and its -wal, -shm 0600', (t) => {
    const umask = process.umask(0o022);
    const base = mkdtempSync(join(tmpdir(), 'oaknet-options-'));
    t.after(() => {
      process.umask(umask);
      rmSync(base, { recursive: true, force: true });
    });
    const dir = join(base, 'var', 'oaknet');
    const store = openStore(join(dir, 'root.db'));
    t.after(() => store.close());
    store.transact((tx) => tx.put('meta/x', 1));
    const modeOf = (path: string) => statSync(path).mode & 0o777;
    assert.equal(modeOf(join(base, 'var')), 0o700);
    assert.equal(modeOf(dir), 0o700);
    assert.deepEqual(readdirSync(dir).sort(), ['root.db', 'root.db-shm', 'root.db-wal']);
    for (const f of readdirSync(dir)) assert.equal(modeOf(join(dir, f)), 0o600, f);
  });
});
