/**
 * The control plane in secure mode, over real TLS sockets: a root with a platform CA, a cluster enrolled
 * with a join token, callers with tokens of each role; and the attacker's first moves (no credentials, the
 * wrong role, another cluster's ID, a forged report) refused with 401/403 and counted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startCluster, type RunningCluster } from '../../src/cluster/cluster.ts';
import { ClusterCredentials } from '../../src/cluster/credentials.ts';
import { ClusterClient } from '../../src/protocol/cluster-client.ts';
import { HttpTransport, type Credentials } from '../../src/protocol/http-client.ts';
import { RootClient } from '../../src/protocol/root-client.ts';
import { startRoot, type RunningRoot } from '../../src/root/root.ts';
import { discoverCa } from '../../src/security/join.ts';
import { CertificateAuthority, createCsr, generateKeyPair } from '../../src/security/pki.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';

const log = pino({ level: 'silent' });
const CLUSTER = 'secure-c1';

describe('secure control plane (TLS 1.3, certificates, tokens)', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let root: RunningRoot;
  let cluster: RunningCluster;
  let creds: ClusterCredentials;
  let tokens: { operator: string; orchestrator: string; readOnly: string; cluster: string };
  /** How far the root's enrollment clock runs ahead (a root that was away for a while). */
  let aheadDays = 0;
  const rootAs = (c: Credentials) => new RootClient(root.url, { credentials: c });
  const tls = () => ({ ca: ca.certPem, expect: { kind: 'root' as const } });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oaknet-secure-'));
    ({ ca } = await CertificateAuthority.create());
    root = await startRoot({
      store: new SqliteStore(join(dir, 'root.db')),
      log,
      port: 0,
      host: '127.0.0.1',
      ca,
      adminTokenFile: join(dir, 'pki', 'admin.token'),
      notifier: { minBackoffMs: 50, maxBackoffMs: 200 },
      clock: () => new Date(Date.now() + aheadDays * 86_400_000),
    });
    const t = root.tokens!;
    tokens = {
      operator: t.create('operator').token,
      orchestrator: t.create('orchestrator').token,
      readOnly: t.create('read-only').token,
      cluster: t.create('cluster', { ttlSeconds: 3600 }).token,
    };
    creds = await ClusterCredentials.open({
      dir: join(dir, 'cluster-pki'),
      rootUrl: root.url,
      clusterId: CLUSTER,
      token: tokens.cluster,
      log,
    });
    cluster = await startCluster({
      rootUrl: root.url,
      store: new SqliteStore(join(dir, 'cluster.db')),
      log,
      port: 0,
      host: '127.0.0.1',
      mqttPort: 0,
      clusterId: CLUSTER,
      advertiseAddress: '127.0.0.1',
      credentials: creds,
    });
  });

  after(async () => {
    await cluster?.close();
    await root?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the root wrote an operator token 0600 at its first start', () => {
    assert.equal(statSync(join(dir, 'pki', 'admin.token')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'cluster-pki', 'identity.json')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'cluster-pki')).mode & 0o777, 0o700);
  });

  it('the enrolled cluster registered itself over mutual TLS', async () => {
    const clusters = await rootAs({ tls: tls(), token: tokens.readOnly }).clusters();
    assert.deepEqual(
      clusters.map((c) => c.cluster_id),
      [CLUSTER],
    );
  });

  it('writes without credentials are 401, with the wrong role 403, and counted', async () => {
    const anonymous = rootAs({ tls: tls() });
    await assert.rejects(anonymous.createService('shop.prod.cart.v1'), {
      code: 'E_UNAUTHENTICATED',
      message: /needs a bearer token with the role orchestrator/,
    });
    await assert.rejects(rootAs({ tls: tls(), token: tokens.operator }).createService('shop.prod.cart.v1'), {
      code: 'E_FORBIDDEN',
      message: /operator\) may not make this call/,
    });
    await assert.rejects(rootAs({ tls: tls(), token: tokens.readOnly }).createService('shop.prod.cart.v1'), {
      code: 'E_FORBIDDEN',
    });
    const status = await rootAs({ tls: tls(), token: tokens.readOnly }).authStatus();
    assert.equal(status.mode, 'tls');
    assert.ok(status.refused.unauthenticated >= 1 && status.refused.forbidden >= 2, JSON.stringify(status));
  });

  it('every documented route of root and cluster but health, the CA and enrollment is 401 without credentials', async () => {
    // enrollment carries its token (or the current certificate) in the request itself
    const open =
      /^(GET \/api\/net\/health|GET \/api\/auth\/ca|POST \/api\/auth\/(clusters|nodes)\/(enroll|renew))$/;
    for (const [url, expect] of [
      [root.url, { kind: 'root' as const }],
      [cluster.url, { kind: 'cluster' as const, clusterId: CLUSTER }],
    ] as const) {
      const t = new HttpTransport(url, { tls: { ca: ca.certPem, expect } });
      try {
        const doc = JSON.parse((await t.request('GET', '/docs/openapi.json')).text) as {
          paths: Record<string, Record<string, unknown>>;
        };
        const routes = Object.entries(doc.paths).flatMap(([path, methods]) =>
          Object.keys(methods).map((m) => [m.toUpperCase(), path] as const),
        );
        assert.ok(routes.length >= 6, `${url}: ${routes.length} routes documented`);
        for (const [method, path] of routes) {
          const r = await t.request(method, path.replace(/\{[^}]+\}/g, 'x'));
          if (open.test(`${method} ${path}`)) assert.notEqual(r.status, 401, `${method} ${path}`);
          else assert.equal(r.status, 401, `${url} ${method} ${path}: ${r.status} ${r.text}`);
        }
      } finally {
        t.close();
      }
    }
  });

  it('an orchestrator creates a service and schedules it; the root notifies the cluster over mutual TLS', async () => {
    const orch = rootAs({ tls: tls(), token: tokens.orchestrator });
    const id = await orch.createService('shop.prod.cart.v1');
    await orch.deployInstance(id, 0, CLUSTER);
    const clusterApi = new ClusterClient(cluster.url, 5000, {
      tls: { ca: ca.certPem, expect: { kind: 'cluster', clusterId: CLUSTER } },
      token: tokens.orchestrator,
    });
    await clusterApi.announceDeployment('shop.prod.cart.v1');
    clusterApi.close();
    // the cluster's answer to the root's notification is what empties its outbox
    const reader = rootAs({ tls: tls(), token: tokens.readOnly });
    for (;;) {
      const [c] = await reader.clusters();
      if (c?.pending_notifications === 0 && c.status === 'ACTIVE') break;
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it("a cluster's certificate names its cluster: ?cluster_id= of another is refused", async () => {
    const { key, cert } = creds.current;
    const asCluster = new HttpTransport(root.url, { tls: { ...tls(), key, cert } });
    const other = await asCluster.request('GET', '/api/net/subnet?cluster_id=someone-else&worker_id=w1');
    assert.equal(other.status, 403);
    assert.match(other.text, /may not act as cluster someone-else/);
    const forged = await asCluster.request('POST', '/api/net/cluster', {
      body: { cluster_id: 'someone-else', cluster_address: '203.0.113.9', cluster_port: 10110 },
    });
    assert.equal(forged.status, 403);
    const own = await asCluster.request('GET', '/api/net/subnet?worker_id=w1');
    assert.equal(own.status, 200, own.text);
    asCluster.close();
  });

  it('a cluster may not report instances scheduled elsewhere or on workers it does not have', async () => {
    const orch = rootAs({ tls: tls(), token: tokens.orchestrator });
    const id = await orch.createService('shop.prod.pay.v1');
    await orch.deployInstance(id, 0, 'another-cluster');
    const { key, cert } = creds.current;
    const asCluster = new HttpTransport(root.url, { tls: { ...tls(), key, cert } });
    const report = (worker: string, jobId: string) =>
      asCluster.request('POST', '/api/net/service/net_deploy_status', {
        body: {
          job_id: jobId,
          instances: [
            {
              instance_number: 0,
              namespace_ip: '10.18.0.5',
              host_ip: '203.0.113.66',
              host_port: 50103,
              worker_id: worker,
            },
          ],
        },
      });
    const elsewhere = await report('w1', id);
    assert.equal(elsewhere.status, 403);
    assert.match(elsewhere.text, /scheduled on cluster another-cluster/);
    const cart = (await orch.jobByName('shop.prod.cart.v1'))._id;
    const stranger = await report('not-my-worker', cart);
    assert.equal(stranger.status, 403);
    assert.match(stranger.text, /has no worker not-my-worker/);
    asCluster.close();
  });

  it('another cluster token cannot take over an enrolled cluster ID', async () => {
    const other = root.tokens!.create('cluster').token;
    await assert.rejects(
      ClusterCredentials.open({
        dir: join(dir, 'thief-pki'),
        rootUrl: root.url,
        clusterId: CLUSTER,
        token: other,
        log,
      }),
      { code: 'E_FORBIDDEN', message: /cannot be taken over/ },
    );
  });

  it('an operator token cannot enroll a cluster, and a wrong CSR identity is refused', async () => {
    await assert.rejects(
      ClusterCredentials.open({
        dir: join(dir, 'op-pki'),
        rootUrl: root.url,
        clusterId: 'c-op',
        token: tokens.operator,
        log,
      }),
      { code: 'E_FORBIDDEN' },
    );
    const k = generateKeyPair().privateKey;
    const t = new HttpTransport(root.url, { tls: tls() });
    const res = await t.request('POST', '/api/auth/clusters/enroll', {
      body: {
        token: root.tokens!.create('cluster').token,
        cluster_id: 'c-x',
        csr: await createCsr(k, { kind: 'cluster', clusterId: 'c-y' }),
        ca_csr: await createCsr(k, { kind: 'cluster-ca', clusterId: 'c-x' }),
      },
    });
    t.close();
    assert.equal(res.status, 400);
    assert.match(res.text, /csr must ask for exactly urn:oaknet:cluster:c-x/);
  });

  it('a token made for another CA is refused before anything is sent', async () => {
    const { ca: other } = await CertificateAuthority.create('elsewhere');
    const { TokenStore } = await import('../../src/security/tokens.ts');
    const { MemoryStore } = await import('../../src/store/memory.ts');
    const { caPin } = await import('../../src/security/pki.ts');
    const foreign = new TokenStore(new MemoryStore(), caPin(other.cert)).create('cluster').token;
    await assert.rejects(
      discoverCa(root.url, foreign, { kind: 'root' }),
      /does not present the CA this token/,
    );
  });

  it('revoked tokens stop working at once', async () => {
    const { token, info } = root.tokens!.create('read-only');
    const reader = rootAs({ tls: tls(), token });
    await reader.clusters();
    await rootAs({ tls: tls(), token: tokens.operator }).revokeToken(info.id);
    await assert.rejects(reader.clusters(), { code: 'E_UNAUTHENTICATED', message: /revoked/ });
  });

  it('the cluster API wants a token of its root-checked role; the root is not an orchestrator', async () => {
    const target = { ca: ca.certPem, expect: { kind: 'cluster' as const, clusterId: CLUSTER } };
    await assert.rejects(new ClusterClient(cluster.url, 5000, { tls: target }).status(), {
      code: 'E_UNAUTHENTICATED',
    });
    const status = await new ClusterClient(cluster.url, 5000, {
      tls: target,
      token: tokens.readOnly,
    }).status();
    assert.equal(status.security.mode, 'tls');
    assert.ok(status.security.refused.unauthenticated >= 1);
    await assert.rejects(
      new ClusterClient(cluster.url, 5000, { tls: target, token: tokens.readOnly }).announceDeployment(
        'shop.prod.cart.v1',
      ),
      { code: 'E_FORBIDDEN' },
    );
  });

  it('a cluster whose certificate expired (the root was away) renews it, for 30 days', async () => {
    const expiredDir = join(dir, 'expired-pki');
    const id = 'c-expired';
    const token = root.tokens!.create('cluster').token;
    const creds = await ClusterCredentials.open({
      dir: expiredDir,
      rootUrl: root.url,
      clusterId: id,
      token,
      log,
    });
    creds.close();
    const issued = creds.expires.getTime();
    try {
      // the root's clock 10 days past the certificate's expiry: it renews
      aheadDays = (issued - Date.now()) / 86_400_000 + 10;
      const before = creds.current.cert;
      await creds.renew();
      assert.notEqual(creds.current.cert, before);
      // 31 days past the expiry of the renewed one: too late, it must enroll again
      aheadDays = (creds.expires.getTime() - Date.now()) / 86_400_000 + 31;
      await assert.rejects(creds.renew(), {
        code: 'E_UNAUTHENTICATED',
        message: /expired at .*more than 30 days ago: it must enroll again/,
      });
    } finally {
      aheadDays = 0;
    }
  });

  it('an operator revokes a cluster: its certificate stops working at once, even on an open connection', async () => {
    const id = 'c-revoked';
    const token = root.tokens!.create('cluster').token;
    const creds = await ClusterCredentials.open({
      dir: join(dir, 'revoked-pki'),
      rootUrl: root.url,
      clusterId: id,
      token,
      log,
    });
    creds.close();
    const { key, cert } = creds.current;
    const asCluster = new HttpTransport(root.url, { tls: { ...tls(), key, cert } });
    try {
      assert.equal((await asCluster.request('GET', '/api/auth/status')).status, 200);
      await assert.rejects(rootAs({ tls: tls(), token: tokens.orchestrator }).revokeCluster(id), {
        code: 'E_FORBIDDEN',
      });
      const revoked = await rootAs({ tls: tls(), token: tokens.operator }).revokeCluster(id);
      assert.equal(revoked.cluster_id, id);
      const refused = await asCluster.request('GET', '/api/auth/status');
      assert.equal(refused.status, 401);
      assert.match(refused.text, /cluster c-revoked was revoked at .*enroll again with a new cluster token/);
      await assert.rejects(creds.renew(), { code: 'E_FORBIDDEN', message: /revoked/ });
      // the same token does not bring it back; a new one does, and the old certificate stays dead
      const again = (t: string, sub: string) =>
        ClusterCredentials.open({ dir: join(dir, sub), rootUrl: root.url, clusterId: id, token: t, log });
      await assert.rejects(again(token, 'revoked-pki-2'), { code: 'E_FORBIDDEN', message: /revoked/ });
      const back = await again(root.tokens!.create('cluster').token, 'revoked-pki-3');
      back.close();
      const old = await asCluster.request('GET', '/api/auth/status');
      assert.equal(old.status, 401);
      assert.match(old.text, /no longer cluster c-revoked's/);
      const fresh = new HttpTransport(root.url, { tls: { ...tls(), ...back.current } });
      assert.equal((await fresh.request('GET', '/api/auth/status')).status, 200);
      fresh.close();
    } finally {
      asCluster.close();
    }
  });

  it('a cluster enrolled again under its ID (its state was lost) retires its old certificate', async () => {
    const id = 'c-lost';
    const token = root.tokens!.create('cluster').token;
    const open = async (sub: string) => {
      const c = await ClusterCredentials.open({
        dir: join(dir, sub),
        rootUrl: root.url,
        clusterId: id,
        token,
        log,
      });
      c.close();
      return c.current;
    };
    const lost = await open('lost-pki-1');
    const now = await open('lost-pki-2');
    const status = async (c: { key: string; cert: string }) => {
      const t = new HttpTransport(root.url, { tls: { ...tls(), key: c.key, cert: c.cert } });
      try {
        return await t.request('GET', '/api/auth/status');
      } finally {
        t.close();
      }
    };
    const old = await status(lost);
    assert.equal(old.status, 401);
    assert.match(old.text, /is no longer cluster c-lost's: it enrolled or renewed since/);
    assert.equal((await status(now)).status, 200);
  });
});

describe('secure control plane: quotas and rate limits count identities', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let root: RunningRoot;
  const transports: HttpTransport[] = [];
  const tls = () => ({ ca: ca.certPem, expect: { kind: 'root' as const } });

  /** A cluster enrolled at the root with a cluster token: an HTTP client with its certificate. */
  async function enrolled(clusterId: string): Promise<HttpTransport> {
    const creds = await ClusterCredentials.open({
      dir: join(dir, `${clusterId}-pki`),
      rootUrl: root.url,
      clusterId,
      token: root.tokens!.create('cluster').token,
      log,
    });
    const { key, cert } = creds.current;
    creds.close();
    const t = new HttpTransport(root.url, { tls: { ...tls(), key, cert } });
    transports.push(t);
    const reg = await t.request('POST', '/api/net/cluster', {
      body: { cluster_id: clusterId, cluster_address: '127.0.0.1', cluster_port: 9 },
    });
    assert.equal(reg.status, 200, reg.text);
    return t;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oaknet-secure-limits-'));
    ({ ca } = await CertificateAuthority.create());
    root = await startRoot({
      store: new SqliteStore(join(dir, 'root.db')),
      log,
      port: 0,
      host: '127.0.0.1',
      ca,
      adminTokenFile: join(dir, 'pki', 'admin.token'),
      quotas: { maxWorkersPerCluster: 3 },
      rateLimits: { general: { max: 40, windowMs: 60_000 }, allocation: { max: 6, windowMs: 60_000 } },
    });
  });

  after(async () => {
    for (const t of transports) t.close();
    await root?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a cluster's worker quota is its certificate's, and its allocation rate limit its own", async () => {
    const a = await enrolled('quota-a');
    const b = await enrolled('quota-b');
    const subnet = (t: HttpTransport, worker: string) =>
      t.request('GET', `/api/net/subnet?worker_id=${worker}`);
    for (const w of ['w1', 'w2', 'w3']) assert.equal((await subnet(a, w)).status, 200);
    const over = await subnet(a, 'w4');
    assert.equal(over.status, 403, over.text);
    assert.equal((JSON.parse(over.text) as { error: string }).error, 'E_QUOTA');
    // naming another cluster does not spend its quota
    assert.equal((await a.request('GET', '/api/net/subnet?cluster_id=quota-b&worker_id=w5')).status, 403);
    // asking again for a known worker answers as before, until the allocation rate limit (6 per minute)
    assert.equal((await subnet(a, 'w1')).status, 200);
    const limited = await subnet(a, 'w1');
    assert.equal(limited.status, 429, limited.text);
    assert.equal((JSON.parse(limited.text) as { error: string }).error, 'E_RATE_LIMITED');
    const retry = Number(limited.headers['retry-after']);
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After ${retry}`);
    // the other cluster, from the same address, has its own quota and its own limit
    for (const w of ['w1', 'w2', 'w3']) assert.equal((await subnet(b, w)).status, 200);
  });

  it('a flood of bad credentials from one address is rate-limited before its tokens are checked', async () => {
    const c = await enrolled('quota-c');
    const t = new HttpTransport(root.url, {
      tls: tls(),
      token: `oaknet1.${'A'.repeat(43)}.0123456789abcdef.nope`,
    });
    transports.push(t);
    const statuses: number[] = [];
    for (let i = 0; i < 45; i++) statuses.push((await t.request('GET', '/api/net/service')).status);
    assert.ok(
      statuses.slice(0, 5).every((s) => s === 401),
      statuses.join(' '),
    );
    assert.equal(statuses.at(-1), 429, statuses.join(' '));
    // a cluster's certificate from that same address is counted apart
    assert.equal((await c.request('GET', '/api/net/subnet?worker_id=w1')).status, 200);
  });
});
