/**
 * ProxyTUN end to end in one process: two or three complete proxies, each with a FakeTun (its "kernel"), an
 * in-memory tunnel on one MemorySwitch (the underlay) and the node's real ServiceTable filled with table-query
 * answers in upstream's format, whose snapshots the proxy applies. A fake AddressLookup records the questions
 * the proxy asks; the tests answer them by applying a table (or marking the address unknown), as the node's
 * resolver does.
 *
 * The translation checked everywhere (reference sections 4.3, 4.4 and 9): client C on n1 (namespace nsC,
 * instance IP iC) dials S; the chosen instance T on n2 (nsT, iT). On the tunnel: iC -> nsT to n2's endpoint;
 * n2 delivers it unchanged; T's reply nsT -> iC leaves n2 as iT -> nsC; n1 delivers S -> nsC. Ports never change.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it, type TestContext } from 'node:test';
import pino from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { ServiceTable } from '../../node/service-table.ts';
import { IP_TYPE, type ServiceIpEntry, type TableInstance } from '../../protocol/mqtt.ts';
import {
  buildEcho,
  buildTcp,
  buildUdp,
  createSeededRandom,
  fragmentPacket,
  fullChecksumsValid,
  randomBytes,
  reassemble,
} from '../packet/build.ts';
import { DecodeError, IpProto, ParsedPacket, TcpFlag } from '../packet/index.ts';
import { Collector } from '../tun/fixtures.ts';
import { FakeTun } from '../tun/fake.ts';
import { MemorySwitch, type MemoryTunnel } from '../tunnel/memory.ts';
import {
  type AddressedBatch,
  decodeEndpoint,
  ENDPOINT_BYTES,
  OutboundBatch,
  type SendResult,
  type Tunnel,
} from '../tunnel/tunnel.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { Drop } from './counters.ts';
import { IpAddress } from '../../addressing/ip.ts';
import type { AddressLookup, DataPlaneConfig } from '../dataplane.ts';
import { SESSION_WINDOW_MS } from './conntrack.ts';
import { ProxyTun } from './proxy.ts';
import { isProbe } from './prober.ts';

// ---- the cluster: nodes, jobs, instances ------------------------------------------------------------------

interface NodeSpec {
  name: string;
  workerId: string;
  host: string;
  cluster: string;
  v4: string;
  v6: string;
}

const N1: NodeSpec = {
  name: 'n1',
  workerId: '64a000000000000000000001',
  host: '10.255.0.1',
  cluster: 'c1',
  v4: '10.18.0.0/26',
  v6: 'fc00::/120',
};
const N2: NodeSpec = {
  name: 'n2',
  workerId: '64a000000000000000000002',
  host: '10.255.0.2',
  cluster: 'c1',
  v4: '10.18.0.64/26',
  v6: 'fc00::100/120',
};
const N3: NodeSpec = {
  name: 'n3',
  workerId: '64a000000000000000000003',
  host: '10.255.0.3',
  cluster: 'c2',
  v4: '10.18.0.128/26',
  v6: 'fc00::200/120',
};
const TUNNEL_PORT = 50103;

interface InstanceSpec {
  number: number;
  node: NodeSpec;
  ns4: string;
  ns6: string;
  ip4: string;
  ip6: string;
}

interface JobSpec {
  name: string;
  services: ServiceIpEntry[];
  rr4: string;
  rr6: string;
}

const CLIENT: JobSpec = {
  name: 'app.ns.client.ns',
  services: [{ IpType: IP_TYPE.roundRobin, Address: '10.30.0.9', Address_v6: 'fdff:2000::9' }],
  rr4: '10.30.0.9',
  rr6: 'fdff:2000::9',
};
const CLI: InstanceSpec = {
  number: 0,
  node: N1,
  ns4: '10.18.0.2',
  ns6: 'fc00::2',
  ip4: '10.30.0.10',
  ip6: 'fdff::10',
};

const SERVER: JobSpec = {
  name: 'app.ns.server.ns',
  services: [
    { IpType: IP_TYPE.roundRobin, Address: '10.30.0.1', Address_v6: 'fdff:2000::1' },
    { IpType: IP_TYPE.closest, Address: '10.30.0.6', Address_v6: 'fdff:1000::6' },
  ],
  rr4: '10.30.0.1',
  rr6: 'fdff:2000::1',
};
const CLOSEST = { v4: '10.30.0.6', v6: 'fdff:1000::6' };
/** SERVER's instances: x0 on n2, x1 on n3, x2 on n1 (beside the client). */
const X0: InstanceSpec = {
  number: 0,
  node: N2,
  ns4: '10.18.0.66',
  ns6: 'fc00::102',
  ip4: '10.30.0.2',
  ip6: 'fdff::2',
};
const X1: InstanceSpec = {
  number: 1,
  node: N3,
  ns4: '10.18.0.130',
  ns6: 'fc00::202',
  ip4: '10.30.0.4',
  ip6: 'fdff::4',
};
const X2: InstanceSpec = {
  number: 2,
  node: N1,
  ns4: '10.18.0.3',
  ns6: 'fc00::3',
  ip4: '10.30.0.5',
  ip6: 'fdff::5',
};

const OTHER: JobSpec = {
  name: 'app.ns.other.ns',
  services: [{ IpType: IP_TYPE.roundRobin, Address: '10.30.0.20', Address_v6: 'fdff:2000::20' }],
  rr4: '10.30.0.20',
  rr6: 'fdff:2000::20',
};
const O0: InstanceSpec = {
  number: 0,
  node: N2,
  ns4: '10.18.0.67',
  ns6: 'fc00::103',
  ip4: '10.30.0.21',
  ip6: 'fdff::21',
};

/** A table-query answer's instance_list, as the cluster formats it (cluster/resolver.ts toTableResult). */
function tableOf(job: JobSpec, instances: readonly InstanceSpec[]): TableInstance[] {
  return instances.map((i) => ({
    instance_number: i.number,
    instance_ip: i.ip4,
    instance_ip_v6: i.ip6,
    namespace_ip: i.ns4,
    namespace_ip_v6: i.ns6,
    host_ip: i.node.host,
    host_port: TUNNEL_PORT,
    worker_id: i.node.workerId,
    cluster_id: i.node.cluster,
    service_ip: [
      ...job.services.map((s) => ({ ...s })),
      { IpType: IP_TYPE.instance, Address: i.ip4, Address_v6: i.ip6 },
    ],
  }));
}

/** One address family's view of the specs, so every case runs for IPv4 and IPv6. */
interface Family {
  name: string;
  ns(i: InstanceSpec): string;
  ip(i: InstanceSpec): string;
  rr(j: JobSpec): string;
}
const V4: Family = { name: 'IPv4', ns: (i) => i.ns4, ip: (i) => i.ip4, rr: (j) => j.rr4 };
const V6: Family = { name: 'IPv6', ns: (i) => i.ns6, ip: (i) => i.ip6, rr: (j) => j.rr6 };
const FAMILIES = [V4, V6];

// ---- the test bed -----------------------------------------------------------------------------------------

interface Sent {
  packet: Buffer;
  to: string;
}

/**
 * A Tunnel that records a copy of every datagram the proxy sends (the wire) before the switch carries it; RTT
 * probes (which the proxy sends to every peer it may choose) are only counted.
 */
class TapTunnel implements Tunnel {
  readonly sent = new Collector<Sent>();
  /** Every datagram but probes sent so far (not consumed by take). */
  readonly log: Sent[] = [];
  /** Probes sent. */
  probes = 0;
  /** While true the node is cut off: what it sends is lost. */
  down = false;

  constructor(readonly inner: MemoryTunnel) {}

  get port(): number {
    return this.inner.port;
  }

  start(onBatch: (batch: PacketBatch, sources: Buffer) => void, onError?: (err: Error) => void): void {
    this.inner.start(onBatch, onError);
  }

  send(batch: AddressedBatch): SendResult {
    const { buffer, offsets, lengths, endpoints, count } = batch;
    if (this.down) return { sent: count, failed: 0 };
    for (let i = 0; i < count; i++) {
      const o = offsets[i] ?? 0;
      if (isProbe(buffer, o, lengths[i] ?? 0)) {
        this.probes++;
        continue;
      }
      const { host, port } = decodeEndpoint(endpoints, i * ENDPOINT_BYTES);
      const s = { packet: Buffer.from(buffer.subarray(o, o + (lengths[i] ?? 0))), to: `${host}:${port}` };
      this.log.push(s);
      this.sent.push(s);
    }
    return this.inner.send(batch);
  }

  close(): void {
    this.inner.close();
  }
}

/** The node's AddressLookup: a record of the questions the proxy asks. */
class FakeLookup implements AddressLookup {
  readonly questions: string[] = [];
  readonly asked = new Collector<string>();
  /** Runs inside ask(): a control plane that answers from a cache, synchronously. */
  onRequest: ((address: string) => void) | undefined;

  ask(address: IpAddress): void {
    const text = address.toString();
    this.questions.push(text);
    this.asked.push(text);
    this.onRequest?.(text);
  }
}

