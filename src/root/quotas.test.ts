/** Quotas (quotas.ts): services, instances per service and worker subnetworks per cluster. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPlan } from '../addressing/plan.ts';
import { DEFAULT_QUOTAS, quotaWarnings, resolveQuotas } from './quotas.ts';
import { cluster, invalid, quota, setup, svc, usage } from './registry.fixtures.ts';

describe('Registry quotas', () => {
  it('refuses a service beyond --max-services, allocating nothing; the same deployment again still answers', () => {
    const world = setup(undefined, { maxServices: 2 });
    const { registry } = world;
    const a = registry.deployService('j1', svc('a'));
    registry.deployService('j2', svc('b'));
    const before = usage(world);
    assert.throws(() => registry.deployService('j3', svc('c')), quota('max-services'));
    assert.throws(() => registry.deployService('j3', svc('c')), /holds 2 services.*--max-services 2/);
    assert.deepEqual(usage(world), before, 'no address was taken');
    assert.deepEqual(registry.deployService('j1', svc('a')), a, 'an existing service is not a new one');
    assert.equal(registry.serviceCount(), 2);
    registry.removeService('j2');
    registry.deployService('j3', svc('c'));
    assert.equal(registry.serviceCount(), 2);
  });

  it('keeps the number of services with them, and counts a store that has no count yet once', () => {
    const world = setup(undefined, { maxServices: 3 });
    const { registry, store } = world;
    registry.deployService('j1', svc('a'));
    registry.deployService('j2', svc('b'));
    assert.equal(registry.serviceCount(), 2);
    store.transact((tx) => tx.delete('count/services')); // a store from before the count
    assert.equal(registry.serviceCount(), 2);
    registry.deployService('j3', svc('c'));
    assert.equal(registry.serviceCount(), 3);
    assert.throws(() => registry.deployService('j4', svc('d')), quota('max-services'));
    registry.removeService('j1');
    store.transact((tx) => tx.delete('count/services'));
    registry.removeService('j2');
    assert.equal(registry.serviceCount(), 1);
    assert.equal(registry.status().services, 1);
  });

  it('refuses an instance beyond --max-instances-per-service; rescheduling one it has still works', () => {
    const { registry } = setup(undefined, { maxInstancesPerService: 2 });
    cluster(registry, 'c1');
    registry.deployService('j1', svc('a'));
    registry.deployService('j2', svc('b'));
    const first = registry.deployInstance('j1', 0, 'c1');
    registry.deployInstance('j1', 7, 'c1');
    assert.throws(() => registry.deployInstance('j1', 1, 'c1'), quota('max-instances-per-service'));
    assert.throws(
      () => registry.deployInstance('j1', 1, 'c1'),
      /instance 1 of shop\.prod\.a\.web.* 2 instances/,
    );
    assert.deepEqual(registry.deployInstance('j1', 0, 'c2').ip, first.ip, 'a scheduled instance moves');
    registry.deployInstance('j2', 0, 'c1'); // another service has its own quota
    registry.removeInstance('j1', 7);
    registry.deployInstance('j1', 1, 'c1');
  });

  it('refuses a new worker beyond --max-workers-per-cluster, per cluster; anonymous requests count as one', () => {
    const world = setup(undefined, { maxWorkersPerCluster: 2 });
    const { registry } = world;
    cluster(registry, 'c1');
    cluster(registry, 'c2');
    const w1 = registry.allocateSubnet('c1', 'w1');
    registry.allocateSubnet('c1', 'w2');
    const before = usage(world).worker;
    assert.throws(() => registry.allocateSubnet('c1', 'w3'), quota('max-workers-per-cluster'));
    assert.throws(() => registry.allocateSubnet('c1', 'w3'), /cluster c1 holds 2.*oaknet worker remove/);
    assert.deepEqual(usage(world).worker, before);
    assert.deepEqual(registry.allocateSubnet('c1', 'w1'), w1, 'a known worker gets its subnetworks again');
    registry.allocateSubnet('c2', 'w3'); // another cluster has its own quota
    registry.allocateSubnet();
    registry.allocateSubnet();
    assert.throws(() => registry.allocateSubnet(), /requests without \?cluster_id= together hold 2/);
    registry.releaseSubnet('c1', 'w2');
    registry.allocateSubnet('c1', 'w3');
    // a store from before the counts is counted once
    world.store.transact((tx) => tx.delete('count/workers/c1'));
    assert.throws(() => registry.allocateSubnet('c1', 'w4'), quota('max-workers-per-cluster'));
    registry.releaseSubnet('c1', 'w1');
    world.store.transact((tx) => tx.delete('count/workers/c1'));
    registry.releaseSubnet('c1', 'w3');
    registry.allocateSubnet('c1', 'w5');
    registry.allocateSubnet('c1', 'w6');
    assert.throws(() => registry.allocateSubnet('c1', 'w7'), quota('max-workers-per-cluster'));
  });

  it('takes the defaults for what is not set, and refuses quotas that are not positive integers', () => {
    assert.deepEqual(resolveQuotas(), DEFAULT_QUOTAS);
    assert.deepEqual(resolveQuotas({ maxServices: 5 }), { ...DEFAULT_QUOTAS, maxServices: 5 });
    for (const bad of [0, -1, 1.5, NaN, Infinity]) {
      assert.throws(() => resolveQuotas({ maxWorkersPerCluster: bad }), invalid);
    }
    assert.throws(() => resolveQuotas({ maxServices: 0 }), /--max-services/);
  });

  it('the default services quota leaves the default IPv4 pool room for instances; a larger one is warned about', () => {
    const plan = new AddressPlan();
    assert.ok(2 * DEFAULT_QUOTAS.maxServices < plan.serviceV4.capacity);
    assert.deepEqual(quotaWarnings(DEFAULT_QUOTAS, plan), []);
    const [warning] = quotaWarnings({ ...DEFAULT_QUOTAS, maxServices: 40_000 }, plan);
    assert.match(warning ?? '', /--max-services 40000 lets creations take every one of the 65534/);
  });
});
