import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Cidr } from '../addressing/cidr.ts';
import { IpAddress } from '../addressing/ip.ts';
import { addressKey, type ServiceSnapshot } from '../dataplane/snapshot.ts';
import { IP_TYPE, type TableInstance } from '../protocol/mqtt.ts';
import { ServiceTable } from './service-table.ts';

const JOB = 'app.ns.web.ns';
const ME = { workerId: '64a000000000000000000001', hostIp: '10.255.0.1', hostPort: 50103 };
const b = (s: string) => IpAddress.parse(s).toBytes();

function entry(n: number, worker: string, host: string): TableInstance {
  return {
    instance_number: n,
    instance_ip: `10.30.1.${n}`,
    instance_ip_v6: `fdff::1:${n}`,
    namespace_ip: `10.16.0.${2 + n}`,
    namespace_ip_v6: `fc00::${2 + n}`,
    host_ip: host,
    host_port: 50103,
    worker_id: worker,
    cluster_id: 'c7',
    service_ip: [
      { IpType: IP_TYPE.roundRobin, Address: '10.30.0.1', Address_v6: 'fdff:2000::1' },
      { IpType: IP_TYPE.instance, Address: `10.30.1.${n}`, Address_v6: `fdff::1:${n}` },
    ],
  };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('ServiceTable', () => {
  it('makes one snapshot per turn of the event loop, with the next generation, for its listeners', async () => {
    const table = new ServiceTable();
    const seen: ServiceSnapshot[] = [];
    table.onChange((s) => seen.push(s));
    table.setIdentity({ ...ME, subnets: [Cidr.parse('10.16.0.0/26')] });
    table.apply(JOB, [entry(0, ME.workerId, ME.hostIp)]);
    table.apply(JOB, [entry(0, ME.workerId, ME.hostIp), entry(1, 'other', '10.255.0.2')]);
    await turn();
    assert.equal(seen.length, 1, 'three changes in one turn: one snapshot');
    const s = seen[0]!;
    assert.equal(s, table.snapshot(), 'the same snapshot until the next change');
    assert.equal(s.generation, 1);
    assert.deepEqual(
      s.localSubnets.map((c) => c.toString()),
      ['10.16.0.0/26'],
    );
    assert.equal(s.cluster, 'c7', "the node's cluster, from its own instances");
    assert.equal(s.target(b('10.30.0.1'), 0, 4)?.service.instances.length, 2);
    assert.equal(s.localByNamespace(b('10.16.0.2'), 0, 4)?.number, 0);
    assert.equal(s.localByNamespace(b('10.16.0.3'), 0, 4), undefined, 'instance 1 runs elsewhere');
    table.remove(JOB);
    await turn();
    assert.equal(seen.length, 2);
    assert.equal(seen[1]!.generation, 2);
    assert.equal(seen[1]!.target(b('10.30.0.1'), 0, 4), undefined);
  });

  it('keeps an instance record while nothing about it changes, and replaces it when something does', () => {
    const table = new ServiceTable();
    table.setIdentity({ ...ME, subnets: [] });
    table.apply(JOB, [entry(0, 'w2', '10.255.0.2'), entry(1, 'w3', '10.255.0.3')]);
    const [x0, x1] = table.snapshot().services[0]!.instances;
    table.apply(JOB, [entry(1, 'w3', '10.255.0.3'), entry(0, 'w2', '10.255.0.9')]);
    const after = table.snapshot();
    assert.ok(after.has(x1!), 'unchanged: the same record (flows stay on it)');
    assert.ok(!after.has(x0!), "moved to another node's address: a new record");
    assert.deepEqual(
      after.services[0]!.instances.map((i) => i.number),
      [0, 1],
      'in order of their numbers',
    );
  });

  it('re-classifies instances as local when it learns who it is', () => {
    const table = new ServiceTable();
    table.apply(JOB, [entry(0, ME.workerId, ME.hostIp)]);
    assert.equal(table.snapshot().localByNamespace(b('10.16.0.2'), 0, 4), undefined, 'nobody is local yet');
    table.setIdentity({ ...ME, subnets: [] });
    assert.equal(table.snapshot().localByNamespace(b('10.16.0.2'), 0, 4)?.local, true);
  });

  it('skips invalid instances of an answer, keeps the valid ones', () => {
    const table = new ServiceTable();
    table.apply(JOB, [
      { instance_number: 'x' },
      { ...entry(1, 'w2', '10.255.0.2'), namespace_ip: 'nonsense' },
      entry(2, 'w2', '10.255.0.2'),
      null,
    ]);
    assert.deepEqual(
      table.instancesOf(JOB).map((i) => i.number),
      [2],
    );
    table.apply('not a job name', [entry(0, 'w2', '10.255.0.2')]);
    assert.deepEqual(table.jobNames(), [JOB]);
  });

  it('carries negative answers into its snapshots for a while, tagged with the generation that first carried them', () => {
    let now = 1_000_000;
    const table = new ServiceTable(undefined, () => now);
    table.markUnknown(IpAddress.parse('10.30.9.9'));
    const s = table.snapshot();
    assert.equal(s.unknownSinceGeneration(addressKey(b('10.30.9.9'), 0, 4)), s.generation);
    now += 11_000;
    table.apply(JOB, [entry(0, 'w2', '10.255.0.2')]);
    assert.equal(
      table.snapshot().unknownSinceGeneration(addressKey(b('10.30.9.9'), 0, 4)),
      undefined,
      'forgotten after 10 s',
    );
  });

  it('whenLocal resolves when the own entry arrives, or false at its deadline', async () => {
    const table = new ServiceTable();
    table.setIdentity({ ...ME, subnets: [] });
    const waiting = table.whenLocal(IpAddress.parse('10.16.0.2'), 5000);
    table.apply(JOB, [entry(0, ME.workerId, ME.hostIp)]);
    assert.equal(await waiting, true);
    assert.equal(await table.whenLocal(IpAddress.parse('10.16.0.9'), 20), false);
    const abort = new AbortController();
    const aborted = table.whenLocal(IpAddress.parse('10.16.0.9'), 60_000, abort.signal);
    abort.abort();
    assert.equal(await aborted, false);
  });
});