const SEMANTIC = [Cidr.parse('10.30.0.0/16'), Cidr.parse('fdff::/16')];

class TestNode {
  readonly tun: FakeTun;
  readonly tunnel: TapTunnel;
  readonly table: ServiceTable;
  readonly dir = new FakeLookup();
  readonly proxy: ProxyTun;
  /** Packets the proxy wrote to the TUN (delivered to local instances). */
  readonly written = new Collector<Buffer>();
  readonly endpoint: string;

  constructor(
    readonly spec: NodeSpec,
    net: MemorySwitch,
    config: Partial<DataPlaneConfig> = {},
  ) {
    this.tun = new FakeTun({ name: `tun-${spec.name}` });
    this.tun.onWrite = (p) => this.written.push(p);
    this.tunnel = new TapTunnel(net.open(spec.host, TUNNEL_PORT));
    this.endpoint = `${spec.host}:${TUNNEL_PORT}`;
    this.table = new ServiceTable();
    this.table.setIdentity({
      workerId: spec.workerId,
      hostIp: spec.host,
      hostPort: TUNNEL_PORT,
      subnets: [Cidr.parse(spec.v4), Cidr.parse(spec.v6)],
      cluster: spec.cluster,
    });
    this.proxy = new ProxyTun(
      { tun: this.tun, tunnel: this.tunnel },
      { semanticRanges: SEMANTIC, ...config },
      this.dir,
      pino({ level: 'silent' }),
    );
    this.table.onChange((snapshot) => this.proxy.apply(snapshot));
    this.proxy.start();
  }

  /** The cluster's answer about a job arrives (table query or update). */
  learn(job: JobSpec, instances: readonly InstanceSpec[]): void {
    this.table.apply(job.name, tableOf(job, instances));
  }

  /** The answer to a question: the job's table is applied, or (no job) the address is unknown. */
  answer(address: string, job?: JobSpec, instances: readonly InstanceSpec[] = []): void {
    if (job) this.learn(job, instances);
    else this.table.markUnknown(IpAddress.parse(address));
  }

  /** Resolves once the proxy uses the table's newest snapshot. */
  async settled(): Promise<void> {
    const generation = this.table.snapshot().generation;
    await until(() => this.proxy.status().generation === generation, 'the snapshot applied');
  }

  /** The jobs the proxy reports in use (open flows). */
  inUse(): Set<string> {
    return new Set(this.proxy.status().services.map((s) => s.job));
  }

  /** An instance on this node sends a packet (the kernel routes it into the TUN). */
  send(...packets: Buffer[]): void {
    for (const p of packets) assert.ok(this.tun.inject(p), 'TUN queue accepted the packet');
  }

  drops(reason: Drop): number {
    return this.proxy.counters.drops[reason] ?? 0;
  }

  decodeErrors(): number {
    return this.proxy.counters.decodeErrors.reduce((a, b) => a + b, 0);
  }

  close(): void {
    this.proxy.close();
  }
}

class World {
  readonly net = new MemorySwitch();
  readonly nodes: TestNode[] = [];

  node(spec: NodeSpec, config: Partial<DataPlaneConfig> = {}): TestNode {
    const n = new TestNode(spec, this.net, config);
    this.nodes.push(n);
    return n;
  }

  close(): void {
    for (const n of this.nodes) n.close();
  }
}

/** A world closed after the test. */
function world(t: TestContext): World {
  const w = new World();
  t.after(() => w.close());
  return w;
}

/**
 * The usual three nodes: n1 runs the client (and x2), n2 runs x0 (and o0), n3 runs x1. Each node knows its own
 * jobs and the client's (so replies to the client resolve); n1 knows SERVER with `serverOnN1`.
 */
function cluster(
  t: TestContext,
  serverOnN1: readonly InstanceSpec[] = [X0, X1],
  config: Partial<DataPlaneConfig> = {},
) {
  const w = world(t);
  const n1 = w.node(N1, config);
  const n2 = w.node(N2, config);
  const n3 = w.node(N3, config);
  n1.learn(CLIENT, [CLI]);
  n1.learn(SERVER, serverOnN1);
  n2.learn(SERVER, [X0, X1]);
  n2.learn(CLIENT, [CLI]);
  n3.learn(SERVER, [X0, X1]);
  n3.learn(CLIENT, [CLI]);
  return { w, n1, n2, n3 };
}

/** Waits, turn by turn of the event loop, until cond holds; fails after timeoutMs. */
async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

// ---- reading packets --------------------------------------------------------------------------------------

const parsed = new ParsedPacket();

function flagText(f: number): string {
  let s = '';
  if (f & TcpFlag.Syn) s += 'S';
  if (f & TcpFlag.Fin) s += 'F';
  if (f & TcpFlag.Rst) s += 'R';
  if (f & TcpFlag.Psh) s += 'P';
  if (f & TcpFlag.Ack) s += '.';
  return s;
}

/** tcpdump-like one-liner of a packet: "udp 10.30.0.10:5000 > 10.18.0.66:53", "tcp [fc00::2]:1 > ... [S]". */
function line(pkt: Buffer): string {
  assert.ok(parsed.decode(pkt, 0, pkt.length), `packet decodes (error ${parsed.error})`);
  const a = (s: string) => (parsed.addrLength === 16 ? `[${s}]` : s);
  const ends = `${a(parsed.srcAddress())}:${parsed.srcPort} > ${a(parsed.dstAddress())}:${parsed.dstPort}`;
  if (parsed.proto === IpProto.Tcp) return `tcp ${ends} [${flagText(parsed.tcpFlags)}]`;
  if (parsed.proto === IpProto.Udp) return `udp ${ends}`;
  if (parsed.isEcho) return `echo ${ends} type ${parsed.icmpType}`;
  return `proto ${parsed.proto} ${ends}`;
}

/** TCP sequence and acknowledgment numbers. */
function seqAck(pkt: Buffer): { seq: number; ack: number } {
  assert.ok(parsed.decode(pkt, 0, pkt.length) && parsed.proto === IpProto.Tcp);
  return { seq: pkt.readUInt32BE(parsed.l4Offset + 4), ack: pkt.readUInt32BE(parsed.l4Offset + 8) };
}

/** The transport payload of an unfragmented TCP/UDP/echo packet, as text. */
function payloadOf(pkt: Buffer): string {
  assert.ok(parsed.decode(pkt, 0, pkt.length));
  const end = parsed.ipOffset + parsed.totalLength;
  let at = parsed.l4Offset + 8;
  if (parsed.proto === IpProto.Tcp) at = parsed.l4Offset + ((pkt[parsed.l4Offset + 12] ?? 0) >> 4) * 4;
  return pkt.toString('latin1', at, end);
}

function assertChecksums(pkt: Buffer, what = 'packet'): void {
  assert.ok(fullChecksumsValid(pkt, 0, pkt.length), `${what}: checksums equal a full recomputation`);
}

const udp = (src: string, srcPort: number, dst: string, dstPort: number, payload = 'x'): Buffer =>
  buildUdp({ src, dst, srcPort, dstPort, payload: Buffer.from(payload) });

const tcp = (
  src: string,
  srcPort: number,
  dst: string,
  dstPort: number,
  flags: number,
  seq: number,
  ack = 0,
  payload = '',
): Buffer => buildTcp({ src, dst, srcPort, dstPort, flags, seq, ack, payload: Buffer.from(payload) });

const br = (f: Family, addr: string) => (f === V6 ? `[${addr}]` : addr);

/** Sends pkt from `from`'s TUN and returns what went on the wire and what `to` delivered to its TUN. */
async function across(from: TestNode, to: TestNode, pkt: Buffer): Promise<{ wire: Sent; delivered: Buffer }> {
  from.send(pkt);
  const [wire] = await from.tunnel.sent.take(1);
  const [delivered] = await to.written.take(1);
  assert.ok(wire && delivered);
  assertChecksums(wire.packet, 'on the wire');
  assertChecksums(delivered, 'delivered');
  return { wire, delivered };
}

// ---- 1. UDP and TCP through an RR_IP across nodes ---------------------------------------------------------

