/**
 * Debian's mosquitto as a cluster's external broker, with the configuration `oaknet cluster
 * --write-mosquitto-config` wrote: the attacker's moves of secure-mqtt.test.ts (no certificate, another CA,
 * another node's topics, another's client ID, the cluster's topic, a last will on another node's topic, a
 * retained request, a node of another cluster) all fail, and a node enrolled with a token gets its subnet
 * through mosquitto. Root and cluster run as real processes; mosquitto as Debian ships it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { IClientOptions, MqttClient } from 'mqtt';
import { pino } from 'pino';
import { ClusterCredentials } from '../../src/cluster/credentials.ts';
import { reloadMosquitto, writeMosquittoConfig } from '../../src/cluster/mosquitto-config.ts';
import { NodeCredentials, type NodeIdentity } from '../../src/node/credentials.ts';
import type { ClusterStatus } from '../../src/protocol/cluster-api.ts';
import { ClusterClient } from '../../src/protocol/cluster-client.ts';
import { connectMqttAsync, mqttTlsOptions } from '../../src/protocol/mqtt-client.ts';
import { topics } from '../../src/protocol/mqtt.ts';
import { CertificateAuthority, identityUri } from '../../src/security/pki.ts';
import { runMosquitto, type Mosquitto } from '../support/mosquitto.ts';
import { OAKNET_BIN, runOaknet, startRootProcess, type OaknetProcess } from '../support/oaknet-process.ts';
import { freePort } from '../support/ports.ts';

const exec = promisify(execFile);
const log = pino({ level: 'silent' });
const CLUSTER = 'mq1';
const DEADLINE_MS = 15_000;

/** Resolves once `cond()` holds; fails naming `what` after the deadline. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms = DEADLINE_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('Debian mosquitto as the external broker, configured by oaknet cluster', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-mosquitto-sec-'));
  const mqDir = join(dir, 'mosquitto');
  let root: OaknetProcess;
  let rootUrl: string;
  let cluster: OaknetProcess;
  let clusterUrl: string;
  let broker: Mosquitto;
  let mqttPort: number;
  let platformCa: string;
  let adminFile: string;
  let nodeToken: string;
  let api: ClusterClient;
  const ids: Record<string, NodeIdentity> = {};
  const clients: MqttClient[] = [];

  const token = async (role: string) => {
    const { stdout } = await exec(process.execPath, [
      OAKNET_BIN,
      'token',
      'create',
      '--role',
      role,
      '--token-file',
      adminFile,
      '--root',
      rootUrl,
    ]);
    return stdout.trim();
  };

  const enroll = (worker: string) =>
    new NodeCredentials({
      stateDir: join(dir, `node-${worker}`),
      clusterApi: clusterUrl,
      token: nodeToken,
      log,
    }).forWorker(worker);

  /** A client with `who`'s key and chain; MQTT 3.1.1 (as upstream's NetManagers) unless told otherwise. */
  const connectAs = async (
    who: { key: string; chain: string; ca: string },
    options: IClientOptions = {},
  ): Promise<MqttClient> => {
    const c = await connectMqttAsync(broker.url, {
      reconnectPeriod: 0,
      connectTimeout: 5000,
      clean: true,
      ...mqttTlsOptions({
        ca: who.ca,
        key: who.key,
        cert: who.chain,
        expect: { kind: 'cluster', clusterId: CLUSTER },
      }),
      ...options,
    });
    clients.push(c);
    return c;
  };

  /** Messages a client received, by topic. */
  const inbox = (c: MqttClient) => {
    const got: Array<{ topic: string; payload: string }> = [];
    c.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }));
    return got;
  };

  /** Asks for the worker's subnet on `c` (subscribed to its result topic) and waits for the answer. */
  const askSubnet = async (c: MqttClient, worker: string, got: Array<{ topic: string; payload: string }>) => {
    const n = got.filter((m) => m.topic === topics.subnetResult(worker)).length;
    await c.publishAsync(topics.subnetRequest(worker), JSON.stringify({ METHOD: 'GET' }), { qos: 1 });
    await until(
      `the subnet of ${worker}`,
      () => got.filter((m) => m.topic === topics.subnetResult(worker)).length > n,
    );
    return JSON.parse(got.filter((m) => m.topic === topics.subnetResult(worker)).at(-1)!.payload) as {
      address: string;
    };
  };

  const status = (): Promise<ClusterStatus> => api.status();
  const lastSeen = async (worker: string) =>
    (await status()).nodes.find((n) => n.worker_id === worker)?.last_seen;

  // wa and wb, each with one connection (a second one with the same certificate takes the session over)
  let wb: MqttClient;
  let wbInbox: Array<{ topic: string; payload: string }>;

  before(async () => {
    const rootPort = await freePort();
    const started = await startRootProcess(dir, rootPort);
    ({ proc: root, url: rootUrl } = started);
    platformCa = started.ca!;
    adminFile = join(dir, 'pki', 'admin.token');
    const clusterPort = await freePort();
    mqttPort = await freePort();
    clusterUrl = `https://127.0.0.1:${clusterPort}`;
    cluster = runOaknet([
      'cluster',
      '--root',
      rootUrl,
      '--port',
      String(clusterPort),
      '--host',
      '127.0.0.1',
      '--store',
      join(dir, 'cluster.db'),
      '--cluster-id',
      CLUSTER,
      '--advertise-address',
      '127.0.0.1',
      '--token',
      await token('cluster'),
      '--mqtt',
      `mqtts://127.0.0.1:${mqttPort}`,
      '--write-mosquitto-config',
      mqDir,
      '--log-level',
      'info',
    ]);
    const conf = join(mqDir, 'mosquitto.conf');
    await until(`${conf}, written by the cluster`, () => {
      if (cluster.child.exitCode !== null) throw new Error(`oaknet cluster exited:\n${cluster.output()}`);
      return existsSync(conf);
    });
    broker = await runMosquitto(conf, mqttPort);
    await until('the cluster to be ready', () => cluster.output().includes('cluster service manager ready'));
    api = new ClusterClient(clusterUrl, 5000, {
      tls: { ca: platformCa, expect: { kind: 'cluster', clusterId: CLUSTER } },
      token: await token('read-only'),
    });
    nodeToken = await token('node');
    ids['wa'] = await enroll('wa');
    ids['wb'] = await enroll('wb');
    wb = await connectAs(ids['wb'], { clientId: 'wb' });
    wbInbox = inbox(wb);
    await wb.subscribeAsync([topics.subnetResult('wb'), topics.clusterInfo], { qos: 1 });
  });

  after(async () => {
    for (const c of clients) await c.endAsync(true).catch(() => undefined);
    await cluster?.stop();
    await broker?.stop();
    await root?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('wrote mosquitto.conf, the access list and the PEMs privately (0700, 0600): TLS 1.3, certificates only', () => {
    assert.equal(statSync(mqDir).mode & 0o777, 0o700);
    for (const f of ['mosquitto.conf', 'acl', 'ca.crt', 'cluster.crt', 'cluster.key'])
      assert.equal(statSync(join(mqDir, f)).mode & 0o777, 0o600, f);
    const conf = readFileSync(join(mqDir, 'mosquitto.conf'), 'utf8');
    for (const line of [
      `listener ${mqttPort} 127.0.0.1`,
      'tls_version tlsv1.3',
      'require_certificate true',
      'use_identity_as_username true',
      'use_username_as_clientid true',
      'allow_anonymous false',
    ])
      assert.match(conf, new RegExp(`^${line}$`, 'm'));
    const acl = readFileSync(join(mqDir, 'acl'), 'utf8');
    assert.match(acl, /^pattern write nodes\/%u\/net\/subnet$/m);
    assert.match(acl, new RegExp(`^user ${identityUri({ kind: 'cluster', clusterId: CLUSTER })}$`, 'm'));
  });

  it('a node enrolled with a node token asks for its subnetwork through mosquitto and gets it', async () => {
    assert.equal(ids['wa']!.workerId, 'wa');
    const got = await askSubnet(wb, 'wb', wbInbox);
    assert.match(got.address, /^10\.(1[6-9]|2\d|3[01])\./);
    assert.ok((await status()).nodes.some((n) => n.worker_id === 'wb'));
  });

  it('the cluster refuses to enroll a worker ID that is its own name (400)', async () => {
    await assert.rejects(enroll(CLUSTER), { code: 'E_INVALID_INPUT', message: /cluster's own name/ });
  });

  it('refuses a client without a certificate, plain TCP, and a certificate of another CA', async () => {
    const attempt = (url: string, o: IClientOptions) =>
      connectMqttAsync(url, { clientId: 'wa', reconnectPeriod: 0, connectTimeout: 3000, ...o });
    await assert.rejects(
      attempt(
        broker.url,
        mqttTlsOptions({ ca: platformCa, expect: { kind: 'cluster', clusterId: CLUSTER } }),
      ),
    );
    await assert.rejects(attempt(broker.url.replace('mqtts:', 'mqtt:'), {}));
    const { ca: otherCa } = await CertificateAuthority.create('not the platform CA');
    const forged = await otherCa.issueKeyAndChain({ kind: 'node', clusterId: CLUSTER, workerId: 'wa' }, 1);
    await assert.rejects(connectAs({ ...forged, ca: platformCa }, { clientId: 'wa' }));
  });

  it("node A cannot publish to node B's topics, and the cluster never sees it", async () => {
    const wa = await connectAs(ids['wa']!, { clientId: 'wa' });
    const waInbox = inbox(wa);
    await wa.subscribeAsync(topics.subnetResult('wa'), { qos: 1 });
    await askSubnet(wa, 'wa', waInbox);
    const seenB = await lastSeen('wb');
    assert.ok(seenB);
    // MQTT 3.1.1: mosquitto drops it silently; a DELETE would release wb's subnetwork
    await wa.publishAsync(topics.subnetRequest('wb'), JSON.stringify({ METHOD: 'DELETE' }), { qos: 1 });
    await wa.publishAsync(topics.subnetResult('wb'), '{"address":"10.16.66.0","addressv6":""}', { qos: 1 });
    // anything wa sent before reached the cluster before wa's next request, which is answered
    await askSubnet(wa, 'wa', waInbox);
    assert.equal(await lastSeen('wb'), seenB, 'the cluster got no message on behalf of wb');
    await askSubnet(wb, 'wb', wbInbox);
    assert.ok(!wbInbox.some((m) => m.payload.includes('10.16.66.0')), 'wb never got the forged answer');
    // MQTT 5: the refusal is explicit
    await wa.endAsync();
    const wa5 = await connectAs(ids['wa']!, { clientId: 'wa', protocolVersion: 5 });
    await assert.rejects(wa5.publishAsync(topics.serviceDeployed('wb'), '{}', { qos: 1 }), /Not authorized/);
    await wa5.endAsync();
  });

  it("node A subscribed to nodes/# and to B's results gets none of B's messages", async () => {
    const wa = await connectAs(ids['wa']!, { clientId: 'wa' });
    const waInbox = inbox(wa);
    // mosquitto grants the subscriptions and checks every message against the access list instead
    await wa.subscribeAsync(['nodes/#', topics.subnetResult('wb'), topics.tableQueryResult('wb')], {
      qos: 1,
    });
    await wa.subscribeAsync(topics.subnetResult('wa'), { qos: 1 });
    await askSubnet(wb, 'wb', wbInbox);
    // the cluster answered wb before wa; mosquitto delivers one publisher's messages in order
    await askSubnet(wa, 'wa', waInbox);
    assert.deepEqual(
      [...new Set(waInbox.map((m) => m.topic))],
      [topics.subnetResult('wa')],
      'wa sees only its own results',
    );
    await wa.endAsync();
  });

  it("a client ID is its certificate's: node A cannot take over node B's session or the cluster's", async () => {
    let wbClosed = false;
    wb.once('close', () => (wbClosed = true));
    const asB = await connectAs(ids['wa']!, { clientId: 'wb' });
    await asB.endAsync();
    const asCluster = await connectAs(ids['wa']!, {
      protocolVersion: 5,
      clientId: 'oaknet-cluster-mq1',
      username: identityUri({ kind: 'cluster', clusterId: CLUSTER }),
    });
    await assert.rejects(
      asCluster.publishAsync(topics.clusterInfo, '{}', { qos: 1 }),
      /Not authorized/,
      'a username the client names is not used: the CN is',
    );
    await asCluster.endAsync();
    // wb and the cluster still talk to each other over their own sessions
    await askSubnet(wb, 'wb', wbInbox);
    assert.equal(wbClosed, false, 'wb was never disconnected');
  });

  it('a node cannot publish oaknet/cluster: the cluster info stays the cluster’s', async () => {
    const wa5 = await connectAs(ids['wa']!, { clientId: 'wa', protocolVersion: 5 });
    await assert.rejects(
      wa5.publishAsync(
        topics.clusterInfo,
        JSON.stringify({ cluster_id: 'evil', api: 'https://203.0.113.66', root: 'x' }),
        { qos: 1, retain: true },
      ),
      /Not authorized/,
    );
    await wa5.endAsync();
    const reader = await connectAs(ids['wa']!, { clientId: 'wa' });
    const got = inbox(reader);
    await reader.subscribeAsync(topics.clusterInfo, { qos: 1 });
    await until('the retained cluster info', () => got.length > 0);
    assert.equal((JSON.parse(got[0]!.payload) as { cluster_id: string }).cluster_id, CLUSTER);
    await reader.endAsync();
  });

  it("a last will on another node's topic is never sent; one on its own topic is", async () => {
    // an unclean close (the socket just goes): mosquitto logs it and then sends the will, if any
    const lost = () =>
      broker
        .output()
        .split('\n')
        .filter((l) => l.includes('Client wa closed its connection')).length;
    const loseConnectionWithWill = async (worker: string) => {
      const n = lost();
      const c = await connectAs(ids['wa']!, {
        clientId: 'wa',
        will: {
          topic: topics.subnetRequest(worker),
          payload: Buffer.from(JSON.stringify({ METHOD: 'GET' })),
          qos: 1,
          retain: false,
        },
      });
      c.stream.destroy();
      await until('mosquitto to notice the lost connection', () => lost() > n);
    };
    const seenB = await lastSeen('wb');
    await loseConnectionWithWill('wb');
    // what mosquitto sent the cluster before wa's next request reached the cluster first
    const wa = await connectAs(ids['wa']!, { clientId: 'wa' });
    const waInbox = inbox(wa);
    await wa.subscribeAsync(topics.subnetResult('wa'), { qos: 1 });
    await askSubnet(wa, 'wa', waInbox);
    assert.equal(await lastSeen('wb'), seenB, "the will on wb's topic was not sent");
    await wa.endAsync();
    const seenA = await lastSeen('wa');
    await loseConnectionWithWill('wa');
    await askSubnet(wb, 'wb', wbInbox);
    assert.notEqual(await lastSeen('wa'), seenA, 'the will on its own topic was sent');
  });

  it('a retained message from a node is ignored and counted, never applied', async () => {
    const before = (await status()).security.mqtt_ignored!;
    const subnetOfA = (await status()).nodes.find((n) => n.worker_id === 'wa')?.subnet;
    assert.ok(subnetOfA);
    const wa = await connectAs(ids['wa']!, { clientId: 'wa' });
    await wa.publishAsync(topics.subnetRequest('wa'), JSON.stringify({ METHOD: 'DELETE' }), {
      qos: 1,
      retain: true,
    });
    await askSubnet(wb, 'wb', wbInbox);
    const after = await status();
    assert.equal(after.security.mqtt_ignored!.retained, before.retained + 1);
    assert.equal(after.nodes.find((n) => n.worker_id === 'wa')?.subnet, subnetOfA, 'wa kept its subnetwork');
    await wa.publishAsync(topics.subnetRequest('wa'), '', { qos: 1, retain: true }); // clears it
    await wa.endAsync();
  });

  it('a node of another cluster gets in (same platform CA) but the cluster ignores it and counts it', async () => {
    const other = await ClusterCredentials.open({
      dir: join(dir, 'mq2-pki'),
      rootUrl,
      clusterId: 'mq2',
      token: await token('cluster'),
      log,
    });
    const foreign = await other.current.nodeCa.issueKeyAndChain(
      { kind: 'node', clusterId: 'mq2', workerId: 'wz' },
      1,
    );
    const before = (await status()).security.mqtt_ignored!;
    const wz = await connectAs({ ...foreign, ca: platformCa }, { clientId: 'wz' });
    await wz.publishAsync(topics.subnetRequest('wz'), JSON.stringify({ METHOD: 'GET' }), { qos: 1 });
    await askSubnet(wb, 'wb', wbInbox);
    const after = await status();
    assert.equal(after.security.mqtt_ignored!.unenrolled, before.unenrolled + 1);
    assert.ok(!after.nodes.some((n) => n.worker_id === 'wz'), 'no subnetwork for wz');
    // nor may another cluster's own certificate act as this cluster
    const otherCluster = await connectAs(
      { key: other.current.key, chain: other.current.cert, ca: platformCa },
      { protocolVersion: 5, clientId: 'mq2' },
    );
    await assert.rejects(
      otherCluster.publishAsync(topics.subnetResult('wb'), '{}', { qos: 1 }),
      /Not authorized/,
    );
    other.close();
  });

  it('renewed certificates: the files are rewritten and mosquitto, signalled by its PID file, serves the new one', async () => {
    const ca = await CertificateAuthority.load(platformCa, readFileSync(join(dir, 'pki', 'ca.key'), 'utf8'));
    const renewed = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: CLUSTER }, 1);
    writeMosquittoConfig(
      { clusterId: CLUSTER, ca: platformCa, cert: renewed.chain, key: renewed.key },
      { dir: mqDir, port: mqttPort, host: '127.0.0.1' },
    );
    assert.equal(readFileSync(join(mqDir, 'cluster.crt'), 'utf8'), renewed.chain);
    assert.equal(reloadMosquitto(mqDir), true);
    const want = new X509Certificate(renewed.chain).fingerprint256;
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const s = tlsConnect({
          host: '127.0.0.1',
          port: mqttPort,
          ca: platformCa,
          key: ids['wa']!.key,
          cert: ids['wa']!.chain,
          checkServerIdentity: () => undefined,
        });
        s.once('secureConnect', () => {
          resolve(s.getPeerCertificate().fingerprint256);
          s.destroy();
        });
        s.once('error', reject);
      });
    await until('mosquitto to serve the renewed certificate', async () => (await served()) === want);
    // the nodes still reach the cluster through it
    await askSubnet(wb, 'wb', wbInbox);
  });
});
