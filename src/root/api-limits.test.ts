/**
 * The root's HTTP API (api.ts) on limits: quotas (403 E_QUOTA), per-caller rate limits (429 E_RATE_LIMITED
 * with Retry-After; health exempt; allocating routes counted on their own), body sizes (413), and
 * GET /api/net/status, which shows them.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { RateLimitedError } from '../errors.ts';
import { RootClient } from '../protocol/root-client.ts';
import { assertError, assertText, client, deployBody, start, type Reply } from './api.fixtures.ts';
import type { RunningRoot } from './root.ts';

interface Status {
  rate_limited: number;
  services: number;
  quotas: { max_services: number; max_instances_per_service: number; max_workers_per_cluster: number };
  pools: Record<string, { used: number; capacity: number }>;
}

/** GET url from a given local address: another caller, as the root sees it. */
function getFrom(localAddress: string, url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

function assertRateLimited(r: Reply, mentions?: string): void {
  assertError(r, 429, 'E_RATE_LIMITED', mentions);
  const retry = Number(r.headers.get('retry-after'));
  assert.ok(
    Number.isInteger(retry) && retry >= 1 && retry <= 60,
    `Retry-After ${r.headers.get('retry-after')}`,
  );
}

describe('root API: quotas', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start({ quotas: { maxServices: 2, maxInstancesPerService: 1, maxWorkersPerCluster: 1 } });
    call = client(root);
    assertText(
      await call('POST', '/api/net/cluster', {
        cluster_id: 'c1',
        cluster_address: '127.0.0.1',
        cluster_port: 9,
      }),
      'cluster registered',
    );
  });
  after(() => root.close());

  it('a service beyond the quota is 403 E_QUOTA; the same deployment again is still 200', async () => {
    assertText(await call('POST', '/api/net/service/deploy', deployBody('j1', 'one')), 'Instance info added');
    assertText(await call('POST', '/api/net/service/deploy', deployBody('j2', 'two')), 'Instance info added');
    assertError(
      await call('POST', '/api/net/service/deploy', deployBody('j3', 'three')),
      403,
      'E_QUOTA',
      '--max-services 2',
    );
    assertText(await call('POST', '/api/net/service/deploy', deployBody('j1', 'one')), 'Instance info added');
  });

  it('an instance beyond the quota is 403 E_QUOTA', async () => {
    const body = (n: number) => ({ _id: 'j1', instance_number: n, cluster_id: 'c1' });
    assertText(await call('POST', '/api/net/instance/deploy', body(0)), 'Instance info added');
    assertError(await call('POST', '/api/net/instance/deploy', body(1)), 403, 'E_QUOTA', 'instances');
    assertText(await call('POST', '/api/net/instance/deploy', body(0)), 'Instance info added');
  });

  it('a worker subnetwork beyond the cluster quota is 403 E_QUOTA; a known worker still gets its own', async () => {
    const w1 = await call('GET', '/api/net/subnet?cluster_id=c1&worker_id=w1');
    assert.equal(w1.status, 200, w1.text);
    assertError(
      await call('GET', '/api/net/subnet?cluster_id=c1&worker_id=w2'),
      403,
      'E_QUOTA',
      'cluster c1',
    );
    assert.deepEqual((await call('GET', '/api/net/subnet?cluster_id=c1&worker_id=w1')).json(), w1.json());
    assert.equal((await call('GET', '/api/net/subnet')).status, 200);
    assertError(await call('GET', '/api/net/subnet'), 403, 'E_QUOTA', 'without ?cluster_id=');
  });

  it('GET /api/net/status shows the quotas, the services and the pools', async () => {
    const r = await call('GET', '/api/net/status');
    assert.equal(r.status, 200, r.text);
    const s = r.json<Status>();
    assert.deepEqual(s.quotas, { max_services: 2, max_instances_per_service: 1, max_workers_per_cluster: 1 });
    assert.equal(s.services, 2);
    assert.equal(s.rate_limited, 0);
    assert.deepEqual(s.pools['service-v4'], { used: 5, capacity: 65534 }, '2 services x 2 + 1 instance');
    assert.deepEqual(s.pools['worker'], { used: 2, capacity: 15360 });
  });
});