for (const f of FAMILIES) {
  describe(`ProxyTUN across nodes (${f.name})`, () => {
    const S = f.rr(SERVER);
    const nsC = f.ns(CLI);
    const iC = f.ip(CLI);
    const nsT = f.ns(X0);
    const iT = f.ip(X0);

    it('UDP through the RR_IP: iC -> nsT on the wire to the chosen node, reply arrives from S', async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const request = udp(nsC, 5000, S, 53, 'question');
      const out = await across(n1, n2, request);
      assert.equal(out.wire.to, n2.endpoint);
      assert.equal(line(out.wire.packet), `udp ${br(f, iC)}:5000 > ${br(f, nsT)}:53`);
      assert.deepEqual(out.delivered, out.wire.packet, 'the target node delivers the packet unchanged');
      assert.equal(payloadOf(out.delivered), 'question');

      const back = await across(n2, n1, udp(nsT, 53, iC, 5000, 'answer'));
      assert.equal(back.wire.to, n1.endpoint);
      assert.equal(line(back.wire.packet), `udp ${br(f, iT)}:53 > ${br(f, nsC)}:5000`);
      assert.equal(line(back.delivered), `udp ${br(f, S)}:53 > ${br(f, nsC)}:5000`);
      assert.equal(payloadOf(back.delivered), 'answer');

      assert.equal(n1.proxy.counters.flowsCreated, 1);
      assert.deepEqual(n1.dir.questions, [], 'everything was known: no question');
      assert.ok(n1.inUse().has(SERVER.name), 'traffic keeps the interest in the job alive');
    });

    it('TCP: SYN, SYN-ACK, data, FIN both ways keep the translation, with valid checksums', async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const port = 40000;
      const up = async (flags: number, seq: number, ack: number, data = '') => {
        const r = await across(n1, n2, tcp(nsC, port, S, 80, flags, seq, ack, data));
        assert.equal(r.wire.to, n2.endpoint);
        assert.equal(line(r.wire.packet), `tcp ${br(f, iC)}:${port} > ${br(f, nsT)}:80 [${flagText(flags)}]`);
        assert.deepEqual(r.delivered, r.wire.packet);
        assert.deepEqual(seqAck(r.delivered), { seq, ack });
        assert.equal(payloadOf(r.delivered), data);
      };
      const down = async (flags: number, seq: number, ack: number, data = '') => {
        const r = await across(n2, n1, tcp(nsT, 80, iC, port, flags, seq, ack, data));
        assert.equal(r.wire.to, n1.endpoint);
        assert.equal(line(r.wire.packet), `tcp ${br(f, iT)}:80 > ${br(f, nsC)}:${port} [${flagText(flags)}]`);
        assert.equal(line(r.delivered), `tcp ${br(f, S)}:80 > ${br(f, nsC)}:${port} [${flagText(flags)}]`);
        assert.deepEqual(seqAck(r.delivered), { seq, ack });
        assert.equal(payloadOf(r.delivered), data);
      };
      const { Syn, Ack, Fin, Psh } = TcpFlag;
      await up(Syn, 1000, 0);
      await down(Syn | Ack, 7000, 1001);
      await up(Ack, 1001, 7001);
      await up(Psh | Ack, 1001, 7001, 'GET / HTTP/1.1\r\n\r\n');
      await down(Psh | Ack, 7001, 1019, 'HTTP/1.1 200 OK\r\n\r\n');
      await up(Fin | Ack, 1019, 7020);
      await down(Fin | Ack, 7020, 1020);
      await up(Ack, 1020, 7021);
      assert.equal(n1.proxy.counters.flowsCreated, 1, 'one flow on the client node');
      assert.equal(n2.proxy.counters.flowsCreated, 1, 'one flow (for the replies) on the server node');
      assert.equal(n1.proxy.counters.tunnelOut, 5);
      assert.equal(n1.proxy.counters.tunOut, 3);
    });

    it('ICMP echo through the RR_IP: the reply comes from the RR_IP with the echo id kept', async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const ping = buildEcho({ src: nsC, dst: S, id: 0x4d2, seq: 7, payload: Buffer.from('ping') });
      const out = await across(n1, n2, ping);
      const request = f === V4 ? 8 : 128;
      const reply = f === V4 ? 0 : 129;
      assert.equal(out.wire.to, n2.endpoint);
      assert.equal(line(out.wire.packet), `echo ${br(f, iC)}:1234 > ${br(f, nsT)}:1234 type ${request}`);
      const pong = buildEcho({
        src: nsT,
        dst: iC,
        id: 0x4d2,
        seq: 7,
        reply: true,
        payload: Buffer.from('ping'),
      });
      const back = await across(n2, n1, pong);
      assert.equal(line(back.wire.packet), `echo ${br(f, iT)}:1234 > ${br(f, nsC)}:1234 type ${reply}`);
      assert.equal(line(back.delivered), `echo ${br(f, S)}:1234 > ${br(f, nsC)}:1234 type ${reply}`);
      assert.equal(payloadOf(back.delivered), 'ping');
    });

    it('round robin: new flows alternate over two instances, each flow stays on its instance', async (t) => {
      const { n1, n2, n3 } = cluster(t, [X0, X1]);
      const flows = 8;
      for (let i = 0; i < flows; i++) n1.send(udp(nsC, 6000 + i, S, 9, `first ${i}`));
      const first = await n1.tunnel.sent.take(flows);
      const chosen = first.map((s) => s.to);
      const expected = Array.from({ length: flows }, (_, i) => (i % 2 === 0 ? n2.endpoint : n3.endpoint));
      assert.deepEqual(chosen, expected, 'exactly alternating, starting with instance 0');
      first.forEach((s, i) =>
        assert.equal(
          line(s.packet),
          `udp ${br(f, iC)}:${6000 + i} > ${br(f, f.ns(i % 2 === 0 ? X0 : X1))}:9`,
        ),
      );
      // three more packets per flow, interleaved: each follows its flow's choice
      for (let round = 0; round < 3; round++)
        for (let i = 0; i < flows; i++) n1.send(udp(nsC, 6000 + i, S, 9, `again ${i}`));
      const later = await n1.tunnel.sent.take(3 * flows);
      later.forEach((s, k) => {
        const i = k % flows;
        assert.equal(s.to, expected[i], `packet ${k} of flow ${i} sticks to its instance`);
        assertChecksums(s.packet);
      });
      assert.equal(n1.proxy.status().flows, flows);
      await n2.written.take(flows * 2);
      await n3.written.take(flows * 2);
      // replies from both instances come back from the RR_IP
      n2.send(udp(nsT, 9, iC, 6000, 'r0'));
      n3.send(udp(f.ns(X1), 9, iC, 6001, 'r1'));
      const replies = await n1.written.take(2);
      assert.deepEqual(replies.map(line).sort(), [
        `udp ${br(f, S)}:9 > ${br(f, nsC)}:6000`,
        `udp ${br(f, S)}:9 > ${br(f, nsC)}:6001`,
      ]);
    });

    it("TCP session affinity: a new connection joins its client's young control connection in use; a pool's connections take turns", async (t) => {
      t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
      const { n1, n2, n3 } = cluster(t, [X0, X1]);
      const { Syn, Ack, Fin } = TcpFlag;
      const to = async (n: number) => (await n1.tunnel.sent.take(n)).map((x) => x.to);
      // a connection pool: two connections opened at once, before either carried data, are two turns
      n1.send(tcp(nsC, 6000, S, 5201, Syn, 1), tcp(nsC, 6001, S, 5201, Syn, 1));
      assert.deepEqual(await to(2), [n2.endpoint, n3.endpoint], 'x0, then x1');
      // iperf3-style: a control connection (a turn: x0) sends its cookie, then a data connection joins it
      n1.send(tcp(nsC, 7000, S, 5201, Syn, 1));
      n1.send(tcp(nsC, 7000, S, 5201, Ack, 2, 1, 'cookie'));
      n1.send(tcp(nsC, 7001, S, 5201, Syn, 1));
      assert.deepEqual(await to(3), [n2.endpoint, n2.endpoint, n2.endpoint], 'all three to instance 0');
      // another port is another session: a round-robin turn (instance 1)
      n1.send(tcp(nsC, 7002, S, 5202, Syn, 1));
      assert.deepEqual(await to(1), [n3.endpoint]);
      // more than SESSION_WINDOW_MS after the control connection opened, a new connection is a turn again
      // (a keep-alive connection that stays open does not pin its client's later connections)
      t.mock.timers.tick(SESSION_WINDOW_MS + 1);
      n1.send(tcp(nsC, 7005, S, 5201, Syn, 1));
      assert.deepEqual(await to(1), [n2.endpoint], 'a turn: x0 (after x1)');
      n1.send(tcp(nsC, 7006, S, 5201, Syn, 1));
      assert.deepEqual(await to(1), [n3.endpoint], 'and the next one x1: 7005 sent no data, nobody joins it');
      // both connections of the iperf3-style session close (FIN out, FIN back); the next one is a turn
      for (const port of [7000, 7001]) {
        n1.send(tcp(nsC, port, S, 5201, Fin | Ack, 2, 2));
        n2.send(tcp(nsT, 5201, iC, port, Fin | Ack, 2, 3));
      }
      await n1.tunnel.sent.take(2);
      await n1.written.take(2);
      n1.send(tcp(nsC, 7003, S, 5201, Syn, 1));
      assert.deepEqual(await to(1), [n2.endpoint]);
      n1.send(tcp(nsC, 7004, S, 5203, Syn, 1));
      assert.deepEqual(await to(1), [n3.endpoint], 'and the one after goes to instance 1');
    });

    it('an instance IP reaches exactly that instance, and its replies come from that instance IP', async (t) => {
      const { n1, n3 } = cluster(t, [X0, X1, X2]);
      const iX1 = f.ip(X1);
      for (let i = 0; i < 5; i++) n1.send(udp(nsC, 7000 + i, iX1, 99));
      const sent = await n1.tunnel.sent.take(5);
      sent.forEach((s, i) => {
        assert.equal(s.to, n3.endpoint);
        assert.equal(line(s.packet), `udp ${br(f, iC)}:${7000 + i} > ${br(f, f.ns(X1))}:99`);
      });
      await n3.written.take(5);
      const back = await across(n3, n1, udp(f.ns(X1), 99, iC, 7000));
      assert.equal(line(back.delivered), `udp ${br(f, iX1)}:99 > ${br(f, nsC)}:7000`);
    });

    it('Closest_IP prefers the instance on this node, then (before any RTT is measured) one in this cluster', async (t) => {
      const { n1, n2 } = cluster(t, [X0, X1, X2], { probeIntervalMs: 0 });
      const K = f === V4 ? CLOSEST.v4 : CLOSEST.v6;
      for (let i = 0; i < 4; i++) n1.send(udp(nsC, 7100 + i, K, 99));
      const local = await n1.written.take(4);
      local.forEach((p, i) => assert.equal(line(p), `udp ${br(f, iC)}:${7100 + i} > ${br(f, f.ns(X2))}:99`));
      assert.equal(n1.tunnel.log.length, 0, 'nothing on the tunnel');
      // without the local instance: x0 (n2, cluster c1 like n1) beats x1 (n3, cluster c2)
      n1.learn(SERVER, [X0, X1]);
      for (let i = 0; i < 4; i++) n1.send(udp(nsC, 7200 + i, K, 99));
      const remote = await n1.tunnel.sent.take(4);
      assert.deepEqual(
        remote.map((s) => s.to),
        [n2.endpoint, n2.endpoint, n2.endpoint, n2.endpoint],
      );
    });

    it('same node: translated both ways through the TUN, nothing on the tunnel', async (t) => {
      const { n1 } = cluster(t, [X2]);
      const nsX2 = f.ns(X2);
      const iX2 = f.ip(X2);
      n1.send(tcp(nsC, 41000, S, 80, TcpFlag.Syn, 1));
      const [req] = await n1.written.take(1);
      assert.ok(req);
      assert.equal(line(req), `tcp ${br(f, iC)}:41000 > ${br(f, nsX2)}:80 [S]`);
      assertChecksums(req);
      n1.send(tcp(nsX2, 80, iC, 41000, TcpFlag.Syn | TcpFlag.Ack, 50, 2));
      const [rep] = await n1.written.take(1);
      assert.ok(rep);
      assert.equal(line(rep), `tcp ${br(f, S)}:80 > ${br(f, nsC)}:41000 [S.]`);
      assert.deepEqual(seqAck(rep), { seq: 50, ack: 2 });
      assertChecksums(rep);
      n1.send(udp(nsC, 41001, iX2, 5, 'u'));
      const [u] = await n1.written.take(1);
      assert.ok(u);
      assert.equal(line(u), `udp ${br(f, iC)}:41001 > ${br(f, nsX2)}:5`);
      assert.equal(n1.tunnel.log.length, 0);
      assert.equal(n1.proxy.counters.tunnelOut, 0);
      assert.equal(n1.proxy.counters.local, 3);
    });
  });
}

