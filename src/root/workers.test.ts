/** Registry worker subnetworks (workers.ts): a pair per worker, the same again for a known worker. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPlan } from '../addressing/plan.ts';
import { cluster, exhausted, inPrefix, notFound, setup } from './registry.fixtures.ts';

describe('Registry worker subnetworks', () => {
  it('gives a known worker the same subnetworks every time; other workers and clusters get others', () => {
    const { registry, plan } = setup();
    cluster(registry, 'c1');
    cluster(registry, 'c2');
    const w1 = registry.allocateSubnet('c1', 'w1');
    assert.deepEqual(registry.allocateSubnet('c1', 'w1'), w1);
    const w2 = registry.allocateSubnet('c1', 'w2');
    const w1c2 = registry.allocateSubnet('c2', 'w1');
    const subnets = [w1, w2, w1c2];
    assert.equal(new Set(subnets.map((w) => w.subnet)).size, 3);
    assert.equal(new Set(subnets.map((w) => w.subnetV6)).size, 3);
    for (const w of subnets) {
      const { v4, v6 } = plan.workerSubnet(w.index);
      assert.equal(w.subnet, v4.network.toString());
      assert.equal(w.subnetV6, v6.network.toString());
      assert.ok(inPrefix('10.16.0.0/12', w.subnet) && !inPrefix('10.30.0.0/16', w.subnet));
      assert.ok(inPrefix('fc00::/7', w.subnetV6));
    }
    assert.deepEqual(registry.listWorkers('c1'), [
      { cluster_id: 'c1', worker_id: 'w1', subnet: `${w1.subnet}/26`, subnet_v6: `${w1.subnetV6}/120` },
      { cluster_id: 'c1', worker_id: 'w2', subnet: `${w2.subnet}/26`, subnet_v6: `${w2.subnetV6}/120` },
    ]);
    assert.equal(registry.listWorkers().length, 3);
  });

  it('gives anonymous requests a fresh pair each time', () => {
    const { registry } = setup();
    const a = registry.allocateSubnet();
    const b = registry.allocateSubnet();
    assert.notEqual(a.subnet, b.subnet);
    assert.notEqual(a.subnetV6, b.subnetV6);
  });

  it('an unknown cluster is a NotFoundError and allocates nothing', () => {
    const { registry } = setup();
    assert.throws(() => registry.allocateSubnet('ghost', 'w1'), notFound);
    assert.deepEqual(registry.listWorkers(), []);
    assert.equal(registry.allocateSubnet().index, 0);
  });

  it('releaseSubnet frees the pair; it is reused after the fresh space is used up; exhaustion is reported', () => {
    const plan = new AddressPlan({ workerRangeV4: '10.200.0.0/24' });
    const { registry } = setup(plan);
    cluster(registry, 'c1');
    assert.equal(plan.workerCapacity, 4);
    const w = [0, 1, 2].map((i) => registry.allocateSubnet('c1', `w${i}`));
    const released = registry.releaseSubnet('c1', 'w1');
    assert.deepEqual(released, w[1]);
    assert.deepEqual(
      registry.listWorkers('c1').map((x) => x.worker_id),
      ['w0', 'w2'],
    );
    const w3 = registry.allocateSubnet('c1', 'w3');
    assert.notEqual(w3.subnet, released.subnet, 'fresh space first');
    const w4 = registry.allocateSubnet('c1', 'w4');
    assert.equal(w4.subnet, released.subnet);
    assert.equal(w4.subnetV6, released.subnetV6);
    assert.throws(() => registry.allocateSubnet('c1', 'w5'), exhausted('worker'));
    assert.throws(() => registry.allocateSubnet(), exhausted('worker'));
    // a known worker still gets its pair while the pool is exhausted
    assert.deepEqual(registry.allocateSubnet('c1', 'w0'), w[0]);
    assert.throws(() => registry.releaseSubnet('c1', 'w1'), notFound);
    assert.throws(() => registry.releaseSubnet('c2', 'w0'), notFound);
  });
});
