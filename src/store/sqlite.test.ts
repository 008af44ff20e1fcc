import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
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
