/**
 * Two complete NetManagers in one process, wired by createNetManager as `oaknet node` wires them, over
 * in-memory stand-ins for everything outside the node: a FakeTun each (the instances' kernel), tunnels on one
 * MemorySwitch (the underlay), a MemoryCluster (the cluster service manager), a host network that only records
 * what it was asked, and processes the test makes up. No root, no addon (the model: wireguard-go's genTestPair).
 * Each node deploys an instance, and the client on node A talks TCP and UDP to the server on node B through
 * the server's ServiceIP, as a user's application would.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import pino from 'pino';
import { AddressPlan } from '../addressing/plan.ts';
import { buildTcp, buildUdp, fullChecksumsValid } from '../dataplane/packet/build.ts';
import { IpProto, ParsedPacket, TcpFlag } from '../dataplane/packet/index.ts';
import { FakeTun } from '../dataplane/tun/fake.ts';
import { Collector } from '../dataplane/tun/fixtures.ts';
import { MemorySwitch } from '../dataplane/tunnel/memory.ts';
import { KeyPair } from '../dataplane/wireguard/keys.ts';
import { JsTransportSessions } from '../dataplane/wireguard/transport-js.ts';
import { IP_TYPE } from '../protocol/mqtt.ts';
import type { AttachSpec, HostNetwork } from './host-network.ts';
import { MemoryCluster } from './memory-cluster.ts';
import { createNetManager, type NetManager, type NodeDnsStart, type StartDns } from './netmanager.ts';
import type { ProcessFacts } from './process-inspector.ts';
import { StateFile } from './state.ts';

const WEB = 'app.ns.web.ns';
const CLIENT = 'app.ns.client.ns';
const RR = { v4: '10.30.0.1', v6: 'fdff:2000::1' };
const CLIENT_IP = { v4: '10.30.0.10', v6: 'fdff::10' };
const PORT = 50103;

/** A host network that only records what it was asked (the real one is tested in net/). */
class RecordingHostNetwork implements HostNetwork {
  readonly calls: string[] = [];
  /** Fails the next setUp (a kernel refusing, say). */
  failNextSetUp = false;
  setUp(): Promise<void> {
    this.calls.push('setUp');
    if (this.failNextSetUp) {
      this.failNextSetUp = false;
      return Promise.reject(new Error('bridge refused'));
    }
    return Promise.resolve();
  }
  addTunRoutes(): Promise<void> {
    this.calls.push('addTunRoutes');
    return Promise.resolve();
  }
  attach(spec: AttachSpec): Promise<unknown> {
    this.calls.push(`attach ${spec.pid} ${spec.nsip.toString()}`);
    return Promise.resolve({ id: spec.id });
  }
  detach(): Promise<void> {
    this.calls.push('detach');
    return Promise.resolve();
  }
  /** What forwardDrops answers (the nft counter of the forward boundary). */
  forwardDropped = 0;
  forwardDrops(): Promise<number> {
    return Promise.resolve(this.forwardDropped);
  }
  tearDown(): Promise<void> {
    this.calls.push('tearDown');
    return Promise.resolve();
  }
}

interface TestNode {
  nm: NetManager;
  tun: FakeTun;
  host: RecordingHostNetwork;
  /** What the node's data plane wrote to its TUN (delivered to its instances). */
  written: Collector<Buffer>;
}

/** Processes the test makes up: the NetManager's own, and one per instance, each in a namespace of its own. */
const processes = new Map<number, ProcessFacts>([
  [process.pid, { start: 'boot/1', netns: 1 }],
  [1001, { start: 'boot/1001', netns: 1001 }],
  [2001, { start: 'boot/2001', netns: 2001 }],
]);

