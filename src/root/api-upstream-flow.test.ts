/**
 * The root's HTTP API (api.ts) through upstream's flow, endpoint by endpoint, in order: cluster registration,
 * service and instance deployment, resolution and interest, deployment status, removal.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
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
  type ClusterRow,
  type JobDoc,
  type ServiceIp,
} from './api.fixtures.ts';
import type { RunningRoot } from './root.ts';

describe('root API: the upstream flow, endpoint by endpoint', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  let port: number;
  before(async () => {
    root = await start();
    call = client(root);
    port = await deadPort();
  });
  after(() => root.close());

  const clusters = async () => (await call('GET', '/api/net/clusters')).json<ClusterRow[]>();
  const pendingOf = async (id: string) =>
    (await clusters()).find((c) => c.cluster_id === id)?.pending_notifications;

  it('POST /api/net/cluster registers (port as number or string) and GET /api/net/clusters lists it', async () => {
    assertText(
      await call('POST', '/api/net/cluster', {
        cluster_id: 'c1',
        cluster_address: '127.0.0.1',
        cluster_port: port,
      }),
      'cluster registered',
    );
    assertText(
      await call('POST', '/api/net/cluster', {
        cluster_id: 'c2',
        cluster_address: '127.0.0.1',
        cluster_port: String(port),
      }),
      'cluster registered',
    );
    const list = await clusters();
    assert.deepEqual(
      list.map((c) => [c.cluster_id, c.cluster_address, c.cluster_port, c.pending_notifications]),
      [
        ['c1', '127.0.0.1', port, 0],
        ['c2', '127.0.0.1', port, 0],
      ],
    );
  });

  it('POST /api/net/service/deploy takes the upstream body and answers "Instance info added"', async () => {
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('64b000000000000000000001', 'cart')),
      'Instance info added',
    );
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('64b000000000000000000002', 'pay')),
      'Instance info added',
    );
    // the same again is accepted (idempotent)
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('64b000000000000000000001', 'cart')),
      'Instance info added',
    );
  });

  it('POST /api/net/instance/deploy allocates instance IPs', async () => {
    for (const n of [0, 1]) {
      assertText(
        await call('POST', '/api/net/instance/deploy', {
          _id: '64b000000000000000000001',
          instance_number: n,
          cluster_id: 'c1',
        }),
        'Instance info added',
      );
    }
    assertText(
      await call('POST', '/api/net/instance/deploy', {
        _id: '64b000000000000000000002',
        instance_number: 0,
        cluster_id: 'c2',
      }),
      'Instance info added',
    );
  });

  it('GET /api/net/service/<name with _>/instances returns the job document and registers interest', async () => {
    const r = await call('GET', `/api/net/service/${path(jobName('cart'))}/instances?cluster_id=c1`);
    assert.equal(r.status, 200, r.text);
    assert.match(r.type, /^application\/json/);
    const doc = r.json<JobDoc>();
    assert.equal(doc._id, '64b000000000000000000001');
    assert.equal(doc.job_name, jobName('cart'));
    assert.equal(doc.image, 'docker.io/library/nginx:latest', 'descriptor fields are part of the document');
    assert.deepEqual(
      doc.service_ip_list.map((s) => s.IpType),
      ['RR', 'Closest'],
    );
    const [rr, closest] = doc.service_ip_list as [ServiceIp, ServiceIp];
    assert.ok(inPrefix('10.30.0.0/16', rr.Address!) && inPrefix('fdff:2000::/21', rr.Address_v6!));
    assert.ok(inPrefix('10.30.0.0/16', closest.Address!) && inPrefix('fdff:1000::/21', closest.Address_v6!));
    assert.deepEqual(
      doc.instance_list.map((i) => [i.instance_number, i.cluster_id]),
      [
        [0, 'c1'],
        [1, 'c1'],
      ],
    );
    for (const i of doc.instance_list) {
      assert.ok(inPrefix('10.30.0.0/16', i.instance_ip) && inPrefix('fdff::/20', i.instance_ip_v6));
    }
    const all = [
      ...doc.service_ip_list.flatMap((s) => [s.Address, s.Address_v6]),
      ...doc.instance_list.flatMap((i) => [i.instance_ip, i.instance_ip_v6]),
    ];
    assert.equal(new Set(all).size, all.length);
  });

  it('GET /api/net/service/ip/<ip>/instances finds the job by any of its addresses (IPv4 with _)', async () => {
    const doc = (await call('GET', `/api/net/service/${path(jobName('cart'))}/instances`)).json<JobDoc>();
    const addresses = [
      ...doc.service_ip_list.flatMap((s) => [s.Address!, s.Address_v6!]),
      ...doc.instance_list.flatMap((i) => [i.instance_ip, i.instance_ip_v6]),
    ];
    for (const a of addresses) {
      const r = await call('GET', `/api/net/service/ip/${path(a)}/instances?cluster_id=c2`);
      assert.equal(r.status, 200, `${a}: ${r.text}`);
      assert.equal(r.json<JobDoc>()._id, doc._id);
    }
    assertError(await call('GET', '/api/net/service/ip/10_30_99_99/instances'), 404, 'E_NOT_FOUND');
    assertError(await call('GET', '/api/net/service/ip/not_an_ip/instances'), 400, 'E_INVALID_INPUT');
  });

  it('POST /api/net/service/net_deploy_status records the instances and queues one notification per interested cluster', async () => {
    const before = { c1: await pendingOf('c1'), c2: await pendingOf('c2') };
    assertText(
      await call('POST', '/api/net/service/net_deploy_status', {
        job_id: '64b000000000000000000001',
        instances: [
          {
            instance_number: 0,
            namespace_ip: '10.16.0.2',
            namespace_ip_v6: 'fc00::2',
            host_ip: '192.168.1.10',
            host_port: 50103,
          },
          {
            instance_number: 1,
            namespace_ip: '10.16.0.66',
            namespace_ip_v6: 'fc00::102',
            host_ip: '192.168.1.11',
            host_port: '50103',
          },
        ],
      }),
      'Status updated',
    );
    // c1 asked by name and c2 by address: both are interested, each gets one per instance
    assert.equal(await pendingOf('c1'), (before.c1 ?? 0) + 2);
    assert.equal(await pendingOf('c2'), (before.c2 ?? 0) + 2);
    const doc = (await call('GET', `/api/net/service/${path(jobName('cart'))}/instances`)).json<JobDoc>();
    assert.deepEqual(
      doc.instance_list.map((i) => [i.namespace_ip, i.namespace_ip_v6, i.host_ip, i.host_port]),
      [
        ['10.16.0.2', 'fc00::2', '192.168.1.10', 50103],
        ['10.16.0.66', 'fc00::102', '192.168.1.11', 50103],
      ],
    );
  });

  it('DELETE /api/net/interest/<name with _>?cluster_id= answers "deregistered" and stops notifications', async () => {
    assertText(
      await call('DELETE', `/api/net/interest/${path(jobName('cart'))}?cluster_id=c2`),
      'deregistered',
    );
    const c2 = await pendingOf('c2');
    const c1 = await pendingOf('c1');
    assertText(
      await call('POST', '/api/net/service/net_deploy_status', {
        job_id: '64b000000000000000000001',
        instances: [
          { instance_number: 0, namespace_ip: '10.16.0.3', host_ip: '192.168.1.10', host_port: 50103 },
        ],
      }),
      'Status updated',
    );
    assert.equal(await pendingOf('c2'), c2, 'c2 is no longer told');
    assert.equal(await pendingOf('c1'), c1, 'c1 is told, its queued notification for instance 0 is replaced');
    assertError(
      await call('DELETE', `/api/net/interest/${path(jobName('cart'))}?cluster_id=ghost`),
      404,
      'E_NOT_FOUND',
    );
  });

  it('GET /api/net/service lists every job document', async () => {
    const docs = (await call('GET', '/api/net/service')).json<JobDoc[]>();
    assert.deepEqual(docs.map((d) => d.job_name).sort(), [jobName('cart'), jobName('pay')]);
  });

  it('the public netinfo endpoints answer by name and by address', async () => {
    const byName = await call('GET', `/api/pubnet/service/netinfo/${path(jobName('pay'))}`);
    assert.equal(byName.status, 200, byName.text);
    const info = byName.json<{ app_name: string; service_name: string; service_ip_list: ServiceIp[] }>();
    assert.equal(info.app_name, 'shop');
    assert.equal(info.service_name, 'pay');
    const rr = info.service_ip_list[0]!;
    const byIp = await call('GET', `/api/pubnet/service/netinfo/ip/${path(rr.Address!)}`);
    assert.equal(byIp.status, 200, byIp.text);
    assert.deepEqual(byIp.json(), byName.json());
    assertError(
      await call('GET', `/api/pubnet/service/netinfo/${path(jobName('none'))}`),
      404,
      'E_NOT_FOUND',
    );
    assertError(await call('GET', '/api/pubnet/service/netinfo/ip/fdff:2000::ffff'), 404, 'E_NOT_FOUND');
  });

  it('DELETE /api/net/<id>/<n> answers "Instance info cleared"; -1 clears all; unknown ones are 404', async () => {
    const id = '64b000000000000000000001';
    const doc = (await call('GET', `/api/net/service/${path(jobName('cart'))}/instances`)).json<JobDoc>();
    const gone = doc.instance_list.find((i) => i.instance_number === 1)!;
    assertText(await call('DELETE', `/api/net/${id}/1`), 'Instance info cleared');
    assertError(
      await call('GET', `/api/net/service/ip/${path(gone.instance_ip)}/instances`),
      404,
      'E_NOT_FOUND',
    );
    assertError(await call('DELETE', `/api/net/${id}/1`), 404, 'E_NOT_FOUND');
    assertError(await call('DELETE', `/api/net/${id}/99999999999999999999999`), 404, 'E_NOT_FOUND');
    assertError(await call('DELETE', '/api/net/nojob/0'), 404, 'E_NOT_FOUND');
    assertText(await call('DELETE', `/api/net/${id}/-1`), 'Instance info cleared');
    const after = (await call('GET', `/api/net/service/${path(jobName('cart'))}/instances`)).json<JobDoc>();
    assert.deepEqual(after.instance_list, []);
  });

  it('DELETE /api/net/service/<id> answers "Job removed successfully"; with instances 409 unless ?force=true', async () => {
    assertText(await call('DELETE', '/api/net/service/64b000000000000000000001'), 'Job removed successfully');
    assertError(await call('GET', `/api/net/service/${path(jobName('cart'))}/instances`), 404, 'E_NOT_FOUND');
    assertError(await call('DELETE', '/api/net/service/64b000000000000000000001'), 404, 'E_NOT_FOUND');

    assertError(
      await call('DELETE', '/api/net/service/64b000000000000000000002'),
      409,
      'E_CONFLICT',
      jobName('pay'),
    );
    assertText(
      await call('DELETE', '/api/net/service/64b000000000000000000002?force=true'),
      'Job removed successfully',
    );
    assert.deepEqual((await call('GET', '/api/net/service')).json(), []);
  });

  it('instance deploy and status for unknown jobs or instances are 404', async () => {
    assertError(
      await call('POST', '/api/net/instance/deploy', { _id: 'nojob', instance_number: 0, cluster_id: 'c1' }),
      404,
      'E_NOT_FOUND',
    );
    assertError(
      await call('POST', '/api/net/service/net_deploy_status', {
        job_id: 'nojob',
        instances: [{ instance_number: 0, namespace_ip: '10.16.0.2', host_ip: '1.2.3.4', host_port: 50103 }],
      }),
      404,
      'E_NOT_FOUND',
    );
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('j3', 'third')),
      'Instance info added',
    );
    assertError(
      await call('POST', '/api/net/service/net_deploy_status', {
        job_id: 'j3',
        instances: [{ instance_number: 4, namespace_ip: '10.16.0.2', host_ip: '1.2.3.4', host_port: 50103 }],
      }),
      404,
      'E_NOT_FOUND',
    );
  });

  it('IDs of up to 128 characters and the longest job names work in paths too', async () => {
    const id = 'a'.repeat(128);
    const part = 'x'.repeat(30);
    const body = {
      _id: id,
      deployment_descriptor: { app_name: part, app_ns: part, service_name: part, service_ns: part },
    };
    assertText(await call('POST', '/api/net/service/deploy', body), 'Instance info added');
    const name = [part, part, part, part].join('_');
    const r = await call('GET', `/api/net/service/${name}/instances`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json<JobDoc>()._id, id);
    assertText(await call('DELETE', `/api/net/service/${id}`), 'Job removed successfully');
  });
});
