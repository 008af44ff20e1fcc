import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpoint } from '../tunnel/tunnel.ts';
import { type AddressTarget, type Instance, ServiceSnapshot } from '../snapshot.ts';
import { Closest, createPolicies, InstancePolicy, RoundRobin } from './policy.ts';

function inst(job: string, n: number, local = false, cluster = 'c1'): Instance {
  return {
    job,
    number: n,
    nsip4: Uint8Array.of(10, 18, 0, 2 + n),
    nsip6: null,
    instanceIp4: Uint8Array.of(10, 30, 1, n),
    instanceIp6: null,
    endpoint: endpoint('10.255.0.1', 50103),
    key: null,
    local,
    cluster,
  };
}

const rr = (job: string, instances: Instance[]): AddressTarget => ({
  kind: 'rr',
  service: { job, instances },
});
const ctx = { cluster: 'c1', rtt: () => undefined };

describe('RoundRobin', () => {
  it('gives each new flow the next instance, per job', () => {
    const policy = new RoundRobin();
    const a = [inst('a.a.a.a', 0), inst('a.a.a.a', 1), inst('a.a.a.a', 2)];
    const b = [inst('b.b.b.b', 0), inst('b.b.b.b', 1)];
    const picks = [];
    for (let i = 0; i < 7; i++) {
      picks.push(policy.choose(rr('a.a.a.a', a))?.number);
      if (i < 3) policy.choose(rr('b.b.b.b', b)); // another job does not move a's cursor
    }
    assert.deepEqual(picks, [0, 1, 2, 0, 1, 2, 0]);
    assert.equal(policy.choose(rr('b.b.b.b', b))?.number, 1);
  });

  it('follows the live list when it shrinks and returns nothing for no instances', () => {
    const policy = new RoundRobin();
    const all = [inst('a.a.a.a', 0), inst('a.a.a.a', 1)];
    assert.equal(policy.choose(rr('a.a.a.a', all))?.number, 0);
    const one = [all[1]!];
    for (let i = 0; i < 3; i++) assert.equal(policy.choose(rr('a.a.a.a', one))?.number, 1);
    assert.equal(policy.choose(rr('a.a.a.a', [])), undefined);
  });
});

describe('Closest', () => {
  it('prefers local instances, then this cluster, then any, round robin within each group', () => {
    const policy = new Closest(new RoundRobin());
    const job = 's.s.s.s';
    const remoteOther = inst(job, 0, false, 'c2');
    const remoteSame = inst(job, 1, false, 'c1');
    const local1 = inst(job, 2, true);
    const local2 = inst(job, 3, true);
    const closest = (instances: Instance[]) =>
      policy.choose({ kind: 'closest', service: { job, instances } }, ctx)?.number;
    const all = [remoteOther, remoteSame, local1, local2];
    assert.deepEqual([closest(all), closest(all), closest(all)], [2, 3, 2]);
    assert.deepEqual([closest([remoteOther, remoteSame]), closest([remoteOther, remoteSame])], [1, 1]);
    const other = [remoteOther, inst(job, 4, false, 'c3')];
    assert.deepEqual([closest(other), closest(other)], [0, 4]);
    assert.equal(closest([]), undefined);
  });
});

describe('Closest by measured round-trip time', () => {
  const job = 'm.m.m.m';
  const a = inst(job, 0, false, 'c1');
  const b = inst(job, 1, false, 'c1');
  const c = inst(job, 2, false, 'c2');
  const rtts = new Map<Instance, number | undefined>();
  const measured = { cluster: 'c1', rtt: (i: Instance) => rtts.get(i) };
  const pick = (policy: Closest, instances = [a, b, c]) =>
    policy.choose({ kind: 'closest', service: { job, instances } }, measured)?.number;

  it('goes to the lowest RTT, even in another cluster', () => {
    const policy = new Closest(new RoundRobin());
    rtts.set(a, 40).set(b, 42).set(c, 2);
    assert.deepEqual([pick(policy), pick(policy), pick(policy)], [2, 2, 2]);
  });

  it('shares flows round robin among near-equal instances (within 20% + 1 ms of the best)', () => {
    const policy = new Closest(new RoundRobin());
    rtts.set(a, 10).set(b, 11.5).set(c, 40);
    const picks = Array.from({ length: 6 }, () => pick(policy));
    assert.deepEqual(picks, [0, 1, 0, 1, 0, 1]);
  });

  it('keeps its choice while it stays near the best (hysteresis), and moves when it clearly is not', () => {
    const policy = new Closest(new RoundRobin());
    rtts.set(a, 10).set(b, 30).set(c, 30);
    assert.equal(pick(policy), 0);
    rtts.set(a, 13).set(b, 9); // a within 50% + 2 ms of the best: stays
    assert.deepEqual([pick(policy), pick(policy)], [0, 0]);
    rtts.set(a, 40).set(b, 2); // a far off (the latencies swapped): moves
    assert.deepEqual([pick(policy), pick(policy)], [1, 1]);
  });

  it('ignores unmeasured instances once some are measured, and falls back to topology before', () => {
    const policy = new Closest(new RoundRobin());
    rtts.clear();
    assert.deepEqual([pick(policy), pick(policy)], [0, 1], 'no RTT yet: this cluster (a, b) round robin');
    rtts.set(c, 5);
    assert.deepEqual([pick(policy), pick(policy)], [2, 2], 'the only measured one');
  });
});

describe('InstancePolicy', () => {
  it('names exactly the instance, while it is in the table', () => {
    const policy = new InstancePolicy();
    const x = inst('s.s.s.s', 1);
    const service = { job: 's.s.s.s', instances: [inst('s.s.s.s', 0), x] };
    const ip = x.instanceIp4!;
    const before = new ServiceSnapshot({
      generation: 1,
      localSubnets: [],
      cluster: 'c1',
      services: [{ service, addresses: [{ kind: 'instance', address: ip, instance: x }] }],
    });
    const target = before.target(ip, 0, 4);
    assert.ok(target);
    assert.equal(policy.choose(target), x);
    // x left: the next snapshot has no target for its address, so nothing is chosen for it
    const after = new ServiceSnapshot({
      generation: 2,
      localSubnets: [],
      cluster: 'c1',
      services: [{ service: { job: 's.s.s.s', instances: [service.instances[0]!] }, addresses: [] }],
    });
    assert.equal(after.target(ip, 0, 4), undefined);
    assert.equal(policy.choose({ kind: 'instance', service: target.service }), undefined);
  });
});

describe('createPolicies', () => {
  it('maps each address kind to its policy', () => {
    const p = createPolicies();
    assert.ok(p.rr instanceof RoundRobin);
    assert.ok(p.closest instanceof Closest);
    assert.ok(p.instance instanceof InstancePolicy);
  });
});
