import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ServiceAddress } from '../../dataplane/snapshot.ts';
import { bytes as b, remoteInstance as instance } from './fixtures.ts';
import {
  buildZone,
  instanceName,
  jobOfName,
  NEGATIVE_TTL,
  searchDomains,
  SERVICE_TTL,
  INSTANCE_TTL,
  serviceName,
  type ZoneService,
} from './zone.ts';

const JOB = 'Demo.oaknet.Web.v1';
const i0 = instance(JOB, 0, '10.30.0.2', 'fdff::2', '10.16.0.2', 'fc00::2');
const i1 = instance(JOB, 1, '10.30.0.3', 'fdff::3', '10.16.0.66', 'fc00::42');
const addresses: ServiceAddress[] = [
  { kind: 'rr', address: b('10.30.0.1') },
  { kind: 'rr', address: b('fdff:2000::1') },
  { kind: 'closest', address: b('10.30.0.4') },
  { kind: 'closest', address: b('fdff:2000::4') },
  { kind: 'instance', address: b('10.30.0.2'), instance: i0 },
];
const services: ZoneService[] = [
  { job: JOB, instances: [i0, i1], addresses },
  { job: 'demo.oaknet.gone.v1', instances: [], addresses: [{ kind: 'rr', address: b('10.30.0.9') }] },
];

describe('the DNS zone of the service tables', () => {
  const zone = buildZone(services, 7);
  const names = new Map(zone.names);
  const ptr = new Map(zone.ptr.map(([a, n, ttl]) => [a, { n, ttl }]));

  it('names every policy and instance, lower case, with A and AAAA', () => {
    assert.equal(zone.generation, 7);
    assert.deepEqual(names.get('web.v1.demo.oaknet.oakestra'), {
      a: ['10.30.0.1'],
      aaaa: ['fdff:2000::1'],
      ttl: SERVICE_TTL,
      job: 'demo.oaknet.web.v1',
    });
    assert.deepEqual(names.get('web.v1.demo.oaknet.rr.oakestra')?.a, ['10.30.0.1']);
    assert.deepEqual(names.get('web.v1.demo.oaknet.closest.oakestra')?.aaaa, ['fdff:2000::4']);
    assert.deepEqual(names.get('1.instance.web.v1.demo.oaknet.oakestra'), {
      a: ['10.30.0.3'],
      aaaa: ['fdff::3'],
      ttl: INSTANCE_TTL,
      job: 'demo.oaknet.web.v1',
    });
    assert.equal(zone.names.length, 5, 'default, rr, closest and two instances');
  });

  it('a job without instances is known, and has no names', () => {
    assert.deepEqual(zone.jobs, ['demo.oaknet.web.v1', 'demo.oaknet.gone.v1']);
    assert.ok(![...names.keys()].some((n) => n.includes('gone')));
    assert.ok(NEGATIVE_TTL < INSTANCE_TTL);
  });

  it('PTR for ServiceIPs, instance IPs and namespace addresses', () => {
    assert.deepEqual(ptr.get('10.30.0.1'), { n: 'web.v1.demo.oaknet.rr.oakestra', ttl: SERVICE_TTL });
    assert.deepEqual(ptr.get('fdff:2000::4'), { n: 'web.v1.demo.oaknet.closest.oakestra', ttl: SERVICE_TTL });
    assert.equal(ptr.get('fdff::2')?.n, '0.instance.web.v1.demo.oaknet.oakestra');
    assert.equal(ptr.get('10.16.0.66')?.n, '1.instance.web.v1.demo.oaknet.oakestra');
    assert.equal(ptr.get('fc00::42')?.ttl, INSTANCE_TTL);
    assert.equal(ptr.get('10.30.0.9'), undefined, 'nothing for a job without instances');
  });

  it('maps names back to their job, and refuses other shapes', () => {
    for (const name of [
      serviceName(JOB),
      'WEB.v1.Demo.oaknet.oakestra',
      'web.v1.demo.oaknet.rr.oakestra',
      'web.v1.demo.oaknet.closest.oakestra',
      instanceName(JOB, 12),
    ])
      assert.equal(jobOfName(name), 'demo.oaknet.web.v1', name);
    for (const name of [
      'web.demo.oaknet.oakestra',
      'web.v1.demo.oaknet.example',
      'x.web.v1.demo.oaknet.oakestra',
      '01.instance.web.v1.demo.oaknet.oakestra',
      'a.instance.web.v1.demo.oaknet.oakestra',
      'we-b.v1.demo.oaknet.oakestra',
      `${'a'.repeat(31)}.v1.demo.oaknet.oakestra`,
      'oakestra',
      '',
    ])
      assert.equal(jobOfName(name), undefined, name);
  });

  it("an instance's search list: its service namespace, then its application", () => {
    assert.deepEqual(searchDomains('demo.oaknet.client.v1'), [
      'v1.demo.oaknet.oakestra',
      'demo.oaknet.oakestra',
    ]);
    // `web` from a sibling in namespace v1 is the default name of demo.oaknet.web.v1
    assert.equal(`web.${searchDomains('demo.oaknet.client.v1')[0]}`, serviceName('demo.oaknet.web.v1'));
    assert.equal(jobOfName(`web.v1.${searchDomains('demo.oaknet.client.v1')[1]}`), 'demo.oaknet.web.v1');
  });
});
