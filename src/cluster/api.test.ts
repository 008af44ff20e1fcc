/** The cluster's HTTP API (api.ts) on limits: per-caller rate limits (health exempt) and body sizes. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { ClusterStatus } from '../protocol/cluster-api.ts';
import { LimitCounters } from '../protocol/http-limits.ts';
import { RootClient } from '../protocol/root-client.ts';
import { MemoryStore } from '../store/memory.ts';
import { buildClusterApi } from './api.ts';
import { ClusterCache } from './cache.ts';
import type { NodeChannel } from './node-channel.ts';
import { Resolver } from './resolver.ts';

describe('cluster API: limits', () => {
  const log = pino({ level: 'silent' });
  const counters = new LimitCounters();
  const published: string[] = [];
  let app: Awaited<ReturnType<typeof buildClusterApi>>;
  before(async () => {
    const cache = new ClusterCache(new MemoryStore());
    const status = (): ClusterStatus => ({
      cluster_id: 'c1',
      root: 'http://127.0.0.1:9',
      root_reachable: false,
      mqtt: 'mqtt://127.0.0.1:9',
      nodes: [],
      pending_status_reports: 0,
      rate_limited: counters.rateLimited,
      cached_jobs: [],
    });
    app = await buildClusterApi({
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
      counters,
      rateLimits: { general: { max: 3, windowMs: 60_000 } },
    });
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
