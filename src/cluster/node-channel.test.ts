import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { NotFoundError, UnavailableError } from '../errors.ts';
import type { JobDocument, NetDeployStatus } from '../protocol/root-api.ts';
import type { RootClient } from '../protocol/root-client.ts';
import { MemoryStore } from '../store/memory.ts';
import { ClusterCache } from './cache.ts';
import { NodeChannel } from './node-channel.ts';
import { Resolver } from './resolver.ts';
import { RootLink } from './root-link.ts';

const log = pino({ level: 'silent' });
const JOB = 'app.ns.svc.v1';

function doc(instances = 1): JobDocument {
  return {
    _id: 'job-1',
    system_job_id: 'job-1',
    job_name: JOB,
    service_ip_list: [{ IpType: 'RR', Address: '10.30.0.1', Address_v6: 'fdff:2000::1' }],
    instance_list: Array.from({ length: instances }, (_, n) => ({
      instance_number: n,
      instance_ip: `10.30.0.${n + 2}`,
      instance_ip_v6: `fdff::${n + 1}`,
      cluster_id: 'c1',
    })),
  };
}

/** A root that is down until `up` is set, and records what it is told. */
function fakeRoot(instances = 1) {
  const state = { up: false, statuses: [] as NetDeployStatus[] };
  const down = () => Promise.reject(new UnavailableError('root down'));
  const root = {
    jobByName: (name: string) =>
      !state.up
        ? down()
        : name === JOB
          ? Promise.resolve(doc(instances))
          : Promise.reject(new NotFoundError('no')),
    jobByIp: () => (!state.up ? down() : Promise.reject(new NotFoundError('no'))),
    deployStatus: (s: NetDeployStatus) => {
      if (!state.up) return down();
      state.statuses.push(s);
      return Promise.resolve();
    },
    health: () =>
      !state.up ? down() : Promise.resolve({ status: 'ok' as const, boot_id: 'b', version: 'v' }),
    registerCluster: () => Promise.resolve(),
    removeInterest: () => Promise.resolve(),
  };
  return { state, root: root as unknown as RootClient };
}

function channel(admits?: (worker: string) => boolean, instances = 1) {
  const { state, root } = fakeRoot(instances);
  const cache = new ClusterCache(new MemoryStore());
  const published: Array<[string, string]> = [];
  let kicked = 0;
  const ch = new NodeChannel({
    cache,
    resolver: new Resolver(cache, root, log),
    root,
    publish: (topic, payload) => {
      published.push([topic, payload]);
      return Promise.resolve();
    },
    log,
    onStatusQueued: () => kicked++,
    ...(admits ? { admits } : {}),
  });
  return { ch, cache, state, root, published, kicked: () => kicked };
}

