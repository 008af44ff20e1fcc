import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ModeLog } from './private-files.ts';
import { SqliteStore } from './sqlite.ts';
import { runStoreConformance } from './store.case.ts';

const dir = mkdtempSync(join(tmpdir(), 'oaknet-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

runStoreConformance('SqliteStore', () => new SqliteStore(join(dir, `conf-${n++}.db`)));

describe('SqliteStore', () => {
  it('keeps committed data across close and reopen', () => {
    const path = join(dir, 'durable.db');
    const a = new SqliteStore(path);
    a.transact((tx) => tx.put('pool/x', { next: 7 }));
    a.close();
    const b = new SqliteStore(path);
    assert.deepEqual(
      b.transact((tx) => tx.get('pool/x')),
      { next: 7 },
    );
    b.close();
  });
});

describe('SqliteStore file modes (umask 022)', () => {
  const modeOf = (path: string) => statSync(path).mode & 0o777;

  it('creates the database 0600, so SQLite makes its -wal and -shm 0600 too', () => {
    const umask = process.umask(0o022);
    try {
      const path = join(dir, 'fresh.db');
      const s = new SqliteStore(path);
      s.transact((tx) => tx.put('k', 1));
      for (const f of [path, `${path}-wal`, `${path}-shm`]) {
        assert.ok(existsSync(f), f);
        assert.equal(modeOf(f), 0o600, f);
      }
      s.close();
    } finally {
      process.umask(umask);
    }
  });

  it('tightens a database and side files that an older version left 0644, and says so', () => {
    const path = join(dir, 'old.db');
    const a = new SqliteStore(path);
    a.transact((tx) => tx.put('k', 1));
    a.close();
    writeFileSync(`${path}-shm`, ''); // a leftover side file (SQLite removes -wal and -shm at a clean close)
    for (const f of [path, `${path}-shm`]) chmodSync(f, 0o644);
    const warned: unknown[] = [];
    const log = { warn: (obj: { path: string }) => warned.push(obj.path) } as unknown as ModeLog;
    const b = new SqliteStore(path, { log });
    assert.equal(
      b.transact((tx) => tx.get('k')),
      1,
    );
    for (const f of [path, `${path}-wal`, `${path}-shm`]) assert.equal(modeOf(f), 0o600, f);
    assert.deepEqual(warned, [path, `${path}-shm`]);
    b.close();
  });
});
