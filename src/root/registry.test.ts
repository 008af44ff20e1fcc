import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { describe, it } from 'node:test';
import { IpAddress } from '../addressing/ip.ts';
import { AddressPlan, DEFAULT_ADDRESS_PLAN } from '../addressing/plan.ts';
import {
  AddressInUseError,
  AddressOutOfRangeError,
  AddressSpaceExhaustedError,
  ConflictError,
  InvalidInputError,
  NotFoundError,
} from '../errors.ts';
import type { DeployedInstance, DeploymentDescriptor } from '../protocol/root-api.ts';
import { MemoryStore } from '../store/memory.ts';
import { Registry, type JobRecord, type Notification } from './registry.ts';

// ---- helpers ---------------------------------------------------------------------------------------------

function setup(plan = new AddressPlan()) {
  const store = new MemoryStore();
  const registry = new Registry(store, plan);
  const notified: string[][] = [];
  registry.onNotify((clusters) => notified.push([...clusters]));
  return { store, registry, notified, plan };
}

/** A descriptor; extra may hold any other field, as upstream's descriptors do. */
function svc(
  service: string,
  extra: Partial<DeploymentDescriptor> & Record<string, unknown> = {},
): DeploymentDescriptor {
  return { app_name: 'shop', app_ns: 'prod', service_name: service, service_ns: 'web', ...extra };
}

function jobName(service: string): string {
  return `shop.prod.${service}.web`;
}

function cluster(registry: Registry, id: string): void {
  registry.registerCluster({ cluster_id: id, cluster_address: '127.0.0.1', cluster_port: 10110 });
}

function deployed(n: number, extra: Partial<DeployedInstance> = {}): DeployedInstance {
  return {
    instance_number: n,
    namespace_ip: `10.16.0.${2 + n}`,
    namespace_ip_v6: `fc00::${2 + n}`,
    host_ip: '192.168.1.10',
    host_port: '50103',
    ...extra,
  };
}

/** Every notification waiting for a cluster, oldest first, delivered (acked) as the notifier would. */
function drain(registry: Registry, clusterId: string): Notification[] {
  const out: Notification[] = [];
  for (let next = registry.nextNotification(clusterId); next; next = registry.nextNotification(clusterId)) {
    out.push(next.notification);
    registry.ackNotification(next.key);
  }
  return out;
}

/** Allocation counts of every pool. */
function usage(world: ReturnType<typeof setup>) {
  return world.store.transact((tx) => world.registry.addresses.usage(tx));
}

function pending(registry: Registry, clusterId: string): number {
  return registry.listClusters().find((c) => c.cluster_id === clusterId)?.pending_notifications ?? -1;
}

function inPrefix(prefix: string, address: string): boolean {
  const [net, len] = prefix.split('/') as [string, string];
  const type = net.includes(':') ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  list.addSubnet(net, Number(len), type);
  return (address.includes(':') ? 'ipv6' : 'ipv4') === type && list.check(address, type);
}

function isCode(type: new (...args: never[]) => Error, code: string) {
  return (err: unknown): boolean => err instanceof type && (err as { code?: string }).code === code;
}
const inUse = isCode(AddressInUseError, 'E_ADDRESS_IN_USE');
const outOfRange = isCode(AddressOutOfRangeError, 'E_ADDRESS_OUT_OF_RANGE');
const invalid = isCode(InvalidInputError, 'E_INVALID_INPUT');
const notFound = isCode(NotFoundError, 'E_NOT_FOUND');
const conflict = isCode(ConflictError, 'E_CONFLICT');
function exhausted(pool: string) {
  return (err: unknown): boolean =>
    err instanceof AddressSpaceExhaustedError &&
    err.code === 'E_ADDRESS_SPACE_EXHAUSTED' &&
    err.pool === pool;
}

function serviceAddresses(job: JobRecord): string[] {
  return [job.rr.v4, job.rr.v6, job.closest.v4, job.closest.v6];
}

function allAddresses(job: JobRecord): string[] {
  return [...serviceAddresses(job), ...Object.values(job.instances).flatMap((i) => [i.ip.v4, i.ip.v6])];
}

/** A plan whose ServiceIP pools are tiny: 14 IPv4 addresses, 7 per IPv6 policy block. */
function tinyPlan(): AddressPlan {
  return new AddressPlan({
    serviceRangeV4: '10.30.0.0/28',
    instanceRangeV6: 'fdff::/125',
    closestRangeV6: 'fdff:1000::/125',
    rrRangeV6: 'fdff:2000::/125',
  });
}

// ---- services ----------------------------------------------------------------------------------------------

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

// ---- instances ---------------------------------------------------------------------------------------------

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

// ---- resolution and interests ------------------------------------------------------------------------------

