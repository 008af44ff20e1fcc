/**
 * @module store/sqlite
 * The durable Store: one SQLite file (better-sqlite3) in WAL mode with synchronous=FULL, so a transaction
 * that returned is on disk: a `kill -9` (or a power cut) after an acknowledged allocation cannot lose it.
 * Transactions are BEGIN IMMEDIATE, so several processes sharing the file serialise their writers too.
 *
 * The file is its owner's alone (0600), and so are SQLite's -wal and -shm files: SQLite gives those the mode
 * of the database file, so the database file is created 0600 before SQLite opens it (SQLite itself would
 * create it 0644), and side files an older version left looser are tightened.
 */
import { closeSync, constants } from 'node:fs';
import Database from 'better-sqlite3';
import { openPrivateSync, tightenFile, type ModeLog } from './private-files.ts';
import type { Store, Tx } from './store.ts';
import { prefixEnd } from './store.ts';

export interface SqliteStoreOptions {
  /** How long a writer waits for another process's transaction, in ms (default 5000). */
  busyTimeoutMs?: number;
  /** Where a tightened file mode is reported (default: a process warning). */
  log?: ModeLog;
}

/** The files SQLite keeps beside a database in WAL mode (and a rollback journal, while switching to WAL). */
const SIDE_FILES = ['-wal', '-shm', '-journal'];

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly tx: Tx;
  private readonly run: (fn: (tx: Tx) => unknown) => unknown;
  writes = 0;

  /** Opens (creating when missing) the store at path; ':memory:' gives a private in-memory database. */
  constructor(path: string, options: SqliteStoreOptions = {}) {
    if (path !== ':memory:' && path !== '') {
      // created here 0600 (O_RDONLY: no write access needed to create or chmod it), or made 0600
      closeSync(openPrivateSync(path, constants.O_RDONLY | constants.O_CREAT, options.log));
      for (const side of SIDE_FILES) tightenFile(path + side, options.log);
    }
    this.db = new Database(path);
    this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec('CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID');
    const get = this.db.prepare<[string], { value: string }>('SELECT value FROM kv WHERE key = ?');
    const put = this.db.prepare<[string, string]>('INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)');
    const del = this.db.prepare<[string]>('DELETE FROM kv WHERE key = ?');
    const list = this.db.prepare<[string, string, number], { key: string; value: string }>(
      'SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?',
    );
    // one lower bound only, so the primary key's b-tree is entered at the page's start, not at the prefix;
    // which bound is the larger is decided in JS, which agrees with SQLite's bytewise order whenever the
    // prefix is ASCII (as every prefix oaknet lists is)
    const listAfter = this.db.prepare<[string, string, number], { key: string; value: string }>(
      'SELECT key, value FROM kv WHERE key > ? AND key < ? ORDER BY key LIMIT ?',
    );
    const count = this.db.prepare<[string, string], { n: number }>(
      'SELECT count(*) AS n FROM kv WHERE key >= ? AND key < ?',
    );
    this.tx = {
      get: <T>(key: string): T | undefined => {
        const row = get.get(key);
        return row ? (JSON.parse(row.value) as T) : undefined;
      },
      put: (key, value) => {
        this.writes++;
        put.run(key, JSON.stringify(value));
      },
      delete: (key) => {
        this.writes++;
        return del.run(key).changes > 0;
      },
      list: <T>(prefix: string, limit?: number, after?: string): Array<[string, T]> =>
        (after !== undefined && after >= prefix
          ? listAfter.all(after, prefixEnd(prefix), limit ?? -1)
          : list.all(prefix, prefixEnd(prefix), limit ?? -1)
        ).map((r) => [r.key, JSON.parse(r.value) as T]),
      count: (prefix) => count.get(prefix, prefixEnd(prefix))?.n ?? 0,
    };
    const transaction = this.db.transaction((fn: (tx: Tx) => unknown) => fn(this.tx));
    this.run = (fn) => transaction.immediate(fn);
  }

  transact<T>(fn: (tx: Tx) => T): T {
    return this.run(fn) as T;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