describe('ProxyTUN header details', () => {
  it('IPv4 UDP without checksum (0) stays without; IPv4 and TCP options survive; TTL is left alone', async (t) => {
    const { n1, n2 } = cluster(t, [X0]);
    const bare = buildUdp({
      src: CLI.ns4,
      dst: SERVER.rr4,
      srcPort: 1,
      dstPort: 2,
      payload: Buffer.from('nocsum'),
      noChecksum: true,
    });
    const out = await across(n1, n2, bare);
    assert.equal(out.wire.packet.readUInt16BE(26), 0, 'still "no checksum" on the wire');
    const back = await across(
      n2,
      n1,
      buildUdp({ src: X0.ns4, dst: CLI.ip4, srcPort: 2, dstPort: 1, noChecksum: true }),
    );
    assert.equal(back.delivered.readUInt16BE(26), 0);
    assert.equal(line(back.delivered), `udp ${SERVER.rr4}:2 > ${CLI.ns4}:1`);

    const withOptions = buildTcp({
      src: CLI.ns4,
      dst: SERVER.rr4,
      srcPort: 3,
      dstPort: 4,
      flags: TcpFlag.Syn,
      ttl: 17,
      ipId: 0xbeef,
      ipv4Options: Uint8Array.of(1, 1, 1, 0), // NOP NOP NOP EOL
      tcpOptions: Uint8Array.of(2, 4, 0x05, 0xb4), // MSS 1460
    });
    const o = await across(n1, n2, withOptions);
    const w = o.wire.packet;
    assert.equal(line(w), `tcp ${CLI.ip4}:3 > ${X0.ns4}:4 [S]`);
    assert.equal(w[0], 0x46, 'IHL 6: the options are still there');
    assert.deepEqual([...w.subarray(20, 24)], [1, 1, 1, 0]);
    assert.equal(w[8], 17);
    assert.equal(w.readUInt16BE(4), 0xbeef);
    assert.deepEqual([...w.subarray(24 + 20, 24 + 24)], [2, 4, 0x05, 0xb4], 'MSS option kept');
  });
});

// ---- 6. cache misses --------------------------------------------------------------------------------------