describe('root API: per-caller rate limits', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start({
      rateLimits: { general: { max: 5, windowMs: 60_000 }, allocation: { max: 2, windowMs: 60_000 } },
    });
    call = client(root);
  });
  after(() => root.close());

  it('beyond the general limit a caller gets 429 E_RATE_LIMITED with Retry-After; others are not affected', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await call('GET', '/api/net/clusters');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-ratelimit-remaining'), String(4 - i));
    }
    assertRateLimited(await call('GET', '/api/net/clusters'), 'more than 5 requests in 60 s');
    assertRateLimited(await call('GET', '/api/net/service')); // every route counts together
    assertRateLimited(await call('POST', '/api/net/cluster', { raw: 'x'.repeat(1 << 20) }), 'retry in');
    // another caller (another source address) has its own count
    const other = await getFrom('127.0.0.2', `${root.url}/api/net/clusters`);
    assert.equal(other.status, 200, other.text);
  });

  it('health checks are never rate-limited', async () => {
    for (let i = 0; i < 20; i++) assert.equal((await call('GET', '/api/net/health')).status, 200);
  });

  it('allocating routes have a tighter limit of their own, per route', async () => {
    const caller = '127.0.0.3';
    for (let i = 0; i < 2; i++)
      assert.equal((await getFrom(caller, `${root.url}/api/net/subnet`)).status, 200);
    const refused = await getFrom(caller, `${root.url}/api/net/subnet`);
    assert.equal(refused.status, 429);
    const body = JSON.parse(refused.text) as { error: string; message: string };
    assert.equal(body.error, 'E_RATE_LIMITED');
    assert.match(body.message, /more than 2 requests in 60 s from this caller to this route/);
    // the general count is another one
    assert.equal((await getFrom(caller, `${root.url}/api/net/clusters`)).status, 200);
  });

  it('RootClient reports a 429 as RateLimitedError with the Retry-After', async () => {
    await assert.rejects(
      new RootClient(root.url).clusters(),
      (err: unknown) =>
        err instanceof RateLimitedError &&
        err.code === 'E_RATE_LIMITED' &&
        err.retryAfterSeconds >= 1 &&
        err.retryAfterSeconds <= 60,
    );
  });
});

describe('root API: refusals are counted in GET /api/net/status', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start({
      rateLimits: { general: { max: 0, windowMs: 60_000 }, allocation: { max: 1, windowMs: 60_000 } },
    });
    call = client(root);
  });
  after(() => root.close());

  it('counts every 429; general limit 0 means none', async () => {
    assert.equal((await call('GET', '/api/net/subnet')).status, 200);
    assertRateLimited(await call('GET', '/api/net/subnet'));
    assertRateLimited(await call('GET', '/api/net/subnet'));
    for (let i = 0; i < 30; i++) assert.equal((await call('GET', '/api/net/clusters')).status, 200);
    assert.equal((await call('GET', '/api/net/status')).json<Status>().rate_limited, 2);
  });
});

describe('root API: body sizes', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    root = await start();
    call = client(root);
  });
  after(() => root.close());

  it('a body over 64 KiB is 413 E_BODY_TOO_LARGE; a large descriptor under it is taken', async () => {
    const big = (n: number) => JSON.stringify(deployBody('j1', 'big', { blob: 'x'.repeat(n) }));
    assertError(
      await call('POST', '/api/net/service/deploy', undefined, { raw: big(70 << 10) }),
      413,
      'E_BODY_TOO_LARGE',
    );
    assertError(
      await call('POST', '/api/net/cluster', undefined, {
        raw: JSON.stringify({ cluster_id: 'x'.repeat(100_000) }),
      }),
      413,
      'E_BODY_TOO_LARGE',
    );
    assertText(
      await call('POST', '/api/net/service/deploy', undefined, { raw: big(60 << 10) }),
      'Instance info added',
    );
  });

  it('a deployment report may carry up to 1 MiB: many instances', async () => {
    const instances = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        instance_number: i,
        namespace_ip: '10.16.0.2',
        namespace_ip_v6: 'fc00::2',
        host_ip: '192.168.100.100',
        host_port: '50103',
        worker_id: 'a1b2c3d4e5f6a7b8c9d0e1f2',
      }));
    const body = (n: number) => JSON.stringify({ job_id: 'j1', instances: instances(n) });
    assert.ok(body(3000).length > 128 << 10 && body(3000).length < 1 << 20);
    // well-formed and under the limit: it reaches the registry (which knows no such instance)
    assertError(
      await call('POST', '/api/net/service/net_deploy_status', undefined, { raw: body(3000) }),
      404,
      'E_NOT_FOUND',
    );
    assert.ok(body(9000).length > 1 << 20);
    assertError(
      await call('POST', '/api/net/service/net_deploy_status', undefined, { raw: body(9000) }),
      413,
      'E_BODY_TOO_LARGE',
    );
  });
});
