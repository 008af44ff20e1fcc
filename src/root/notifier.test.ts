import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import pino from 'pino';
import type { DeployedInstance, JobUpdateNotification } from '../protocol/root-api.ts';
import { MemoryStore } from '../store/memory.ts';
import { SqliteStore } from '../store/sqlite.ts';
import type { Store } from '../store/store.ts';
import { startRoot, type RunningRoot } from './root.ts';

// ---- helpers ---------------------------------------------------------------------------------------------

/** Longest a test waits for an event before it fails (a guard, not a synchronisation). */
const EVENT_TIMEOUT_MS = 10_000;

/** Resolves when check() holds; check runs now and after every notify(). */
class Events {
  private waiters: Array<{ check: () => boolean; resolve: () => void }> = [];

  notify(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.check()) return true;
      w.resolve();
      return false;
    });
  }

  until(check: () => boolean, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.check !== check);
        reject(new Error(`timed out waiting for ${what}`));
      }, EVENT_TIMEOUT_MS);
      this.waiters.push({
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

/** A pino logger whose entries the test can wait for (the notifier logs after every attempt's outcome). */
class LogTap {
  readonly entries: Array<{ msg?: string; cluster?: string; [key: string]: unknown }> = [];
  private readonly events = new Events();
  readonly logger = pino(
    { level: 'debug' },
    {
      write: (line: string) => {
        this.entries.push(JSON.parse(line) as (typeof this.entries)[number]);
        this.events.notify();
      },
    },
  );

  count(msg: string, cluster: string): number {
    return this.entries.filter((e) => e.msg === msg && e.cluster === cluster).length;
  }

  /** Waits until `msg` was logged for cluster at least n times in all. */
  until(msg: string, cluster: string, n: number): Promise<void> {
    return this.events.until(() => this.count(msg, cluster) >= n, `${n} x "${msg}" for ${cluster}`);
  }
}
const FAILED = 'cluster notification failed';
const DELIVERED = 'notified cluster';

/** A cluster service manager that records POST /api/net/job/update, answering 200, 503 or never. */
class FakeCluster {
  /** Bodies answered with 200, in arrival order. */
  readonly received: JobUpdateNotification[] = [];
  /** Every request, whatever the answer. */
  readonly attempts: Array<{
    method: string;
    url: string;
    type: string;
    body: unknown;
    status: number | 'hung';
  }> = [];
  mode: 'ok' | 'fail' | 'hang' = 'ok';
  port = 0;
  private readonly events = new Events();
  private readonly hung: ServerResponse[] = [];
  private readonly server = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => {
      const body: unknown = text ? JSON.parse(text) : undefined;
      const attempt = {
        method: req.method ?? '',
        url: req.url ?? '',
        type: req.headers['content-type'] ?? '',
        body,
        status: 0 as number | 'hung',
      };
      this.attempts.push(attempt);
      if (this.mode === 'hang') {
        attempt.status = 'hung';
        this.hung.push(res);
      } else if (this.mode === 'fail') {
        attempt.status = 503;
        res.writeHead(503, { 'content-type': 'text/plain' }).end('Service Unavailable');
      } else {
        attempt.status = 200;
        this.received.push(body as JobUpdateNotification);
        res
          .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
          .end('update notification received');
      }
      this.events.notify();
    });
  });

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    for (const res of this.hung.splice(0)) res.destroy();
    this.server.closeAllConnections();
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  untilReceived(n: number): Promise<void> {
    return this.events.until(() => this.received.length >= n, `${n} notifications delivered`);
  }

  untilAttempts(n: number): Promise<void> {
    return this.events.until(() => this.attempts.length >= n, `${n} delivery attempts`);
  }
}

const jobName = (svc: string) => `shop.prod.${svc}.web`;

