/**
 * @module store/memory
 * In-memory Store for tests and throwaway runs: a sorted key array beside a map; a transaction keeps an
 * undo log and replays it backwards when fn throws.
 */
import type { Store, Tx } from './store.ts';

export class MemoryStore implements Store {
  private readonly values = new Map<string, string>();
  private readonly keys: string[] = [];
  private closed = false;
  writes = 0;

  transact<T>(fn: (tx: Tx) => T): T {
    if (this.closed) throw new Error('store is closed');
    const undo: Array<[string, string | undefined]> = [];
    const tx: Tx = {
      get: <V>(key: string): V | undefined => {
        const raw = this.values.get(key);
        return raw === undefined ? undefined : (JSON.parse(raw) as V);
      },
      put: (key, value) => {
        this.writes++;
        undo.push([key, this.values.get(key)]);
        this.set(key, JSON.stringify(value));
      },
      delete: (key) => {
        const old = this.values.get(key);
        if (old === undefined) return false;
        this.writes++;
        undo.push([key, old]);
        this.set(key, undefined);
        return true;
      },
      list: <V>(prefix: string, limit = Infinity, after?: string): Array<[string, V]> => {
        const out: Array<[string, V]> = [];
        let i = this.lowerBound(prefix);
        if (after !== undefined) i = Math.max(i, this.upperBound(after));
        for (; i < this.keys.length && out.length < limit; i++) {
          const key = this.keys[i]!;
          if (!key.startsWith(prefix)) break;
          out.push([key, JSON.parse(this.values.get(key)!) as V]);
        }
        return out;
      },
      count: (prefix) => {
        // the keys with the prefix are one run in sorted order: find its end by bisection too
        const from = this.lowerBound(prefix);
        let lo = from;
        let hi = this.keys.length;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (this.keys[mid]!.startsWith(prefix)) lo = mid + 1;
          else hi = mid;
        }
        return lo - from;
      },
    };
    try {
      return fn(tx);
    } catch (err) {
      for (let i = undo.length - 1; i >= 0; i--) this.set(undo[i]![0], undo[i]![1]);
      throw err;
    }
  }

  close(): void {
    this.closed = true;
  }

  private set(key: string, raw: string | undefined): void {
    const had = this.values.has(key);
    if (raw === undefined) {
      if (!had) return;
      this.values.delete(key);
      this.keys.splice(this.lowerBound(key), 1);
    } else {
      this.values.set(key, raw);
      if (!had) this.keys.splice(this.lowerBound(key), 0, key);
    }
  }

  /** Index of the first key >= key. */
  private lowerBound(key: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the first key > key. */
  private upperBound(key: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid]! <= key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
