/**
 * MQTT between NetManagers and their cluster in secure mode, over real TLS: nodes enroll with a node token
 * and get certificates from the cluster's node CA; the embedded broker takes only certificates of this
 * cluster's nodes (and the cluster itself), with the client ID the certificate names, and applies the topic
 * contract as an access list. The attacker's moves with a valid node certificate fail and are counted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { IClientOptions, MqttClient } from 'mqtt';
import { pino } from 'pino';
import { startCluster, type RunningCluster } from '../../src/cluster/cluster.ts';
import { ClusterCredentials } from '../../src/cluster/credentials.ts';
import { NodeCredentials, type NodeIdentity } from '../../src/node/credentials.ts';
import { connectMqttAsync, mqttTlsOptions } from '../../src/protocol/mqtt-client.ts';
import { topics } from '../../src/protocol/mqtt.ts';
import { startRoot, type RunningRoot } from '../../src/root/root.ts';
import { CertificateAuthority } from '../../src/security/pki.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';

const log = pino({ level: 'silent' });

describe('secure MQTT: node certificates and the topic access list', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let root: RunningRoot;
  let cluster: RunningCluster;
  let nodeToken: string;
  const ids: Record<string, NodeIdentity> = {};
  const clients: MqttClient[] = [];

  const enroll = async (worker: string, token = nodeToken) =>
    new NodeCredentials({
      stateDir: join(dir, `node-${worker}`),
      clusterApi: cluster.url,
      token,
      log,
    }).forWorker(worker);

  const connectAs = async (id: NodeIdentity, clientId = id.workerId, extra: IClientOptions = {}) => {
    const c = await connectMqttAsync(cluster.mqttUrl, {
      ...extra,
      clientId,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      ...mqttTlsOptions({
        ca: id.ca,
        key: id.key,
        cert: id.chain,
        expect: { kind: 'cluster', clusterId: 'mq-c1' },
      }),
    });
    clients.push(c);
    return c;
  };

  const refusals = () => {
    const s = cluster.status().security.mqtt_refused;
    assert.ok(s);
    return s;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oaknet-secure-mqtt-'));
    ({ ca } = await CertificateAuthority.create());
    root = await startRoot({
      store: new SqliteStore(join(dir, 'root.db')),
      log,
      port: 0,
      host: '127.0.0.1',
      ca,
    });
    const creds = await ClusterCredentials.open({
      dir: join(dir, 'c1-pki'),
      rootUrl: root.url,
      clusterId: 'mq-c1',
      token: root.tokens!.create('cluster').token,
      log,
    });
    cluster = await startCluster({
      rootUrl: root.url,
      store: new SqliteStore(join(dir, 'c1.db')),
      log,
      port: 0,
      host: '127.0.0.1',
      mqttPort: 0,
      clusterId: 'mq-c1',
      advertiseAddress: '127.0.0.1',
      credentials: creds,
    });
    nodeToken = root.tokens!.create('node').token;
    ids['wa'] = await enroll('wa');
    ids['wb'] = await enroll('wb');
  });

  after(async () => {
    for (const c of clients) await c.endAsync(true).catch(() => undefined);
    await cluster?.close();
    await root?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a node enrolls with a node token: its certificate names its cluster and worker; kept 0600', () => {
    assert.equal(ids['wa']!.clusterId, 'mq-c1');
    assert.equal(ids['wa']!.workerId, 'wa');
    assert.equal(statSync(join(dir, 'node-wa', 'identity.json')).mode & 0o777, 0o600);
  });

  it('a node asks for its subnetwork over TLS and gets it', async () => {
    const c = await connectAs(ids['wa']!);
    await c.subscribeAsync(topics.subnetResult('wa'), { qos: 1 });
    const answer = new Promise<string>((resolve) => c.once('message', (_t, p) => resolve(p.toString())));
    await c.publishAsync(topics.subnetRequest('wa'), JSON.stringify({ METHOD: 'GET' }), { qos: 1 });
    assert.match(await answer, /"address":"10\.(1[6-9]|2\d|3[01])\./);
  });

  it('refuses a client without a certificate, and plain TCP', async () => {
    const before = refusals().connectRefused;
    await assert.rejects(
      connectMqttAsync(cluster.mqttUrl, {
        clientId: 'wa',
        reconnectPeriod: 0,
        connectTimeout: 3000,
        ...mqttTlsOptions({ ca: ids['wa']!.ca, expect: { kind: 'cluster', clusterId: 'mq-c1' } }),
      }),
    );
    await assert.rejects(
      connectMqttAsync(cluster.mqttUrl.replace('mqtts:', 'mqtt:'), {
        clientId: 'wa',
        reconnectPeriod: 0,
        connectTimeout: 3000,
      }),
    );
    assert.ok(refusals().connectRefused > before);
  });

  it("refuses a client ID that is not the certificate's (no session takeover)", async () => {
    const victim = await connectAs(ids['wb']!);
    await assert.rejects(connectAs(ids['wa']!, 'wb'), /Not authorized|not authorized/i);
    await assert.rejects(connectAs(ids['wa']!, 'oaknet-cluster-mq-c1'), /Not authorized|not authorized/i);
    assert.equal(victim.connected, true, 'the real wb stays connected');
  });

  it("refuses a publish to another node's topics, a retained oaknet/cluster, and a subscription to nodes/#", async () => {
    const before = refusals();
    const spy = await connectAs(ids['wa']!);
    // refused in the SUBACK (0x80), which mqtt.js reports as an error
    await assert.rejects(spy.subscribeAsync('nodes/#', { qos: 1 }), /Subscribe error/);
    const own = await spy.subscribeAsync(topics.jobUpdates('+'), { qos: 1 });
    assert.equal(own[0]?.qos, 1, 'jobs/+/updates_available is allowed');
    // a refused publish costs the client its connection (MQTT 3.1.1 cannot refuse one otherwise)
    const closed = new Promise<void>((resolve) => spy.once('close', () => resolve()));
    spy.publish(
      topics.serviceDeployed('wb'),
      '{"appname":"a.b.c.d","status":"DEPLOYED","instance_number":0,"nsip":"10.16.0.2","nsipv6":"","host_port":"50103","host_ip":"203.0.113.66"}',
      { qos: 0 },
    );
    await closed;
    const again = await connectAs(ids['wa']!);
    const closedAgain = new Promise<void>((resolve) => again.once('close', () => resolve()));
    again.publish(topics.clusterInfo, '{"cluster_id":"evil","api":"http://203.0.113.66","root":"x"}', {
      qos: 0,
      retain: true,
    });
    await closedAgain;
    const after = refusals();
    assert.ok(after.subscribeRefused > before.subscribeRefused);
    assert.ok(after.publishRefused >= before.publishRefused + 2);
  });

  it('a last will goes through the access list: none on a forbidden topic, none retained', async () => {
    const watcher = await connectAs(ids['wb']!);
    await watcher.subscribeAsync([topics.tableQueryResult('wb'), topics.clusterInfo], { qos: 1 });
    const forged: string[] = [];
    watcher.on('message', (topic, payload) => {
      if (payload.toString().includes('203.0.113.66')) forged.push(topic);
    });
    const before = refusals().connectRefused;
    const wills = [
      {
        topic: topics.tableQueryResult('wb'),
        payload: Buffer.from('{"app_name":"a.b.c.d","instance_list":[],"query_key":"203.0.113.66"}'),
        qos: 1 as const,
        retain: false,
      },
      {
        topic: topics.clusterInfo,
        payload: Buffer.from('{"cluster_id":"evil","api":"http://203.0.113.66","root":"x"}'),
        qos: 1 as const,
        retain: true,
      },
      // its own topic, but retained
      {
        topic: topics.subnetRequest('wa'),
        payload: Buffer.from('{"METHOD":"GET","x":"203.0.113.66"}'),
        qos: 1 as const,
        retain: true,
      },
    ];
    for (const will of wills) {
      // refused at CONNECT; if it were accepted, an abrupt end (no DISCONNECT) would publish the will
      const spy = await connectAs(ids['wa']!, 'wa', { will }).catch(() => undefined);
      spy?.stream.destroy();
    }
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(forged, []);
    assert.equal(refusals().connectRefused, before + wills.length, 'each will is refused at CONNECT');
    // a will on its own topic, not retained, is the node's to send
    const own = await connectAs(ids['wa']!, 'wa', {
      will: {
        topic: topics.subnetRequest('wa'),
        payload: Buffer.from('{"METHOD":"GET"}'),
        qos: 1,
        retain: false,
      },
    });
    await own.endAsync();
  });

  it('a worker ID enrolled with one token cannot be taken by another token', async () => {
    const other = root.tokens!.create('node').token;
    await assert.rejects(
      new NodeCredentials({
        stateDir: join(dir, 'thief'),
        clusterApi: cluster.url,
        token: other,
        log,
      }).forWorker('wa'),
      { code: 'E_FORBIDDEN', message: /cannot be taken over/ },
    );
  });

  it('a token shared by several nodes cannot enroll one of them again; a token of its own can', async () => {
    const again = (worker: string, token: string, where: string) =>
      new NodeCredentials({ stateDir: join(dir, where), clusterApi: cluster.url, token, log }).forWorker(
        worker,
      );
    // wa and wb enrolled with nodeToken: whoever holds it must not get wa's certificate (and session)
    await assert.rejects(again('wa', nodeToken, 'again-wa'), {
      code: 'E_FORBIDDEN',
      message: /shared token cannot enroll a worker again/,
    });
    const own = root.tokens!.create('node').token;
    await again('we', own, 'we-1');
    const lost = await again('we', own, 'we-2'); // the node lost its state
    assert.equal(lost.workerId, 'we');
  });

  it('a cluster token or an expired/revoked node token does not enroll a node', async () => {
    await assert.rejects(enroll('wc', root.tokens!.create('cluster').token), { code: 'E_FORBIDDEN' });
    const { token, info } = root.tokens!.create('node');
    root.tokens!.revoke(info.id);
    await assert.rejects(enroll('wd', token), { code: 'E_UNAUTHENTICATED', message: /revoked/ });
  });

  it('a node of another cluster cannot connect to this broker', async () => {
    const otherCa = await ClusterCredentials.open({
      dir: join(dir, 'c2-pki'),
      rootUrl: root.url,
      clusterId: 'mq-c2',
      token: root.tokens!.create('cluster').token,
      log,
    });
    const foreign = await otherCa.current.nodeCa.issueKeyAndChain(
      { kind: 'node', clusterId: 'mq-c2', workerId: 'wz' },
      1,
    );
    const id: NodeIdentity = {
      clusterId: 'mq-c2',
      workerId: 'wz',
      key: foreign.key,
      chain: foreign.chain,
      ca: ca.certPem,
    };
    await assert.rejects(connectAs(id), /Not authorized|not authorized/i);
  });

  it('a node renews its certificate with the current one', async () => {
    const creds = new NodeCredentials({ stateDir: join(dir, 'node-wb'), clusterApi: cluster.url, log });
    const before = await creds.forWorker('wb');
    await creds.renew();
    assert.notEqual(creds.current!.chain, before.chain);
    assert.equal(creds.current!.workerId, 'wb');
  });
});
