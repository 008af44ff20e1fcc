/**
 * Control-plane benchmarks: allocation throughput of the root, MQTT table-query round trips through a
 * cluster (cache hit and root miss), the propagation of a root notification to 1,000 NetManager-like
 * MQTT clients, and of an instance change into the service tables of 100 simulated NetManagers (the real
 * node-side code, see propagation.ts), and paged lists of 30,000 services (paging.ts). Root and cluster run
 * as real `oaknet` processes; the clients run here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { connectMqttAsync as connectAsync } from '../src/protocol/mqtt-client.ts';
import { AddressPlan } from '../src/addressing/plan.ts';
import { RootClient } from '../src/protocol/root-client.ts';
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

const post = (url: string, body: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }).then(async (r) => {
    if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  });

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
    // real processes: root and cluster (embedded broker)
    const rootPort = await freePort();
    // the HTTP allocation figure is a flood from one caller into one (anonymous) cluster, by design: the
    // quota and rate limits are raised out of its way (the limiter still runs, so its cost is in the figure)
    const { proc: root, url: rootUrl } = await startRootProcess(dir, rootPort, [
      '--max-workers-per-cluster',
      '15360',
      '--rate-limit',
      '100000000',
      '--allocation-rate-limit',
      '100000000',
    ]);
    procs.push(root);
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
    ]);
    procs.push(cluster);
    const clusterUrl = `http://127.0.0.1:${clusterPort}`;
    await waitHttpOk(`${clusterUrl}/api/net/health`, cluster);
    const mqttUrl = `mqtt://127.0.0.1:${mqttPort}`;

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
            const r = await fetch(`${rootUrl}/api/net/subnet?worker_id=http${i}`);
            await r.arrayBuffer();
          }
        }),
      );
      results.push({
        section: 'control plane',
        name: 'worker subnet allocations over HTTP (16 concurrent)',
        value: n / ((performance.now() - t) / 1000),
        unit: 'alloc/s',
      });
    }

    progress('allocations over HTTP');
    // services for the table queries: one cached job, and 500 the cluster has not seen
    const services = 500;
    await post(`${rootUrl}/api/net/cluster`, {
      cluster_id: 'bench',
      cluster_address: '127.0.0.1',
      cluster_port: clusterPort,
    });
    for (let i = 0; i <= services; i++) {
      await post(`${rootUrl}/api/net/service/deploy`, {
        _id: `job${i}`,
        deployment_descriptor: { app_name: 'bench', app_ns: 'q', service_name: `s${i}`, service_ns: 'v1' },
      });
      await post(`${rootUrl}/api/net/instance/deploy`, {
        _id: `job${i}`,
        instance_number: 0,
        cluster_id: 'bench',
      });
      await post(`${rootUrl}/api/net/service/net_deploy_status`, {
        job_id: `job${i}`,
        instances: [
          {
            instance_number: 0,
            namespace_ip: '10.16.0.2',
            namespace_ip_v6: 'fc00::2',
            host_ip: '127.0.0.1',
            host_port: 50103,
          },
        ],
      });
    }
    const jobs = await new RootClient(rootUrl).services();

    progress('501 services deployed');
    // 3. MQTT table-query round trips as a NetManager sees them
    {
      const worker = 'a1b2c3d4e5f6a7b8c9d0e1f2';
      const nm = await connectAsync(mqttUrl, { clientId: worker, protocolVersion: 4 });
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
        misses.push(await query(`{"sname":"","sip":"${j.service_ip_list[0]!.Address!}"}`));
      for (const [name, xs] of [
        ['table query, cluster cache hit', hits],
        ['table query, root miss', misses],
      ] as const) {
        results.push({
          section: 'control plane',
          name: `${name} p50`,
          value: percentile(xs, 50),
          unit: 'ms',
        });
        results.push({
          section: 'control plane',
          name: `${name} p99`,
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
            connectAsync(mqttUrl, { clientId: `sub${i + k}`, protocolVersion: 4, keepalive: 60 }),
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
        await post(`${rootUrl}/api/net/service/net_deploy_status`, {
          job_id: 'job0',
          instances: [
            {
              instance_number: 0,
              namespace_ip: '10.16.0.2',
              namespace_ip_v6: 'fc00::2',
              host_ip: '127.0.0.1',
              host_port: 50103 + r + 1,
            },
          ],
        });
        await finished;
        all.push(...arrivals);
      }
      results.push({
        section: 'control plane',
        name: 'root notification -> 1,000 MQTT clients p50',
        value: percentile(all, 50),
        unit: 'ms',
      });
      results.push({
        section: 'control plane',
        name: 'root notification -> 1,000 MQTT clients p99',
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
      });
      const all = prop.changes.flatMap((c) => c.arrivalsMs);
      const last = prop.changes.map((c) => Math.max(...c.arrivalsMs));
      const name = `instance change -> ${nodes} NetManager service tables`;
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
      progress('propagation to 100 NetManagers');
    }

    // 6. paged lists of 30,000 services, on a root of their own
    results.push(...(await measurePaging(dir, procs, progress)));
  } finally {
    await Promise.allSettled(clients.map((c) => c.endAsync(true)));
    await unregister();
  }

  return results;
}
