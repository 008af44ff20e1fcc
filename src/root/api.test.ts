/** The root's HTTP API (api.ts) as a whole: health, the OpenAPI document, unknown routes. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { assertError, client, start } from './api.fixtures.ts';
import type { RunningRoot } from './root.ts';

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
      ['/api/net/status', 'get'],
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
