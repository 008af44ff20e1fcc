/**
 * @module dataplane/proxy/proxy.fixtures
 * The test bed of the ProxyTUN tests (proxy-*.test.ts): ProxyTUN end to end in one process: two or three complete proxies, each with a FakeTun (its "kernel"), an
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
import type { TestContext } from 'node:test';
import pino from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { ServiceTable } from '../../node/service-table.ts';
import { IP_TYPE, type ServiceIpEntry, type TableInstance } from '../../protocol/mqtt.ts';
import { buildTcp, buildUdp, fullChecksumsValid } from '../packet/build.ts';
import { IpProto, ParsedPacket, TcpFlag } from '../packet/index.ts';
import { Collector } from '../tun/fixtures.ts';
import { FakeTun } from '../tun/fake.ts';
import { MemorySwitch, type MemoryTunnel } from '../tunnel/memory.ts';
import {
  type AddressedBatch,
  decodeEndpoint,
  ENDPOINT_BYTES,
  type SendResult,
  type Tunnel,
} from '../tunnel/tunnel.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { type Drop } from './counters.ts';
import { IpAddress } from '../../addressing/ip.ts';
import type { AddressLookup, DataPlaneConfig } from '../dataplane.ts';
import { ProxyTun } from './proxy.ts';
import { isProbe } from './prober.ts';

// ---- the cluster: nodes, jobs, instances ------------------------------------------------------------------

export interface NodeSpec {
  name: string;
  workerId: string;
  host: string;
  cluster: string;
  v4: string;
  v6: string;
}

export const N1: NodeSpec = {
  name: 'n1',
  workerId: '64a000000000000000000001',
  host: '10.255.0.1',
  cluster: 'c1',
  v4: '10.18.0.0/26',
  v6: 'fc00::/120',
};
export const N2: NodeSpec = {
  name: 'n2',
  workerId: '64a000000000000000000002',
  host: '10.255.0.2',
  cluster: 'c1',
  v4: '10.18.0.64/26',
  v6: 'fc00::100/120',
};
export const N3: NodeSpec = {
  name: 'n3',
  workerId: '64a000000000000000000003',
  host: '10.255.0.3',
  cluster: 'c2',
  v4: '10.18.0.128/26',
  v6: 'fc00::200/120',
};
export const TUNNEL_PORT = 50103;

export interface InstanceSpec {
  number: number;
  node: NodeSpec;
  ns4: string;
  ns6: string;
  ip4: string;
  ip6: string;
}

export interface JobSpec {
  name: string;
  services: ServiceIpEntry[];
  rr4: string;
  rr6: string;
}

export const CLIENT: JobSpec = {
  name: 'app.ns.client.ns',
  services: [{ IpType: IP_TYPE.roundRobin, Address: '10.30.0.9', Address_v6: 'fdff:2000::9' }],
  rr4: '10.30.0.9',
  rr6: 'fdff:2000::9',
};
export const CLI: InstanceSpec = {
  number: 0,
  node: N1,
  ns4: '10.18.0.2',
  ns6: 'fc00::2',
  ip4: '10.30.0.10',
  ip6: 'fdff::10',
};

export const SERVER: JobSpec = {
  name: 'app.ns.server.ns',
  services: [
    { IpType: IP_TYPE.roundRobin, Address: '10.30.0.1', Address_v6: 'fdff:2000::1' },
    { IpType: IP_TYPE.closest, Address: '10.30.0.6', Address_v6: 'fdff:1000::6' },
  ],
  rr4: '10.30.0.1',
  rr6: 'fdff:2000::1',
};
export const CLOSEST = { v4: '10.30.0.6', v6: 'fdff:1000::6' };
/** SERVER's instances: x0 on n2, x1 on n3, x2 on n1 (beside the client). */
export const X0: InstanceSpec = {
  number: 0,
  node: N2,
  ns4: '10.18.0.66',
  ns6: 'fc00::102',
  ip4: '10.30.0.2',
  ip6: 'fdff::2',
};
export const X1: InstanceSpec = {
  number: 1,
  node: N3,
  ns4: '10.18.0.130',
  ns6: 'fc00::202',
  ip4: '10.30.0.4',
  ip6: 'fdff::4',
};
export const X2: InstanceSpec = {
  number: 2,
  node: N1,
  ns4: '10.18.0.3',
  ns6: 'fc00::3',
  ip4: '10.30.0.5',
  ip6: 'fdff::5',
};

export const OTHER: JobSpec = {
  name: 'app.ns.other.ns',
  services: [{ IpType: IP_TYPE.roundRobin, Address: '10.30.0.20', Address_v6: 'fdff:2000::20' }],
  rr4: '10.30.0.20',
  rr6: 'fdff:2000::20',
};
export const O0: InstanceSpec = {
  number: 0,
  node: N2,
  ns4: '10.18.0.67',
  ns6: 'fc00::103',
  ip4: '10.30.0.21',
  ip6: 'fdff::21',
};