describe('ProxyTUN cache misses', () => {
  it('holds the first packets to an unknown ServiceIP, asks once, lets other flows go, then sends in order', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    n1.learn(OTHER, [O0]);
    n2.learn(CLIENT, [CLI]);
    n1.send(
      udp(CLI.ns4, 5000, SERVER.rr4, 53, 'one'),
      udp(CLI.ns4, 5000, SERVER.rr4, 53, 'two'),
      tcp(CLI.ns4, 5001, SERVER.rr4, 80, TcpFlag.Syn, 9),
      udp(CLI.ns4, 5000, SERVER.rr4, 53, 'three'),
    );
    assert.deepEqual(await n1.dir.asked.take(1), [SERVER.rr4]);
    await until(() => n1.proxy.status().waiting_packets === 4, 'four packets held');
    // another service flows meanwhile
    const other = await across(n1, n2, udp(CLI.ns4, 5002, OTHER.rr4, 7, 'meanwhile'));
    assert.equal(line(other.wire.packet), `udp ${CLI.ip4}:5002 > ${O0.ns4}:7`);
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, 'four'));
    await until(() => n1.proxy.status().waiting_packets === 5, 'five packets held');
    assert.deepEqual(n1.dir.questions, [SERVER.rr4], 'exactly one question');

    n1.answer(SERVER.rr4, SERVER, [X0]);
    const released = await n2.written.take(5);
    assert.deepEqual(
      released.map((p) => `${line(p)} ${payloadOf(p)}`),
      [
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 one`,
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 two`,
        `tcp ${CLI.ip4}:5001 > ${X0.ns4}:80 [S] `,
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 three`,
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 four`,
      ],
    );
    for (const p of released) assertChecksums(p);
    assert.equal(n1.proxy.status().waiting_packets, 0);
    assert.equal(n1.drops(Drop.Unresolved) + n1.drops(Drop.QueueFull), 0);
  });

  it('keeps the order when the table learns the address before the answer arrives', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, '1'), udp(CLI.ns4, 5000, SERVER.rr4, 53, '2'));
    await n1.dir.asked.take(1);
    await until(() => n1.proxy.status().waiting_packets === 2, 'two packets held');
    // the resolver applies the table, then still waits (subscribing to the job) before it reports
    n1.learn(SERVER, [X0]);
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, '3'));
    const got = await n2.written.take(3);
    assert.deepEqual(got.map(payloadOf), ['1', '2', '3']);
    n1.answer(SERVER.rr4, SERVER, [X0]); // the answer, now that the table already knew it
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, '4'));
    assert.deepEqual((await n2.written.take(1)).map(payloadOf), ['4']);
    assert.equal(n1.proxy.counters.flowsCreated, 1);
  });

  it('a directory answering inside request() (mid-batch) releases the batch in order and applies removals', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    await across(n1, n2, tcp(CLI.ns4, 3000, SERVER.rr4, 80, TcpFlag.Syn, 1)); // x0
    // another port: a connection to port 80 while the first is open would join x0 (session affinity)
    await across(n1, n3, tcp(CLI.ns4, 3001, SERVER.rr4, 81, TcpFlag.Syn, 1)); // x1
    n1.dir.onRequest = (address) => {
      n1.learn(SERVER, [X1]); // the cached answer also says that x0 is gone
      n1.answer(address, OTHER, [O0]);
    };
    n1.send(
      udp(CLI.ns4, 3002, OTHER.rr4, 7, 'a'),
      udp(CLI.ns4, 3002, OTHER.rr4, 7, 'b'),
      udp(CLI.ns4, 3003, OTHER.rr4, 7, 'c'),
    );
    const got = await n2.written.take(3);
    assert.deepEqual(got.map(payloadOf), ['a', 'b', 'c']);
    assert.equal(line(got[0]!), `udp ${CLI.ip4}:3002 > ${O0.ns4}:7`);
    assert.deepEqual(
      (await n1.tunnel.sent.take(3)).map((s) => s.to),
      [n2.endpoint, n2.endpoint, n2.endpoint],
    );
    const [rst] = await n1.written.take(1);
    // the flow never saw an answer (SYN-SENT): the reset acknowledges the SYN, as such a socket requires
    assert.equal(line(rst!), `tcp ${SERVER.rr4}:80 > ${CLI.ns4}:3000 [R.]`);
    assert.deepEqual(n1.dir.questions, [OTHER.rr4]);
    const still = await across(n1, n3, tcp(CLI.ns4, 3001, SERVER.rr4, 81, TcpFlag.Ack, 2, 1));
    assert.equal(still.wire.to, n3.endpoint);
  });

  it('a negative answer drops the held packets, counted', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    n1.learn(CLIENT, [CLI]);
    n1.send(udp(CLI.ns4, 5000, '10.30.9.9', 1), udp(CLI.ns4, 5001, '10.30.9.9', 1));
    assert.deepEqual(await n1.dir.asked.take(1), ['10.30.9.9']);
    await until(() => n1.proxy.status().waiting_packets === 2, 'two packets held');
    n1.answer('10.30.9.9');
    await n1.settled();
    assert.equal(n1.drops(Drop.Unresolved), 2);
    assert.equal(n1.proxy.status().waiting_packets, 0);
    assert.equal(n1.tunnel.log.length + n1.tun.written.length, 0);
    // the next packet asks again
    n1.send(udp(CLI.ns4, 5000, '10.30.9.9', 1));
    assert.deepEqual(await n1.dir.asked.take(1), ['10.30.9.9']);
  });

  it('IPv6: held, asked once by its canonical text, released on the answer', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n3 = w.node(N3);
    n1.learn(CLIENT, [CLI]);
    n1.send(udp(CLI.ns6, 5000, SERVER.rr6, 53, 'a'), udp(CLI.ns6, 5000, SERVER.rr6, 53, 'b'));
    assert.deepEqual(await n1.dir.asked.take(1), [SERVER.rr6]);
    n1.answer(SERVER.rr6, SERVER, [X1]);
    const got = await n3.written.take(2);
    assert.deepEqual(got.map(payloadOf), ['a', 'b']);
    assert.equal(line(got[0]!), `udp [${CLI.ip6}]:5000 > [${X1.ns6}]:53`);
  });

  it('bounds the queue: a flood of distinct unknown addresses drops the excess, counted', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    n1.learn(CLIENT, [CLI]);
    const flood = 2100;
    const started = Date.now();
    for (let i = 0; i < flood; i++) n1.send(udp(CLI.ns4, 5000, `10.30.${100 + (i >> 8)}.${i & 255}`, 1));
    await until(() => n1.proxy.counters.tunIn === flood, 'the flood read');
    const budget = 400 + Math.ceil(((Date.now() - started) * 200) / 1000); // burst + refill at 200/s
    assert.equal(n1.proxy.status().waiting_packets, 2048);
    assert.equal(n1.drops(Drop.QueueFull), flood - 2048);
    // one question per address at most, and no more than the proxy's question budget (a scan must not
    // become a flood of table queries); the rest are counted as throttled
    assert.equal(new Set(n1.dir.questions).size, n1.dir.questions.length);
    assert.ok(n1.dir.questions.length <= budget, `${n1.dir.questions.length} questions, budget ${budget}`);
    assert.equal(n1.proxy.counters.questionsThrottled, 2048 - n1.dir.questions.length);
    // the node is not wedged: a known service still flows
    n1.learn(OTHER, [O0]);
    n1.send(udp(CLI.ns4, 5001, OTHER.rr4, 7));
    const [s] = await n1.tunnel.sent.take(1);
    assert.equal(s?.to, `${N2.host}:${TUNNEL_PORT}`);
  });

  it('bounds the queue per address: many packets to one unknown address, the first 64 go in order', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    for (let i = 0; i < 100; i++) n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, `${i}`));
    await until(() => n1.proxy.counters.tunIn === 100, 'all read');
    assert.equal(n1.drops(Drop.QueueFull), 36);
    assert.deepEqual(n1.dir.questions, [SERVER.rr4]);
    n1.answer(SERVER.rr4, SERVER, [X0]);
    const got = await n2.written.take(64);
    assert.deepEqual(
      got.map(payloadOf),
      Array.from({ length: 64 }, (_, i) => `${i}`),
    );
  });

  it("the server's node holds the reply until it knows the client's instance IP (one question)", async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    n1.learn(SERVER, [X0]);
    n2.learn(SERVER, [X0]); // n2 does not know the client's job yet
    const syn = await across(n1, n2, tcp(CLI.ns4, 42000, SERVER.rr4, 80, TcpFlag.Syn, 1));
    assert.equal(line(syn.delivered), `tcp ${CLI.ip4}:42000 > ${X0.ns4}:80 [S]`, 'a request goes in as is');
    assert.deepEqual(await n2.dir.asked.take(1), [CLI.ip4], 'the unknown sender is looked up at once');
    n2.send(tcp(X0.ns4, 80, CLI.ip4, 42000, TcpFlag.Syn | TcpFlag.Ack, 100, 2));
    await until(() => n2.proxy.status().waiting_packets === 1, 'SYN-ACK held');
    assert.deepEqual(n2.dir.questions, [CLI.ip4], 'no second question');
    n2.answer(CLI.ip4, CLIENT, [CLI]);
    const [wire] = await n2.tunnel.sent.take(1);
    assert.equal(line(wire!.packet), `tcp ${X0.ip4}:80 > ${CLI.ns4}:42000 [S.]`);
    const [delivered] = await n1.written.take(1);
    assert.equal(line(delivered!), `tcp ${SERVER.rr4}:80 > ${CLI.ns4}:42000 [S.]`);
  });
});

// ---- 7. the source's own entry ----------------------------------------------------------------------------

describe('ProxyTUN and local instances without their own entry yet', () => {
  for (const f of FAMILIES) {
    it(`${f.name}: packets wait for the instance's entry and go when it arrives`, async (t) => {
      const w = world(t);
      const n1 = w.node(N1);
      const n2 = w.node(N2);
      n1.learn(SERVER, [X0]);
      n2.learn(CLIENT, [CLI]);
      n1.send(
        udp(f.ns(CLI), 5000, f.rr(SERVER), 53, 'early'),
        udp(f.ns(CLI), 5000, f.rr(SERVER), 53, 'later'),
      );
      await until(() => n1.proxy.status().waiting_packets === 2, 'held');
      assert.equal(n1.tunnel.log.length, 0);
      assert.deepEqual(n1.dir.questions, [], 'the node refreshes its own job itself; nothing to ask');
      n1.learn(CLIENT, [CLI]); // the post-deploy table query: the table reports localChanged
      const got = await n2.written.take(2);
      assert.deepEqual(got.map(payloadOf), ['early', 'later']);
      assert.equal(line(got[0]!), `udp ${br(f, f.ip(CLI))}:5000 > ${br(f, f.ns(X0))}:53`);
    });
  }

  it('an instance that never gets its entry: its packets expire as counted drops', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const n1 = w.node(N1, { resolveTimeoutMs: 3000 });
      n1.learn(SERVER, [X0]);
      n1.send(udp('10.18.0.9', 5000, SERVER.rr4, 53));
      await until(() => n1.proxy.status().waiting_packets === 1, 'held');
      t.mock.timers.tick(5000);
      assert.equal(n1.proxy.status().waiting_packets, 0);
      assert.equal(n1.drops(Drop.UnknownSource), 1);
    } finally {
      w.close();
    }
  });
});

// ---- 8. instances that disappear --------------------------------------------------------------------------

