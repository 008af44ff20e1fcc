/**
 * Control-plane benchmarks: allocation throughput of the root, MQTT table-query round trips through a
 * cluster (cache hit and root miss), the propagation of a root notification to 1,000 NetManager-like
 * MQTT clients, and of an instance change into the service tables of 100 simulated NetManagers (the real
 * node-side code, see propagation.ts), and paged lists of 30,000 services (paging.ts). Root and cluster run
 * as real `oaknet` processes; the clients run here.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { pino } from 'pino';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { NodeCredentials } from '../src/node/credentials.ts';
import { HttpTransport } from '../src/protocol/http-client.ts';
import { connectMqttAsync as connectAsync, mqttTlsOptions } from '../src/protocol/mqtt-client.ts';
import { RootClient } from '../src/protocol/root-client.ts';
import { CertificateAuthority } from '../src/security/pki.ts';
import { AddressPlan } from '../src/addressing/plan.ts';
import { Registry } from '../src/root/registry.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import {
  runOaknet,
  startRootProcess,
  waitHttpOk,
  type OaknetProcess,
} from '../test/support/oaknet-process.ts';
import { freePort } from '../test/support/ports.ts';
import { onCleanup } from './cleanup.ts';
import { measurePaging } from './paging.ts';
import { measurePropagation } from './propagation.ts';
import { percentile, type BenchResult } from './report.ts';

export async function runControlPlaneBench(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-bench-cp-'));
  const procs: OaknetProcess[] = [];
  const clients: MqttClient[] = [];
  // on SIGINT/SIGTERM (bench/main.ts) the processes and the directory go too
  const unregister = onCleanup('stop the control-plane bench processes', async () => {
    for (const p of [...procs].reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const t0 = performance.now();
  let tStep = t0;
  const progress = (what: string) => {
    const now = performance.now();
    process.stderr.write(`bench control plane: ${what} in ${((now - tStep) / 1000).toFixed(1)} s\n`);
    tStep = now;
  };
  try {
    // 1. allocations/s in the root's registry on its durable store (each one a committed, fsynced transaction)
    {
      const store = new SqliteStore(join(dir, 'alloc.db'));
      const n = 5000;
      // one cluster of 5,000 workers: above the default quota, raised for this figure
      const registry = new Registry(store, new AddressPlan(), { quotas: { maxWorkersPerCluster: n } });
      registry.registerCluster({ cluster_id: 'bench', cluster_address: '127.0.0.1', cluster_port: 9 });
      let t = performance.now();
      for (let i = 0; i < n; i++) registry.allocateSubnet('bench', `w${i}`);
      results.push({
        section: 'control plane',
        name: 'worker subnet allocations (registry, SQLite, durable)',
        value: n / ((performance.now() - t) / 1000),
        unit: 'alloc/s',
      });
      t = performance.now();
      for (let i = 0; i < n; i++) {
        registry.deployService(`j${i}`, {
          app_name: 'bench',
          app_ns: 'b',
          service_name: `s${i}`,
          service_ns: 'v1',
        });
      }
      results.push({
        section: 'control plane',
        name: 'service creations, 4 ServiceIPs each (registry, SQLite)',
        value: n / ((performance.now() - t) / 1000),
        unit: 'svc/s',
      });
      store.close();
    }

    progress('registry allocations');
    // the same runs over the insecure control plane and the secure one (TLS 1.3, certificates, tokens),
    // one after the other in this run, so their ratio is not the machine's noise of another day
    for (const secure of [false, true])
      await processBench({ dir, secure, results, procs, clients, progress });

    // paged lists of 30,000 services, on a root of their own
    results.push(...(await measurePaging(dir, procs, progress)));
  } finally {
    await Promise.allSettled(clients.map((c) => c.endAsync(true)));
    await unregister();
  }

  return results;
}

interface ProcessBench {
  dir: string;
  secure: boolean;
  results: BenchResult[];
  procs: OaknetProcess[];
  clients: MqttClient[];
  progress: (what: string) => void;
}

/** Root and cluster as processes, the HTTP, MQTT and propagation measurements, insecure or secure. */
async function processBench(b: ProcessBench): Promise<void> {
  const { secure, results, procs, clients, progress } = b;
  const dir = join(b.dir, secure ? 'secure' : 'insecure');
  mkdirSync(dir, { recursive: true });
  const tag = secure ? ' (TLS)' : '';
  // real processes: root and cluster (embedded broker)
  const rootPort = await freePort();
  // the HTTP allocation figure is a flood from one caller into one cluster, by design: the quota and rate
  // limits are raised out of its way (the limiter still runs, so its cost is in the figure)
  const started = await startRootProcess(dir, rootPort, {
    insecure: !secure,
    flags: [
      '--max-workers-per-cluster',
      '15360',
      '--rate-limit',
      '100000000',
      '--allocation-rate-limit',
      '100000000',
    ],
  });
  const { proc: root, url: rootUrl } = started;
  procs.push(root);
  const pki = secure ? await securePki(rootUrl, started.ca!, started.adminToken!, dir) : undefined;
  const clusterPort = await freePort();
  const mqttPort = await freePort();
  const cluster = runOaknet([
    'cluster',
    '--root',
    rootUrl,
    '--port',
    String(clusterPort),
    '--host',
    '127.0.0.1',
    '--mqtt-port',
    String(mqttPort),
    '--store',
    join(dir, 'cluster.db'),
    '--cluster-id',
    'bench',
    '--advertise-address',
    '127.0.0.1',
    '--log-level',
    'warn',
    ...(pki ? ['--token-file', pki.clusterTokenFile, '--pki-dir', join(dir, 'cluster-pki')] : ['--insecure']),
  ]);
  procs.push(cluster);
  const clusterUrl = `${secure ? 'https' : 'http'}://127.0.0.1:${clusterPort}`;
  if (pki) await waitSecureHealth(clusterUrl, pki.ca, cluster);
  else await waitHttpOk(`${clusterUrl}/api/net/health`, cluster);
  const mqttUrl = `${secure ? 'mqtts' : 'mqtt'}://127.0.0.1:${mqttPort}`;
  const ids = pki ? await clusterIdentity(join(dir, 'cluster-pki')) : undefined;
  const asOrchestrator = new HttpTransport(rootUrl, pki ? { tls: pki.tls, token: pki.orchestrator } : {});
  const asCluster = new HttpTransport(
    rootUrl,
    ids ? { tls: { ...pki!.tls, key: ids.key, cert: ids.cert } } : {},
  );
  const post = async (t: HttpTransport, path: string, body: unknown) => {
    const r = await t.request('POST', path, { body, timeoutMs: 10_000 });
    if (r.status !== 200) throw new Error(`${path}: ${r.status} ${r.text}`);
  };
  /** MQTT options of a simulated NetManager (its own certificate, in a secure platform). */
  const nodeMqtt = async (workerId: string) =>
    ids
      ? mqttTlsOptions({
          ca: pki!.ca,
          ...(await ids.nodeCa
            .issueKeyAndChain({ kind: 'node', clusterId: 'bench', workerId }, 1)
            .then((k) => ({
              key: k.key,
              cert: k.chain,
            }))),
          expect: { kind: 'cluster', clusterId: 'bench' },
        })
      : {};

  /**
   * The credentials of a simulated NetManager that enrolled at the cluster with a node token, as a real one
   * does (the cluster ignores messages of workers it did not enroll).
   */
  const enrolledNode = async (workerId: string): Promise<NodeCredentials> => {
    const stateDir = join(dir, 'nodes', workerId);
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const creds = new NodeCredentials({
      stateDir,
      clusterApi: clusterUrl,
      token: pki!.nodeToken,
      log: pino({ level: 'silent' }),
    });
    await creds.forWorker(workerId);
    return creds;
  };

  progress('root and cluster started');
  // 2. allocations/s over HTTP, 16 clients in flight
  {
    const n = 4000;
    let next = 0;
    const t = performance.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < n) {
          const i = next++;
          const r = await asCluster.request('GET', `/api/net/subnet?worker_id=http${i}`);
          if (r.status !== 200) throw new Error(`subnet: ${r.status} ${r.text}`);
        }
      }),
    );
    results.push({
      section: 'control plane',
      name: `worker subnet allocations over HTTP (16 concurrent)${tag}`,
      value: n / ((performance.now() - t) / 1000),
      unit: 'alloc/s',
    });
  }

  progress('allocations over HTTP');
  // services for the table queries: one cached job, and 500 the cluster has not seen
  const services = 500;
  if (!secure)
    await post(asCluster, '/api/net/cluster', {
      cluster_id: 'bench',
      cluster_address: '127.0.0.1',
      cluster_port: clusterPort,
    });
  for (let i = 0; i <= services; i++) {
    await post(asOrchestrator, '/api/net/service/deploy', {
      _id: `job${i}`,
      deployment_descriptor: { app_name: 'bench', app_ns: 'q', service_name: `s${i}`, service_ns: 'v1' },
    });
    await post(asOrchestrator, '/api/net/instance/deploy', {
      _id: `job${i}`,
      instance_number: 0,
      cluster_id: 'bench',
    });
    await post(asCluster, '/api/net/service/net_deploy_status', {
      job_id: `job${i}`,
      instances: [
        {
          instance_number: 0,
          namespace_ip: '10.16.0.2',
          namespace_ip_v6: 'fc00::2',
          host_ip: '127.0.0.1',
          host_port: 50103,
          worker_id: 'http0',
        },
      ],
    });
  }
  const jobs = JSON.parse((await asOrchestrator.request('GET', '/api/net/service')).text) as Array<{
    job_name: string;
    service_ip_list: Array<{ Address: string }>;
  }>;

  progress('501 services deployed');
  // 3. MQTT table-query round trips as a NetManager sees them
  {
    const worker = 'a1b2c3d4e5f6a7b8c9d0e1f2';
    const nm = await connectAsync(mqttUrl, {
      clientId: worker,
      protocolVersion: 4,
      ...(pki
        ? await enrolledNode(worker).then((c) =>
            mqttTlsOptions({
              ca: pki.ca,
              key: c.current!.key,
              cert: c.current!.chain,
              expect: { kind: 'cluster', clusterId: 'bench' },
            }),
          )
        : {}),
    });
    clients.push(nm);
    const resultTopic = `nodes/${worker}/net/tablequery/result`;
    await nm.subscribeAsync(resultTopic, { qos: 1 });
    let waiting: (() => void) | undefined;
    nm.on('message', () => waiting?.());
    const query = async (payload: string): Promise<number> => {
      const t = performance.now();
      const got = new Promise<void>((r) => (waiting = r));
      await nm.publishAsync(`nodes/${worker}/net/tablequery/request`, payload, { qos: 1 });
      await got;
      return performance.now() - t;
    };
    const cached = jobs[0]!.job_name;
    await query(`{"sname":"${cached}","sip":""}`); // warm: the cluster caches it
    const hits: number[] = [];
    for (let i = 0; i < 2000; i++) hits.push(await query(`{"sname":"${cached}","sip":""}`));
    const misses: number[] = [];
    for (const j of jobs.slice(1, services + 1))
      misses.push(await query(`{"sname":"","sip":"${j.service_ip_list[0]!.Address}"}`));
    for (const [name, xs] of [
      ['table query, cluster cache hit', hits],
      ['table query, root miss', misses],
    ] as const) {
      results.push({
        section: 'control plane',
        name: `${name} p50${tag}`,
        value: percentile(xs, 50),
        unit: 'ms',
      });
      results.push({
        section: 'control plane',
        name: `${name} p99${tag}`,
        value: percentile(xs, 99),
        unit: 'ms',
        target: name.includes('hit') ? '< 5 ms' : '< 20 ms',
      });
    }
  }

  progress('table queries');
  // 4. a root notification reaching 1,000 subscribed NetManagers
  {
    const job = jobs[0]!.job_name;
    const topic = `jobs/${job}/updates_available`;
    const subs = 1000;
    let pending = 0;
    let done: (() => void) | undefined;
    const arrivals: number[] = [];
    let t0 = 0;
    for (let i = 0; i < subs; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, subs - i) }, (_, k) =>
          nodeMqtt(`sub${i + k}`).then((tls) =>
            connectAsync(mqttUrl, { clientId: `sub${i + k}`, protocolVersion: 4, keepalive: 60, ...tls }),
          ),
        ),
      );
      for (const c of batch) {
        clients.push(c);
        c.on('message', () => {
          arrivals.push(performance.now() - t0);
          if (--pending === 0) done?.();
        });
        await c.subscribeAsync(topic, { qos: 1 });
      }
    }
    const rounds = 5;
    const all: number[] = [];
    for (let r = 0; r < rounds; r++) {
      arrivals.length = 0;
      pending = subs;
      const finished = new Promise<void>((res) => (done = res));
      t0 = performance.now();
      // the root changes the job: it notifies the cluster, which refreshes and tells every subscriber
      await post(asCluster, '/api/net/service/net_deploy_status', {
        job_id: 'job0',
        instances: [
          {
            instance_number: 0,
            namespace_ip: '10.16.0.2',
            namespace_ip_v6: 'fc00::2',
            host_ip: '127.0.0.1',
            host_port: 50103 + r + 1,
            worker_id: 'http0',
          },
        ],
      });
      await finished;
      all.push(...arrivals);
    }
    results.push({
      section: 'control plane',
      name: `root notification -> 1,000 MQTT clients p50${tag}`,
      value: percentile(all, 50),
      unit: 'ms',
    });
    results.push({
      section: 'control plane',
      name: `root notification -> 1,000 MQTT clients p99${tag}`,
      value: percentile(all, 99),
      unit: 'ms',
      target: '< 1000 ms',
    });
  }

  progress('notification to 1,000 clients');
  // 5. an instance change reaching the service tables of 100 NetManagers (ClusterLink + ServiceTable +
  // NodeResolver each, own MQTT client ID), from the root call until every table holds the change
  {
    const nodes = 100;
    const prop = await measurePropagation({
      rootUrl,
      mqttUrl,
      clusterId: 'bench',
      nodes,
      changes: 10,
      ...(pki && ids
        ? {
            secure: {
              orchestrator: { tls: pki.tls, token: pki.orchestrator },
              cluster: { tls: { ...pki.tls, key: ids.key, cert: ids.cert } },
              workerId: 'http0',
              node: enrolledNode,
            },
          }
        : {}),
    });
    const all = prop.changes.flatMap((c) => c.arrivalsMs);
    const last = prop.changes.map((c) => Math.max(...c.arrivalsMs));
    const name = `instance change -> ${nodes} NetManager service tables${tag}`;
    results.push({ section: 'control plane', name: `${name} p50`, value: percentile(all, 50), unit: 'ms' });
    results.push({ section: 'control plane', name: `${name} p99`, value: percentile(all, 99), unit: 'ms' });
    results.push({
      section: 'control plane',
      name: `${name}, all ${nodes} reached (median of ${last.length} changes)`,
      value: percentile(last, 50),
      unit: 'ms',
      samples: last,
    });
    results.push({
      section: 'control plane',
      name: `${name}, all ${nodes} reached (max)`,
      value: Math.max(...last),
      unit: 'ms',
    });
    progress(`propagation to 100 NetManagers${tag}`);
  }
  asOrchestrator.close();
  asCluster.close();
  for (const c of clients.splice(0)) await c.endAsync(true).catch(() => undefined);
  for (const p of procs.splice(0).reverse()) await p.stop();
}

