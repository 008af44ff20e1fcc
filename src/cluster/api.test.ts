/**
 * The cluster's HTTP API (api.ts) at its edge: bad job names are a 400 {error: 'E_INVALID_INPUT', message}
 * before the name reaches the root, the cache or a topic, never a 500; per-caller rate limits (health
 * exempt) and body sizes. The app is the real one over a memory store; its root client talks to a
 * recording HTTP server that knows no job.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { ClusterStatus } from '../protocol/cluster-api.ts';
import { LimitCounters } from '../protocol/http-limits.ts';
import { RootClient } from '../protocol/root-client.ts';
import { MemoryStore } from '../store/memory.ts';
import { buildClusterApi } from './api.ts';
import { ClusterCache } from './cache.ts';
import { NodeChannel } from './node-channel.ts';
import { Resolver } from './resolver.ts';

const log = pino({ level: 'silent' });
const GOOD = 'shop.prod.web.web';
/** Job names that are not: a lone surrogate (what used to be a URIError and a 500), and other shapes. */
const BAD = [
  '\ud800',
  'shop.prod.web.\udc00',
  'shop.prod.web',
  'shop.prod.web.web.x',
  'a/b.c.d.e',
  'a.b.c.#',
  '',
];

describe('cluster API: job names are checked at the edge', () => {
  const rootRequests: string[] = [];
  const published: string[] = [];
  const root = createServer((req: IncomingMessage, res) => {
    rootRequests.push(`${req.method} ${req.url}`);
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'E_NOT_FOUND', message: 'no such service' }));
  });
  let app: Awaited<ReturnType<typeof buildClusterApi>>['app'];

  before(async () => {
    await new Promise<void>((resolve) => root.listen(0, '127.0.0.1', resolve));
    const rootClient = new RootClient(`http://127.0.0.1:${(root.address() as AddressInfo).port}`, {
      clusterId: 'c1',
    });
    const cache = new ClusterCache(new MemoryStore());
    const resolver = new Resolver(cache, rootClient, log);
    const channel = new NodeChannel({
      cache,
      resolver,
      root: rootClient,
      publish: (topic) => {
        published.push(topic);
        return Promise.resolve();
      },
      log,
      onStatusQueued: () => undefined,
    });
    ({ app } = await buildClusterApi({
      cache,
      resolver,
      channel,
      log,
      status: () => {
        throw new Error('not asked in this test');
      },
      bootId: 'boot',
      version: 'test',
      auth: { mode: 'insecure' },
      counters: new LimitCounters(),
    }));
  });
  after(async () => {
    await app.close();
    await new Promise<void>((resolve) => root.close(() => resolve()));
  });

  const post = (url: string, body: unknown) =>
    app.inject({
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json' },
      // JSON.stringify writes a lone surrogate as the escape \ud800, as a client on the wire would
      payload: JSON.stringify(body),
    });

  function assertInvalid(r: Awaited<ReturnType<typeof post>>, what: string): void {
    assert.equal(r.statusCode, 400, `${what}: ${r.body}`);
    const body = r.json<{ error: string; message: string }>();
    assert.equal(body.error, 'E_INVALID_INPUT', what);
    assert.match(body.message, /job_name/, what);
  }

  it('POST /api/net/job/update answers 400 E_INVALID_INPUT for a name that is not a job name', async () => {
    for (const type of ['DEPLOYMENT', 'UNDEPLOYMENT']) {
      for (const name of BAD) {
        const r = await post('/api/net/job/update', { job_name: name, instance_number: 0, type });
        assertInvalid(r, `${type} ${JSON.stringify(name)}`);
      }
    }
    assert.deepEqual(rootRequests, [], 'the root was never asked');
    assert.deepEqual(published, [], 'no topic was built from a bad name');
  });

  it('POST /api/net/deployment answers 400 E_INVALID_INPUT for a name that is not a job name', async () => {
    for (const name of BAD) assertInvalid(await post('/api/net/deployment', { job_name: name }), name);
    assert.deepEqual(rootRequests, []);
  });

  it('DELETE /api/net/deployment/:job_name answers 400 for a bad name, a bad escape included', async () => {
    for (const path of ['a.b.c', '%ED%A0%80', '%ZZ', 'a.b.c.%23']) {
      const r = await app.inject({ method: 'DELETE', url: `/api/net/deployment/${path}` });
      assert.equal(r.statusCode, 400, `${path}: ${r.body}`);
      assert.equal(r.json<{ error: string }>().error, 'E_INVALID_INPUT', path);
    }
    assert.deepEqual(published, []);
  });

  it('lets a job name through: the root is asked for it, by its path form', async () => {
    const update = await post('/api/net/job/update', {
      job_name: GOOD,
      instance_number: 0,
      type: 'DEPLOYMENT',
    });
    assert.equal(update.statusCode, 200, update.body);
    assert.equal(update.body, 'update notification received');
    const deployment = await post('/api/net/deployment', { job_name: GOOD });
    assert.equal(deployment.statusCode, 404, deployment.body);
    assert.equal(deployment.json<{ error: string }>().error, 'E_NOT_FOUND');
    assert.deepEqual(rootRequests, [
      'GET /api/net/service/shop_prod_web_web/instances?cluster_id=c1',
      'GET /api/net/service/shop_prod_web_web/instances?cluster_id=c1',
    ]);
    assert.deepEqual(published, [`jobs/${GOOD}/updates_available`]);
    rootRequests.length = 0;
    published.length = 0;
  });
});

