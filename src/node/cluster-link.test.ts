import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startEmbeddedBroker, type EmbeddedBroker } from '../cluster/broker.ts';
import { connectMqttAsync } from '../protocol/mqtt-client.ts';
import { topics } from '../protocol/mqtt.ts';
import { CertificateAuthority } from '../security/pki.ts';
import { ClusterLink } from './cluster-link.ts';
import type { NodeCredentials, NodeIdentity } from './credentials.ts';

const log = pino({ level: 'silent' });

/** The link, connected as `workerId` to `url`. */
function connected(link: ClusterLink, workerId: string, url: string): ClusterLink {
  link.connect(workerId, url);
  return link;
}

describe('ClusterLink', () => {
  let broker: EmbeddedBroker;
  before(async () => {
    broker = await startEmbeddedBroker(0, '127.0.0.1', log);
  });
  after(async () => {
    await broker.close();
  });

  it('survives malformed and hostile table-query results, and still correlates a good one', async () => {
    const link = connected(
      new ClusterLink({ log, answerTimeoutMs: 2000 }),
      'w-hostile',
      `mqtt://127.0.0.1:${broker.port}`,
    );
    await link.ready();
    const peer = await connectMqttAsync(`mqtt://127.0.0.1:${broker.port}`, {
      clientId: 'evil',
      reconnectPeriod: 0,
    });
    const topic = topics.tableQueryResult('w-hostile');
    const bad = [
      'not json',
      '{"instance_list":[null]}',
      '{"instance_list":[{"service_ip":5}]}',
      '{"instance_list":[{"service_ip":[null, 7, "x"]}]}',
      '{"instance_list":"nope"}',
      'null',
    ];
    for (const payload of bad) await peer.publishAsync(topic, payload, { qos: 1 });
    const pending = link.query({ sip: '10.30.0.9' });
    await peer.publishAsync(
      topic,
      JSON.stringify({ app_name: 'a.b.c.d', query_key: '10.30.0.9', instance_list: [] }),
      { qos: 1 },
    );
    const answer = await pending;
    assert.equal(answer?.app_name, 'a.b.c.d');
    assert.ok(link.invalidMessages >= 2, `${link.invalidMessages} invalid messages counted`);
    await peer.endAsync(true);
    await link.close();
  });

  it('answers undefined for a question no answer came to, at once when offline', async () => {
    const link = connected(
      new ClusterLink({ log, answerTimeoutMs: 200 }),
      'w-quiet',
      `mqtt://127.0.0.1:${broker.port}`,
    );
    await link.ready();
    assert.equal(await link.query({ sname: 'x.y.z.w' }), undefined);
    await link.close();
    const offline = connected(
      new ClusterLink({ log, answerTimeoutMs: 60_000 }),
      'w-offline',
      'mqtt://127.0.0.1:9',
    );
    const t0 = Date.now();
    assert.equal(await offline.query({ sname: 'x.y.z.w' }), undefined);
    assert.ok(Date.now() - t0 < 1000, 'no wait while offline');
    await offline.close();
  });

  it('tells its owner after a reconnect (updates published meanwhile are lost)', async () => {
    const probe = await startEmbeddedBroker(0, '127.0.0.1', log);
    const port = probe.port;
    await probe.close();
    let b2 = await startEmbeddedBroker(port, '127.0.0.1', log);
    const link = connected(new ClusterLink({ log }), 'w-flaky', `mqtt://127.0.0.1:${port}`);
    await link.ready();
    const reconnected = new Promise<void>((resolve) => link.onReconnect(resolve));
    await b2.close();
    b2 = await startEmbeddedBroker(port, '127.0.0.1', log);
    await reconnected;
    assert.ok(link.connected);
    await link.close();
    await b2.close();
  });

  it('connects again after close (a registration that failed), as a fresh session', async () => {
    const url = `mqtt://127.0.0.1:${broker.port}`;
    const link = connected(new ClusterLink({ log, answerTimeoutMs: 2000 }), 'w-again', url);
    await link.ready();
    assert.throws(() => link.connect('w-again', url), /already connected/);
    await link.watchJob('a.b.c.d');
    await link.close();
    assert.equal(link.connected, false);
    link.connect('w-again', url);
    await link.ready();
    const updates: string[] = [];
    link.onJobUpdate((job) => updates.push(job));
    await link.watchJob('a.b.c.d'); // subscribed again on the new session
    const peer = await connectMqttAsync(url, { clientId: 'cluster-stand-in', reconnectPeriod: 0 });
    await peer.publishAsync(topics.jobUpdates('a.b.c.d'), JSON.stringify({ type: 'DEPLOYMENT' }), { qos: 1 });
    const deadline = Date.now() + 5000;
    while (updates.length === 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    assert.deepEqual(updates, ['a.b.c.d']);
    await peer.endAsync(true);
    await link.close();
  });

  it('follows certificate renewals with one listener, however often it connects', async () => {
    const { ca } = await CertificateAuthority.create();
    const issue = async (): Promise<NodeIdentity> => {
      const k = await ca.issueKeyAndChain({ kind: 'node', clusterId: 'c1', workerId: 'w-renew' }, 1);
      return { clusterId: 'c1', workerId: 'w-renew', key: k.key, chain: k.chain, ca: ca.certPem };
    };
    let current = await issue();
    const listeners: Array<(n: NodeIdentity) => void> = [];
    const credentials = {
      get current() {
        return current;
      },
      onRenewed: (fn: (n: NodeIdentity) => void) => listeners.push(fn),
    } as unknown as NodeCredentials;
    const link = new ClusterLink({ log, credentials });
    // a registration that failed and was tried again connects several times
    for (let i = 0; i < 3; i++) {
      link.connect('w-renew', 'mqtt://127.0.0.1:1');
      await link.close();
    }
    link.connect('w-renew', 'mqtt://127.0.0.1:1');
    try {
      assert.equal(listeners.length, 1);
      current = await issue();
      for (const fn of listeners) fn(current);
      const { client } = (link as unknown as { mqtt: { client: { options: { cert?: unknown } } } }).mqtt;
      assert.equal(client.options.cert, current.chain, 'the next reconnection presents the renewed chain');
    } finally {
      await link.close();
    }
  });
});
