/**
 * The cluster's HTTP API (api.ts) on bad job names: a 400 {error: 'E_INVALID_INPUT', message} before the name
 * reaches the root, the cache or a topic, never a 500. The app is the real one over a memory store, and its
 * root client talks to a recording HTTP server that knows no job.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
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
