/**
 * @module root/pages
 * Pages of a store prefix: at most `limit` records after a cursor, read from the cursor on (never the
 * records before it), with the cursor of the next page. A cursor is the key of the last record of a page
 * without the listing's base (a job ID, a cluster ID, `cluster/worker`): stable, since a page starts after
 * it whether or not that record still exists, and each record is listed once in a walk while the set does
 * not change.
 */
import type { Tx } from '../store/store.ts';

export interface PageRequest {
  /** Records after this cursor (exclusive); from the start without one. */
  after?: string | undefined;
  /** Records at most (the API bounds it). */
  limit: number;
}

export interface Page<T> {
  items: T[];
  /** The cursor to ask for the next page with; undefined when this page is the last. */
  next?: string;
}

/**
 * The records under prefix, ordered by key, after `base + page.after`; cursors are keys without `base`
 * (base is prefix itself, or a shorter one when a listing filters, like one cluster's workers).
 */
export function readPage<T>(tx: Tx, base: string, prefix: string, page: PageRequest): Page<[string, T]> {
  if (!prefix.startsWith(base)) throw new Error(`prefix ${prefix} does not start with ${base}`);
  if (!Number.isSafeInteger(page.limit) || page.limit < 1) throw new Error(`page limit ${page.limit}`);
  const rows = tx.list<T>(prefix, page.limit + 1, page.after === undefined ? undefined : base + page.after);
  if (rows.length <= page.limit) return { items: rows };
  rows.length = page.limit;
  return { items: rows, next: rows[rows.length - 1]![0].slice(base.length) };
}

/** A page with its records turned into views. */
export function mapPage<A, B>(page: Page<A>, f: (a: A) => B): Page<B> {
  const items = page.items.map(f);
  return page.next === undefined ? { items } : { items, next: page.next };
}
