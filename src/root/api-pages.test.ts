/**
 * The root's HTTP API (api.ts) on lists: GET /api/net/service, /api/net/workers and /api/net/clusters answer a
 * JSON array of at most ?limit= records after ?after=, with a Link header to the next page, and RootClient
 * follows it to the end.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AddressPlan } from '../addressing/plan.ts';
import { nextCursorOf } from '../protocol/pagination.ts';
import { RootClient } from '../protocol/root-client.ts';
import { SqliteStore } from '../store/sqlite.ts';
import { assertError, client, start, type ClusterRow, type JobDoc } from './api.fixtures.ts';
import { Registry } from './registry.ts';
import type { RunningRoot } from './root.ts';

const SERVICES = 30_000;
const id = (i: number) => `j${String(i).padStart(5, '0')}`;

/** The target of a Link header's rel="next", or undefined. */
function nextLink(link: string | null): string | undefined {
  return link === null ? undefined : /^<([^>]+)>; rel="next"$/.exec(link)?.[1];
}

describe('root API: paged lists', () => {
  let root: RunningRoot;
  let call: ReturnType<typeof client>;
  before(async () => {
    // 30,000 services, built through the registry in one transaction (seconds), then served
    const store = new SqliteStore(':memory:');
    const quotas = { maxServices: SERVICES, maxWorkersPerCluster: 2000 };
    const registry = new Registry(store, new AddressPlan(), { quotas });
    store.transact(() => {
      for (let i = SERVICES - 1; i >= 0; i--) {
        registry.deployService(id(i), {
          app_name: 'big',
          app_ns: 'list',
          service_name: `s${i}`,
          service_ns: 'x',
        });
      }
      for (const c of ['c1', 'c2', 'c3']) {
        registry.registerCluster({ cluster_id: c, cluster_address: '127.0.0.1', cluster_port: 9 });
      }
      for (let w = 0; w < 1500; w++) registry.allocateSubnet('c2', `w${String(w).padStart(4, '0')}`);
      registry.allocateSubnet('c1', 'solo');
      registry.allocateSubnet();
    });
    root = await start({ store, quotas });
    call = client(root);
  });
  after(() => root.close());

  it('GET /api/net/service answers the first 100 with a Link to the next page', async () => {
    const r = await call('GET', '/api/net/service');
    assert.equal(r.status, 200, r.text);
    const docs = r.json<JobDoc[]>();
    assert.ok(Array.isArray(docs), 'the body is still a JSON array (upstream shape)');
    assert.deepEqual(
      docs.map((d) => d._id),
      Array.from({ length: 100 }, (_, i) => id(i)),
    );
    assert.equal(docs[0]!.job_name, 'big.list.s0.x');
    assert.equal(r.headers.get('link'), `</api/net/service?after=${id(99)}>; rel="next"`);
    const second = await call('GET', nextLink(r.headers.get('link'))!);
    assert.deepEqual(
      second.json<JobDoc[]>().map((d) => d._id),
      Array.from({ length: 100 }, (_, i) => id(100 + i)),
    );
  });

  it('following the Link with ?limit=1000 walks all 30,000 in job ID order, each once, to a page without Link', async () => {
    const seen: string[] = [];
    let target: string | undefined = '/api/net/service?limit=1000';
    let pages = 0;
    while (target !== undefined) {
      const r = await call('GET', target);
      assert.equal(r.status, 200, r.text);
      const docs = r.json<JobDoc[]>();
      assert.ok(docs.length <= 1000);
      seen.push(...docs.map((d) => d._id));
      target = nextLink(r.headers.get('link'));
      if (target !== undefined) assert.match(target, /^\/api\/net\/service\?limit=1000&after=j\d{5}$/);
      pages++;
    }
    assert.equal(pages, 30);
    assert.deepEqual(
      seen,
      Array.from({ length: SERVICES }, (_, i) => id(i)),
    );
  });

  it('a page from the middle, the last page, and a cursor past the end', async () => {
    const mid = await call('GET', `/api/net/service?limit=3&after=${id(20_000)}`);
    assert.deepEqual(
      mid.json<JobDoc[]>().map((d) => d._id),
      [id(20_001), id(20_002), id(20_003)],
    );
    const last = await call('GET', `/api/net/service?limit=5&after=${id(SERVICES - 3)}`);
    assert.deepEqual(
      last.json<JobDoc[]>().map((d) => d._id),
      [id(SERVICES - 2), id(SERVICES - 1)],
    );
    assert.equal(last.headers.get('link'), null);
    const past = await call('GET', '/api/net/service?after=zzz');
    assert.deepEqual(past.json(), []);
    assert.equal(past.headers.get('link'), null);
  });

  it('refuses a limit outside 1-1000 and a cursor that is not an ID, with 400', async () => {
    for (const q of [
      'limit=0',
      'limit=1001',
      'limit=-1',
      'limit=abc',
      'after=',
      'after=a%2Fb',
      'after=%00',
    ]) {
      assertError(await call('GET', `/api/net/service?${q}`), 400, 'E_INVALID_INPUT', 'querystring');
    }
    assertError(await call('GET', '/api/net/clusters?limit=5000'), 400, 'E_INVALID_INPUT', 'limit');
    assertError(await call('GET', '/api/net/workers?after=c1'), 400, 'E_INVALID_INPUT', 'after');
    assertError(await call('GET', '/api/net/workers?after=c1/w1/x'), 400, 'E_INVALID_INPUT', 'after');
  });

  it('GET /api/net/workers pages by cluster/worker; the Link keeps ?cluster_id=', async () => {
    const r = await call('GET', '/api/net/workers?cluster_id=c2&limit=2');
    assert.deepEqual(
      r.json<Array<{ worker_id: string }>>().map((w) => w.worker_id),
      ['w0000', 'w0001'],
    );
    assert.equal(
      r.headers.get('link'),
      '</api/net/workers?cluster_id=c2&limit=2&after=c2%2Fw0001>; rel="next"',
    );
    const next = await call('GET', nextLink(r.headers.get('link'))!);
    assert.deepEqual(
      next
        .json<Array<{ cluster_id: string; worker_id: string }>>()
        .map((w) => `${w.cluster_id}/${w.worker_id}`),
      ['c2/w0002', 'c2/w0003'],
    );
    const all = await call('GET', '/api/net/workers?limit=3');
    const rows = all.json<Array<{ cluster_id: string; worker_id: string }>>();
    assert.deepEqual(
      rows.map((w) => w.cluster_id),
      ['_', 'c1', 'c2'],
    );
    const anonymous = `_/${rows[0]!.worker_id}`;
    const fromAnonymous = await call(
      'GET',
      `/api/net/workers?limit=1&after=${encodeURIComponent(anonymous)}`,
    );
    assert.deepEqual(
      fromAnonymous.json<Array<{ worker_id: string }>>().map((w) => w.worker_id),
      ['solo'],
    );
  });

  it('GET /api/net/clusters pages by cluster ID', async () => {
    const r = await call('GET', '/api/net/clusters?limit=2');
    assert.deepEqual(
      r.json<ClusterRow[]>().map((c) => c.cluster_id),
      ['c1', 'c2'],
    );
    assert.equal(nextCursorOf(r.headers.get('link')), 'c2');
    const rest = await call('GET', nextLink(r.headers.get('link'))!);
    assert.deepEqual(
      rest.json<ClusterRow[]>().map((c) => c.cluster_id),
      ['c3'],
    );
    assert.equal(rest.headers.get('link'), null);
  });

  it('RootClient follows the pages: services(), workers() of its cluster or all, clusters()', async () => {
    const rc = new RootClient(root.url, { timeoutMs: 30_000 });
    const services = await rc.services();
    assert.equal(services.length, SERVICES);
    assert.equal(new Set(services.map((s) => s._id)).size, SERVICES);
    assert.equal(services.at(-1)!._id, id(SERVICES - 1));
    const workers = await rc.workers();
    assert.equal(workers.length, 1502);
    const c2 = await new RootClient(root.url, { clusterId: 'c2' }).workers();
    assert.equal(c2.length, 1500);
    assert.ok(c2.every((w) => w.cluster_id === 'c2'));
    assert.deepEqual(
      (await rc.clusters()).map((c) => c.cluster_id),
      ['c1', 'c2', 'c3'],
    );
  });

  it('the OpenAPI document describes the paging and the Link header', async () => {
    const doc = (await call('GET', '/docs/openapi.json')).json<{
      paths: Record<
        string,
        {
          get?: {
            description?: string;
            parameters?: Array<{ name: string }>;
            responses: Record<string, { headers?: Record<string, unknown> }>;
          };
        }
      >;
    }>();
    for (const p of ['/api/net/service', '/api/net/workers', '/api/net/clusters']) {
      const get = doc.paths[p]?.get;
      assert.match(get?.description ?? '', /Link: .*rel="next"/, p);
      assert.deepEqual(
        get?.parameters?.map((x) => x.name).filter((n) => n === 'limit' || n === 'after'),
        ['limit', 'after'],
        p,
      );
      assert.ok(get?.responses['200']?.headers?.['link'], `${p} documents the Link header`);
    }
  });
});