describe('Registry resolution and interests', () => {
  it('resolves by name and by every address of the job (RR, Closest, instance; both families)', () => {
    const { registry } = setup();
    cluster(registry, 'c1');
    cluster(registry, 'c2');
    registry.deployService('other', svc('other'));
    const job = registry.deployService('j', svc('target'));
    const inst = registry.deployInstance('j', 0, 'c1');
    assert.equal(registry.resolveByName(job.name).id, 'j');
    assert.deepEqual(registry.interestedClusters(job.name), [], 'no cluster named, no interest');
    for (const a of [...serviceAddresses(job), inst.ip.v4, inst.ip.v6]) {
      assert.equal(registry.resolveByIp(a).id, 'j', a);
    }
    // any spelling of an IPv6 address
    const expanded = IpAddress.parse(job.rr.v6).toBytes();
    const groups = Array.from({ length: 8 }, (_, i) =>
      ((expanded[2 * i]! << 8) | expanded[2 * i + 1]!).toString(16).toUpperCase().padStart(4, '0'),
    );
    assert.equal(registry.resolveByIp(groups.join(':')).id, 'j');

    registry.resolveByName(job.name, 'c1');
    registry.resolveByIp(inst.ip.v6, 'c2');
    assert.deepEqual(registry.interestedClusters(job.name).sort(), ['c1', 'c2']);
    assert.deepEqual(registry.interestedClusters(jobName('other')), []);
  });

  it('an unknown cluster is a NotFoundError and registers nothing', () => {
    const { registry } = setup();
    const job = registry.deployService('j', svc('s'));
    assert.throws(() => registry.resolveByName(job.name, 'ghost'), notFound);
    assert.throws(() => registry.resolveByIp(job.rr.v4, 'ghost'), notFound);
    assert.deepEqual(registry.interestedClusters(job.name), []);
    assert.throws(() => registry.removeInterest(job.name, 'ghost'), notFound);
  });

  it('unknown names and addresses are NotFoundError; text that is no address is InvalidInputError', () => {
    const { registry } = setup();
    registry.deployService('j', svc('s'));
    assert.throws(() => registry.resolveByName(jobName('missing')), notFound);
    assert.throws(() => registry.resolveByIp('10.30.200.200'), notFound);
    assert.throws(() => registry.resolveByIp('fdff:2000::ffff'), notFound);
    assert.throws(() => registry.resolveByIp('10.30.0'), invalid);
    assert.throws(() => registry.resolveByIp(''), invalid);
  });

  it('removeInterest stops the notifications to that cluster', () => {
    const { registry } = setup();
    cluster(registry, 'c1');
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    registry.resolveByName(job.name, 'c1');
    registry.removeInterest(job.name, 'c1');
    assert.deepEqual(registry.interestedClusters(job.name), []);
    registry.updateDeployStatus('j', [deployed(0)]);
    assert.equal(pending(registry, 'c1'), 0);
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

// ---- clusters ----------------------------------------------------------------------------------------------

describe('Registry clusters', () => {
  it('registers, re-registers (new address and port) and reports delivery status', () => {
    const { registry } = setup();
    const first = registry.registerCluster({
      cluster_id: 'c1',
      cluster_address: '10.0.0.1',
      cluster_port: '10110',
    });
    assert.equal(first.port, 10110);
    assert.equal(first.status, 'ACTIVE');
    registry.setClusterStatus('c1', 'ERROR', 'notification failed: HTTP 503');
    assert.deepEqual(registry.listClusters(), [
      {
        cluster_id: 'c1',
        cluster_address: '10.0.0.1',
        cluster_port: 10110,
        status: 'ERROR',
        pending_notifications: 0,
        last_error: 'notification failed: HTTP 503',
      },
    ]);
    registry.setClusterStatus('c1', 'ACTIVE');
    assert.equal(registry.listClusters()[0]!.last_error, undefined);
    registry.setClusterStatus('c1', 'ERROR', 'again');
    const moved = registry.registerCluster({
      cluster_id: 'c1',
      cluster_address: 'fd00::1',
      cluster_port: 20110,
    });
    assert.equal(moved.registeredAt, first.registeredAt);
    assert.deepEqual(registry.getCluster('c1'), moved);
    assert.equal(moved.status, 'ACTIVE');
    assert.equal(registry.listClusters()[0]!.last_error, undefined);
    registry.setClusterStatus('ghost', 'ERROR', 'x');
    assert.equal(registry.getCluster('ghost'), undefined);
  });
});

// ---- worker subnetworks --------------------------------------------------------------------------------------

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

// ---- available addresses -------------------------------------------------------------------------------------

describe('Registry.availableIps', () => {
  it('returns unreserved addresses of the shared IPv4 pool and the IPv6 instance block, without reserving', () => {
    const { registry } = setup();
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    const used = new Set(allAddresses(registry.getJob('j')!));
    const list = registry.availableIps(3);
    assert.deepEqual(registry.availableIps(3), list, 'asking again gives the same answer');
    assert.equal(list.filter((e) => e.IpType === 'IPv4').length, 3);
    assert.equal(list.filter((e) => e.IpType === 'IPv6').length, 3);
    for (const e of list) {
      if (e.IpType === 'IPv4') {
        assert.equal(e.Address_v6, null);
        assert.ok(e.Address !== null && inPrefix('10.30.0.0/16', e.Address) && !used.has(e.Address));
      } else {
        assert.equal(e.Address, null);
        assert.ok(e.Address_v6 !== null && inPrefix('fdff::/20', e.Address_v6) && !used.has(e.Address_v6));
      }
    }
    assert.ok(registry.availableIps(2, 4).every((e) => e.IpType === 'IPv4'));
    assert.ok(registry.availableIps(2, 6).every((e) => e.IpType === 'IPv6'));
    // an address offered is usable as a chosen address
    const offered = list.find((e) => e.IpType === 'IPv4')!.Address!;
    assert.equal(registry.deployService('k', svc('k', { RR_ip: offered })).rr.v4, offered);
    assert.ok(!registry.availableIps(3, 4).some((e) => e.Address === offered));
    assert.equal(job.name, jobName('s'));
  });
});

// ---- wire views ----------------------------------------------------------------------------------------------

describe('Registry.toDocument and toNetinfo', () => {
  it("uses upstream's field names, with instances sorted and optional fields only when known", () => {
    const { registry } = setup();
    registry.deployService('64a0c0ffee0000000000beef', svc('doc', { extra_field: { nested: [1, 2] } }));
    registry.deployInstance('64a0c0ffee0000000000beef', 1, 'c2');
    registry.deployInstance('64a0c0ffee0000000000beef', 0, 'c1');
    registry.updateDeployStatus('64a0c0ffee0000000000beef', [deployed(1)]);
    const job = registry.getJob('64a0c0ffee0000000000beef')!;
    const doc = Registry.toDocument(job);

    assert.equal(doc._id, job.id);
    assert.equal(doc.job_name, 'shop.prod.doc.web');
    const spread = doc as Record<string, unknown>;
    assert.equal(spread.app_name, 'shop', 'descriptor fields are spread in');
    assert.deepEqual(spread.extra_field, { nested: [1, 2] });
    assert.deepEqual(doc.service_ip_list, [
      { IpType: 'RR', Address: job.rr.v4, Address_v6: job.rr.v6 },
      { IpType: 'Closest', Address: job.closest.v4, Address_v6: job.closest.v6 },
    ]);
    assert.deepEqual(
      doc.instance_list.map((i) => i.instance_number),
      [0, 1],
    );
    const [i0, i1] = doc.instance_list as [(typeof doc.instance_list)[0], (typeof doc.instance_list)[0]];
    assert.deepEqual(Object.keys(i0).sort(), [
      'cluster_id',
      'instance_ip',
      'instance_ip_v6',
      'instance_number',
    ]);
    assert.deepEqual(i0, {
      instance_number: 0,
      instance_ip: job.instances[0]!.ip.v4,
      instance_ip_v6: job.instances[0]!.ip.v6,
      cluster_id: 'c1',
    });
    assert.equal(i1.namespace_ip, '10.16.0.3');
    assert.equal(i1.namespace_ip_v6, 'fc00::3');
    assert.equal(i1.host_ip, '192.168.1.10');
    assert.equal(i1.host_port, 50103);
    assert.equal(typeof i1.host_port, 'number');
    assert.deepEqual(JSON.parse(JSON.stringify(doc)), doc, 'the document is plain JSON');
  });

  it("the job's identity wins over same-named descriptor fields", () => {
    const { registry } = setup();
    const job = registry.deployService(
      'real',
      svc('id', { _id: 'fake', job_name: 'fake', instance_list: [] }),
    );
    registry.deployInstance('real', 0, 'c1');
    const doc = Registry.toDocument(registry.getJob('real')!);
    assert.equal(doc._id, 'real');
    assert.equal(doc.job_name, job.name);
    assert.equal(doc.instance_list.length, 1);
  });

  it('the public netinfo view splits the job name', () => {
    const { registry } = setup();
    const job = registry.deployService('n', svc('info'));
    registry.deployInstance('n', 0, 'c1');
    const info = Registry.toNetinfo(registry.getJob('n')!);
    assert.deepEqual(
      { app: info.app_name, appNs: info.app_ns, svc: info.service_name, svcNs: info.service_ns },
      { app: 'shop', appNs: 'prod', svc: 'info', svcNs: 'web' },
    );
    assert.equal(info.job_name, job.name);
    assert.equal(info.system_job_id, 'n');
    assert.deepEqual(info.service_ip_list, Registry.toDocument(job).service_ip_list);
    assert.deepEqual(Object.keys(info.instance_list[0]!).sort(), [
      'cluster_id',
      'instance_ip',
      'instance_ip_v6',
      'instance_number',
    ]);
  });
});
