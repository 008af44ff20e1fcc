/**
 * The attacker on the underlay of a default, secure platform (issue 11): root, a cluster with its MQTT
 * broker and three NetManagers in their namespaces, a demo service (two web instances on n1 and n2, a
 * client on n3). The test process plugs into the platform's switch with an address of the underlay (a veth
 * of its own, as a machine on the same network) and talks to the addresses root and cluster listen on.
 * Each attack must fail with what a user would check (the status code and error, the refusal counters),
 * and afterwards the demo's traffic still reaches the real instances and the root still answers a paged
 * list of 30,000 services quickly while 40 clients walk it.
 *
 * The root's limits are its defaults but two, so that 30,000 services fit and are created in seconds:
 * `--max-services 30000` and the allocating routes' rate limit raised (the service flood then stops at the
 * quota, the subnet flood at the cluster's quota of worker subnetworks).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { ClusterCredentials, type ClusterIdentity } from '../../src/cluster/credentials.ts';
import { NodeCredentials, type NodeIdentity } from '../../src/node/credentials.ts';
import { HttpTransport, type Credentials, type HttpResponse } from '../../src/protocol/http-client.ts';
import { connectMqttAsync, mqttTlsOptions } from '../../src/protocol/mqtt-client.ts';
import { topics } from '../../src/protocol/mqtt.ts';
import type { ClusterStatus } from '../../src/protocol/cluster-api.ts';
import type { JobDocument, RootStatus } from '../../src/protocol/root-api.ts';
import { platformToken, tokenFile } from '../../src/platform/credentials.ts';
import { createPlatform, type Platform } from '../../src/platform/platform.ts';
import type { Identity } from '../../src/security/pki.ts';
import { FIXTURES, inNetns } from '../support/workloads.ts';

const exec = promisify(execFile);
const log = pino({ level: 'warn' });
const SERVICES = 30_000;
const WEB = 'e2e.attack.web.v1';

/** Polls `fn` until it returns something other than undefined; fails after `ms`. */
async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setImmediate(r));
  }
}

function errorCode(res: HttpResponse): string | undefined {
  try {
    return (JSON.parse(res.text) as { error?: string }).error;
  } catch {
    return undefined;
  }
}

/** Asserts `res` has `status` (and error code `code`), with the body in the message when it does not. */
function refused(res: HttpResponse, status: number, code?: string): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  if (code !== undefined) assert.equal(errorCode(res), code, res.text);
}

