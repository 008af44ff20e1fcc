/** Registry pages (pages.ts): jobs, workers and clusters a page at a time, read from the cursor on. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPlan } from '../addressing/plan.ts';
import { SqliteStore } from '../store/sqlite.ts';
import { Registry, type JobRecord, type Page } from './registry.ts';
import { cluster, setup, svc } from './registry.fixtures.ts';

/** Every page of a walk, following the cursors. */
function walk<T>(read: (after: string | undefined) => Page<T>): Page<T>[] {
  const pages: Page<T>[] = [];
  let after: string | undefined;
  do {
    const page = read(after);
    pages.push(page);
    after = page.next;
  } while (after !== undefined);
  return pages;
}

const id = (i: number) => `j${String(i).padStart(5, '0')}`;

describe('Registry pages', () => {
  it('walks 30,000 services in ID order, each once, a bounded page at a time', () => {
    const store = new SqliteStore(':memory:');
    const registry = new Registry(store, new AddressPlan(), { quotas: { maxServices: 30_000 } });
    // one transaction (one commit) for all of them: seconds, not minutes
    const order = Array.from({ length: 30_000 }, (_, i) => i).sort(
      (a, b) => ((a * 7919) % 30_000) - ((b * 7919) % 30_000),
    );
    store.transact(() => {
      for (const i of order) registry.deployService(id(i), svc(`s${i}`));
    });
    const all = Array.from({ length: 30_000 }, (_, i) => id(i));

    const pages = walk((after) => registry.jobsPage({ after, limit: 1000 }));
    assert.equal(pages.length, 30);
    assert.deepEqual(
      pages.flatMap((p) => p.items.map((j) => j.id)),
      all,
    );
    for (const [n, p] of pages.entries()) {
      assert.equal(p.items.length, 1000);
      assert.equal(
        p.next,
        n < 29 ? p.items.at(-1)!.id : undefined,
        'the cursor is the last ID, none on the last page',
      );
    }

    const first: Page<JobRecord> = registry.jobsPage({ limit: 100 });
    assert.deepEqual(
      first.items.map((j) => j.id),
      all.slice(0, 100),
    );
    assert.equal(first.next, id(99));
    assert.equal(first.items[0]!.name, 'shop.prod.s0.web');
    const middle = registry.jobsPage({ after: id(12_345), limit: 100 });
    assert.deepEqual(
      middle.items.map((j) => j.id),
      all.slice(12_346, 12_446),
    );
    const last = registry.jobsPage({ after: id(29_949), limit: 100 });
    assert.deepEqual(
      last.items.map((j) => j.id),
      all.slice(29_950),
    );
    assert.equal(last.next, undefined);
    assert.deepEqual(registry.jobsPage({ after: id(29_999), limit: 100 }), { items: [] });
    store.close();
  });

  it('a cursor stays good when its record goes; records that come after it are seen', () => {
    const { registry } = setup();
    for (let i = 0; i < 10; i++) registry.deployService(id(i), svc(`s${i}`));
    const p1 = registry.jobsPage({ limit: 4 });
    assert.equal(p1.next, id(3));
    registry.removeService(id(3));
    registry.removeService(id(5));
    registry.deployService('j99999', svc('late'));
    const rest = walk((after) => registry.jobsPage({ after: after ?? p1.next, limit: 4 }));
    assert.deepEqual(
      rest.flatMap((p) => p.items.map((j) => j.id)),
      [id(4), id(6), id(7), id(8), id(9), 'j99999'],
    );
  });

  it('pages workers of one cluster or of all, with cluster/worker cursors, and clusters by ID', () => {
    const { registry } = setup();
    for (const c of ['c1', 'c2', 'c10']) {
      cluster(registry, c);
      for (let w = 0; w < 3; w++) registry.allocateSubnet(c, `w${w}`);
    }
    registry.allocateSubnet();
    const everyone = walk((after) => registry.workersPage({ after, limit: 2 }));
    const keys = everyone.flatMap((p) => p.items.map((w) => `${w.cluster_id}/${w.worker_id}`));
    // in key order: '_' (the anonymous requests) sorts before letters, 'c10' before 'c2'
    assert.match(keys[0]!, /^_\/anonymous-/);
    assert.deepEqual(keys.slice(1), [
      'c1/w0',
      'c1/w1',
      'c1/w2',
      'c10/w0',
      'c10/w1',
      'c10/w2',
      'c2/w0',
      'c2/w1',
      'c2/w2',
    ]);
    assert.equal(everyone[1]!.next, 'c1/w2');

    const c1 = walk((after) => registry.workersPage({ after, limit: 2 }, 'c1'));
    assert.deepEqual(
      c1.map((p) => p.next),
      ['c1/w1', undefined],
    );
    assert.deepEqual(
      c1.flatMap((p) => p.items.map((w) => w.worker_id)),
      ['w0', 'w1', 'w2'],
    );
    // a cursor from another cluster's range starts this cluster's listing where it belongs
    assert.deepEqual(registry.workersPage({ after: 'c0/zz', limit: 5 }, 'c1').items.length, 3);
    assert.deepEqual(registry.workersPage({ after: 'c2/w0', limit: 5 }, 'c1').items, []);

    const clusters = walk((after) => registry.clustersPage({ after, limit: 2 }));
    assert.deepEqual(
      clusters.flatMap((p) => p.items.map((c) => c.cluster_id)),
      ['c1', 'c10', 'c2'],
    );
    assert.deepEqual(
      clusters.map((p) => p.next),
      ['c10', undefined],
    );
    assert.equal(clusters[0]!.items[0]!.pending_notifications, 0);
  });
});
