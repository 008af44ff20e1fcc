import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BlockList } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { AddressPlan } from '../addressing/plan.ts';
import { MemoryStore } from '../store/memory.ts';
import { startRoot, type RootOptions, type RunningRoot } from './root.ts';

// ---- helpers ---------------------------------------------------------------------------------------------

interface Reply {
  status: number;
  type: string;
  text: string;
  /** The body parsed as JSON (throws when it is not JSON). */
  json: <T = Record<string, unknown>>() => T;
}

interface CallOptions {
  /** Raw body text, sent as is. */
  raw?: string;
  /** Content type of the body (default application/json). */
  type?: string;
}

function client(root: RunningRoot) {
  return async (method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<Reply> => {
    const text = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const res = await fetch(root.url + path, {
      method,
      ...(text !== undefined
        ? { body: text, headers: { 'content-type': opts.type ?? 'application/json' } }
        : {}),
    });
    const replyText = await res.text();
    return {
      status: res.status,
      type: res.headers.get('content-type') ?? '',
      text: replyText,
      json: <T>() => JSON.parse(replyText) as T,
    };
  };
}

async function start(extra: Partial<RootOptions> = {}): Promise<RunningRoot> {
  return startRoot({
    store: new MemoryStore(),
    log: pino({ level: 'silent' }),
    port: 0,
    host: '127.0.0.1',
    // clusters registered here listen nowhere: keep the failed deliveries from retrying during the test
    notifier: { minBackoffMs: 600_000, maxBackoffMs: 600_000, timeoutMs: 1000 },
    ...extra,
  });
}

/** A TCP port nothing listens on (a server's port after it closed). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  return port;
}

function assertText(r: Reply, text: string): void {
  assert.equal(r.status, 200, r.text);
  assert.match(r.type, /^text\/plain/);
  assert.equal(r.text, text);
}

/** A 4xx reply in the one error shape: {error: 'E_...', message}. */
function assertError(r: Reply, status: number, code?: string, mentions?: string | RegExp): void {
  assert.equal(r.status, status, r.text);
  const body = r.json<{ error: unknown; message: unknown }>();
  assert.equal(typeof body.error, 'string', r.text);
  assert.match(body.error as string, /^E_[A-Z_]+$/, r.text);
  assert.equal(typeof body.message, 'string', r.text);
  assert.ok((body.message as string).length > 0);
  if (code !== undefined) assert.equal(body.error, code, r.text);
  if (mentions !== undefined) {
    if (typeof mentions === 'string') assert.ok((body.message as string).includes(mentions), r.text);
    else assert.match(body.message as string, mentions);
  }
}

function inPrefix(prefix: string, address: string): boolean {
  const [net, len] = prefix.split('/') as [string, string];
  const type = net.includes(':') ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  list.addSubnet(net, Number(len), type);
  return (address.includes(':') ? 'ipv6' : 'ipv4') === type && list.check(address, type);
}

/** Upstream's path form of a job name or IPv4 address. */
function path(nameOrIp: string): string {
  return nameOrIp.replaceAll('.', '_');
}

interface ServiceIp {
  IpType: string;
  Address: string | null;
  Address_v6: string | null;
}
interface Instance {
  instance_number: number;
  instance_ip: string;
  instance_ip_v6: string;
  cluster_id: string;
  namespace_ip?: string;
  namespace_ip_v6?: string;
  host_ip?: string;
  host_port?: number;
}
interface JobDoc {
  _id: string;
  job_name: string;
  service_ip_list: ServiceIp[];
  instance_list: Instance[];
  [key: string]: unknown;
}
interface ClusterRow {
  cluster_id: string;
  cluster_address: string;
  cluster_port: number;
  status: string;
  pending_notifications: number;
  last_error?: string;
}

/** An upstream system manager's deploy body (descriptor fields beyond the ones the network needs included). */
function deployBody(id: string, service: string, extra: Record<string, unknown> = {}) {
  return {
    _id: id,
    deployment_descriptor: {
      app_name: 'shop',
      app_ns: 'prod',
      service_name: service,
      service_ns: 'web',
      microservice_name: service,
      microservice_namespace: 'web',
      image: 'docker.io/library/nginx:latest',
      memory: 100,
      vcpus: 1,
      port: '80',
      addresses: { rr_ip: '' },
      ...extra,
    },
  };
}

const jobName = (service: string) => `shop.prod.${service}.web`;

// ---- the API -----------------------------------------------------------------------------------------------

describe('root API: health and docs', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start();
    call = client(root);
  });
  after(() => root.close());

  it('GET /api/net/health answers ok with a boot_id that changes at every start', async () => {
    const r = await call('GET', '/api/net/health');
    assert.equal(r.status, 200);
    const h = r.json<{ status: string; boot_id: string; version: string }>();
    assert.equal(h.status, 'ok');
    assert.ok(h.boot_id.length > 0);
    assert.ok(h.version.length > 0);
    assert.equal((await call('GET', '/api/net/health')).json<{ boot_id: string }>().boot_id, h.boot_id);
    const other = await start();
    try {
      const h2 = (await client(other)('GET', '/api/net/health')).json<{ boot_id: string }>();
      assert.notEqual(h2.boot_id, h.boot_id);
    } finally {
      await other.close();
    }
  });

  it('GET /docs/openapi.json lists every path of the API', async () => {
    const r = await call('GET', '/docs/openapi.json');
    assert.equal(r.status, 200);
    const doc = r.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
    assert.match(doc.openapi, /^3\./);
    const expected: Array<[string, string]> = [
      ['/api/net/cluster', 'post'],
      ['/api/net/clusters', 'get'],
      ['/api/net/interest/{job_name}', 'delete'],
      ['/api/net/service', 'get'],
      ['/api/net/service/deploy', 'post'],
      ['/api/net/service/{id}', 'delete'],
      ['/api/net/instance/deploy', 'post'],
      ['/api/net/{id}/{instance_number}', 'delete'],
      ['/api/net/service/net_deploy_status', 'post'],
      ['/api/net/service/{name}/instances', 'get'],
      ['/api/net/service/ip/{ip}/instances', 'get'],
      ['/api/net/subnet', 'get'],
      ['/api/net/subnet/{worker_id}', 'delete'],
      ['/api/net/workers', 'get'],
      ['/api/net/health', 'get'],
      ['/api/pubnet/service/netinfo/available-ip/', 'get'],
      ['/api/pubnet/service/netinfo/available-ip/{x}', 'get'],
      ['/api/pubnet/service/netinfo/ip/{ip}', 'get'],
      ['/api/pubnet/service/netinfo/{name}', 'get'],
    ];
    for (const [p, method] of expected) {
      assert.ok(doc.paths[p]?.[method], `${method.toUpperCase()} ${p} is documented`);
    }
  });

  it('an unknown route is a 404 in the error shape', async () => {
    assertError(await call('GET', '/api/net/nothing/here/at/all'), 404, 'E_NOT_FOUND');
    assertError(await call('PUT', '/api/net/cluster', {}), 404, 'E_NOT_FOUND');
  });
});

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

