/**
 * @module store/store
 * The durable key-value store every control-plane role keeps its state in.
 *
 * Transactions are synchronous: a role's state changes are short and local (an allocation touches a pool
 * cursor, a used-set entry and a job record, which must change together), and a synchronous transaction cannot
 * interleave with another request's on the event loop. Keys are strings ordered bytewise; values are JSON.
 */

/** A JSON value as stored. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Reads and writes inside one transaction. */
export interface Tx {
  /** The value at key, or undefined. The caller states the type it wrote there. */
  get<T = Json>(key: string): T | undefined;
  /** Writes value at key (insert or replace). */
  put(key: string, value: Json): void;
  /** Removes key; returns whether it existed. */
  delete(key: string): boolean;
  /**
   * Entries whose key starts with prefix, in key order; at most `limit` of them when given, and only keys
   * after `after` (exclusive; it need not exist) when given, so a page starts where the last one ended
   * without reading what came before.
   */
  list<T = Json>(prefix: string, limit?: number, after?: string): Array<[string, T]>;
  /** How many keys start with prefix (without reading their values). */
  count(prefix: string): number;
}

export interface Store {
  /** Runs fn as one atomic, isolated transaction: all of its writes land or, if fn throws, none do. */
  transact<T>(fn: (tx: Tx) => T): T;
  /**
   * Puts and deletes made through this store object so far (those of rolled-back transactions too): what
   * was read from it is current while this has not moved. Writes of other processes sharing the file do not
   * count.
   */
  readonly writes: number;
  /** Releases the store; later calls throw. */
  close(): void;
}

/** The exclusive upper bound of the keys that start with prefix. */
export function prefixEnd(prefix: string): string {
  return prefix + '\uffff';
}
