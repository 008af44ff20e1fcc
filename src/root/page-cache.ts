/**
 * @module root/page-cache
 * List pages as read from the store, kept while the store has not changed: forty clients reading the same
 * 30,000 services page after page cost one read and mapping of each page (some 12 ms for 1,000 services),
 * not forty. Any write through the store empties the cache, so a page is never older than the last write.
 * Bounded in records; the oldest pages go first.
 */

export interface CachedPage<T> {
  items: T[];
  /** The cursor of the next page, if any. */
  next?: string | undefined;
}

export class PageCache<T> {
  private readonly pages = new Map<string, CachedPage<T>>();
  private seen: number;
  private records = 0;

  constructor(
    /** The store's write count (Store.writes). */
    private readonly writes: () => number,
    /** 30,000 records of some 350 bytes each: about 10 MB */
    private readonly maxRecords = 30_000,
  ) {
    this.seen = writes();
  }

  /** The page under key, built (and kept) if the cache has none current. */
  get(key: string, build: () => CachedPage<T>): CachedPage<T> {
    const now = this.writes();
    if (now !== this.seen) {
      this.pages.clear();
      this.records = 0;
      this.seen = now;
    }
    const hit = this.pages.get(key);
    if (hit) return hit;
    const page = build();
    if (page.items.length > this.maxRecords) return page;
    while (this.records + page.items.length > this.maxRecords) {
      const oldest = this.pages.keys().next();
      if (oldest.done) break;
      this.records -= this.pages.get(oldest.value)!.items.length;
      this.pages.delete(oldest.value);
    }
    this.pages.set(key, page);
    this.records += page.items.length;
    return page;
  }

  /** Pages kept now (for tests). */
  get size(): number {
    return this.pages.size;
  }
}
