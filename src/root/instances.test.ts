/**
 * Registry instances (instances.ts): scheduling and removing instances with their instance IPs, and the
 * deployment reports, with the notifications they queue in the outbox (outbox.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPlan } from '../addressing/plan.ts';
import {
  cluster,
  deployed,
  drain,
  exhausted,
  inPrefix,
  invalid,
  notFound,
  pending,
  setup,
  svc,
} from './registry.fixtures.ts';
import type { Notification } from './registry.ts';

describe('Registry instances', () => {
  it('deploying an instance again keeps its addresses and moves it to the named cluster', () => {
    const { registry } = setup();
    registry.deployService('j', svc('s'));
    const first = registry.deployInstance('j', 2, 'c1');
    const again = registry.deployInstance('j', 2, 'c2');
    assert.deepEqual(again.ip, first.ip);
    assert.equal(registry.getJob('j')!.instances[2]!.clusterId, 'c2');
  });

  it('removeInstance releases its IPs: IPv4 comes back once fresh space is used up, IPv6 rests while fresh exist', () => {
    const plan = new AddressPlan({ serviceRangeV4: '10.30.0.0/28', instanceRangeV6: 'fdff::/124' });
    const { registry } = setup(plan);
    registry.deployService('j', svc('s')); // 2 of the 14 IPv4 addresses
    const capacityV4 = plan.serviceV4.capacity - 2;
    const insts = Array.from({ length: capacityV4 }, (_, n) => registry.deployInstance('j', n, 'c1'));
    assert.throws(() => registry.deployInstance('j', capacityV4, 'c1'), exhausted('service-v4'));

    const victim = insts[5]!;
    registry.removeInstance('j', 5);
    assert.equal(registry.getJob('j')!.instances[5], undefined);
    assert.throws(() => registry.resolveByIp(victim.ip.v4), notFound);
    assert.throws(() => registry.resolveByIp(victim.ip.v6), notFound);

    const next = registry.deployInstance('j', capacityV4, 'c1');
    assert.equal(next.ip.v4, victim.ip.v4, 'the only free IPv4 address is the released one');
    assert.notEqual(next.ip.v6, victim.ip.v6, 'the IPv6 pool still has fresh addresses');
    assert.ok(inPrefix('fdff::/124', next.ip.v6));
    const v6 = [...insts.filter((i) => i !== victim), next].map((i) => i.ip.v6);
    assert.equal(new Set(v6).size, v6.length);
  });

  it('-1 removes every instance and releases every instance IP', () => {
    const { registry, notified } = setup();
    cluster(registry, 'c1');
    const job = registry.deployService('j', svc('s'));
    const insts = [0, 1, 2].map((n) => registry.deployInstance('j', n, 'c1'));
    registry.resolveByName(job.name, 'c1');
    notified.length = 0;
    registry.removeInstance('j', -1);
    assert.deepEqual(registry.getJob('j')!.instances, {});
    for (const i of insts) {
      assert.throws(() => registry.resolveByIp(i.ip.v4), notFound);
      assert.throws(() => registry.resolveByIp(i.ip.v6), notFound);
    }
    assert.deepEqual(notified, [['c1']]);
    const notes = drain(registry, 'c1');
    assert.ok(notes.length > 0 && notes.every((n) => n.type === 'UNDEPLOYMENT' && n.job_name === job.name));
    const told = new Set(notes.map((n) => n.instance_number));
    assert.ok(told.has(-1) || [0, 1, 2].every((n) => told.has(n)), 'the cluster hears about every instance');
    // the service itself stays, and can be removed without force now
    registry.removeService('j');
  });

  it('unknown jobs and instances are NotFoundError, and a failed removal changes nothing', () => {
    const { registry } = setup();
    assert.throws(() => registry.deployInstance('nope', 0, 'c1'), notFound);
    assert.throws(() => registry.removeInstance('nope', 0), notFound);
    assert.throws(() => registry.removeInstance('nope', -1), notFound);
    registry.deployService('j', svc('s'));
    const kept = registry.deployInstance('j', 0, 'c1');
    assert.throws(() => registry.removeInstance('j', 7), notFound);
    assert.deepEqual(registry.getJob('j')!.instances[0], kept);
    assert.equal(registry.resolveByIp(kept.ip.v4).id, 'j');
  });
});

describe('Registry.updateDeployStatus and the outbox', () => {
  it('records where instances run, canonically, with host_port as a number', () => {
    const { registry } = setup();
    registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    registry.deployInstance('j', 1, 'c1');
    registry.updateDeployStatus('j', [
      deployed(0, { namespace_ip_v6: 'FC00:0::2', worker_id: 'worker-1' }),
      deployed(1, { namespace_ip_v6: '<nil>', host_port: 50104 }),
    ]);
    const job = registry.getJob('j')!;
    assert.deepEqual(
      { ...job.instances[0], ip: undefined },
      {
        number: 0,
        clusterId: 'c1',
        ip: undefined,
        namespaceIp: '10.16.0.2',
        namespaceIpV6: 'fc00::2',
        hostIp: '192.168.1.10',
        hostPort: 50103,
        workerId: 'worker-1',
      },
    );
    assert.equal(job.instances[1]!.namespaceIpV6, undefined, "upstream's <nil> means no IPv6 address");
    assert.equal(job.instances[1]!.hostPort, 50104);
  });

  it('a bad report is refused as a whole: nothing recorded, nothing queued', () => {
    const { registry, notified } = setup();
    cluster(registry, 'c1');
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    registry.deployInstance('j', 1, 'c1');
    registry.resolveByName(job.name, 'c1');
    const before = registry.getJob('j');
    notified.length = 0;
    assert.throws(
      () => registry.updateDeployStatus('j', [deployed(0), deployed(1, { host_ip: 'nowhere' })]),
      invalid,
    );
    assert.throws(
      () => registry.updateDeployStatus('j', [deployed(0), deployed(1, { namespace_ip: '10.16.0.300' })]),
      invalid,
    );
    assert.throws(() => registry.updateDeployStatus('j', [deployed(0), deployed(9)]), notFound);
    assert.throws(() => registry.updateDeployStatus('nope', [deployed(0)]), notFound);
    assert.deepEqual(registry.getJob('j'), before);
    assert.equal(pending(registry, 'c1'), 0);
    assert.deepEqual(notified, []);
  });

  it('queues one DEPLOYMENT per interested cluster and instance, and calls the hook with those clusters', () => {
    const { registry, notified } = setup();
    for (const c of ['c1', 'c2', 'c3']) cluster(registry, c);
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    registry.deployInstance('j', 1, 'c3');
    registry.resolveByName(job.name, 'c1');
    registry.resolveByIp(job.rr.v4, 'c2');
    registry.updateDeployStatus('j', [deployed(0), deployed(1)]);
    assert.deepEqual(
      notified.map((n) => [...n].sort()),
      [['c1', 'c2']],
    );
    assert.equal(pending(registry, 'c1'), 2);
    assert.equal(pending(registry, 'c2'), 2);
    assert.equal(pending(registry, 'c3'), 0, 'hosting an instance is not interest');
    assert.deepEqual(registry.clustersWithPendingNotifications().sort(), ['c1', 'c2']);
    const expected: Notification[] = [
      { job_name: job.name, instance_number: 0, type: 'DEPLOYMENT' },
      { job_name: job.name, instance_number: 1, type: 'DEPLOYMENT' },
    ];
    assert.deepEqual(drain(registry, 'c1'), expected);
    assert.deepEqual(drain(registry, 'c2'), expected);
    assert.deepEqual(registry.clustersWithPendingNotifications(), []);
  });

  it('a newer notification for the same job and instance replaces the queued one', () => {
    const { registry } = setup();
    cluster(registry, 'c1');
    const a = registry.deployService('a', svc('a'));
    const b = registry.deployService('b', svc('b'));
    for (const id of ['a', 'b']) for (const n of [0, 1]) registry.deployInstance(id, n, 'c1');
    registry.resolveByName(a.name, 'c1');
    registry.resolveByName(b.name, 'c1');

    registry.updateDeployStatus('a', [deployed(0)]);
    registry.updateDeployStatus('b', [deployed(0)]);
    registry.updateDeployStatus('a', [deployed(1)]);
    registry.updateDeployStatus('a', [deployed(0, { host_ip: '192.168.1.11' })]); // a/0 again
    assert.equal(pending(registry, 'c1'), 3);
    registry.removeInstance('a', 1); // a/1 now undeployed
    assert.deepEqual(drain(registry, 'c1'), [
      { job_name: b.name, instance_number: 0, type: 'DEPLOYMENT' },
      { job_name: a.name, instance_number: 0, type: 'DEPLOYMENT' },
      { job_name: a.name, instance_number: 1, type: 'UNDEPLOYMENT' },
    ]);
  });

  it('a notification for a cluster stays queued until acked', () => {
    const { registry } = setup();
    cluster(registry, 'c1');
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    registry.resolveByName(job.name, 'c1');
    registry.updateDeployStatus('j', [deployed(0)]);
    const first = registry.nextNotification('c1');
    assert.deepEqual(registry.nextNotification('c1'), first, 'reading does not remove');
    registry.ackNotification(first!.key);
    assert.equal(registry.nextNotification('c1'), undefined);
    assert.equal(registry.nextNotification('unknown'), undefined);
  });
});