/** A table-query answer's instance_list, as the cluster formats it (cluster/resolver.ts toTableResult). */
export function tableOf(job: JobSpec, instances: readonly InstanceSpec[]): TableInstance[] {
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
export interface Family {
  name: string;
  ns(i: InstanceSpec): string;
  ip(i: InstanceSpec): string;
  rr(j: JobSpec): string;
}
export const V4: Family = { name: 'IPv4', ns: (i) => i.ns4, ip: (i) => i.ip4, rr: (j) => j.rr4 };
export const V6: Family = { name: 'IPv6', ns: (i) => i.ns6, ip: (i) => i.ip6, rr: (j) => j.rr6 };
export const FAMILIES = [V4, V6];

// ---- the test bed -----------------------------------------------------------------------------------------

export interface Sent {
  packet: Buffer;
  to: string;
}

/**
 * A Tunnel that records a copy of every datagram the proxy sends (the wire) before the switch carries it; RTT
 * probes (which the proxy sends to every peer it may choose) are only counted.
 */
export class TapTunnel implements Tunnel {
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
export class FakeLookup implements AddressLookup {
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

export const SEMANTIC = [Cidr.parse('10.30.0.0/16'), Cidr.parse('fdff::/16')];

export class TestNode {
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

export class World {
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
export function world(t: TestContext): World {
  const w = new World();
  t.after(() => w.close());
  return w;
}

/**
 * The usual three nodes: n1 runs the client (and x2), n2 runs x0 (and o0), n3 runs x1. Each node knows its own
 * jobs and the client's (so replies to the client resolve); n1 knows SERVER with `serverOnN1`.
 */
export function cluster(
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
export async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

// ---- reading packets --------------------------------------------------------------------------------------

export const parsed = new ParsedPacket();

export function flagText(f: number): string {
  let s = '';
  if (f & TcpFlag.Syn) s += 'S';
  if (f & TcpFlag.Fin) s += 'F';
  if (f & TcpFlag.Rst) s += 'R';
  if (f & TcpFlag.Psh) s += 'P';
  if (f & TcpFlag.Ack) s += '.';
  return s;
}

/** tcpdump-like one-liner of a packet: "udp 10.30.0.10:5000 > 10.18.0.66:53", "tcp [fc00::2]:1 > ... [S]". */
export function line(pkt: Buffer): string {
  assert.ok(parsed.decode(pkt, 0, pkt.length), `packet decodes (error ${parsed.error})`);
  const a = (s: string) => (parsed.addrLength === 16 ? `[${s}]` : s);
  const ends = `${a(parsed.srcAddress())}:${parsed.srcPort} > ${a(parsed.dstAddress())}:${parsed.dstPort}`;
  if (parsed.proto === IpProto.Tcp) return `tcp ${ends} [${flagText(parsed.tcpFlags)}]`;
  if (parsed.proto === IpProto.Udp) return `udp ${ends}`;
  if (parsed.isEcho) return `echo ${ends} type ${parsed.icmpType}`;
  return `proto ${parsed.proto} ${ends}`;
}

/** TCP sequence and acknowledgment numbers. */
export function seqAck(pkt: Buffer): { seq: number; ack: number } {
  assert.ok(parsed.decode(pkt, 0, pkt.length) && parsed.proto === IpProto.Tcp);
  return { seq: pkt.readUInt32BE(parsed.l4Offset + 4), ack: pkt.readUInt32BE(parsed.l4Offset + 8) };
}

/** The transport payload of an unfragmented TCP/UDP/echo packet, as text. */
export function payloadOf(pkt: Buffer): string {
  assert.ok(parsed.decode(pkt, 0, pkt.length));
  const end = parsed.ipOffset + parsed.totalLength;
  let at = parsed.l4Offset + 8;
  if (parsed.proto === IpProto.Tcp) at = parsed.l4Offset + ((pkt[parsed.l4Offset + 12] ?? 0) >> 4) * 4;
  return pkt.toString('latin1', at, end);
}

export function assertChecksums(pkt: Buffer, what = 'packet'): void {
  assert.ok(fullChecksumsValid(pkt, 0, pkt.length), `${what}: checksums equal a full recomputation`);
}

export const udp = (src: string, srcPort: number, dst: string, dstPort: number, payload = 'x'): Buffer =>
  buildUdp({ src, dst, srcPort, dstPort, payload: Buffer.from(payload) });

export const tcp = (
  src: string,
  srcPort: number,
  dst: string,
  dstPort: number,
  flags: number,
  seq: number,
  ack = 0,
  payload = '',
): Buffer => buildTcp({ src, dst, srcPort, dstPort, flags, seq, ack, payload: Buffer.from(payload) });

export const br = (f: Family, addr: string) => (f === V6 ? `[${addr}]` : addr);

/** Sends pkt from `from`'s TUN and returns what went on the wire and what `to` delivered to its TUN. */
export async function across(
  from: TestNode,
  to: TestNode,
  pkt: Buffer,
): Promise<{ wire: Sent; delivered: Buffer }> {
  from.send(pkt);
  const [wire] = await from.tunnel.sent.take(1);
  const [delivered] = await to.written.take(1);
  assert.ok(wire && delivered);
  assertChecksums(wire.packet, 'on the wire');
  assertChecksums(delivered, 'delivered');
  return { wire, delivered };
}
