/**
 * Flaky links and restarts between root and cluster: a cluster registers again when the root comes back
 * (even with its state lost), and a cluster that was down gets the notifications it missed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { startCluster, type RunningCluster } from '../../src/cluster/cluster.ts';
import type { ClusterInfo } from '../../src/protocol/root-api.ts';
import { startRoot, type RunningRoot } from '../../src/root/root.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { FakeNetManager } from '../support/fake-netmanager.ts';
import { startMosquitto, type Mosquitto } from '../support/mosquitto.ts';
import { freePort } from '../support/ports.ts';

const log = pino({ level: 'silent' });
const post = (url: string, body: unknown) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** Resolves when check() is true; checks on every tick of the cluster's own 100 ms root health loop. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('root and cluster restarts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-restart-'));
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    rmSync(dir, { recursive: true, force: true });
  });

  it('registers again when the root comes back, even with an empty store', async () => {
    const rootPort = await freePort();
    let root: RunningRoot = await startRoot({
      store: new MemoryStore(),
      log,
      port: rootPort,
      host: '127.0.0.1',
    });
    const cluster = await startCluster({
      rootUrl: root.url,
      store: new MemoryStore(),
      log,
      port: 0,
      host: '127.0.0.1',
      mqttPort: 0,
      clusterId: 'returning',
      advertiseAddress: '127.0.0.1',
      rootCheckMs: 100,
    });
    cleanups.push(() => cluster.close());
    assert.deepEqual(
      root.registry.listClusters().map((c) => c.cluster_id),
      ['returning'],
    );
    await root.close();
    root = await startRoot({ store: new MemoryStore(), log, port: rootPort, host: '127.0.0.1' });
    cleanups.push(() => root.close());
    await eventually('the cluster registered with the new root', () =>
      Promise.resolve(root.registry.listClusters().some((c) => c.cluster_id === 'returning')),
    );
    assert.equal(cluster.status().root_reachable, true);
  });

  it('delivers what a cluster missed while it was down', async () => {
    const mosquitto: Mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.stop());
    const root = await startRoot({
      store: new SqliteStore(join(dir, 'root.db')),
      log,
      port: 0,
      host: '127.0.0.1',
      notifier: { minBackoffMs: 50, maxBackoffMs: 200 },
    });
    cleanups.push(() => root.close());
    const clusterPort = await freePort();
    const boot = () =>
      startCluster({
        rootUrl: root.url,
        store: new SqliteStore(join(dir, 'cluster.db')),
        log,
        port: clusterPort,
        host: '127.0.0.1',
        mqttUrl: mosquitto.url,
        clusterId: 'flaky',
        advertiseAddress: '127.0.0.1',
        rootCheckMs: 100,
      });
    let cluster: RunningCluster = await boot();
    const job = 'iot.lab.sensor.v1';
    assert.equal(
      (
        await post(`${root.url}/api/net/service/deploy`, {
          _id: 'job-sensor',
          deployment_descriptor: { app_name: 'iot', app_ns: 'lab', service_name: 'sensor', service_ns: 'v1' },
        })
      ).status,
      200,
    );
    for (const n of [0, 1]) {
      assert.equal(
        (
          await post(`${root.url}/api/net/instance/deploy`, {
            _id: 'job-sensor',
            instance_number: n,
            cluster_id: 'flaky',
          })
        ).status,
        200,
      );
    }
    assert.equal((await post(`${cluster.url}/api/net/deployment`, { job_name: job })).status, 200);
    const node = await FakeNetManager.connect(mosquitto.url, 'sensor-node');
    cleanups.push(() => node.close());
    await node.subscribe(`jobs/${job}/updates_available`);

    // the cluster goes down; meanwhile the orchestrator removes instance 1
    await cluster.close();
    assert.equal((await fetch(`${root.url}/api/net/job-sensor/1`, { method: 'DELETE' })).status, 200);
    await eventually('the root sees the failed delivery', () =>
      Promise.resolve(
        root.registry
          .listClusters()
          .some((c: ClusterInfo) => c.cluster_id === 'flaky' && c.status === 'ERROR'),
      ),
    );
    assert.equal(root.registry.listClusters()[0]?.pending_notifications, 1);

    // back up: it re-registers, the root delivers at once, and the node hears about it
    cluster = await boot();
    cleanups.push(() => cluster.close());
    assert.deepEqual(await node.next(`jobs/${job}/updates_available`), { type: 'UNDEPLOYMENT' });
    await eventually('the outbox is empty', () =>
      Promise.resolve(root.registry.listClusters()[0]?.pending_notifications === 0),
    );
    assert.equal(root.registry.listClusters()[0]?.status, 'ACTIVE');
  });
});
