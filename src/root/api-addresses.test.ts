/**
 * The root's HTTP API (api.ts) on addresses: ServiceIPs chosen by the user, the available-ip endpoints, worker
 * subnetworks, and full pools.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AddressPlan } from '../addressing/plan.ts';
import {
  assertError,
  assertText,
  client,
  deadPort,
  deployBody,
  inPrefix,
  jobName,
  path,
  start,
  type JobDoc,
  type ServiceIp,
} from './api.fixtures.ts';
import type { RunningRoot } from './root.ts';

describe('root API: addresses chosen by the user', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start();
    call = client(root);
  });
  after(() => root.close());

  it('accepts a free address in range, 409 for one in use, 400 for one out of range or of the wrong family', async () => {
    assertText(
      await call(
        'POST',
        '/api/net/service/deploy',
        deployBody('j1', 'one', { RR_ip: '10.30.5.5', RR_ip_v6: 'fdff:2000::55' }),
      ),
      'Instance info added',
    );
    const doc = (await call('GET', `/api/net/service/${path(jobName('one'))}/instances`)).json<JobDoc>();
    assert.deepEqual(doc.service_ip_list[0], {
      IpType: 'RR',
      Address: '10.30.5.5',
      Address_v6: 'fdff:2000::55',
    });

    assertError(
      await call('POST', '/api/net/service/deploy', deployBody('j2', 'two', { RR_ip: '10.30.5.5' })),
      409,
      'E_ADDRESS_IN_USE',
      '10.30.5.5',
    );
    assertError(
      await call('POST', '/api/net/service/deploy', deployBody('j2', 'two', { RR_ip: '10.31.0.1' })),
      400,
      'E_ADDRESS_OUT_OF_RANGE',
      '10.31.0.1',
    );
    assertError(
      await call('POST', '/api/net/service/deploy', deployBody('j2', 'two', { RR_ip: '10.30.255.255' })),
      400,
      'E_ADDRESS_OUT_OF_RANGE',
    );
    assertError(
      await call('POST', '/api/net/service/deploy', deployBody('j2', 'two', { RR_ip_v6: '10.30.0.9' })),
      400,
      'E_INVALID_INPUT',
    );
    // the same name under another id
    assertError(await call('POST', '/api/net/service/deploy', deployBody('j9', 'one')), 409, 'E_CONFLICT');
    // none of the failures took an address: the next service gets the first free ones
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('j2', 'two', { RR_ip: '10.30.5.6' })),
      'Instance info added',
    );
  });

  it('the available-ip endpoints offer unreserved addresses, the same ones twice, usable as chosen addresses', async () => {
    type Available = { available_service_ips: ServiceIp[] };
    const used = new Set(
      (await call('GET', '/api/net/service'))
        .json<JobDoc[]>()
        .flatMap((d) => [
          ...d.service_ip_list.flatMap((s) => [s.Address, s.Address_v6]),
          ...d.instance_list.flatMap((i) => [i.instance_ip, i.instance_ip_v6]),
        ]),
    );
    const one = await call('GET', '/api/pubnet/service/netinfo/available-ip/');
    assert.equal(one.status, 200, one.text);
    const list = one.json<Available>().available_service_ips;
    assert.deepEqual(
      list.map((e) => e.IpType),
      ['IPv4', 'IPv6'],
    );
    assert.deepEqual((await call('GET', '/api/pubnet/service/netinfo/available-ip/')).json(), one.json());

    const five = (await call('GET', '/api/pubnet/service/netinfo/available-ip/5?v=4')).json<Available>();
    assert.equal(five.available_service_ips.length, 5);
    for (const e of five.available_service_ips) {
      assert.equal(e.IpType, 'IPv4');
      assert.equal(e.Address_v6, null);
      assert.ok(inPrefix('10.30.0.0/16', e.Address!) && !used.has(e.Address), e.Address!);
    }
    assert.equal(new Set(five.available_service_ips.map((e) => e.Address)).size, 5);
    const v6 = (await call('GET', '/api/pubnet/service/netinfo/available-ip/3?v=6')).json<Available>();
    assert.equal(v6.available_service_ips.length, 3);
    for (const e of v6.available_service_ips) {
      assert.equal(e.IpType, 'IPv6');
      assert.equal(e.Address, null);
      assert.ok(inPrefix('fdff::/20', e.Address_v6!) && !used.has(e.Address_v6), e.Address_v6!);
    }
    const offered = five.available_service_ips[2]!.Address!;
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('j3', 'three', { closest_ip: offered })),
      'Instance info added',
    );
    const later = (await call('GET', '/api/pubnet/service/netinfo/available-ip/5?v=4')).json<Available>();
    assert.ok(!later.available_service_ips.some((e) => e.Address === offered));

    for (const bad of ['0', '1001', 'abc', '-1']) {
      assertError(
        await call('GET', `/api/pubnet/service/netinfo/available-ip/${bad}`),
        400,
        'E_INVALID_INPUT',
      );
    }
    assertError(await call('GET', '/api/pubnet/service/netinfo/available-ip/?v=5'), 400, 'E_INVALID_INPUT');
  });
});

describe('root API: worker subnetworks', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start();
    call = client(root);
    assertText(
      await call('POST', '/api/net/cluster', {
        cluster_id: 'c1',
        cluster_address: '127.0.0.1',
        cluster_port: await deadPort(),
      }),
      'cluster registered',
    );
  });
  after(() => root.close());

  it("GET /api/net/subnet answers upstream's body; a known worker gets its pair again", async () => {
    const anon = await call('GET', '/api/net/subnet');
    assert.equal(anon.status, 200, anon.text);
    const a = anon.json<{ subnet_addr: string; subnet_addr_v6: string }>();
    assert.deepEqual(Object.keys(a).sort(), ['subnet_addr', 'subnet_addr_v6']);
    assert.ok(inPrefix('10.16.0.0/12', a.subnet_addr) && !inPrefix('10.30.0.0/16', a.subnet_addr));
    assert.ok(inPrefix('fc00::/7', a.subnet_addr_v6));
    const anon2 = (await call('GET', '/api/net/subnet')).json<typeof a>();
    assert.notEqual(anon2.subnet_addr, a.subnet_addr, 'anonymous requests get fresh subnets');

    const w1 = (await call('GET', '/api/net/subnet?cluster_id=c1&worker_id=w1')).json<typeof a>();
    assert.deepEqual((await call('GET', '/api/net/subnet?cluster_id=c1&worker_id=w1')).json(), w1);
    assertError(await call('GET', '/api/net/subnet?cluster_id=ghost&worker_id=w1'), 404, 'E_NOT_FOUND');
    assertError(
      await call('GET', '/api/net/subnet?cluster_id=bad%20id'),
      400,
      'E_INVALID_INPUT',
      'cluster_id',
    );
  });

  it('GET /api/net/workers and DELETE /api/net/subnet/<worker>?cluster_id= describe workers alike', async () => {
    const w2 = (await call('GET', '/api/net/subnet?cluster_id=c1&worker_id=w2')).json<{
      subnet_addr: string;
    }>();
    const listed = (await call('GET', '/api/net/workers?cluster_id=c1')).json<
      Array<Record<string, string>>
    >();
    const row = listed.find((w) => w.worker_id === 'w2');
    assert.ok(row);
    assert.equal(row.subnet, `${w2.subnet_addr}/26`);
    const released = await call('DELETE', '/api/net/subnet/w2?cluster_id=c1');
    assert.equal(released.status, 200, released.text);
    assert.deepEqual(released.json(), row);
    assertError(await call('DELETE', '/api/net/subnet/w2?cluster_id=c1'), 404, 'E_NOT_FOUND');
    assert.ok(
      !(await call('GET', '/api/net/workers'))
        .json<Array<Record<string, string>>>()
        .some((w) => w.worker_id === 'w2'),
    );
  });

  it('calls that need the caller identity refuse without ?cluster_id= (400, naming the parameter)', async () => {
    assertError(await call('DELETE', '/api/net/subnet/w1'), 400, 'E_INVALID_INPUT', 'cluster_id');
    assertError(
      await call('DELETE', `/api/net/interest/${path(jobName('x'))}`),
      400,
      'E_INVALID_INPUT',
      'cluster_id',
    );
  });
});

describe('root API: exhaustion', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start({
      plan: new AddressPlan({ serviceRangeV4: '10.30.0.0/30', workerRangeV4: '10.200.0.0/25' }),
    });
    call = client(root);
  });
  after(() => root.close());

  it('a full ServiceIP pool answers 507 E_ADDRESS_SPACE_EXHAUSTED, naming the pool', async () => {
    // a /30 holds two ServiceIPs: exactly one service (RR + Closest)
    assertText(await call('POST', '/api/net/service/deploy', deployBody('j1', 'one')), 'Instance info added');
    assertError(
      await call('POST', '/api/net/service/deploy', deployBody('j2', 'two')),
      507,
      'E_ADDRESS_SPACE_EXHAUSTED',
      'service-v4',
    );
    assertError(
      await call('POST', '/api/net/instance/deploy', { _id: 'j1', instance_number: 0, cluster_id: 'c1' }),
      507,
      'E_ADDRESS_SPACE_EXHAUSTED',
    );
    assertText(await call('DELETE', '/api/net/service/j1'), 'Job removed successfully');
    assertText(await call('POST', '/api/net/service/deploy', deployBody('j2', 'two')), 'Instance info added');
  });

  it('a full worker pool answers 507', async () => {
    // a /25 holds two /26 worker blocks
    for (let i = 0; i < 2; i++) assert.equal((await call('GET', '/api/net/subnet')).status, 200);
    assertError(await call('GET', '/api/net/subnet'), 507, 'E_ADDRESS_SPACE_EXHAUSTED', 'worker');
  });
});
