/**
 * The conformance suite every Store implementation passes (run from each implementation's test file).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Store } from './store.ts';

export function runStoreConformance(name: string, open: () => Store): void {
  describe(`${name} conforms to Store`, () => {
    it('reads back what it wrote, and nothing after delete', () => {
      const s = open();
      s.transact((tx) => tx.put('a', { x: 1, y: ['z'] }));
      assert.deepEqual(
        s.transact((tx) => tx.get('a')),
        { x: 1, y: ['z'] },
      );
      assert.equal(
        s.transact((tx) => tx.delete('a')),
        true,
      );
      assert.equal(
        s.transact((tx) => tx.delete('a')),
        false,
      );
      assert.equal(
        s.transact((tx) => tx.get('a')),
        undefined,
      );
      s.close();
    });

    it('lists by prefix in key order, with a limit', () => {
      const s = open();
      s.transact((tx) => {
        for (const k of ['p/3', 'p/1', 'q/1', 'p/2', 'o/9', 'p']) tx.put(k, k);
      });
      const all = s.transact((tx) => tx.list('p/'));
      assert.deepEqual(
        all.map(([k]) => k),
        ['p/1', 'p/2', 'p/3'],
      );
      const two = s.transact((tx) => tx.list('p/', 2));
      assert.deepEqual(
        two.map(([k, v]) => [k, v]),
        [
          ['p/1', 'p/1'],
          ['p/2', 'p/2'],
        ],
      );
      assert.deepEqual(
        s.transact((tx) => tx.list('nothing/')),
        [],
      );
      s.close();
    });

    it('lists after a key (exclusive, present or not), with a limit: pages that walk the prefix', () => {
      const s = open();
      s.transact((tx) => {
        for (const k of ['p/1', 'p/2', 'p/3', 'p/4', 'p/5', 'o/9', 'p', 'q/1']) tx.put(k, k);
      });
      const keys = (limit?: number, after?: string) =>
        s.transact((tx) => tx.list('p/', limit, after)).map(([k]) => k);
      assert.deepEqual(keys(2, 'p/2'), ['p/3', 'p/4']);
      assert.deepEqual(keys(undefined, 'p/2'), ['p/3', 'p/4', 'p/5']);
      assert.deepEqual(keys(2, 'p/25'), ['p/3', 'p/4'], 'a cursor that is not a key');
      assert.deepEqual(keys(2, 'a'), ['p/1', 'p/2'], 'a cursor before the prefix');
      assert.deepEqual(keys(2, 'o/9'), ['p/1', 'p/2'], 'a key before the prefix');
      assert.deepEqual(keys(2, 'p'), ['p/1', 'p/2'], 'a key that sorts just before the prefix');
      assert.deepEqual(keys(2, 'p/5'), [], 'the last key');
      assert.deepEqual(keys(2, 'z'), [], 'a cursor after the prefix');
      // walking page by page visits every key once
      const walked: string[] = [];
      for (let page = keys(2); page.length > 0; page = keys(2, walked.at(-1))) walked.push(...page);
      assert.deepEqual(walked, ['p/1', 'p/2', 'p/3', 'p/4', 'p/5']);
      s.close();
    });

    it('counts the keys of a prefix, its own writes included', () => {
      const s = open();
      s.transact((tx) => {
        for (const k of ['p/3', 'p/1', 'q/1', 'p/2', 'o/9', 'p', 'p0']) tx.put(k, k);
      });
      assert.equal(
        s.transact((tx) => tx.count('p/')),
        3,
      );
      assert.equal(
        s.transact((tx) => tx.count('p')),
        5,
      );
      assert.equal(
        s.transact((tx) => tx.count('nothing/')),
        0,
      );
      assert.equal(
        s.transact((tx) => tx.count('')),
        7,
      );
      const inside = s.transact((tx) => {
        tx.put('p/4', 'x');
        tx.delete('p/1');
        tx.delete('p/2');
        return tx.count('p/');
      });
      assert.equal(inside, 2);
      s.close();
    });

    it('rolls back every write of a transaction that throws', () => {
      const s = open();
      s.transact((tx) => tx.put('keep', 1));
      assert.throws(() =>
        s.transact((tx) => {
          tx.put('keep', 2);
          tx.put('new', 3);
          tx.delete('keep');
          throw new Error('boom');
        }),
      );
      assert.equal(
        s.transact((tx) => tx.get('keep')),
        1,
      );
      assert.equal(
        s.transact((tx) => tx.get('new')),
        undefined,
      );
      s.close();
    });

    it('sees its own writes inside a transaction, and lists reflect them', () => {
      const s = open();
      const seen = s.transact((tx) => {
        tx.put('k/1', 'a');
        tx.put('k/2', 'b');
        tx.delete('k/1');
        return { one: tx.get('k/1'), list: tx.list('k/').map(([k]) => k) };
      });
      assert.deepEqual(seen, { one: undefined, list: ['k/2'] });
      s.close();
    });

    it('rolls back a nested transaction alone when its error is caught', () => {
      const s = open();
      s.transact((tx) => {
        tx.put('outer', 1);
        try {
          s.transact((inner) => {
            inner.put('inner', 2);
            throw new Error('inner fails');
          });
        } catch {
          // the outer transaction goes on
        }
      });
      assert.equal(
        s.transact((tx) => tx.get('outer')),
        1,
      );
      assert.equal(
        s.transact((tx) => tx.get('inner')),
        undefined,
      );
      s.close();
    });
  });
}