describe('ProxyTUN when an instance disappears', () => {
  for (const f of FAMILIES) {
    it(`${f.name}: TCP flows get a RST, UDP flows move to the remaining instance, new flows avoid it`, async (t) => {
      const { n1, n2, n3 } = cluster(t, [X0, X1]);
      const S = f.rr(SERVER);
      const nsC = f.ns(CLI);
      const iC = f.ip(CLI);
      const { Syn, Ack, Psh } = TcpFlag;
      // flow 1 (TCP) -> x0, flow 2 (UDP) -> x1, flow 3 (UDP) -> x0
      await across(n1, n2, tcp(nsC, 8001, S, 80, Syn, 100));
      await across(n2, n1, tcp(f.ns(X0), 80, iC, 8001, Syn | Ack, 5000, 101));
      await across(n1, n2, tcp(nsC, 8001, S, 80, Ack, 101, 5001));
      await across(n1, n2, tcp(nsC, 8001, S, 80, Psh | Ack, 101, 5001, 'hello'));
      await across(n2, n1, tcp(f.ns(X0), 80, iC, 8001, Psh | Ack, 5001, 106, 'world!'));
      await across(n1, n2, tcp(nsC, 8001, S, 80, Ack, 106, 5007));
      const u2 = await across(n1, n3, udp(nsC, 8002, S, 53));
      assert.equal(u2.wire.to, n3.endpoint);
      const u3 = await across(n1, n2, udp(nsC, 8003, S, 53));
      assert.equal(u3.wire.to, n2.endpoint);

      n1.learn(SERVER, [X1]); // x0 left the table

      const [rst] = await n1.written.take(1);
      assert.ok(rst);
      assert.equal(line(rst), `tcp ${br(f, S)}:80 > ${br(f, nsC)}:8001 [R]`);
      assert.equal(seqAck(rst).seq, 5007, "the RST's sequence number is the client's last ACK");
      assertChecksums(rst, 'RST');
      assert.equal(n1.proxy.counters.resetsSent, 1);

      const moved = await across(n1, n3, udp(nsC, 8003, S, 53, 'moved'));
      assert.equal(moved.wire.to, n3.endpoint);
      assert.equal(line(moved.wire.packet), `udp ${br(f, iC)}:8003 > ${br(f, f.ns(X1))}:53`);
      const back = await across(n3, n1, udp(f.ns(X1), 53, iC, 8003));
      assert.equal(line(back.delivered), `udp ${br(f, S)}:53 > ${br(f, nsC)}:8003`);
      for (let i = 0; i < 3; i++) {
        const fresh = await across(n1, n3, udp(nsC, 8100 + i, S, 53));
        assert.equal(fresh.wire.to, n3.endpoint);
      }
      assert.equal(n2.written.length, 0, 'nothing more for the vanished instance');
    });
  }

  it("a service with no instance of the packet's family: a SYN is refused with a RST, counted", async (t) => {
    const { n1 } = cluster(t, [X0]);
    // x0 without IPv6 addresses: the RR's IPv6 address is known, but no instance can take an IPv6 flow
    const v4only = tableOf(SERVER, [X0]).map((i) => {
      const { namespace_ip_v6: _ns6, instance_ip_v6: _ip6, ...rest } = i;
      return {
        ...rest,
        service_ip: rest.service_ip.map((s) =>
          s.IpType === IP_TYPE.instance ? { ...s, Address_v6: null } : s,
        ),
      };
    });
    n1.table.apply(SERVER.name, v4only);
    n1.send(tcp(CLI.ns6, 8200, SERVER.rr6, 80, TcpFlag.Syn, 700));
    const [rst] = await n1.written.take(1);
    assert.ok(rst);
    assert.equal(line(rst), `tcp [${SERVER.rr6}]:80 > [${CLI.ns6}]:8200 [R.]`);
    assert.deepEqual(seqAck(rst), { seq: 0, ack: 701 });
    assertChecksums(rst);
    assert.equal(n1.drops(Drop.NoInstance), 1);
    assert.equal(n1.tunnel.log.length, 0);
    assert.deepEqual(n1.dir.questions, []);
  });

  it('a local client that left takes its flows along, but not those of a new instance at its recycled address', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    const NEWJOB: JobSpec = {
      name: 'app.ns.newer.ns',
      services: [{ IpType: IP_TYPE.roundRobin, Address: '10.30.0.40', Address_v6: 'fdff:2000::40' }],
      rr4: '10.30.0.40',
      rr6: 'fdff:2000::40',
    };
    // the client's flow first
    await across(n1, n2, udp(CLI.ns4, 1000, SERVER.rr4, 53)); // x0
    // the client is undeployed here; the node hands its namespace address to a new instance of another job,
    // whose entry arrives before the cluster's update about the client
    const NEW0: InstanceSpec = { ...CLI, ip4: '10.30.0.41', ip6: 'fdff::41' };
    n1.learn(NEWJOB, [NEW0]);
    const first = await across(n1, n3, tcp(NEW0.ns4, 2000, SERVER.rr4, 80, TcpFlag.Syn, 1)); // x1
    assert.equal(line(first.wire.packet), `tcp 10.30.0.41:2000 > ${X1.ns4}:80 [S]`);
    assert.equal(n1.proxy.status().flows, 2);
    n1.learn(CLIENT, []); // the update: the client left
    await n1.settled();
    assert.equal(n1.proxy.status().flows, 1, "the old client's flow is gone");
    const again = await across(n1, n3, tcp(NEW0.ns4, 2000, SERVER.rr4, 80, TcpFlag.Ack, 2, 1));
    assert.equal(line(again.wire.packet), `tcp 10.30.0.41:2000 > ${X1.ns4}:80 [.]`, 'the new flow stays put');
  });

  it('refreshing a job with the same answer keeps flows and their instances', async (t) => {
    const { n1, n2 } = cluster(t, [X0, X1]);
    await across(n1, n2, tcp(CLI.ns4, 8300, SERVER.rr4, 80, TcpFlag.Syn, 1));
    n1.learn(SERVER, [X0, X1]);
    n1.learn(CLIENT, [CLI]);
    const again = await across(n1, n2, tcp(CLI.ns4, 8300, SERVER.rr4, 80, TcpFlag.Ack, 2, 1));
    assert.equal(again.wire.to, n2.endpoint);
    assert.equal(n1.proxy.counters.resetsSent, 0);
    assert.equal(n1.proxy.status().flows, 1);
  });
});

// ---- 9. IPv4 fragments ------------------------------------------------------------------------------------

