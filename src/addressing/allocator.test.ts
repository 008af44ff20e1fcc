import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { BlockList } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AddressInUseError, AddressSpaceExhaustedError } from '../errors.ts';
import { MemoryStore } from '../store/memory.ts';
import { SqliteStore } from '../store/sqlite.ts';
import type { Store } from '../store/store.ts';
import { PoolAllocator } from './allocator.ts';
import type { Cidr } from './cidr.ts';
import { AddressPlan } from './plan.ts';

const dir = mkdtempSync(join(tmpdir(), 'oaknet-allocator-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function isExhausted(pool: string) {
  return (err: unknown): boolean =>
    err instanceof AddressSpaceExhaustedError &&
    err.code === 'E_ADDRESS_SPACE_EXHAUSTED' &&
    err.pool === pool &&
    err.message.includes(`"${pool}"`);
}

function isInUse(err: unknown): boolean {
  return err instanceof AddressInUseError && err.code === 'E_ADDRESS_IN_USE';
}

/** A pool with helpers that run each operation in its own transaction, as the registry does. */
function pool(capacity: number, store: Store = new MemoryStore(), name = 'test') {
  const a = new PoolAllocator(name, capacity, (i) => `slot-${i}`);
  return {
    a,
    store,
    allocate: (owner = 'o') => store.transact((tx) => a.allocate(tx, owner)),
    claim: (i: number, owner = 'c') => store.transact((tx) => a.claim(tx, i, owner)),
    release: (i: number) => store.transact((tx) => a.release(tx, i)),
    owner: (i: number) => store.transact((tx) => a.ownerOf(tx, i)),
    allocated: () => store.transact((tx) => a.allocated(tx)),
  };
}

describe('PoolAllocator policy', () => {
  it('hands out fresh indices in order and records the owner', () => {
    const p = pool(5);
    assert.deepEqual(
      [0, 1, 2].map((i) => p.allocate(`owner ${i}`)),
      [0, 1, 2],
    );
    assert.equal(p.owner(1), 'owner 1');
    assert.equal(p.owner(3), undefined);
    assert.deepEqual(p.allocated(), [
      { index: 0, owner: 'owner 0' },
      { index: 1, owner: 'owner 1' },
      { index: 2, owner: 'owner 2' },
    ]);
  });

  it('prefers fresh indices while any exist, then reuses released ones, oldest release first', () => {
    const capacity = 6;
    const p = pool(capacity);
    for (let i = 0; i < 3; i++) p.allocate();
    assert.equal(p.release(1), true);
    // fresh space is left: the released index rests
    assert.equal(p.allocate(), 3);
    p.allocate();
    p.allocate();
    // fresh space is used up; releases in this order: 4, 0, 2
    for (const i of [4, 0, 2]) assert.equal(p.release(i), true);
    assert.deepEqual(
      [p.allocate(), p.allocate(), p.allocate(), p.allocate()],
      [1, 4, 0, 2],
      'released indices come back in release order',
    );
    assert.throws(() => p.allocate(), isExhausted('test'));
  });

  it('does not release what is not allocated, and a double release frees once', () => {
    const p = pool(3);
    assert.equal(p.release(0), false);
    p.allocate();
    p.allocate();
    p.allocate();
    assert.equal(p.release(1), true);
    assert.equal(p.release(1), false);
    assert.equal(p.allocate(), 1);
    assert.throws(() => p.allocate(), isExhausted('test'));
  });

  it('fails with AddressSpaceExhaustedError naming the pool, and the failure changes nothing', () => {
    const p = pool(2, new MemoryStore(), 'tiny');
    p.allocate();
    p.allocate();
    assert.throws(() => p.allocate(), isExhausted('tiny'));
    assert.throws(() => p.allocate(), isExhausted('tiny'));
    assert.equal(p.allocated().length, 2);
    p.release(0);
    assert.equal(p.allocate(), 0);
  });

  it('a pool of capacity 0 is exhausted at once', () => {
    assert.throws(() => pool(0, new MemoryStore(), 'empty').allocate(), isExhausted('empty'));
  });

  it('claim takes a specific free index; a held index gives AddressInUseError naming holder and address', () => {
    const p = pool(10);
    p.claim(4, 'user');
    assert.equal(p.owner(4), 'user');
    assert.throws(() => p.claim(4, 'other'), isInUse);
    assert.throws(
      () => p.claim(4, 'other'),
      (err: unknown) =>
        isInUse(err) && /slot-4/.test((err as Error).message) && /user/.test((err as Error).message),
    );
    const i = p.allocate();
    assert.throws(() => p.claim(i, 'other'), isInUse);
    assert.equal(p.owner(i), 'o', 'a failed claim leaves the holder');
  });

  it('claim refuses indices outside the pool', () => {
    const p = pool(3);
    for (const i of [-1, 3, 1.5, Number.NaN]) assert.throws(() => p.claim(i), Error, String(i));
  });

  it('skips an index claimed above the cursor', () => {
    const p = pool(6);
    p.claim(2);
    p.claim(3);
    const got = [p.allocate(), p.allocate(), p.allocate(), p.allocate()];
    assert.deepEqual(got, [0, 1, 4, 5]);
    assert.throws(() => p.allocate(), isExhausted('test'));
  });

  it('hands out once an index claimed above the cursor and released before the cursor reached it', () => {
    const p = pool(4);
    p.claim(2);
    assert.equal(p.release(2), true);
    const got = [p.allocate(), p.allocate(), p.allocate(), p.allocate()];
    assert.deepEqual(got, [0, 1, 2, 3]);
    assert.throws(() => p.allocate(), isExhausted('test'));
  });

  it('hands out once an index claimed above the cursor and released after the cursor passed it', () => {
    const p = pool(4);
    p.claim(1);
    assert.deepEqual([p.allocate(), p.allocate()], [0, 2]);
    assert.equal(p.release(1), true);
    assert.equal(p.allocate(), 3, 'fresh first');
    assert.equal(p.allocate(), 1, 'then the released one');
    assert.throws(() => p.allocate(), isExhausted('test'));
  });

  it('claim of a released index takes it off the free list, so it is never handed out twice', () => {
    const p = pool(3);
    p.allocate();
    p.allocate();
    p.allocate();
    p.release(0);
    p.release(1);
    p.claim(0, 'user');
    assert.equal(p.allocate(), 1);
    assert.throws(() => p.allocate(), isExhausted('test'));
    assert.equal(p.owner(0), 'user');
  });

  it('pools with different names in one store are independent', () => {
    const store = new MemoryStore();
    const a = pool(2, store, 'a');
    const b = pool(2, store, 'b');
    assert.equal(a.allocate(), 0);
    assert.equal(b.allocate(), 0);
    a.allocate();
    assert.throws(() => a.allocate(), isExhausted('a'));
    assert.equal(b.allocate(), 1);
  });

  it('an allocation inside a transaction that throws is undone', () => {
    const p = pool(3);
    assert.throws(() =>
      p.store.transact((tx) => {
        p.a.allocate(tx, 'doomed');
        p.a.claim(tx, 2, 'doomed');
        throw new Error('the owning record could not be written');
      }),
    );
    assert.deepEqual(p.allocated(), []);
    assert.equal(p.allocate(), 0);
    assert.equal(p.allocate(), 1);
    assert.equal(p.allocate(), 2);
  });
});

interface WorkerAllocation {
  index: number;
  v4: Cidr;
  v6: Cidr;
}

/**
 * Allocates the whole default worker plan on a store (batch allocations per transaction) and checks what a
 * user of the plan relies on.
 */
function allocateAllWorkers(store: Store, batch: number): void {
  const plan = new AddressPlan();
  const workers = new PoolAllocator('worker', plan.workerCapacity, (i) => plan.workerSubnet(i).v4.toString());
  const expectedCount = 2 ** (26 - 12) - 2 ** (26 - 16);
  assert.equal(plan.workerCapacity, expectedCount);

  const got: WorkerAllocation[] = [];
  while (got.length < plan.workerCapacity) {
    store.transact((tx) => {
      for (let n = 0; n < batch && got.length < plan.workerCapacity; n++) {
        const index = workers.allocate(tx, `worker-${got.length}`);
        got.push({ index, ...plan.workerSubnet(index) });
      }
    });
  }
  assert.equal(got.length, 15_360);

  const v4Ranges = new BlockList();
  v4Ranges.addSubnet('10.16.0.0', 12, 'ipv4');
  const v4Service = new BlockList();
  v4Service.addSubnet('10.30.0.0', 16, 'ipv4');
  const v6Ranges = new BlockList();
  v6Ranges.addSubnet('fc00::', 7, 'ipv6');
  const v6Reserved = new BlockList();
  v6Reserved.addSubnet('fdfe::', 16, 'ipv6');
  v6Reserved.addSubnet('fdff::', 16, 'ipv6');

  const indices = new Set<number>();
  const v4Seen = new Set<string>();
  const v6Seen = new Set<string>();
  for (const { index, v4, v6 } of got) {
    indices.add(index);
    v4Seen.add(v4.toString());
    v6Seen.add(v6.toString());
    assert.equal(v4.prefix, 26);
    assert.equal(v4.network.value % 64n, 0n, `${v4.toString()} is aligned`);
    for (const a of [v4.network, v4.last]) {
      assert.ok(v4Ranges.check(a.toString(), 'ipv4'), `${v4.toString()} inside 10.16.0.0/12`);
      assert.ok(!v4Service.check(a.toString(), 'ipv4'), `${v4.toString()} outside 10.30.0.0/16`);
    }
    assert.equal(v6.prefix, 120);
    assert.equal(v6.network.value % 256n, 0n, `${v6.toString()} is aligned`);
    for (const a of [v6.network, v6.last]) {
      assert.ok(v6Ranges.check(a.toString(), 'ipv6'), `${v6.toString()} inside fc00::/7`);
      assert.ok(!v6Reserved.check(a.toString(), 'ipv6'), `${v6.toString()} outside fdfe::/16 and fdff::/16`);
    }
  }
  assert.equal(indices.size, got.length, 'indices distinct');
  assert.equal(v4Seen.size, got.length, 'IPv4 subnets distinct');
  assert.equal(v6Seen.size, got.length, 'IPv6 subnets distinct');

  // the next request fails, naming the pool
  assert.throws(
    () => store.transact((tx) => workers.allocate(tx, 'one too many')),
    (err: unknown) =>
      err instanceof AddressSpaceExhaustedError &&
      err.code === 'E_ADDRESS_SPACE_EXHAUSTED' &&
      err.message.includes('"worker"') &&
      err.message.includes(String(plan.workerCapacity)),
  );

  // release some (not in index order), then they come back in release order, and only they
  const released = [got[9_000]!, got[5]!, got[15_359]!, got[100]!];
  store.transact((tx) => {
    for (const r of released) assert.equal(workers.release(tx, r.index), true);
  });
  const again = store.transact((tx) => released.map((_, n) => workers.allocate(tx, `again-${n}`)));
  assert.deepEqual(
    again,
    released.map((r) => r.index),
  );
  assert.deepEqual(
    again.map((i) => plan.workerSubnet(i).v4.toString()),
    released.map((r) => r.v4.toString()),
  );
  assert.throws(() => store.transact((tx) => workers.allocate(tx, 'still too many')), isExhausted('worker'));

  // a claim of a held block names it
  assert.throws(
    () => store.transact((tx) => workers.claim(tx, got[7]!.index, 'intruder')),
    (err: unknown) => isInUse(err) && (err as Error).message.includes(got[7]!.v4.toString()),
  );
  assert.equal(store.transact((tx) => workers.allocated(tx)).length, plan.workerCapacity);
  store.close();
}

describe('the default worker plan, allocated to the last block', () => {
  it('on a MemoryStore', () => {
    allocateAllWorkers(new MemoryStore(), 1);
  });

  it('on a SqliteStore in a temp file', () => {
    allocateAllWorkers(new SqliteStore(join(dir, 'workers.db')), 512);
  });

  it('a SqliteStore keeps the pool state across reopen', () => {
    const path = join(dir, 'reopen.db');
    const first = new SqliteStore(path);
    const p = new PoolAllocator('worker', 4);
    first.transact((tx) => {
      p.allocate(tx, 'a');
      p.allocate(tx, 'b');
      p.allocate(tx, 'c');
      p.release(tx, 1);
    });
    first.close();
    const second = new SqliteStore(path);
    assert.deepEqual(
      second.transact((tx) => [p.allocate(tx, 'd'), p.allocate(tx, 'e')]),
      [3, 1],
    );
    assert.equal(
      second.transact((tx) => p.ownerOf(tx, 0)),
      'a',
    );
    second.close();
  });
});