describe('root API: bad input is a 4xx with a message, never a 500', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start();
    call = client(root);
    assertText(
      await call('POST', '/api/net/service/deploy', deployBody('j1', 'known')),
      'Instance info added',
    );
    assertText(
      await call('POST', '/api/net/instance/deploy', { _id: 'j1', instance_number: 0, cluster_id: 'c1' }),
      'Instance info added',
    );
  });
  after(() => root.close());

  it('names the field that is wrong', async () => {
    const cases: Array<[string, string, unknown, string]> = [
      ['POST', '/api/net/cluster', { cluster_id: 'c1', cluster_address: '127.0.0.1' }, 'cluster_port'],
      ['POST', '/api/net/cluster', { cluster_address: '127.0.0.1', cluster_port: 1 }, 'cluster_id'],
      [
        'POST',
        '/api/net/cluster',
        { cluster_id: 'c1', cluster_address: '127.0.0.1', cluster_port: 70000 },
        'cluster_port',
      ],
      [
        'POST',
        '/api/net/cluster',
        { cluster_id: 'c1', cluster_address: '127.0.0.1', cluster_port: '70000' },
        'cluster_port',
      ],
      [
        'POST',
        '/api/net/cluster',
        { cluster_id: 'c1', cluster_address: '127.0.0.1', cluster_port: 0 },
        'cluster_port',
      ],
      [
        'POST',
        '/api/net/cluster',
        { cluster_id: 'bad/id', cluster_address: 'x', cluster_port: 1 },
        'cluster_id',
      ],
      ['POST', '/api/net/service/deploy', { _id: 'j2' }, 'deployment_descriptor'],
      ['POST', '/api/net/service/deploy', deployBody('j2', 'bad-name'), 'service_name'],
      ['POST', '/api/net/service/deploy', deployBody('j2', 'ok', { app_name: 'a.b' }), 'app_name'],
      ['POST', '/api/net/service/deploy', deployBody('j2', 'ok', { RR_ip: 5 }), 'RR_ip'],
      [
        'POST',
        '/api/net/instance/deploy',
        { _id: 'j1', instance_number: 'abc', cluster_id: 'c1' },
        'instance_number',
      ],
      [
        'POST',
        '/api/net/instance/deploy',
        { _id: 'j1', instance_number: -1, cluster_id: 'c1' },
        'instance_number',
      ],
      [
        'POST',
        '/api/net/instance/deploy',
        { _id: 'j1', instance_number: 1e300, cluster_id: 'c1' },
        'instance_number',
      ],
      ['POST', '/api/net/instance/deploy', { _id: 'j1', instance_number: 0 }, 'cluster_id'],
      [
        'POST',
        '/api/net/service/net_deploy_status',
        {
          job_id: 'j1',
          instances: [{ instance_number: 0, namespace_ip: 'nowhere', host_ip: '1.2.3.4', host_port: 1 }],
        },
        'namespace_ip',
      ],
      [
        'POST',
        '/api/net/service/net_deploy_status',
        {
          job_id: 'j1',
          instances: [
            { instance_number: 0, namespace_ip: '10.16.0.2', host_ip: '1.2.3.4', host_port: '99999' },
          ],
        },
        'host_port',
      ],
      ['POST', '/api/net/service/net_deploy_status', { job_id: 'j1', instances: {} }, 'instances'],
    ];
    for (const [method, p, body, field] of cases) {
      assertError(await call(method, p, body), 400, 'E_INVALID_INPUT', field);
    }
  });

  it('garbage bodies, paths and numbers are refused with 4xx', async () => {
    const deep = (n: number) => '{"x":'.repeat(n) + '1' + '}'.repeat(n);
    const cases: Array<[string, string, CallOptions | undefined, unknown]> = [
      ['POST', '/api/net/cluster', { raw: '{not json' }, undefined],
      ['POST', '/api/net/cluster', { raw: '' }, undefined],
      ['POST', '/api/net/cluster', { raw: 'null' }, undefined],
      ['POST', '/api/net/cluster', { raw: '[]' }, undefined],
      ['POST', '/api/net/cluster', { raw: '"cluster"' }, undefined],
      ['POST', '/api/net/cluster', { raw: '1e999999' }, undefined],
      ['POST', '/api/net/cluster', { raw: '{"__proto__":{"x":1}}' }, undefined],
      [
        'POST',
        '/api/net/cluster',
        { raw: 'cluster_id=x', type: 'application/x-www-form-urlencoded' },
        undefined,
      ],
      ['POST', '/api/net/cluster', { raw: 'hello', type: 'text/plain' }, undefined],
      ['POST', '/api/net/service/deploy', { raw: '['.repeat(50_000) + ']'.repeat(50_000) }, undefined],
      [
        'POST',
        '/api/net/service/deploy',
        {
          raw: JSON.stringify(deployBody('j2', 'deep')).replace('"memory":100', `"memory":${deep(20_000)}`),
        },
        undefined,
      ],
      [
        'POST',
        '/api/net/service/deploy',
        { raw: JSON.stringify(deployBody('j2', 'big', { blob: 'x'.repeat(2 << 20) })) },
        undefined,
      ],
      [
        'POST',
        '/api/net/service/deploy',
        { raw: '{"_id":12345678901234567890,"deployment_descriptor":{}}' },
        undefined,
      ],
      ['POST', '/api/net/service/deploy', undefined, { _id: ['j'], deployment_descriptor: [] }],
      [
        'POST',
        '/api/net/instance/deploy',
        { raw: '{"_id":"j1","instance_number":123456789012345678901234567890,"cluster_id":"c1"}' },
        undefined,
      ],
      ['POST', '/api/net/instance/deploy', undefined, { _id: 'j1', instance_number: 0.5, cluster_id: 'c1' }],
      ['POST', '/api/net/instance/deploy', undefined, { _id: 'j1', instance_number: -5, cluster_id: 'c1' }],
      ['POST', '/api/net/instance/deploy', undefined, { _id: 'j1', instance_number: {}, cluster_id: 'c1' }],
      [
        'POST',
        '/api/net/service/net_deploy_status',
        undefined,
        { job_id: 'j1', instances: [{ instance_number: 1e308 }] },
      ],
      [
        'POST',
        '/api/net/service/net_deploy_status',
        undefined,
        {
          job_id: 'j1',
          instances: [{ instance_number: 1e21, namespace_ip: '10.16.0.2', host_ip: '1.2.3.4', host_port: 1 }],
        },
      ],
      ['POST', '/api/net/service/net_deploy_status', undefined, { job_id: 'j1', instances: [null] }],
      ['DELETE', '/api/net/j1/-2', undefined, undefined],
      ['DELETE', '/api/net/j1/1.5', undefined, undefined],
      ['DELETE', '/api/net/j1/abc', undefined, undefined],
      ['DELETE', '/api/net/j1/1e400', undefined, undefined],
      ['DELETE', '/api/net/service/j1?force=maybe', undefined, undefined],
      ['GET', '/api/net/service/%ZZ/instances', undefined, undefined],
      ['GET', '/api/net/service/ip/%E0%A4%A/instances', undefined, undefined],
      ['GET', '/api/net/service/%00/instances', undefined, undefined],
      ['GET', '/api/net/service/a_b/instances', undefined, undefined],
      ['GET', `/api/net/service/${'x'.repeat(5000)}/instances`, undefined, undefined],
      ['GET', '/api/net/service/ip/fe80::1%25eth0/instances', undefined, undefined],
      ['GET', '/api/net/service/ip/999_999_999_999/instances', undefined, undefined],
      ['GET', '/api/net/subnet?worker_id=', undefined, undefined],
      ['GET', '/api/net/subnet?worker_id=a&worker_id=b', undefined, undefined],
      ['GET', '/api/pubnet/service/netinfo/available-ip/99999999999999999999', undefined, undefined],
      ['DELETE', '/api/net/interest/x?cluster_id=', undefined, undefined],
    ];
    for (const [method, p, opts, body] of cases) {
      const r = await call(method, p, body, opts ?? {});
      const what = `${method} ${p.slice(0, 80)} ${(opts?.raw ?? JSON.stringify(body) ?? '').slice(0, 60)}`;
      assert.ok(r.status >= 400 && r.status < 500, `${what}: ${r.status} ${r.text.slice(0, 200)}`);
      if (r.status !== 431) assertError(r, r.status); // 431 (header too large) comes from node:http itself
    }
    // nothing half-written: the known job is intact and nothing else exists
    const docs = (await call('GET', '/api/net/service')).json<JobDoc[]>();
    assert.deepEqual(
      docs.map((d) => [d._id, d.instance_list.length]),
      [['j1', 1]],
    );
  });

  it('values of the wrong JSON type are refused, not converted', async () => {
    const cases: unknown[] = [
      { _id: 'j1', instance_number: null, cluster_id: 'c1' },
      { _id: 'j1', instance_number: true, cluster_id: 'c1' },
      { _id: 'j1', instance_number: '0', cluster_id: 'c1' },
      { _id: ['j1'], instance_number: 0, cluster_id: 'c1' },
    ];
    for (const body of cases) {
      const r = await call('POST', '/api/net/instance/deploy', body);
      assert.ok(r.status < 500, r.text);
      assertError(r, 400, 'E_INVALID_INPUT');
    }
  });

  it('a broken %-escape in the path is a 400 in the error shape', async () => {
    assertError(await call('GET', '/api/net/service/%ZZ/instances'), 400, 'E_INVALID_INPUT');
  });
});
