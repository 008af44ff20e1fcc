/** Registry services (services.ts): deploying a job with its ServiceIPs, and removing it. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpAddress } from '../addressing/ip.ts';
import { DEFAULT_ADDRESS_PLAN } from '../addressing/plan.ts';
import type { DeploymentDescriptor } from '../protocol/root-api.ts';
import {
  allAddresses,
  cluster,
  conflict,
  deployed,
  drain,
  exhausted,
  inPrefix,
  invalid,
  inUse,
  jobName,
  notFound,
  outOfRange,
  serviceAddresses,
  setup,
  svc,
  tinyPlan,
  usage,
} from './registry.fixtures.ts';

describe('Registry.deployService', () => {
  it('allocates RR and Closest in both families from their ranges, and instance IPs from theirs', () => {
    const { registry } = setup();
    const d = DEFAULT_ADDRESS_PLAN;
    const seen: string[] = [];
    for (let s = 0; s < 5; s++) {
      const job = registry.deployService(`job${s}`, svc(`svc${s}`));
      assert.equal(job.name, jobName(`svc${s}`));
      for (let n = 0; n < 3; n++) registry.deployInstance(`job${s}`, n, 'c1');
      const full = registry.getJob(`job${s}`)!;
      for (const v4 of [full.rr.v4, full.closest.v4]) {
        assert.ok(inPrefix(d.serviceRangeV4, v4), `${v4} in ${d.serviceRangeV4}`);
      }
      assert.ok(inPrefix(d.rrRangeV6, full.rr.v6), `RR ${full.rr.v6} in ${d.rrRangeV6}`);
      assert.ok(
        inPrefix(d.closestRangeV6, full.closest.v6),
        `Closest ${full.closest.v6} in ${d.closestRangeV6}`,
      );
      assert.equal(Object.keys(full.instances).length, 3);
      for (const inst of Object.values(full.instances)) {
        assert.ok(inPrefix(d.serviceRangeV4, inst.ip.v4), `instance ${inst.ip.v4} in the shared IPv4 pool`);
        assert.ok(inPrefix(d.instanceRangeV6, inst.ip.v6), `instance ${inst.ip.v6} in ${d.instanceRangeV6}`);
        assert.equal(inst.clusterId, 'c1');
      }
      seen.push(...allAddresses(full));
    }
    assert.equal(new Set(seen).size, seen.length, 'every address is distinct across services and instances');
    for (const a of seen) {
      assert.equal(IpAddress.parse(a).toString(), a, `${a} is canonical`);
      assert.notEqual(a, '10.30.0.0');
      assert.notEqual(a, '10.30.255.255');
    }
  });

  it('can be read back by id and by name, and lists every job', () => {
    const { registry } = setup();
    const a = registry.deployService('a1', svc('alpha'));
    const b = registry.deployService('b1', svc('beta', { microservice_name: 'ignored' }));
    assert.deepEqual(registry.getJob('a1'), a);
    assert.deepEqual(registry.getJobByName(jobName('beta')), b);
    assert.equal(registry.getJob('nope'), undefined);
    assert.equal(registry.getJobByName(jobName('nope')), undefined);
    assert.deepEqual(
      registry
        .listJobs()
        .map((j) => j.id)
        .sort(),
      ['a1', 'b1'],
    );
  });

  it("accepts upstream's microservice_name / microservice_namespace", () => {
    const { registry } = setup();
    const job = registry.deployService('m1', {
      app_name: 'shop',
      app_ns: 'prod',
      microservice_name: 'cart',
      microservice_namespace: 'web',
    });
    assert.equal(job.name, 'shop.prod.cart.web');
  });

  it('refuses descriptors without a valid job name', () => {
    const { registry } = setup();
    assert.throws(() => registry.deployService('x', { app_name: 'shop', app_ns: 'prod' }), invalid);
    assert.throws(() => registry.deployService('x', svc('with-dash')), invalid);
    assert.throws(() => registry.deployService('x', svc('a'.repeat(31))), invalid);
    assert.deepEqual(registry.listJobs(), []);
  });

  it('takes user-chosen addresses that are in range and free (any spelling, stored canonically)', () => {
    const { registry } = setup();
    const job = registry.deployService(
      'j1',
      svc('chosen', {
        RR_ip: '10.30.7.7',
        RR_ip_v6: 'FDFF:2000:0:0::0042',
        closest_ip: '10.30.7.8',
        closest_ip_v6: 'fdff:1000::abc',
      }),
    );
    assert.deepEqual(job.rr, { v4: '10.30.7.7', v6: 'fdff:2000::42' });
    assert.deepEqual(job.closest, { v4: '10.30.7.8', v6: 'fdff:1000::abc' });
    assert.equal(registry.resolveByIp('fdff:2000::42').id, 'j1');
    // empty strings mean "no choice", as upstream sends them
    const auto = registry.deployService('j2', svc('auto', { RR_ip: '', RR_ip_v6: '' }));
    assert.ok(inPrefix('10.30.0.0/16', auto.rr.v4));
    assert.ok(inPrefix('fdff:2000::/21', auto.rr.v6));
  });

  it('a user-chosen address held by a service or an instance gives AddressInUseError', () => {
    const { registry } = setup();
    const first = registry.deployService('j1', svc('first'));
    const inst = registry.deployInstance('j1', 0, 'c1');
    const attempts: Array<Partial<DeploymentDescriptor>> = [
      { RR_ip: first.rr.v4 },
      { RR_ip: first.closest.v4 },
      { closest_ip: first.rr.v4 },
      { RR_ip: inst.ip.v4 },
      { RR_ip_v6: first.rr.v6 },
      { closest_ip_v6: first.closest.v6 },
      // two roles of one descriptor asking for the same address
      { RR_ip: '10.30.9.9', closest_ip: '10.30.9.9' },
    ];
    for (const extra of attempts) {
      assert.throws(() => registry.deployService('j2', svc('second', extra)), inUse, JSON.stringify(extra));
    }
    assert.throws(
      () => registry.deployService('j2', svc('second', { RR_ip: first.rr.v4 })),
      (err: unknown) => inUse(err) && (err as Error).message.includes(first.rr.v4),
    );
  });

  it('a user-chosen address outside its range (or reserved) gives AddressOutOfRangeError', () => {
    const { registry } = setup();
    const attempts: Array<Partial<DeploymentDescriptor>> = [
      { RR_ip: '10.31.0.1' },
      { RR_ip: '10.16.0.5' },
      { RR_ip: '10.30.0.0' }, // network address of the range
      { RR_ip: '10.30.255.255' }, // broadcast address of the range
      { closest_ip: '192.168.0.1' },
      { RR_ip_v6: 'fdff:1000::5' }, // the Closest block
      { RR_ip_v6: 'fdff::5' }, // the instance block
      { RR_ip_v6: 'fdff:2000::' }, // first address of the RR block
      { RR_ip_v6: 'fc00::1' },
      { closest_ip_v6: 'fdff:2000::5' },
    ];
    for (const extra of attempts) {
      assert.throws(() => registry.deployService('j', svc('s', extra)), outOfRange, JSON.stringify(extra));
    }
  });

  it('a user-chosen address of the wrong family or no address at all gives InvalidInputError', () => {
    const { registry } = setup();
    const attempts: Array<Partial<DeploymentDescriptor>> = [
      { RR_ip: 'fdff:2000::5' },
      { RR_ip_v6: '10.30.0.5' },
      { closest_ip: 'fdff:1000::5' },
      { closest_ip_v6: '10.30.0.6' },
      { RR_ip: 'banana' },
      { RR_ip: '10.30.0.05' },
      { RR_ip_v6: 'fdff:2000::5%eth0' },
    ];
    for (const extra of attempts) {
      const [field] = Object.keys(extra) as [string];
      assert.throws(
        () => registry.deployService('j', svc('s', extra)),
        (err: unknown) => invalid(err) && (err as Error).message.includes(field),
        `${JSON.stringify(extra)}: the message names ${field}`,
      );
    }
  });

  it('a failed deploy leaves no allocation behind: the next service gets what it would have got', () => {
    // `twin` sees only the successful calls; `subject` also sees the failing ones
    const subjectWorld = setup();
    const twinWorld = setup();
    const subject = subjectWorld.registry;
    const twin = twinWorld.registry;
    for (const r of [subject, twin]) r.deployService('base', svc('base'));
    const base = subject.getJob('base')!;
    const failing: Array<[Partial<DeploymentDescriptor>, (err: unknown) => boolean]> = [
      [{ RR_ip: '10.30.0.50', RR_ip_v6: base.rr.v6 }, inUse],
      [{ RR_ip: '10.30.0.50', closest_ip: base.rr.v4 }, inUse],
      [{ RR_ip: '10.30.0.50', RR_ip_v6: 'fdff:2000::50', closest_ip_v6: 'fc00::1' }, outOfRange],
      [{ RR_ip: '10.30.0.50', closest_ip_v6: '10.30.0.51' }, invalid],
    ];
    for (const [extra, check] of failing) {
      assert.throws(
        () => subject.deployService('failed', svc('failed', extra)),
        check,
        JSON.stringify(extra),
      );
    }
    assert.equal(subject.getJob('failed'), undefined);
    assert.equal(subject.getJobByName(jobName('failed')), undefined);
    assert.throws(() => subject.resolveByIp('10.30.0.50'), notFound);
    assert.deepEqual(usage(subjectWorld), usage(twinWorld));

    const next = subject.deployService('next', svc('next'));
    const expected = twin.deployService('next', svc('next'));
    assert.deepEqual(next.rr, expected.rr);
    assert.deepEqual(next.closest, expected.closest);
    // the address the failed deploys asked for is still free, and the failed name and id are usable
    const chosen = subject.deployService(
      'failed',
      svc('failed', { RR_ip: '10.30.0.50', RR_ip_v6: 'fdff:2000::50' }),
    );
    assert.deepEqual(chosen.rr, { v4: '10.30.0.50', v6: 'fdff:2000::50' });
  });

  it('the same _id and name again is a no-op returning the job', () => {
    const { registry } = setup();
    const first = registry.deployService('j1', svc('same'));
    const again = registry.deployService('j1', svc('same', { RR_ip: '10.30.1.1' }));
    assert.deepEqual(again, first);
    assert.equal(registry.listJobs().length, 1);
    const third = registry.deployService('j2', svc('other'));
    const fresh = setup().registry;
    fresh.deployService('j1', svc('same'));
    assert.deepEqual(third.rr, fresh.deployService('j2', svc('other')).rr, 'the no-op allocated nothing');
  });

  it('the same name under another _id, or another name under the same _id, is a ConflictError', () => {
    const { registry } = setup();
    registry.deployService('j1', svc('taken'));
    assert.throws(() => registry.deployService('j2', svc('taken')), conflict);
    assert.throws(() => registry.deployService('j1', svc('renamed')), conflict);
    assert.equal(registry.getJob('j2'), undefined);
    assert.equal(registry.getJobByName(jobName('renamed')), undefined);
  });
});

describe('Registry.removeService', () => {
  it('releases all four ServiceIPs: they come back once the fresh space is used up', () => {
    const { registry } = setup(tinyPlan());
    // 14 IPv4 addresses and 7 per IPv6 block: 7 services use every pool up
    const jobs = Array.from({ length: 7 }, (_, i) => registry.deployService(`j${i}`, svc(`s${i}`)));
    assert.equal(new Set(jobs.flatMap(serviceAddresses)).size, 28);
    assert.throws(() => registry.deployService('j7', svc('s7')), exhausted('service-v4'));

    registry.removeService('j3');
    assert.equal(registry.getJob('j3'), undefined);
    for (const a of serviceAddresses(jobs[3]!)) assert.throws(() => registry.resolveByIp(a), notFound, a);
    const reborn = registry.deployService('j7', svc('s7'));
    assert.deepEqual(serviceAddresses(reborn), serviceAddresses(jobs[3]!));
    assert.throws(() => registry.deployService('j8', svc('s8')), exhausted('service-v4'));
  });

  it('released ServiceIPs rest while fresh ones exist', () => {
    const { registry } = setup(tinyPlan());
    const a = registry.deployService('a', svc('a'));
    registry.deployService('b', svc('b'));
    registry.removeService('a');
    const c = registry.deployService('c', svc('c'));
    for (const addr of serviceAddresses(c)) assert.ok(!serviceAddresses(a).includes(addr), addr);
  });

  it('refuses while instances exist, changing nothing; force removes them and releases their IPs', () => {
    const world = setup(tinyPlan());
    const { registry } = world;
    const job = registry.deployService('j', svc('busy'));
    const inst = registry.deployInstance('j', 0, 'c1');
    assert.throws(
      () => registry.removeService('j'),
      (err: unknown) => conflict(err) && (err as Error).message.includes(job.name),
    );
    assert.deepEqual(registry.getJob('j'), { ...job, instances: { 0: inst } });
    assert.equal(registry.resolveByIp(inst.ip.v4).id, 'j');

    registry.removeService('j', true);
    assert.equal(registry.getJob('j'), undefined);
    assert.throws(() => registry.resolveByName(job.name), notFound);
    for (const a of [...serviceAddresses(job), inst.ip.v4, inst.ip.v6]) {
      assert.throws(() => registry.resolveByIp(a), notFound, a);
    }
    for (const [pool, { used }] of Object.entries(usage(world))) assert.equal(used, 0, pool);
    // the name is free again
    assert.equal(registry.deployService('j2', svc('busy')).name, job.name);
  });

  it('tells interested clusters once with UNDEPLOYMENT of every instance (-1), and forgets the interests', () => {
    const { registry, notified } = setup();
    cluster(registry, 'c1');
    cluster(registry, 'c2');
    registry.deployService('j', svc('gone'));
    registry.deployInstance('j', 0, 'c1');
    registry.deployInstance('j', 1, 'c1');
    registry.resolveByName(jobName('gone'), 'c1');
    registry.updateDeployStatus('j', [deployed(0), deployed(1)]);
    notified.length = 0;
    registry.removeService('j', true);
    assert.deepEqual(notified, [['c1']]);
    assert.deepEqual(drain(registry, 'c1'), [
      { job_name: jobName('gone'), instance_number: -1, type: 'UNDEPLOYMENT' },
    ]);
    assert.deepEqual(drain(registry, 'c2'), []);
    assert.deepEqual(registry.interestedClusters(jobName('gone')), []);
  });

  it('an unknown job is a NotFoundError', () => {
    const { registry } = setup();
    assert.throws(() => registry.removeService('nope'), notFound);
    assert.throws(() => registry.removeService('nope', true), notFound);
  });
});