function status(n: number): DeployedInstance {
  return {
    instance_number: n,
    namespace_ip: `10.16.0.${2 + n}`,
    namespace_ip_v6: `fc00::${2 + n}`,
    host_ip: '192.168.1.10',
    host_port: 50103,
  };
}

interface World {
  root: RunningRoot;
  tap: LogTap;
  /** Closes the root (once; the test cleanup closes it too). */
  close(): Promise<void>;
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function world(opts: {
  minBackoffMs: number;
  maxBackoffMs: number;
  timeoutMs?: number;
  store?: Store;
}): Promise<World> {
  const tap = new LogTap();
  const root = await startRoot({
    store: opts.store ?? new MemoryStore(),
    log: tap.logger,
    port: 0,
    host: '127.0.0.1',
    notifier: {
      minBackoffMs: opts.minBackoffMs,
      maxBackoffMs: opts.maxBackoffMs,
      timeoutMs: opts.timeoutMs ?? 2000,
    },
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await root.close();
  };
  cleanup.push(close);
  return { root, tap, close };
}

async function fakeCluster(): Promise<FakeCluster> {
  const c = await new FakeCluster().start();
  cleanup.push(() => c.close());
  return c;
}

/** Registers a cluster through the HTTP API, as the system manager does. */
async function register(root: RunningRoot, id: string, port: number): Promise<void> {
  const res = await fetch(`${root.url}/api/net/cluster`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ cluster_id: id, cluster_address: '127.0.0.1', cluster_port: port }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** Two services with instances 0..2 each, both cached by (interesting to) cluster `clusterId`. */
function services(root: RunningRoot, clusterId: string): void {
  for (const svc of ['a', 'b']) {
    root.registry.deployService(svc, {
      app_name: 'shop',
      app_ns: 'prod',
      service_name: svc,
      service_ns: 'web',
    });
    for (const n of [0, 1, 2]) root.registry.deployInstance(svc, n, clusterId);
    root.registry.resolveByName(jobName(svc), clusterId);
  }
}

function clusterRow(root: RunningRoot, id: string) {
  const row = root.registry.listClusters().find((c) => c.cluster_id === id);
  assert.ok(row, `cluster ${id} is listed`);
  return row;
}

function note(svc: string, n: number, type: JobUpdateNotification['type']): JobUpdateNotification {
  return { job_name: jobName(svc), instance_number: n, type };
}

// ---- tests -------------------------------------------------------------------------------------------------

describe('Notifier', () => {
  it('delivers to the interested cluster, oldest first, and nothing to the others', async () => {
    const { root, tap } = await world({ minBackoffMs: 20, maxBackoffMs: 100 });
    const c1 = await fakeCluster();
    const c2 = await fakeCluster();
    await register(root, 'c1', c1.port);
    await register(root, 'c2', c2.port);
    services(root, 'c1');

    root.registry.updateDeployStatus('a', [status(0), status(1)]);
    root.registry.updateDeployStatus('b', [status(0)]);
    root.registry.removeInstance('a', 2);
    const expected = [
      note('a', 0, 'DEPLOYMENT'),
      note('a', 1, 'DEPLOYMENT'),
      note('b', 0, 'DEPLOYMENT'),
      note('a', 2, 'UNDEPLOYMENT'),
    ];
    await c1.untilReceived(expected.length);
    await tap.until(DELIVERED, 'c1', expected.length);

    assert.deepEqual(c1.received, expected);
    for (const a of c1.attempts) {
      assert.equal(a.method, 'POST');
      assert.equal(a.url, '/api/net/job/update');
      assert.match(a.type, /^application\/json/);
    }
    assert.deepEqual(c2.attempts, []);
    assert.deepEqual(
      { ...clusterRow(root, 'c1') },
      {
        cluster_id: 'c1',
        cluster_address: '127.0.0.1',
        cluster_port: c1.port,
        status: 'ACTIVE',
        pending_notifications: 0,
      },
    );
  });

  it('a failing cluster turns ERROR, keeps its notifications queued, and gets all of them in order when it recovers', async () => {
    const { root, tap } = await world({ minBackoffMs: 20, maxBackoffMs: 100 });
    const c1 = await fakeCluster();
    c1.mode = 'fail';
    await register(root, 'c1', c1.port);
    services(root, 'c1');

    root.registry.updateDeployStatus('a', [status(0), status(1)]);
    await tap.until(FAILED, 'c1', 2); // the first attempt and one retry failed
    let row = clusterRow(root, 'c1');
    assert.equal(row.status, 'ERROR');
    assert.match(row.last_error ?? '', /503/);
    assert.equal(row.pending_notifications, 2);

    // more changes while the cluster is down: they queue behind the others
    root.registry.updateDeployStatus('b', [status(0)]);
    root.registry.removeInstance('a', 2);
    assert.equal(clusterRow(root, 'c1').pending_notifications, 4);
    const failuresSoFar = tap.count(FAILED, 'c1');
    await tap.until(FAILED, 'c1', failuresSoFar + 1); // it keeps retrying
    assert.ok(
      c1.attempts.every((a) => JSON.stringify(a.body) === JSON.stringify(note('a', 0, 'DEPLOYMENT'))),
      'while failing, only the oldest notification is tried (order is kept)',
    );

    c1.mode = 'ok';
    await c1.untilReceived(4);
    await tap.until(DELIVERED, 'c1', 4);
    assert.deepEqual(c1.received, [
      note('a', 0, 'DEPLOYMENT'),
      note('a', 1, 'DEPLOYMENT'),
      note('b', 0, 'DEPLOYMENT'),
      note('a', 2, 'UNDEPLOYMENT'),
    ]);
    row = clusterRow(root, 'c1');
    assert.equal(row.status, 'ACTIVE');
    assert.equal(row.last_error, undefined);
    assert.equal(row.pending_notifications, 0);
  });

  it('only the newest state of an instance is delivered after an outage', async () => {
    const { root, tap } = await world({ minBackoffMs: 600_000, maxBackoffMs: 600_000 });
    const c1 = await fakeCluster();
    c1.mode = 'fail';
    await register(root, 'c1', c1.port);
    services(root, 'c1');
    root.registry.updateDeployStatus('a', [status(0)]);
    await tap.until(FAILED, 'c1', 1); // now in a long backoff: nothing is in flight
    root.registry.updateDeployStatus('a', [status(1)]);
    root.registry.updateDeployStatus('a', [status(0)]); // a/0 again: replaces the queued one
    root.registry.removeInstance('a', 1); // a/1 undeployed: replaces its DEPLOYMENT
    assert.equal(clusterRow(root, 'c1').pending_notifications, 2);

    c1.mode = 'ok';
    await register(root, 'c1', c1.port);
    await c1.untilReceived(2);
    await tap.until(DELIVERED, 'c1', 2);
    assert.deepEqual(c1.received, [note('a', 0, 'DEPLOYMENT'), note('a', 1, 'UNDEPLOYMENT')]);
  });

  it('re-registration retries at once instead of waiting out the backoff', async () => {
    // a backoff longer than the test: only the re-registration can trigger the retry
    const { root, tap } = await world({ minBackoffMs: 600_000, maxBackoffMs: 600_000 });
    const c1 = await fakeCluster();
    c1.mode = 'fail';
    await register(root, 'c1', c1.port);
    services(root, 'c1');

    root.registry.updateDeployStatus('a', [status(0)]);
    await tap.until(FAILED, 'c1', 1);
    assert.equal(clusterRow(root, 'c1').status, 'ERROR');
    root.registry.updateDeployStatus('b', [status(0), status(1)]);
    assert.equal(
      clusterRow(root, 'c1').pending_notifications,
      3,
      'new notifications wait behind the backoff',
    );
    assert.equal(c1.attempts.length, 1);

    c1.mode = 'ok';
    await register(root, 'c1', c1.port);
    await c1.untilReceived(3);
    await tap.until(DELIVERED, 'c1', 3);
    assert.deepEqual(c1.received, [
      note('a', 0, 'DEPLOYMENT'),
      note('b', 0, 'DEPLOYMENT'),
      note('b', 1, 'DEPLOYMENT'),
    ]);
    const row = clusterRow(root, 'c1');
    assert.equal(row.status, 'ACTIVE');
    assert.equal(row.pending_notifications, 0);
  });

  it('a cluster that went away and came back on another port gets what it missed after re-registering', async () => {
    const { root, tap } = await world({ minBackoffMs: 20, maxBackoffMs: 100 });
    const before = await fakeCluster();
    await register(root, 'c1', before.port);
    services(root, 'c1');
    root.registry.updateDeployStatus('a', [status(0)]);
    await before.untilReceived(1);
    await tap.until(DELIVERED, 'c1', 1);

    await before.close();
    root.registry.updateDeployStatus('a', [status(1)]);
    root.registry.removeInstance('b', 0);
    await tap.until(FAILED, 'c1', 1);
    const row = clusterRow(root, 'c1');
    assert.equal(row.status, 'ERROR');
    assert.ok(row.last_error, 'the error is reported');
    assert.equal(row.pending_notifications, 2);

    const after = await fakeCluster();
    await register(root, 'c1', after.port);
    await after.untilReceived(2);
    await tap.until(DELIVERED, 'c1', 3);
    assert.deepEqual(after.received, [note('a', 1, 'DEPLOYMENT'), note('b', 0, 'UNDEPLOYMENT')]);
    assert.deepEqual(before.received, [note('a', 0, 'DEPLOYMENT')]);
    assert.equal(clusterRow(root, 'c1').status, 'ACTIVE');
    assert.equal(clusterRow(root, 'c1').cluster_port, after.port);
  });

  it('a cluster that does not answer in time counts as failed', async () => {
    const { root, tap } = await world({ minBackoffMs: 600_000, maxBackoffMs: 600_000, timeoutMs: 100 });
    const c1 = await fakeCluster();
    c1.mode = 'hang';
    await register(root, 'c1', c1.port);
    services(root, 'c1');
    root.registry.updateDeployStatus('a', [status(0)]);
    await tap.until(FAILED, 'c1', 1);
    const row = clusterRow(root, 'c1');
    assert.equal(row.status, 'ERROR');
    assert.equal(row.pending_notifications, 1);

    c1.mode = 'ok';
    await register(root, 'c1', c1.port);
    await c1.untilReceived(1);
    assert.deepEqual(c1.received, [note('a', 0, 'DEPLOYMENT')]);
  });

  describe('with a durable store', () => {
    const dir = mkdtempSync(join(tmpdir(), 'oaknet-notifier-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('a restarted root delivers what the previous run could not', async () => {
      const path = join(dir, 'root.db');
      const c1 = await fakeCluster();
      c1.mode = 'fail';
      const first = await world({
        minBackoffMs: 600_000,
        maxBackoffMs: 600_000,
        store: new SqliteStore(path),
      });
      await register(first.root, 'c1', c1.port);
      services(first.root, 'c1');
      first.root.registry.updateDeployStatus('a', [status(0), status(2)]);
      await first.tap.until(FAILED, 'c1', 1);
      await first.close();

      c1.mode = 'ok';
      const second = await world({
        minBackoffMs: 600_000,
        maxBackoffMs: 600_000,
        store: new SqliteStore(path),
      });
      await c1.untilReceived(2);
      await second.tap.until(DELIVERED, 'c1', 2);
      assert.deepEqual(c1.received, [note('a', 0, 'DEPLOYMENT'), note('a', 2, 'DEPLOYMENT')]);
      assert.equal(clusterRow(second.root, 'c1').pending_notifications, 0);
    });
  });
});