describe('cluster API: limits', () => {
  const counters = new LimitCounters();
  const published: string[] = [];
  let app: Awaited<ReturnType<typeof buildClusterApi>>['app'];
  before(async () => {
    const cache = new ClusterCache(new MemoryStore());
    const status = (): ClusterStatus => ({
      cluster_id: 'c1',
      root: 'http://127.0.0.1:9',
      root_reachable: false,
      mqtt: 'mqtt://127.0.0.1:9',
      allow_plaintext_peers: false,
      nodes: [],
      pending_status_reports: 0,
      rate_limited: counters.rateLimited,
      security: {
        mode: 'insecure',
        certificate_expires: null,
        refused: { unauthenticated: 0, forbidden: 0 },
      },
      cached_jobs: [],
    });
    ({ app } = await buildClusterApi({
      cache,
      resolver: new Resolver(cache, new RootClient('http://127.0.0.1:9'), log),
      channel: {
        publishUpdates: (job: string) => {
          published.push(job);
          return Promise.resolve();
        },
      } as unknown as NodeChannel,
      log,
      status,
      bootId: 'boot',
      version: 'test',
      auth: { mode: 'insecure' },
      counters,
      rateLimits: { general: { max: 3, windowMs: 60_000 } },
    }));
  });
  after(() => app.close());

  it('a body over 64 KiB is 413 E_BODY_TOO_LARGE', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/net/job/update',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({
        job_name: 'a.b.c.d',
        instance_number: 0,
        type: 'UNDEPLOYMENT',
        pad: 'x'.repeat(70 << 10),
      }),
      remoteAddress: '127.0.0.9',
    });
    assert.equal(r.statusCode, 413, r.body);
    assert.equal(r.json<{ error: string }>().error, 'E_BODY_TOO_LARGE');
    const ok = await app.inject({
      method: 'POST',
      url: '/api/net/job/update',
      payload: { job_name: 'a.b.c.d', instance_number: 0, type: 'UNDEPLOYMENT' },
      remoteAddress: '127.0.0.9',
    });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(published, ['a.b.c.d']);
  });

  it('beyond the limit a caller gets 429 E_RATE_LIMITED with Retry-After, counted in the status; health is exempt', async () => {
    const get = (url: string, remoteAddress = '127.0.0.1') =>
      app.inject({ method: 'GET', url, remoteAddress });
    for (let i = 0; i < 3; i++) assert.equal((await get('/api/net/status')).statusCode, 200);
    const refused = await get('/api/net/status');
    assert.equal(refused.statusCode, 429, refused.body);
    const body = refused.json<{ error: string; message: string }>();
    assert.equal(body.error, 'E_RATE_LIMITED');
    assert.match(body.message, /more than 3 requests in 60 s/);
    const retry = Number(refused.headers['retry-after']);
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60);
    for (let i = 0; i < 10; i++) assert.equal((await get('/api/net/health')).statusCode, 200);
    const other = await get('/api/net/status', '127.0.0.2');
    assert.equal(other.statusCode, 200);
    assert.equal(other.json<ClusterStatus>().rate_limited, 1);
  });
});
