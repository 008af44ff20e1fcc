import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../store/memory.ts';
import { PageCache } from './page-cache.ts';

describe('PageCache', () => {
  it('keeps a page until the store is written, then reads it again', () => {
    const store = new MemoryStore();
    const cache = new PageCache<string>(() => store.writes);
    let reads = 0;
    const read = () => {
      reads++;
      return { items: store.transact((tx) => tx.list<string>('k/').map(([, v]) => v)), next: undefined };
    };
    store.transact((tx) => tx.put('k/1', 'a'));
    assert.deepEqual(cache.get('p', read).items, ['a']);
    assert.deepEqual(cache.get('p', read).items, ['a']);
    assert.equal(reads, 1);
    store.transact((tx) => tx.put('k/2', 'b'));
    assert.deepEqual(cache.get('p', read).items, ['a', 'b']);
    assert.equal(reads, 2);
    // a rolled-back write also invalidates (harmless), and so does a delete
    assert.throws(() =>
      store.transact((tx) => {
        tx.put('k/3', 'c');
        throw new Error('no');
      }),
    );
    cache.get('p', read);
    store.transact((tx) => tx.delete('k/1'));
    assert.deepEqual(cache.get('p', read).items, ['b']);
    assert.equal(reads, 4);
  });

  it('holds at most maxRecords records, dropping the oldest pages', () => {
    const store = new MemoryStore();
    const cache = new PageCache<number>(() => store.writes, 5);
    const page = (n: number) => () => ({ items: Array.from({ length: n }, (_, i) => i) });
    cache.get('a', page(2));
    cache.get('b', page(2));
    cache.get('c', page(2));
    assert.equal(cache.size, 2, 'a went');
    cache.get('big', page(6));
    assert.equal(cache.size, 2, 'a page larger than the cache is not kept');
  });
});