describe('ProxyTUN and fragments', () => {
  const big = (n: number) =>
    Buffer.from(Array.from({ length: n }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''));

  for (const f of FAMILIES) {
    for (const order of ['in order', 'a non-first fragment first'] as const) {
      it(`${f.name} ${order}: every fragment is translated both ways and reassembles with a valid checksum`, async (t) => {
        const { n1, n2 } = cluster(t, [X0]);
        const S = f.rr(SERVER);
        const data = big(3000);
        const request = buildUdp({
          src: f.ns(CLI),
          dst: S,
          srcPort: 9000,
          dstPort: 9001,
          payload: data,
          ipId: 0x1111,
        });
        const pieces = fragmentPacket(request, 1280, 0x1111);
        assert.equal(pieces.length, 3);
        const sendOrder = order === 'in order' ? pieces : [pieces[1]!, pieces[2]!, pieces[0]!];
        n1.send(...sendOrder);
        const wire = await n1.tunnel.sent.take(3);
        for (const s of wire) {
          assert.equal(s.to, n2.endpoint);
          assertChecksums(s.packet, 'fragment');
          assert.ok(parsed.decode(s.packet, 0, s.packet.length));
          assert.equal(parsed.srcAddress(), f.ip(CLI));
          assert.equal(parsed.dstAddress(), f.ns(X0));
        }
        const delivered = await n2.written.take(3);
        const whole = reassemble(delivered);
        assertChecksums(whole, 'reassembled request');
        assert.equal(line(whole), `udp ${br(f, f.ip(CLI))}:9000 > ${br(f, f.ns(X0))}:9001`);
        assert.equal(payloadOf(whole), data.toString('latin1'));

        const reply = buildUdp({
          src: f.ns(X0),
          dst: f.ip(CLI),
          srcPort: 9001,
          dstPort: 9000,
          payload: data,
          ipId: 0x2222,
        });
        const replyPieces = fragmentPacket(reply, 1280, 0x2222);
        n2.send(
          ...(order === 'in order' ? replyPieces : [replyPieces[2]!, replyPieces[1]!, replyPieces[0]!]),
        );
        const back = await n2.tunnel.sent.take(3);
        for (const s of back) {
          assert.equal(s.to, n1.endpoint);
          assert.ok(parsed.decode(s.packet, 0, s.packet.length));
          assert.equal(parsed.srcAddress(), f.ip(X0));
          assert.equal(parsed.dstAddress(), f.ns(CLI));
        }
        const got = await n1.written.take(3);
        for (const p of got) {
          assertChecksums(p, 'reply fragment');
          assert.ok(parsed.decode(p, 0, p.length));
          assert.equal(parsed.srcAddress(), S, 'every reply fragment comes from the dialed address');
          assert.equal(parsed.dstAddress(), f.ns(CLI));
        }
        const wholeReply = reassemble(got);
        assertChecksums(wholeReply, 'reassembled reply');
        assert.equal(line(wholeReply), `udp ${br(f, S)}:9001 > ${br(f, f.ns(CLI))}:9000`);
        assert.equal(payloadOf(wholeReply), data.toString('latin1'));
      });
    }
  }

  for (const f of FAMILIES) {
    it(`${f.name}: fragments reordered by the underlay: replies are all translated, requests all pass as they are`, async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const S = f.rr(SERVER);
      await across(n1, n2, udp(f.ns(CLI), 9100, S, 9101)); // the flow the reply belongs to
      const data = big(3000);
      // as n2 puts x0's fragmented reply on the wire, and as x0 sends a fragmented request of its own
      const reply = fragmentPacket(
        buildUdp({
          src: f.ip(X0),
          dst: f.ns(CLI),
          srcPort: 9101,
          dstPort: 9100,
          payload: data,
          ipId: 0x3333,
        }),
        1280,
        0x3333,
      );
      const request = fragmentPacket(
        buildUdp({
          src: f.ip(X0),
          dst: f.ns(CLI),
          srcPort: 7777,
          dstPort: 8888,
          payload: data,
          ipId: 0x4444,
        }),
        1280,
        0x4444,
      );
      const datagrams = [reply[1]!, request[2]!, reply[2]!, request[0]!, reply[0]!, request[1]!];
      const out = new OutboundBatch(datagrams.length);
      out.reset(Buffer.concat(datagrams));
      const to = Buffer.alloc(ENDPOINT_BYTES);
      n1.tunnel.inner.endpoint.copy(to);
      let at = 0;
      for (const d of datagrams) {
        out.pushTo(at, d.length, to);
        at += d.length;
      }
      assert.equal(out.sendThrough(n2.tunnel.inner), datagrams.length);
      const got = await n1.written.take(datagrams.length);
      const byId = (id: number) =>
        got.filter((p) => parsed.decode(p, 0, p.length) && parsed.fragmentId === id);
      const replies = byId(0x3333);
      const requests = byId(0x4444);
      assert.equal(replies.length, 3);
      assert.equal(requests.length, 3);
      for (const p of replies) {
        assert.ok(parsed.decode(p, 0, p.length));
        assert.equal(parsed.srcAddress(), S, 'each reply fragment comes from the dialed address');
        assertChecksums(p);
      }
      const wholeReply = reassemble(replies);
      assertChecksums(wholeReply);
      assert.equal(line(wholeReply), `udp ${br(f, S)}:9101 > ${br(f, f.ns(CLI))}:9100`);
      const wholeRequest = reassemble(requests);
      assertChecksums(wholeRequest);
      assert.equal(line(wholeRequest), `udp ${br(f, f.ip(X0))}:7777 > ${br(f, f.ns(CLI))}:8888`);
      assert.equal(n1.drops(Drop.FragmentUnmatched), 0);
    });
  }

  it('IPv6 fragments whose fragmentable part starts with Destination Options still follow their first', async (t) => {
    const { n1, n2 } = cluster(t, [X0]);
    const data = big(3000);
    const ext = [IpProto.DestinationOptions];
    const request = buildUdp({
      src: CLI.ns6,
      dst: SERVER.rr6,
      srcPort: 9200,
      dstPort: 9201,
      payload: data,
      extensionHeaders: ext,
    });
    const pieces = fragmentPacket(request, 1280, 0x5555);
    n1.send(pieces[1]!, pieces[0]!, pieces[2]!);
    const delivered = await n2.written.take(3);
    const whole = reassemble(delivered);
    assertChecksums(whole);
    assert.equal(line(whole), `udp [${CLI.ip6}]:9200 > [${X0.ns6}]:9201`);
    const reply = fragmentPacket(
      buildUdp({
        src: X0.ns6,
        dst: CLI.ip6,
        srcPort: 9201,
        dstPort: 9200,
        payload: data,
        extensionHeaders: ext,
      }),
      1280,
      0x6666,
    );
    n2.send(...reply);
    const got = await n1.written.take(3);
    for (const p of got) {
      assert.ok(parsed.decode(p, 0, p.length));
      assert.equal(parsed.srcAddress(), SERVER.rr6);
    }
    const wholeReply = reassemble(got);
    assertChecksums(wholeReply);
    assert.equal(line(wholeReply), `udp [${SERVER.rr6}]:9201 > [${CLI.ns6}]:9200`);
  });

  it('fragments of a datagram to an unknown address wait with it and follow it after the answer', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    const data = big(2500);
    const pieces = fragmentPacket(
      buildUdp({ src: CLI.ns4, dst: SERVER.rr4, srcPort: 1, dstPort: 2, payload: data, ipId: 77 }),
      1000,
    );
    n1.send(...pieces);
    await n1.dir.asked.take(1);
    await until(() => n1.proxy.status().waiting_packets === pieces.length, 'all fragments held');
    n1.answer(SERVER.rr4, SERVER, [X0]);
    const got = await n2.written.take(pieces.length);
    const whole = reassemble(got);
    assertChecksums(whole);
    assert.equal(line(whole), `udp ${CLI.ip4}:1 > ${X0.ns4}:2`);
    assert.equal(payloadOf(whole), data.toString('latin1'));
  });

  it('same node: a fragmented datagram and its fragmented reply are translated locally', async (t) => {
    const { n1 } = cluster(t, [X2]);
    const data = big(2000);
    const pieces = fragmentPacket(
      buildUdp({ src: CLI.ns4, dst: SERVER.rr4, srcPort: 11, dstPort: 12, payload: data, ipId: 5 }),
      1000,
    );
    n1.send(pieces[1]!, pieces[0]!, pieces[2]!);
    const req = reassemble(await n1.written.take(pieces.length));
    assert.equal(line(req), `udp ${CLI.ip4}:11 > ${X2.ns4}:12`);
    assertChecksums(req);
    const back = fragmentPacket(
      buildUdp({ src: X2.ns4, dst: CLI.ip4, srcPort: 12, dstPort: 11, payload: data, ipId: 6 }),
      1000,
    );
    n1.send(back[2]!, back[0]!, back[1]!);
    const rep = await n1.written.take(back.length);
    for (const p of rep) {
      assert.ok(parsed.decode(p, 0, p.length));
      assert.equal(parsed.srcAddress(), SERVER.rr4);
    }
    const whole = reassemble(rep);
    assertChecksums(whole);
    assert.equal(line(whole), `udp ${SERVER.rr4}:12 > ${CLI.ns4}:11`);
    assert.equal(n1.tunnel.log.length, 0);
  });
});

// ---- 10. garbage ------------------------------------------------------------------------------------------

describe('ProxyTUN and bad input', () => {
  it('garbage into the TUN: counted drops, no throw, traffic continues', async (t) => {
    const { n1, n2 } = cluster(t, [X0]);
    const random = createSeededRandom(42);
    const junk: Buffer[] = [];
    for (let i = 0; i < 200; i++) junk.push(randomBytes(random, 1 + Math.floor(random() * 200)));
    const valid = udp(CLI.ns4, 1, SERVER.rr4, 2, 'valid');
    for (let cut = 1; cut < valid.length; cut += 3) junk.push(valid.subarray(0, cut)); // truncated
    junk.push(Buffer.from([0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01])); // ARP-like, not IP
    const gre = udp(CLI.ns4, 1, SERVER.rr4, 2);
    gre[9] = 47; // GRE: an IP packet of an unsupported protocol
    junk.push(gre);
    const before = n1.decodeErrors() + n1.drops(Drop.NotSemantic) + n1.drops(Drop.UnsupportedIcmp);
    n1.send(...junk);
    n1.send(udp(CLI.ns4, 1, '8.8.8.8', 53)); // not a semantic destination
    const unreachable = buildEcho({ src: CLI.ns4, dst: SERVER.rr4, id: 1 });
    unreachable[20] = 3; // ICMP destination unreachable: not carried
    n1.send(unreachable);
    n1.send(Buffer.alloc(1600, 0x45)); // longer than the TUN's MTU: arrives truncated (length 0)
    await until(() => n1.proxy.counters.tunIn === junk.length + 3, 'all read');
    const after = n1.decodeErrors() + n1.drops(Drop.NotSemantic) + n1.drops(Drop.UnsupportedIcmp);
    assert.equal(after - before, junk.length + 2, 'every bad packet is one counted drop');
    assert.equal(n1.drops(Drop.NotSemantic), 1);
    assert.equal(n1.drops(Drop.UnsupportedIcmp), 1);
    assert.equal(n1.drops(Drop.Truncated), 1);
    assert.ok((n1.proxy.counters.decodeErrors[DecodeError.BadVersion] ?? 0) >= 1);
    assert.ok((n1.proxy.counters.decodeErrors[DecodeError.UnsupportedProtocol] ?? 0) >= 1);
    assert.equal(n1.proxy.status().waiting_packets, 0);
    assert.equal(n1.tunnel.log.length, 0, 'nothing went out');
    const ok = await across(n1, n2, udp(CLI.ns4, 3, SERVER.rr4, 4, 'still fine'));
    assert.equal(payloadOf(ok.delivered), 'still fine');
  });

  it('garbage and strays from the tunnel: counted drops, no throw, traffic continues', async (t) => {
    const { w, n1, n2 } = cluster(t, [X0]);
    const rogue = w.net.open('10.255.0.99', TUNNEL_PORT);
    t.after(() => rogue.close());
    const random = createSeededRandom(7);
    const datagrams: Buffer[] = [];
    for (let i = 0; i < 100; i++) datagrams.push(randomBytes(random, 1 + Math.floor(random() * 300)));
    datagrams.push(udp(CLI.ip4, 1, CLI.ns4, 2)); // for a namespace on n1, not n2
    datagrams.push(udp(CLI.ip6, 1, 'fc00::99', 2)); // v6, outside n2's /120
    datagrams.push(udp('8.8.8.8', 1, X0.ns4, 2)); // from outside the overlay
    datagrams.push(udp('fc00::2', 1, X0.ns6, 2)); // a namespace address is no semantic source
    const out = new OutboundBatch(datagrams.length);
    out.reset(Buffer.concat(datagrams));
    let at = 0;
    const to = Buffer.alloc(ENDPOINT_BYTES);
    n2.tunnel.inner.endpoint.copy(to);
    for (const d of datagrams) {
      out.pushTo(at, d.length, to);
      at += d.length;
    }
    assert.equal(out.sendThrough(rogue), datagrams.length);
    await until(() => n2.proxy.counters.tunnelIn === datagrams.length, 'all received');
    const counted =
      n2.decodeErrors() +
      n2.drops(Drop.NotForThisNode) +
      n2.drops(Drop.FromOutsideOverlay) +
      n2.drops(Drop.Truncated);
    assert.equal(counted, datagrams.length, 'every datagram is one counted drop');
    assert.equal(n2.drops(Drop.NotForThisNode), 2);
    assert.equal(n2.drops(Drop.FromOutsideOverlay), 2);
    assert.equal(n2.tun.written.length, 0, 'nothing reached the instances');
    const ok = await across(n1, n2, udp(CLI.ns4, 3, SERVER.rr4, 4, 'still fine'));
    assert.equal(payloadOf(ok.delivered), 'still fine');
  });
});

