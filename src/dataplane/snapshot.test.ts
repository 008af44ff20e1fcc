import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Cidr } from '../addressing/cidr.ts';
import { IpAddress } from '../addressing/ip.ts';
import { addressKey, type Instance, ServiceSnapshot } from './snapshot.ts';
import { endpoint } from './tunnel/tunnel.ts';

const b = (s: string) => IpAddress.parse(s).toBytes();

function inst(number: number, local: boolean): Instance {
  return Object.freeze({
    job: 'app.ns.web.ns',
    number,
    nsip4: b(`10.16.0.${2 + number}`),
    nsip6: b(`fc00::${2 + number}`),
    instanceIp4: b(`10.30.1.${number}`),
    instanceIp6: b(`fdff::1:${number}`),
    endpoint: endpoint(local ? '10.255.0.1' : '10.255.0.2', 50103),
    key: null,
    local,
    cluster: 'c1',
  });
}

describe('ServiceSnapshot', () => {
  const x0 = inst(0, true);
  const x1 = inst(1, false);
  const service = Object.freeze({ job: 'app.ns.web.ns', instances: [x0, x1] });
  const snap = new ServiceSnapshot({
    generation: 7,
    localSubnets: [Cidr.parse('10.16.0.0/26')],
    cluster: 'c1',
    services: [
      {
        service,
        addresses: [
          { kind: 'rr', address: b('10.30.0.1') },
          { kind: 'rr', address: b('fdff:2000::1') },
          { kind: 'instance', address: x1.instanceIp4!, instance: x1 },
        ],
      },
    ],
    unknown: [
      { address: b('10.30.9.9'), generation: 6 },
      { address: b('10.30.0.1'), generation: 5 },
    ],
  });

  it('finds targets by address bytes anywhere in a buffer, in both families', () => {
    const pkt = Buffer.alloc(40);
    pkt.set(b('10.30.0.1'), 16);
    assert.equal(snap.target(pkt, 16, 4)?.kind, 'rr');
    assert.equal(snap.target(pkt, 16, 4)?.service, service);
    assert.equal(snap.target(b('fdff:2000::1'), 0, 16)?.service, service);
    const byIp = snap.target(x1.instanceIp4!, 0, 4);
    assert.equal(byIp?.kind, 'instance');
    assert.equal(byIp?.instance, x1);
    assert.equal(snap.target(b('10.30.0.2'), 0, 4), undefined);
  });

  it('knows its local instances by namespace address, only the local ones', () => {
    assert.equal(snap.localByNamespace(x0.nsip4!, 0, 4), x0);
    assert.equal(snap.localByNamespace(x0.nsip6!, 0, 16), x0);
    assert.equal(snap.localByNamespace(x1.nsip4!, 0, 4), undefined);
  });

  it('tells records apart: has() is identity, instance() finds the record by job and number', () => {
    assert.ok(snap.has(x1));
    assert.ok(!snap.has(inst(1, false)), 'an equal record made later is not the same instance record');
    assert.equal(snap.instance('app.ns.web.ns', 1), x1);
    assert.equal(snap.instance('app.ns.web.ns', 2), undefined);
  });

  it('keeps negative answers only for addresses it does not know', () => {
    assert.equal(snap.unknownSinceGeneration(addressKey(b('10.30.9.9'), 0, 4)), 6);
    assert.equal(snap.unknownSinceGeneration(addressKey(b('10.30.0.1'), 0, 4)), undefined);
    assert.equal(snap.generation, 7);
    assert.equal(ServiceSnapshot.EMPTY.generation, 0);
    assert.ok(Object.isFrozen(snap.services));
  });
});