/** A secure root's CA, an orchestrator token and a cluster join token (in a file), made with its admin token. */
async function securePki(rootUrl: string, ca: string, adminToken: string, dir: string) {
  const tls = { ca, expect: { kind: 'root' as const } };
  const admin = new RootClient(rootUrl, { credentials: { tls, token: adminToken } });
  const orchestrator = (await admin.createToken('orchestrator')).token;
  const nodeToken = (await admin.createToken('node', 3600)).token;
  const clusterTokenFile = join(dir, 'cluster.token');
  writeFileSync(clusterTokenFile, (await admin.createToken('cluster', 3600)).token, { mode: 0o600 });
  admin.close();
  return { ca, tls, orchestrator, nodeToken, clusterTokenFile };
}

/** The identity the cluster process enrolled (its key, certificate and node CA), from its PKI directory. */
async function clusterIdentity(pkiDir: string) {
  const s = JSON.parse(readFileSync(join(pkiDir, 'identity.json'), 'utf8')) as {
    key: string;
    cert: string;
    node_ca_key: string;
    node_ca_cert: string;
  };
  return {
    key: s.key,
    cert: s.cert,
    nodeCa: await CertificateAuthority.load(s.node_ca_cert, s.node_ca_key, s.node_ca_cert),
  };
}

/** Waits until a secure server answers GET /api/net/health. */
async function waitSecureHealth(url: string, ca: string, proc: OaknetProcess): Promise<void> {
  const t = new HttpTransport(url, { tls: { ca, expect: { kind: 'cluster', clusterId: 'bench' } } });
  const deadline = Date.now() + 20_000;
  try {
    for (;;) {
      const r = await t.request('GET', '/api/net/health').catch(() => undefined);
      if (r?.status === 200) return;
      if (proc.child.exitCode !== null || Date.now() > deadline)
        throw new Error(`${url} did not come up:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    t.close();
  }
}