// ---- 11. idle expiry and TCP closing ----------------------------------------------------------------------

describe('ProxyTUN and peers that go down', () => {
  it('sends new flows only to instances on nodes that answer probes, and back to a node once it answers again', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1], { probeIntervalMs: 10 });
    type Peer = { node: string; samples: number; reachable: boolean };
    const peers = () => (n1.proxy.status().peers as Peer[]) ?? [];
    const until = async (what: string, check: () => boolean) => {
      const deadline = performance.now() + 5000;
      while (!check()) {
        assert.ok(performance.now() < deadline, `${what}: ${JSON.stringify(peers())}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    // the first flows make n1 probe both nodes
    await across(n1, n2, udp(CLI.ns4, 5000, SERVER.rr4, 53)); // x0
    await across(n1, n3, udp(CLI.ns4, 5001, SERVER.rr4, 53)); // x1
    await until('both peers measured', () => peers().filter((p) => p.samples > 0).length === 2);
    // n3 goes down (its node died; the control plane has not said so yet): nothing comes back from it
    n3.tunnel.down = true;
    await until('n3 unreachable', () => peers().some((p) => !p.reachable));
    for (let i = 0; i < 4; i++) n1.send(udp(CLI.ns4, 5100 + i, SERVER.rr4, 53));
    const sent = await n1.tunnel.sent.take(4);
    assert.deepEqual(
      sent.map((s) => s.to),
      [n2.endpoint, n2.endpoint, n2.endpoint, n2.endpoint],
      'every new flow to the instance that is still there',
    );
    // n3 is back: new flows take turns again
    n3.tunnel.down = false;
    await until('n3 reachable again', () => peers().every((p) => p.reachable));
    for (let i = 0; i < 4; i++) n1.send(udp(CLI.ns4, 5200 + i, SERVER.rr4, 53));
    const later = (await n1.tunnel.sent.take(4)).map((s) => s.to);
    assert.equal(later.filter((x) => x === n3.endpoint).length, 2, JSON.stringify(later));
  });
});

describe('ProxyTUN flow lifetimes', () => {
  it('a closed TCP flow (FIN both ways) is forgotten; a new SYN on its 5-tuple makes a new choice', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    const { Syn, Ack, Fin } = TcpFlag;
    const S = SERVER.rr4;
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Syn, 10));
    await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4242, Syn | Ack, 90, 11));
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Syn, 10)); // a retransmitted SYN stays on its flow
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Fin | Ack, 11, 91));
    await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4242, Fin | Ack, 91, 12));
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Ack, 12, 92));
    const again = await across(n1, n3, tcp(CLI.ns4, 4242, S, 80, Syn, 5000));
    assert.equal(again.wire.to, n3.endpoint, 'round robin continues with the next instance');
    assert.equal(line(again.wire.packet), `tcp ${CLI.ip4}:4242 > ${X1.ns4}:80 [S]`);
    const reply = await across(n3, n1, tcp(X1.ns4, 80, CLI.ip4, 4242, Syn | Ack, 1, 5001));
    assert.equal(line(reply.delivered), `tcp ${S}:80 > ${CLI.ns4}:4242 [S.]`);
    assert.equal(n1.proxy.status().flows, 1);
  });

  it('a TCP flow reset by the server is closed; a new SYN makes a new choice', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    await across(n1, n2, tcp(CLI.ns4, 4300, SERVER.rr4, 80, TcpFlag.Syn, 10));
    const rst = await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4300, TcpFlag.Rst | TcpFlag.Ack, 0, 11));
    assert.equal(line(rst.delivered), `tcp ${SERVER.rr4}:80 > ${CLI.ns4}:4300 [R.]`);
    const again = await across(n1, n3, tcp(CLI.ns4, 4300, SERVER.rr4, 80, TcpFlag.Syn, 20));
    assert.equal(again.wire.to, n3.endpoint);
  });

  it('idle flows expire (UDP before established TCP); the next packet chooses again', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const idle = { udp: 60_000, tcpEstablished: 600_000, tcpOpening: 30_000, tcpClosed: 10_000 };
      const n1 = w.node(N1, { idle });
      const n2 = w.node(N2, { idle });
      const n3 = w.node(N3, { idle });
      n1.learn(CLIENT, [CLI]);
      n1.learn(SERVER, [X0, X1]);
      for (const n of [n2, n3]) {
        n.learn(CLIENT, [CLI]);
        n.learn(SERVER, [X0, X1]);
      }
      const { Syn, Ack } = TcpFlag;
      await across(n1, n2, tcp(CLI.ns4, 4400, SERVER.rr4, 80, Syn, 1)); // x0
      await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4400, Syn | Ack, 1, 2));
      await across(n1, n2, tcp(CLI.ns4, 4400, SERVER.rr4, 80, Ack, 2, 2, 'GET')); // in use
      await across(n1, n3, udp(CLI.ns4, 4401, SERVER.rr4, 53)); // x1
      // joins the young connection in use (session affinity), without taking a round-robin turn
      await across(n1, n2, tcp(CLI.ns4, 4402, SERVER.rr4, 80, Syn, 1)); // x0, never answered
      assert.equal(n1.proxy.status().flows, 3);
      t.mock.timers.tick(31_000);
      assert.equal(n1.proxy.status().flows, 2, 'the unanswered SYN expired after tcpOpening');
      t.mock.timers.tick(30_000);
      assert.equal(n1.proxy.status().flows, 1, 'the UDP flow expired after 60 s; the TCP one stays');
      const udpAgain = await across(n1, n2, udp(CLI.ns4, 4401, SERVER.rr4, 53));
      assert.equal(udpAgain.wire.to, n2.endpoint, 'a new choice (round robin: after x0, x1 comes x0)');
      const tcpLater = await across(n1, n2, tcp(CLI.ns4, 4400, SERVER.rr4, 80, Ack, 2, 2));
      assert.equal(tcpLater.wire.to, n2.endpoint, 'the established flow still goes to its instance');
      assert.ok(n1.inUse().has(SERVER.name), 'a job with live flows stays in use, however idle they are');
      t.mock.timers.tick(600_000 + 2000);
      assert.equal(n1.proxy.status().flows, 0);
    } finally {
      w.close();
    }
  });

  it('closed TCP flows and ICMP flows expire after their own idle times', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const n1 = w.node(N1);
      const n2 = w.node(N2);
      n1.learn(CLIENT, [CLI]);
      n1.learn(SERVER, [X0]);
      n2.learn(CLIENT, [CLI]);
      n2.learn(SERVER, [X0]);
      const { Syn, Ack, Fin } = TcpFlag;
      await across(n1, n2, tcp(CLI.ns4, 4500, SERVER.rr4, 80, Syn, 1));
      await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4500, Syn | Ack, 1, 2));
      await across(n1, n2, tcp(CLI.ns4, 4500, SERVER.rr4, 80, Fin | Ack, 2, 2));
      await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4500, Fin | Ack, 2, 3));
      await across(n1, n2, buildEcho({ src: CLI.ns4, dst: SERVER.rr4, id: 9 }));
      assert.equal(n1.proxy.status().flows, 2);
      t.mock.timers.tick(11_000);
      assert.equal(n1.proxy.status().flows, 1, 'the closed TCP flow went after 10 s');
      t.mock.timers.tick(20_000);
      assert.equal(n1.proxy.status().flows, 0, 'the echo flow went after 30 s');
    } finally {
      w.close();
    }
  });

  it('held packets time out as counted drops and the address can be asked again', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const n1 = w.node(N1, { resolveTimeoutMs: 3000 });
      n1.learn(CLIENT, [CLI]);
      n1.send(udp(CLI.ns4, 1, SERVER.rr4, 2), udp(CLI.ns4, 1, SERVER.rr4, 2));
      await n1.dir.asked.take(1);
      await until(() => n1.proxy.status().waiting_packets === 2, 'held');
      t.mock.timers.tick(4000);
      assert.equal(n1.proxy.status().waiting_packets, 0);
      assert.equal(n1.drops(Drop.Unresolved), 2);
      n1.send(udp(CLI.ns4, 1, SERVER.rr4, 2));
      assert.deepEqual(await n1.dir.asked.take(1), [SERVER.rr4]);
    } finally {
      w.close();
    }
  });
});