describe('the attacker on the underlay of a secure platform', { timeout: 300_000 }, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-attacker-e2e-'));
  const work = mkdtempSync(join(tmpdir(), 'oaknet-attacker-own-'));
  const transports: HttpTransport[] = [];
  const clients: MqttClient[] = [];
  let platform: Platform;
  let veth = '';
  let rootUrl = '';
  let clusterUrl = '';
  let mqttUrl = '';
  let ca = '';
  let c1 = '';
  let node: NodeIdentity; // an invented worker of c1, enrolled as a real node is
  let cluster: ClusterIdentity; // an invented cluster, enrolled as a real one is
  let web: JobDocument; // the demo's job, as the root had it before the attacks

  const rootId: Identity = { kind: 'root' };
  const c1Id = (): Identity => ({ kind: 'cluster', clusterId: c1 });
  const http = (base: string, creds: Credentials): HttpTransport => {
    const t = new HttpTransport(base, creds);
    transports.push(t);
    return t;
  };
  const anonymous = (base: string, expect: Identity) => http(base, { tls: { ca, expect } });
  const withToken = (role: 'operator' | 'orchestrator' | 'read-only') =>
    http(rootUrl, { tls: { ca, expect: rootId }, token: platformToken(platform.state, role)! });
  const asCluster = () =>
    http(rootUrl, { tls: { ca, key: cluster.key, cert: cluster.cert, expect: rootId } });
  const asNode = (base: string, expect: Identity) =>
    http(base, { tls: { ca, key: node.key, cert: node.chain, expect } });

  const mqttAs = async (id: NodeIdentity | undefined, clientId: string): Promise<MqttClient> => {
    const c = await connectMqttAsync(mqttUrl, {
      clientId,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      ...mqttTlsOptions({
        ca,
        ...(id ? { key: id.key, cert: id.chain } : {}),
        expect: c1Id(),
      }),
    });
    clients.push(c);
    return c;
  };
  /** Publishes from a fresh connection of `id`; resolves when the broker closed it (a refused publish). */
  const publishRefused = async (topic: string, payload: string, retain = false): Promise<void> => {
    const c = await mqttAs(node, node.workerId);
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    c.publish(topic, payload, { qos: 0, retain });
    await closed;
  };
  const c1Status = (): Promise<ClusterStatus> => platform.clusterClient('c1').status();
  const mqttRefused = async () => (await c1Status()).security.mqtt_refused!;
  const rootStatus = async (): Promise<RootStatus> => {
    const res = await withToken('read-only').request('GET', '/api/net/status');
    refused(res, 200);
    return JSON.parse(res.text) as RootStatus;
  };
  const job = async (): Promise<JobDocument> => platform.rootClient().jobByName(WEB);
  const instancesOf = (j: JobDocument) =>
    j.instance_list
      .map((i) => [i.instance_number, i.namespace_ip, i.host_ip, i.cluster_id])
      .sort((a, b) => Number(a[0]) - Number(b[0]));

  before(async () => {
    platform = await createPlatform(
      { stateDir, nodes: 3, rootLimits: { maxServices: SERVICES, allocationRateLimit: 1_000_000 } },
      log,
    );
    const st = platform.state;
    c1 = st.clusters[0]!.clusterId;
    ca = readFileSync(join(stateDir, 'pki', 'ca.crt'), 'utf8');
    // the attacker's machine on the underlay: a veth into the switch namespace, the /24's .250
    const prefix = st.subnet.split('.').slice(0, 3).join('.');
    const me = `${prefix}.250`;
    veth = `${st.id}-atk`;
    const ip = (...args: string[]) => exec('ip', args);
    await ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', veth, 'netns', st.switchNs);
    await ip('addr', 'add', `${me}/24`, 'dev', veth);
    await ip('link', 'set', veth, 'up');
    await exec('ip', ['netns', 'exec', st.switchNs, 'sysctl', '-qw', `net.ipv4.conf.${veth}.proxy_arp=1`]);
    await exec('ip', ['netns', 'exec', st.switchNs, 'sysctl', '-qw', `net.ipv4.neigh.${veth}.proxy_delay=0`]);
    await ip('-n', st.switchNs, 'link', 'set', veth, 'up');
    await ip('-n', st.switchNs, 'route', 'add', `${me}/32`, 'dev', veth);
    rootUrl = `https://${st.ctlIp}:${st.root.port}`;
    clusterUrl = `https://${st.ctlIp}:${st.clusters[0]!.port}`;
    mqttUrl = `mqtts://${st.ctlIp}:${st.clusters[0]!.mqttPort}`;

    // the demo: web instances 0 and 1 on n1 and n2, a client on n3
    for (const [i, n] of [
      [0, 'n1'],
      [1, 'n2'],
    ] as const) {
      await platform.startWorkload({
        name: `web${i}`,
        node: n,
        service: WEB,
        instance: i,
        command: ['python3', join(FIXTURES, 'server.py'), `W${i}`],
        readyLine: `W${i} ready`,
      });
    }
    await platform.startWorkload({
      name: 'cli',
      node: 'n3',
      service: 'e2e.attack.cli.v1',
      instance: 0,
      command: ['sleep', 'infinity'],
    });
    web = await job();
    assert.equal(web.instance_list.length, 2);

    // a node's identity, enrolled with the platform's node token as a NetManager enrolls
    node = await new NodeCredentials({
      stateDir: join(work, 'node'),
      clusterApi: clusterUrl,
      token: readFileSync(tokenFile(st, 'join-nodes'), 'utf8').trim(),
      log,
    }).forWorker('atk-w1');
    // a cluster's identity: a cluster enrolled (and registered) with a cluster token, as a real one is
    const { token } = await platform.rootClient('operator').createToken('cluster', 600, 'attacker');
    cluster = (
      await ClusterCredentials.open({
        dir: join(work, 'cluster'),
        rootUrl,
        clusterId: 'atk-c9',
        token,
        log,
      })
    ).current;
    refused(
      await asCluster().request('POST', '/api/net/cluster', {
        body: { cluster_id: 'atk-c9', cluster_address: me, cluster_port: 10119 },
      }),
      200,
    );
  });

  after(async () => {
    for (const c of clients) await c.endAsync(true).catch(() => undefined);
    for (const t of transports) t.close();
    await platform?.destroy();
    if (veth) await exec('ip', ['link', 'del', veth]).catch(() => undefined); // gone with the switch
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('1. no credentials: 401 for every write of root and cluster; plain http to the https port fails', async () => {
    const root = anonymous(rootUrl, rootId);
    const deploy = { _id: 'a'.repeat(24), deployment_descriptor: { app_name: 'x', app_ns: 'y' } };
    const status = {
      job_id: web.system_job_id,
      instances: [{ instance_number: 0, namespace_ip: '10.18.0.66', host_ip: '198.51.100.1', host_port: 1 }],
    };
    const reg = { cluster_id: c1, cluster_address: '198.51.100.1', cluster_port: 1 };
    for (const [method, path, body] of [
      ['POST', '/api/net/service/deploy', deploy],
      ['POST', '/api/net/service/net_deploy_status', status],
      ['POST', '/api/net/cluster', reg],
      ['GET', `/api/net/subnet?worker_id=atk-w2&cluster_id=${c1}`, undefined],
      ['GET', '/api/net/service', undefined],
    ] as const) {
      const res = await root.request(method, path, body !== undefined ? { body } : {});
      refused(res, 401, 'E_UNAUTHENTICATED');
    }
    const res = await anonymous(clusterUrl, c1Id()).request('POST', '/api/net/job/update', {
      body: { job_name: WEB, instance_number: -1, type: 'UNDEPLOYMENT' },
    });
    refused(res, 401, 'E_UNAUTHENTICATED');
    for (const base of [rootUrl, clusterUrl]) {
      await assert.rejects(
        http(base.replace('https:', 'http:'), {}).request('POST', '/api/net/service/deploy', {
          body: deploy,
        }),
        { code: 'E_UNAVAILABLE' },
      );
    }
  });

  it('2. an operator token for an orchestrator call: 403', async () => {
    const res = await withToken('operator').request('POST', '/api/net/service/deploy', {
      body: { _id: 'b'.repeat(24), deployment_descriptor: { app_name: 'x', app_ns: 'y' } },
    });
    refused(res, 403, 'E_FORBIDDEN');
  });

  it('3. an MQTT client without a certificate is refused', async () => {
    const before = (await mqttRefused()).connectRefused;
    await assert.rejects(mqttAs(undefined, 'atk-anon'));
    await assert.rejects(
      connectMqttAsync(mqttUrl.replace('mqtts:', 'mqtt:'), {
        clientId: 'atk-plain',
        reconnectPeriod: 0,
        connectTimeout: 3000,
      }),
    );
    assert.ok((await mqttRefused()).connectRefused > before, 'counted');
  });

  it("4. a node certificate: another node's deployment report and nodes/# are refused, counted, never applied", async () => {
    const n1 = platform.node('n1').workerId;
    const before = await mqttRefused();
    await publishRefused(
      topics.serviceDeployed(n1),
      JSON.stringify({
        appname: WEB,
        status: 'DEPLOYED',
        instance_number: 0,
        nsip: '10.18.0.66',
        nsipv6: '',
        host_port: '50103',
        host_ip: '198.51.100.66',
      }),
    );
    const spy = await mqttAs(node, node.workerId);
    await assert.rejects(spy.subscribeAsync('nodes/#', { qos: 1 }), /Subscribe error/);
    const after = await mqttRefused();
    assert.ok(after.publishRefused > before.publishRefused, 'publish counted');
    assert.ok(after.subscribeRefused > before.subscribeRefused, 'subscription counted');
    assert.deepEqual(instancesOf(await job()), instancesOf(web), "the root's job document is unchanged");
  });

  it("5. another cluster's ID, a forged address change and deployment report, a re-registration: refused", async () => {
    // a valid cluster certificate that claims c1
    const res = await asCluster().request('GET', `/api/net/subnet?worker_id=atk-w3&cluster_id=${c1}`);
    refused(res, 403, 'E_FORBIDDEN');
    // re-registering c1 to point at the attacker
    const reg = { cluster_id: c1, cluster_address: '198.51.100.66', cluster_port: 10111 };
    refused(await asCluster().request('POST', '/api/net/cluster', { body: reg }), 403, 'E_FORBIDDEN');
    refused(await anonymous(rootUrl, rootId).request('POST', '/api/net/cluster', { body: reg }), 401);
    const clusters = await platform.rootClient().clusters();
    assert.equal(clusters.find((c) => c.cluster_id === c1)?.cluster_address, platform.state.ctlIp);
    // a deployment report for c1's instance: as the attacker's cluster, and with a node certificate
    const report = {
      job_id: web.system_job_id,
      instances: [
        { instance_number: 0, namespace_ip: '10.18.0.66', host_ip: '198.51.100.66', host_port: 50103 },
      ],
    };
    for (const t of [asCluster(), asNode(rootUrl, rootId)]) {
      const r = await t
        .request('POST', '/api/net/service/net_deploy_status', { body: report })
        .catch((err: unknown) => ({ status: 0, text: String(err), headers: {} }));
      assert.ok(r.status === 401 || r.status === 403 || r.status === 0, `refused: ${r.status} ${r.text}`);
    }
    // a node's address change for another node, over MQTT
    const before = await mqttRefused();
    await publishRefused(
      topics.addressChanged(platform.node('n2').workerId),
      JSON.stringify({ host_ip: '198.51.100.66', host_port: 50103 }),
    );
    assert.ok((await mqttRefused()).publishRefused > before.publishRefused);
    assert.deepEqual(instancesOf(await job()), instancesOf(web), "the root's job document is unchanged");
  });

  it('6. no client-ID takeover, no re-enrollment as a real worker, no retained oaknet/cluster from a node', async () => {
    const n1 = platform.node('n1').workerId;
    const before = await mqttRefused();
    await assert.rejects(mqttAs(node, n1), /Not authorized|not authorized/i);
    await assert.rejects(mqttAs(node, `oaknet-cluster-${c1}`), /Not authorized|not authorized/i);
    assert.ok((await mqttRefused()).connectRefused >= before.connectRefused + 2);
    assert.equal((await platform.nodeClient('n1').status()).mqtt_connected, true, 'n1 stays connected');
    // the node token is the platform's, shared by every node: it must not buy the certificate of a
    // worker that is enrolled already (with it the attacker would be n1 at the broker)
    await assert.rejects(
      new NodeCredentials({
        stateDir: join(work, 'thief'),
        clusterApi: clusterUrl,
        token: readFileSync(tokenFile(platform.state, 'join-nodes'), 'utf8').trim(),
        log,
      }).forWorker(n1),
      { code: 'E_FORBIDDEN' },
    );
    const retained = await mqttRefused();
    await publishRefused(
      topics.clusterInfo,
      JSON.stringify({ cluster_id: 'evil', api: 'https://198.51.100.66:10111', root: 'x' }),
      true,
    );
    assert.ok((await mqttRefused()).publishRefused > retained.publishRefused);
    assert.equal((await platform.nodeClient('n1').status()).mqtt_connected, true);
  });

  it('7. exhaustion: subnets and services stop at their quotas, MQTT subnet requests for others are refused', async () => {
    // a cluster certificate asking for thousands of worker subnetworks
    const quota = (await rootStatus()).quotas.max_workers_per_cluster;
    const t = asCluster();
    let granted = 0;
    let stopped: HttpResponse | undefined;
    for (let i = 0; i < quota + 500 && !stopped; i++) {
      const res = await t.request('GET', `/api/net/subnet?worker_id=atk-${i}`);
      if (res.status === 200) granted++;
      else stopped = res;
    }
    assert.ok(stopped, 'the subnet flood was stopped');
    assert.ok(
      (stopped.status === 403 && errorCode(stopped) === 'E_QUOTA') || stopped.status === 429,
      `${stopped.status} ${stopped.text}`,
    );
    assert.ok(granted <= quota);
    const workersPool = Object.entries((await rootStatus()).pools).find(([name]) => /worker/i.test(name));
    assert.ok(workersPool, 'the root status shows the worker pool');
    const [, usage] = workersPool;
    assert.ok(usage.used < usage.capacity / 4, `worker pool far from empty: ${JSON.stringify(usage)}`);

    // 200 MQTT subnet requests for invented workers from a node certificate: each refused and counted
    const workersBefore = (await platform.rootClient().workers()).length;
    const before = await mqttRefused();
    // one after the other: connections with one client ID replace each other
    for (let i = 0; i < 200; i++)
      await publishRefused(topics.subnetRequest(`atk-mq-${i}`), JSON.stringify({ METHOD: 'GET' }));
    assert.ok((await mqttRefused()).publishRefused >= before.publishRefused + 200);
    assert.equal((await platform.rootClient().workers()).length, workersBefore, 'no subnetwork allocated');

    // an orchestrator token flooding service creation, 16 at a time, until the root refuses
    const started = Date.now();
    const services = (await rootStatus()).services;
    const flood = Array.from({ length: 16 }, () => withToken('orchestrator'));
    let n = 0;
    const refusals: HttpResponse[] = [];
    await Promise.all(
      flood.map(async (f) => {
        while (refusals.length === 0) {
          const i = n++;
          const res = await f.request('POST', '/api/net/service/deploy', {
            body: {
              _id: i.toString(16).padStart(24, '0'),
              deployment_descriptor: {
                app_name: 'flood',
                app_ns: 'atk',
                service_name: `s${i}`,
                service_ns: 'v1',
              },
            },
            timeoutMs: 30_000,
          });
          if (res.status !== 200) refusals.push(res);
        }
      }),
    );
    const res = refusals[0]!;
    assert.ok(
      (res.status === 403 && errorCode(res) === 'E_QUOTA') || res.status === 429,
      `${res.status} ${res.text}`,
    );
    const status = await rootStatus();
    assert.equal(status.services, SERVICES, `the quota: ${services} before, ${n} asked`);
    log.warn({ ms: Date.now() - started, created: SERVICES - services }, 'service flood');
  });

  it("8. afterwards the demo's traffic reaches the real instances; a paged list of 30,000 stays fast under load", async () => {
    const rr = (await job()).service_ip_list.find((s) => s.IpType === 'RR')!.Address!;
    const cli = platform.workloads.find((w) => w.name === 'cli')!.netns;
    const seen = new Set<string>();
    await until(
      'answers from both web instances',
      async () => {
        const answer = await inNetns(cli, ['curl', '-s', '-m', '2', `http://${rr}/`]);
        assert.match(answer, /^W[01] /, 'only the real instances answer');
        seen.add(answer.slice(0, 2));
        return seen.size === 2 ? true : undefined;
      },
      20_000,
    );
    assert.deepEqual(instancesOf(await job()), instancesOf(web));

    // 40 clients (the attacker's, in a process of their own) walk the whole list in pages of 1,000 while a
    // user elsewhere (through the host's forwarder: another caller) times first pages of 100; only the
    // samples taken under load count
    const timer = http(platform.rootUrl, {
      tls: { ca, expect: rootId },
      token: platformToken(platform.state, 'read-only')!,
    });
    for (let i = 0; i < 20; i++) refused(await timer.request('GET', '/api/net/service?limit=100'), 200);
    const started = Date.now();
    const walkers = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(FIXTURES, 'list-walkers.ts'),
        rootUrl,
        join(stateDir, 'pki', 'ca.crt'),
        tokenFile(platform.state, 'read-only'),
        '40',
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    const begun = new Promise<void>((resolve) =>
      walkers.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.startsWith('walking\n')) resolve();
      }),
    );
    const done = new Promise<number | null>((resolve) => walkers.once('exit', (code) => resolve(code)));
    let walking = true;
    void done.then(() => (walking = false));
    await Promise.race([begun, done]);
    // the walkers go on until the samples are taken: every sample is under load
    const times: number[] = [];
    while (walking && times.length < 200) {
      const t0 = performance.now();
      const res = await timer.request('GET', '/api/net/service?limit=100');
      const ms = performance.now() - t0;
      refused(res, 200);
      assert.equal((JSON.parse(res.text) as unknown[]).length, 100);
      if (walking) times.push(ms);
    }
    walkers.stdin.end();
    assert.equal(await done, 0, out);
    const { pages } = JSON.parse(out.slice('walking\n'.length)) as { pages: number[][] };
    assert.equal(pages.length, 40);
    assert.deepEqual(new Set(pages.flat()), new Set([SERVICES / 1000]), 'every walk read every page');
    assert.equal(times.length, 200, 'samples under load');
    times.sort((a, b) => a - b);
    const p = (q: number) => times[Math.min(times.length - 1, Math.ceil((q / 100) * times.length) - 1)]!;
    log.warn(
      { samples: times.length, p50: p(50).toFixed(1), p99: p(99).toFixed(1), walkMs: Date.now() - started },
      'first page of 100 while 40 clients walk 30,000 services',
    );
    // The figure itself is the bench's (npm run bench -- --only control: paging.ts); this bound only catches a
    // list that reads or sorts what lies before the page (seconds under this load), not this machine's speed:
    // 100 ms here measured 76-136 ms with the same code, depending on what else the 2 cores ran.
    assert.ok(p(99) < 500, `p99 ${p(99).toFixed(1)} ms`);
  });
});