describe('NodeChannel when the root is out of reach', () => {
  it('does not answer a table query it could not resolve (an empty answer would wipe the node table)', async () => {
    const { ch, published } = channel();
    await ch.handle('nodes/w1/net/tablequery/request', Buffer.from(`{"sname":"${JOB}","sip":""}`));
    assert.deepEqual(published, []);
    assert.equal(ch.counters.failed, 1);
  });

  it('answers a query for what the root says does not exist with an empty table', async () => {
    const { ch, published, state } = channel();
    state.up = true;
    await ch.handle('nodes/w1/net/tablequery/request', Buffer.from('{"sname":"","sip":"10.30.9.9"}'));
    assert.deepEqual(published, [
      [
        'nodes/w1/net/tablequery/result',
        JSON.stringify({ app_name: '', instance_list: [], query_key: '10.30.9.9' }),
      ],
    ]);
  });

  it('keeps a deployment report until the root is back, then delivers it with the job looked up', async () => {
    const { ch, cache, state, root, kicked } = channel();
    const report = `{"appname":"${JOB}","status":"DEPLOYED","instance_number":0,"nsip":"10.16.0.2","nsipv6":"fc00::2","host_port":"50103","host_ip":"192.168.1.10"}`;
    await ch.handle('nodes/w1/net/service/deployed', Buffer.from(report));
    assert.equal(cache.pendingStatusCount(), 1, 'queued, not lost');
    assert.equal(kicked(), 1);
    state.up = true;
    const link = new RootLink({
      root,
      rootUrl: 'http://root',
      cache,
      log,
      clusterId: 'c1',
      clusterPort: 1,
      advertiseAddress: '127.0.0.1',
    });
    link.kickStatus();
    await link.close();
    const deadline = Date.now() + 2000;
    while (state.statuses.length === 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    assert.deepEqual(state.statuses, [
      {
        job_id: 'job-1',
        instances: [
          {
            instance_number: 0,
            namespace_ip: '10.16.0.2',
            namespace_ip_v6: 'fc00::2',
            host_ip: '192.168.1.10',
            host_port: 50103,
            worker_id: 'w1',
          },
        ],
      },
    ]);
    assert.equal(cache.pendingStatusCount(), 0);
  });
});

describe('NodeChannel on names that are not job names', () => {
  it('drops a deployment report whose appname is not a job name, as invalid, before it is used', async () => {
    const { ch, cache, state, published } = channel();
    state.up = true;
    for (const appname of ['\ud800', `${JOB}\udc00`, 'app', 'a.b.c.d/#', 'jobs/+/x.y.z.w']) {
      const report = JSON.stringify({
        appname,
        status: 'DEPLOYED',
        instance_number: 0,
        nsip: '10.16.0.2',
        nsipv6: 'fc00::2',
        host_port: '50103',
        host_ip: '192.168.1.10',
      });
      await ch.handle('nodes/w1/net/service/deployed', Buffer.from(report));
    }
    assert.equal(ch.counters.invalid, 5);
    assert.equal(ch.counters.failed, 0);
    assert.deepEqual(cache.jobsWithInterest(), [], 'no interest recorded');
    assert.equal(cache.pendingStatusCount(), 0, 'no report queued');
    assert.deepEqual(published, []);
    assert.deepEqual(state.statuses, []);
  });
});

describe('NodeChannel on what a broker cannot refuse (mosquitto)', () => {
  it('ignores and counts a message published retained, and one from a worker it did not enroll', async () => {
    const { ch, cache, state, published } = channel((worker) => worker === 'w1');
    state.up = true;
    await ch.handle('nodes/w1/net/subnet', Buffer.from('{"METHOD":"DELETE"}'), true);
    await ch.handle('nodes/w9/net/tablequery/request', Buffer.from('{"sname":"","sip":"10.30.9.9"}'));
    assert.deepEqual(ch.counters, {
      handled: 0,
      invalid: 0,
      failed: 0,
      retained: 1,
      unenrolled: 1,
      conflicting: 0,
    });
    assert.equal(cache.lastSeenOf('w1'), undefined, 'nothing applied');
    assert.equal(cache.lastSeenOf('w9'), undefined);
    assert.deepEqual(published, []);
  });
});

describe('NodeChannel and tunnel endpoints and keys', () => {
  it("refuses a deployment report that claims another worker's endpoint or WireGuard key, and counts it", async () => {
    const { ch, cache, state } = channel();
    state.up = true;
    const key1 = Buffer.alloc(32, 1).toString('base64');
    const key2 = Buffer.alloc(32, 2).toString('base64');
    const report = (host: string, key: string) =>
      Buffer.from(
        `{"appname":"${JOB}","status":"DEPLOYED","instance_number":0,"nsip":"10.16.0.2","nsipv6":"fc00::2","host_port":"50103","host_ip":"${host}","wg_public_key":"${key}"}`,
      );
    await ch.handle('nodes/w1/net/service/deployed', report('192.168.1.10', key1));
    const own = () => cache.jobs().flatMap((d) => d.instance_list)[0];
    assert.equal(own()?.wg_public_key, key1);
    assert.equal(own()?.worker_id, 'w1');
    // w2 claims w1's endpoint with its own key, then its own endpoint with w1's key
    await ch.handle('nodes/w2/net/service/deployed', report('192.168.1.10', key2));
    await ch.handle('nodes/w2/net/service/deployed', report('192.168.1.20', key1));
    assert.equal(ch.counters.conflicting, 2);
    assert.equal(own()?.wg_public_key, key1, 'the record still names w1 and its key');
    assert.equal(own()?.host_ip, '192.168.1.10');
  });

  it("refuses an address change to another worker's endpoint or key, and a low-order key anywhere", async () => {
    const { ch, cache, state } = channel(undefined, 3);
    state.up = true;
    const key1 = Buffer.alloc(32, 1).toString('base64');
    const key2 = Buffer.alloc(32, 2).toString('base64');
    const lowOrder = Buffer.alloc(32, 0).toString('base64'); // the identity point: every DH with it is zero
    const report = (n: number, ns: string, host: string, key: string) =>
      Buffer.from(
        `{"appname":"${JOB}","status":"DEPLOYED","instance_number":${n},"nsip":"${ns}","nsipv6":"","host_port":"50103","host_ip":"${host}","wg_public_key":"${key}"}`,
      );
    const moved = (host: string, key: string) =>
      Buffer.from(
        `{"appname":"${JOB}","status":"DEPLOYED","instance_number":0,"nsip":"","nsipv6":"","host_port":"50103","host_ip":"${host}","wg_public_key":"${key}"}`,
      );
    await ch.handle('nodes/w1/net/service/deployed', report(0, '10.16.0.2', '192.168.1.10', key1));
    await ch.handle('nodes/w2/net/service/deployed', report(1, '10.16.0.66', '192.168.1.20', key2));
    await ch.handle('nodes/w3/net/service/deployed', report(2, '10.16.0.130', '192.168.1.30', lowOrder));
    const of = (w: string) => cache.jobs().flatMap((d) => d.instance_list.filter((i) => i.worker_id === w));
    assert.equal(of('w3').length, 0, 'a low-order key is not recorded');
    assert.equal(ch.counters.conflicting, 1);
    // w2 moves onto w1's endpoint, then keeps its endpoint and takes w1's key, then a low-order key
    await ch.handle('nodes/w2/net/service/address-changed', moved('192.168.1.10', key2));
    await ch.handle('nodes/w2/net/service/address-changed', moved('192.168.1.20', key1));
    await ch.handle('nodes/w2/net/service/address-changed', moved('192.168.1.20', lowOrder));
    assert.equal(ch.counters.conflicting, 4);
    assert.deepEqual(
      of('w2').map((i) => [i.host_ip, i.wg_public_key]),
      [['192.168.1.20', key2]],
      "w2's record is unchanged",
    );
    // its own new address is taken
    await ch.handle('nodes/w2/net/service/address-changed', moved('192.168.1.21', key2));
    assert.deepEqual(
      of('w2').map((i) => i.host_ip),
      ['192.168.1.21'],
    );
  });
});
