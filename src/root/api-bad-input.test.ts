/** The root's HTTP API (api.ts) on bad input: a 4xx in the one error shape, never a 500. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  assertError,
  assertText,
  client,
  deployBody,
  start,
  type CallOptions,
  type JobDoc,
} from './api.fixtures.ts';
import type { RunningRoot } from './root.ts';

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
      ...['http://10.0.0.1', '10.0.0.1:10110', '10.0.0.1/x', 'a b', '[fd00::1]', 'host?x', '1.2.3'].map(
        (address): [string, string, unknown, string] => [
          'POST',
          '/api/net/cluster',
          { cluster_id: 'c1', cluster_address: address, cluster_port: 10110 },
          'cluster_address',
        ],
      ),
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

  it('numbers in queries and paths are plain decimal digits, nothing Number() would also take', async () => {
    const lax = ['1e3', ' 12', '12 ', '0x10', '', '0b11', '0o7', '+5', '5.0', '\t7', '1_000', '-'];
    for (const text of lax) {
      const q = encodeURIComponent(text);
      assertError(
        await call('GET', `/api/net/service?limit=${q}`),
        400,
        'E_INVALID_INPUT',
        'querystring/limit',
      );
      assertError(await call('GET', `/api/net/clusters?limit=${q}`), 400, 'E_INVALID_INPUT', 'limit');
      assertError(await call('GET', `/api/net/workers?limit=${q}`), 400, 'E_INVALID_INPUT', 'limit');
      if (text !== '')
        assertError(
          await call('DELETE', `/api/net/j1/${q}`),
          400,
          'E_INVALID_INPUT',
          'params/instance_number',
        );
    }
    assert.equal((await call('GET', '/api/net/service?limit=5')).status, 200);
    assert.equal((await call('GET', '/api/net/service?limit=007')).status, 200);
    assertError(await call('GET', '/api/net/service?limit=0'), 400, 'E_INVALID_INPUT', 'limit');
    assertError(await call('GET', '/api/net/service?limit=5&limit=6'), 400, 'E_INVALID_INPUT', 'limit');
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