function node(
  t: TestContext,
  host: string,
  cluster: MemoryCluster,
  net: MemorySwitch,
  startDns?: StartDns,
): TestNode {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-nm-'));
  const tun = new FakeTun({ name: `tun-${host}` });
  const written = new Collector<Buffer>();
  tun.onWrite = (p) => written.push(p);
  const hostNetwork = new RecordingHostNetwork();
  // the tunnel speaks WireGuard, as `oaknet node` does by default (JavaScript transport in memory)
  const keys = KeyPair.generate();
  const sessions = new JsTransportSessions(64);
  const nm = createNetManager(
    {
      devices: { tun, tunnel: net.open(host, PORT, { sessions }) },
      dataPlane: { wireguard: { identity: keys, sessions } },
      cluster: cluster.channel(),
      hostNetwork: () => hostNetwork,
      stateFile: new StateFile(dir),
      processes: { identity: (pid) => processes.get(pid) },
      log: pino({ level: 'silent' }),
      ...(startDns ? { startDns } : {}),
    },
    {
      ...(startDns ? { dns: { port: 53, upstreams: ['192.0.2.53'] } } : {}),
      clusterHost: '10.255.0.254',
      clusterMqttPort: 10003,
      publicAddress: host,
      tunnelPort: PORT,
      publicKey: keys.publicText(),
      plan: new AddressPlan(),
    },
  );
  t.after(async () => {
    await nm.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { nm, tun, host: hostNetwork, written };
}

const p = new ParsedPacket();

/** "tcp 10.30.0.10:40000 > 10.16.0.66:80 [S] hello": what a packet is, with its payload. */
function line(pkt: Buffer): string {
  assert.ok(p.decode(pkt, 0, pkt.length), `decodes (error ${p.error})`);
  assert.ok(fullChecksumsValid(pkt, 0, pkt.length), 'checksums valid');
  const a = (s: string) => (p.addrLength === 16 ? `[${s}]` : s);
  const ends = `${a(p.srcAddress())}:${p.srcPort} > ${a(p.dstAddress())}:${p.dstPort}`;
  const end = p.ipOffset + p.totalLength;
  if (p.proto === IpProto.Udp) return `udp ${ends} ${pkt.toString('latin1', p.l4Offset + 8, end)}`;
  const f = p.tcpFlags;
  const flags = `${f & TcpFlag.Syn ? 'S' : ''}${f & TcpFlag.Fin ? 'F' : ''}${f & TcpFlag.Ack ? '.' : ''}`;
  return `tcp ${ends} [${flags}] ${pkt.toString('latin1', end - p.tcpPayloadLength(), end)}`.trimEnd();
}

const tcp = (
  src: string,
  sport: number,
  dst: string,
  dport: number,
  flags: number,
  seq: number,
  ack = 0,
  data = '',
) => buildTcp({ src, dst, srcPort: sport, dstPort: dport, flags, seq, ack, payload: Buffer.from(data) });
const udp = (src: string, sport: number, dst: string, dport: number, data: string) =>
  buildUdp({ src, dst, srcPort: sport, dstPort: dport, payload: Buffer.from(data) });

describe('two NetManagers in one process', () => {
  it('deploy an instance each; the client reaches the server by its ServiceIP over TCP and UDP, both families', async (t) => {
    const plan = new AddressPlan();
    const cluster = new MemoryCluster(plan);
    cluster.createService(WEB, [{ IpType: IP_TYPE.roundRobin, Address: RR.v4, Address_v6: RR.v6 }]);
    cluster.scheduleInstance(WEB, 0, '10.30.0.2', 'fdff::2');
    cluster.createService(CLIENT, [
      { IpType: IP_TYPE.roundRobin, Address: '10.30.0.9', Address_v6: 'fdff:2000::9' },
    ]);
    cluster.scheduleInstance(CLIENT, 0, CLIENT_IP.v4, CLIENT_IP.v6);
    const underlay = new MemorySwitch();
    const a = node(t, '10.255.0.1', cluster, underlay);
    const b = node(t, '10.255.0.2', cluster, underlay);
    await Promise.all([a.nm.register('64a000000000000000000001'), b.nm.register('64a000000000000000000002')]);
    assert.deepEqual(a.host.calls, ['setUp', 'addTunRoutes'], 'registration builds the host network');
    const client = await a.nm.deploy({ pid: 1001, serviceName: CLIENT, instanceNumber: 0 });
    const server = await b.nm.deploy({ pid: 2001, serviceName: WEB, instanceNumber: 0 });
    assert.equal(a.nm.status().subnet, cluster.subnetOf('64a000000000000000000001').v4 + '/26');
    assert.ok(a.nm.status().services.some((s) => s.job === CLIENT && s.instances[0]?.local));

    for (const [family, c, s, rr, ip] of [
      ['v4', client.nsAddress, server.nsAddress, RR.v4, CLIENT_IP.v4],
      ['v6', client.nsAddressv6, server.nsAddressv6, RR.v6, `[${CLIENT_IP.v6}]`],
    ] as const) {
      const bare = (x: string) => x.replace(/^\[|\]$/g, '');
      const br = (x: string) => (family === 'v6' ? `[${x}]` : x);
      const { Syn, Ack, Fin, Psh } = TcpFlag;
      // TCP: the handshake, a request and its answer, FIN both ways
      a.tun.inject(tcp(c, 40000, rr, 80, Syn, 100));
      assert.deepEqual((await b.written.take(1)).map(line), [`tcp ${ip}:40000 > ${br(s)}:80 [S]`]);
      b.tun.inject(tcp(s, 80, bare(ip), 40000, Syn | Ack, 500, 101));
      assert.deepEqual((await a.written.take(1)).map(line), [`tcp ${br(rr)}:80 > ${br(c)}:40000 [S.]`]);
      a.tun.inject(tcp(c, 40000, rr, 80, Psh | Ack, 101, 501, 'GET /'));
      assert.deepEqual((await b.written.take(1)).map(line), [`tcp ${ip}:40000 > ${br(s)}:80 [.] GET /`]);
      b.tun.inject(tcp(s, 80, bare(ip), 40000, Psh | Ack, 501, 106, 'hello from web'));
      assert.deepEqual((await a.written.take(1)).map(line), [
        `tcp ${br(rr)}:80 > ${br(c)}:40000 [.] hello from web`,
      ]);
      a.tun.inject(tcp(c, 40000, rr, 80, Fin | Ack, 106, 515));
      assert.deepEqual((await b.written.take(1)).map(line), [`tcp ${ip}:40000 > ${br(s)}:80 [F.]`]);
      b.tun.inject(tcp(s, 80, bare(ip), 40000, Fin | Ack, 515, 107));
      assert.deepEqual((await a.written.take(1)).map(line), [`tcp ${br(rr)}:80 > ${br(c)}:40000 [F.]`]);
      // UDP: a question and its answer
      a.tun.inject(udp(c, 5353, rr, 53, 'question'));
      assert.deepEqual((await b.written.take(1)).map(line), [`udp ${ip}:5353 > ${br(s)}:53 question`]);
      b.tun.inject(udp(s, 53, bare(ip), 5353, 'answer'));
      assert.deepEqual((await a.written.take(1)).map(line), [`udp ${br(rr)}:53 > ${br(c)}:5353 answer`]);
    }
    const status = a.nm.status().proxy;
    assert.ok(status);
    assert.equal(status.dropped, 0, JSON.stringify(status.drops));
    assert.deepEqual(
      status.services.map((x) => x.job),
      [WEB],
      'the data plane reports the job its open flows use (what keeps its interest alive)',
    );

    await a.nm.undeploy(CLIENT, 0);
    assert.deepEqual(a.nm.status().instances, []);
    await a.nm.close();
    assert.deepEqual(a.host.calls, [
      'setUp',
      'addTunRoutes',
      `attach 1001 ${client.nsAddress}`,
      'detach',
      'tearDown',
    ]);
  });

  it('a registration that failed half-way leaves nothing behind, and the next one succeeds', async (t) => {
    const plan = new AddressPlan();
    const cluster = new MemoryCluster(plan);
    cluster.createService(CLIENT, [
      { IpType: IP_TYPE.roundRobin, Address: '10.30.0.9', Address_v6: 'fdff:2000::9' },
    ]);
    cluster.scheduleInstance(CLIENT, 0, CLIENT_IP.v4, CLIENT_IP.v6);
    const a = node(t, '10.255.0.1', cluster, new MemorySwitch());
    a.host.failNextSetUp = true;
    await assert.rejects(a.nm.register('64a000000000000000000001'), /bridge refused/);
    assert.deepEqual(a.host.calls, ['setUp', 'tearDown'], 'what was set up is undone');
    assert.equal(a.nm.status().registered, false);
    assert.equal((await a.nm.statusWithHost()).forward_dropped, null, 'no host network, no count');
    await a.nm.register('64a000000000000000000001');
    assert.equal(a.nm.status().registered, true);
    a.host.forwardDropped = 7;
    assert.equal((await a.nm.statusWithHost()).forward_dropped, 7, 'GET /status reads the boundary counter');
    const client = await a.nm.deploy({ pid: 1001, serviceName: CLIENT, instanceNumber: 0 });
    assert.ok(
      a.nm.status().services.some((s) => s.job === CLIENT && s.instances[0]?.ns_address === client.nsAddress),
      'the cluster channel works again: the own entry arrived',
    );
  });

  it("/register's cluster_address is an address or a host name, not a URL", async (t) => {
    const plan = new AddressPlan();
    const a = node(t, '10.255.0.1', new MemoryCluster(plan), new MemorySwitch());
    for (const address of ['mqtt://203.0.113.9', '203.0.113.9:1883', 'evil.example/x', 'a b'])
      await assert.rejects(a.nm.register('64a000000000000000000001', address), {
        code: 'E_INVALID_INPUT',
        message: /cluster_address must be an IP address or a host name/,
      });
    assert.equal(a.nm.status().registered, false);
    assert.deepEqual(a.host.calls, [], 'nothing was set up');
  });

  it('starts the DNS server on the bridge gateways for its subnets, feeds it the tables and answers its questions', async (t) => {
    const plan = new AddressPlan();
    const cluster = new MemoryCluster(plan);
    cluster.createService(CLIENT, [
      { IpType: IP_TYPE.roundRobin, Address: '10.30.0.9', Address_v6: 'fdff:2000::9' },
    ]);
    cluster.scheduleInstance(CLIENT, 0, CLIENT_IP.v4, CLIENT_IP.v6);
    let started: NodeDnsStart | undefined;
    const zones: string[][] = [];
    let closed = 0;
    const a = node(t, '10.255.0.1', cluster, new MemorySwitch(), (o) => {
      started = o;
      return Promise.resolve({
        update: (services) => zones.push(services.map((x) => `${x.job}/${x.instances.length}`)),
        counters: () => Promise.resolve({ queries: 3 }),
        close: () => {
          closed++;
          return Promise.resolve();
        },
      });
    });
    await a.nm.register('64a000000000000000000001');
    const subnet = cluster.subnetOf('64a000000000000000000001');
    assert.ok(started, 'the DNS server is started at registration');
    const gw4 = subnet.v4.replace(/\.(\d+)$/, (_, x: string) => `.${Number(x) + 1}`);
    assert.deepEqual(started.listen[0], { host: gw4, port: 53 }, 'on the IPv4 gateway');
    assert.equal(started.listen.length, 2, 'and the IPv6 one');
    assert.deepEqual(started.allowedSources, [`${subnet.v4}/26`, `${subnet.v6}/120`]);
    await a.nm.deploy({ pid: 1001, serviceName: CLIENT, instanceNumber: 0 });
    assert.deepEqual(zones.at(-1), [`${CLIENT}/1`], 'the zone follows the tables');
    // a name of a job nobody deployed: the cluster says so, and the table does not keep it
    assert.equal(await started.ask('app.ns.nope.ns'), 'unknown');
    assert.ok(!a.nm.status().services.some((x) => x.job === 'app.ns.nope.ns'));
    assert.equal(await started.ask(CLIENT), 'known');
    assert.deepEqual(a.nm.status().dns, {
      servers: [gw4, started.listen[1]!.host],
      port: 53,
      upstreams: ['192.0.2.53'],
      counters: {},
    });
    assert.deepEqual(
      (await a.nm.statusWithHost()).dns?.counters,
      { queries: 3 },
      'GET /status reads the counters',
    );
    await a.nm.close();
    assert.equal(closed, 1, 'closed with the NetManager');
  });
});
