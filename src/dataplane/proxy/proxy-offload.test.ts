/**
 * ProxyTUN with a TUN that offloads (super-packets in the batch's gso words, packet/offload.ts), in one process:
 * two proxies with FakeTuns in offload mode on one in-memory underlay. A super-packet must be translated once
 * and then either go on the wire as ordinary MSS-sized packets with full checksums (remote instance), or back
 * into the TUN whole with its gso word and a correctly adjusted partial checksum (instance on the same node); one
 * that has to wait for the control plane waits whole. The wire never carries anything else.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it, type TestContext } from 'node:test';
import pino from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import type { IpAddress } from '../../addressing/ip.ts';
import { ServiceTable } from '../../node/service-table.ts';
import { IP_TYPE, type TableInstance } from '../../protocol/mqtt.ts';
import {
  buildTcp,
  buildUdp,
  completePartialChecksum,
  createSeededRandom,
  fullChecksumsValid,
  randomBytes,
  withPartialChecksum,
} from '../packet/build.ts';
import { IpProto, ParsedPacket, TcpFlag } from '../packet/index.ts';
import { FakeTun } from '../tun/fake.ts';
import { MemorySwitch, type MemoryTunnel } from '../tunnel/memory.ts';
import type { AddressLookup } from '../dataplane.ts';
import { Drop } from './counters.ts';
import { ProxyTun } from './proxy.ts';
import { isProbe } from './prober.ts';

const PORT = 50103;
const SEMANTIC = [Cidr.parse('10.30.0.0/16'), Cidr.parse('fdff::/16')];

interface Node {
  worker: string;
  host: string;
  v4: string;
  v6: string;
}
const N1: Node = {
  worker: '64a000000000000000000001',
  host: '10.255.0.1',
  v4: '10.18.0.0/26',
  v6: 'fc00::/120',
};
const N2: Node = {
  worker: '64a000000000000000000002',
  host: '10.255.0.2',
  v4: '10.18.0.64/26',
  v6: 'fc00::100/120',
};

interface Instance {
  number: number;
  node: Node;
  ns: [string, string];
  ip: [string, string];
}
const CLIENT = { job: 'app.ns.client.ns', rr: ['10.30.0.9', 'fdff:2000::9'] as [string, string] };
const SERVER = { job: 'app.ns.server.ns', rr: ['10.30.0.1', 'fdff:2000::1'] as [string, string] };
const UNKNOWN = { job: 'app.ns.later.ns', rr: ['10.30.0.40', 'fdff:2000::40'] as [string, string] };
const C: Instance = { number: 0, node: N1, ns: ['10.18.0.2', 'fc00::2'], ip: ['10.30.0.10', 'fdff::10'] };
const T: Instance = { number: 0, node: N2, ns: ['10.18.0.66', 'fc00::102'], ip: ['10.30.0.2', 'fdff::2'] };
/** A server instance beside the client. */
const L: Instance = { number: 1, node: N1, ns: ['10.18.0.3', 'fc00::3'], ip: ['10.30.0.5', 'fdff::5'] };
const U: Instance = { number: 0, node: N2, ns: ['10.18.0.67', 'fc00::103'], ip: ['10.30.0.41', 'fdff::41'] };

function table(job: { rr: [string, string] }, instances: Instance[]): TableInstance[] {
  return instances.map((i) => ({
    instance_number: i.number,
    instance_ip: i.ip[0],
    instance_ip_v6: i.ip[1],
    namespace_ip: i.ns[0],
    namespace_ip_v6: i.ns[1],
    host_ip: i.node.host,
    host_port: PORT,
    worker_id: i.node.worker,
    cluster_id: 'c1',
    service_ip: [
      { IpType: IP_TYPE.roundRobin, Address: job.rr[0], Address_v6: job.rr[1] },
      { IpType: IP_TYPE.instance, Address: i.ip[0], Address_v6: i.ip[1] },
    ],
  }));
}

/** Records every datagram the node puts on the wire (the switch's capture point), probes left out. */
class Tap {
  readonly wire: Buffer[] = [];
  constructor(
    readonly tunnel: MemoryTunnel,
    net: MemorySwitch,
  ) {
    const previous = net.onDatagram;
    net.onDatagram = (datagram, to, from) => {
      previous?.(datagram, to, from);
      if (from.equals(tunnel.endpoint) && !isProbe(datagram, 0, datagram.length))
        this.wire.push(Buffer.from(datagram));
    };
  }
  close(): void {
    this.tunnel.close();
  }
}

/** Records the questions the proxy asks. */
class Lookup implements AddressLookup {
  readonly questions: string[] = [];
  ask(address: IpAddress): void {
    this.questions.push(address.toString());
  }
}

class ProxyNode {
  readonly tun = new FakeTun({ offload: true });
  readonly tunnel: Tap;
  readonly table: ServiceTable;
  readonly dir = new Lookup();
  readonly proxy: ProxyTun;
  readonly written: Array<{ packet: Buffer; gso: number }> = [];

  constructor(node: Node, net: MemorySwitch) {
    this.tun.onWrite = (packet, gso) => this.written.push({ packet, gso });
    this.tunnel = new Tap(net.open(node.host, PORT), net);
    this.table = new ServiceTable();
    this.table.setIdentity({
      workerId: node.worker,
      hostIp: node.host,
      hostPort: PORT,
      subnets: [Cidr.parse(node.v4), Cidr.parse(node.v6)],
      cluster: 'c1',
    });
    this.proxy = new ProxyTun(
      { tun: this.tun, tunnel: this.tunnel.tunnel },
      { semanticRanges: SEMANTIC, probeIntervalMs: 0 },
      this.dir,
      pino({ level: 'silent' }),
    );
    this.table.onChange((snapshot) => this.proxy.apply(snapshot));
    this.proxy.start();
  }

  close(): void {
    this.proxy.close();
  }
}

function twoNodes(t: TestContext): { n1: ProxyNode; n2: ProxyNode } {
  const net = new MemorySwitch();
  const n1 = new ProxyNode(N1, net);
  const n2 = new ProxyNode(N2, net);
  t.after(() => {
    n1.close();
    n2.close();
  });
  for (const n of [n1, n2]) {
    n.table.apply(CLIENT.job, table(CLIENT, [C]));
    n.table.apply(SERVER.job, table(SERVER, [T, L]));
  }
  return { n1, n2 };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

const p = new ParsedPacket();

/** src, dst, payload and (TCP) seq/flags of a packet. */
function fields(pkt: Buffer) {
  assert.ok(p.decode(pkt, 0, pkt.length), `decodes (error ${p.error})`);
  const tcp = p.proto === IpProto.Tcp;
  const payloadAt = tcp ? p.l4Offset + ((pkt[p.l4Offset + 12]! >> 4) << 2) : p.l4Offset + 8;
  return {
    src: p.srcAddress(),
    dst: p.dstAddress(),
    payload: pkt.subarray(payloadAt, p.ipOffset + p.totalLength),
    seq: tcp ? pkt.readUInt32BE(p.l4Offset + 4) : 0,
    flags: tcp ? p.tcpFlags : 0,
  };
}

for (const [f, name] of [
  [0, 'IPv4'],
  [1, 'IPv6'],
] as const) {
  describe(`ProxyTUN with offloads (${name})`, () => {
    it('a TCP super-packet to a remote instance is translated once and goes on the wire as MSS-sized packets', async (t) => {
      const { n1, n2 } = twoNodes(t);
      const payload = randomBytes(createSeededRandom(1), 20000);
      const seq = 0xffffff00;
      // the target is chosen per new flow by round robin over T (remote) and L (local): dial T's instance IP
      const sp = withPartialChecksum(
        buildTcp({
          src: C.ns[f],
          dst: T.ip[f],
          srcPort: 40000,
          dstPort: 5201,
          seq,
          ack: 5,
          flags: TcpFlag.Ack | TcpFlag.Psh,
          payload,
        }),
      );
      n1.tun.inject(sp, 1400);
      await until(() => n2.written.length === 15, 'the segments at n2');
      const wire = n1.tunnel.wire;
      assert.equal(wire.length, 15);
      wire.forEach((segment, k) => {
        assert.ok(fullChecksumsValid(segment, 0, segment.length), `segment ${k}: checksums`);
        const x = fields(segment);
        assert.equal(x.src, C.ip[f]);
        assert.equal(x.dst, T.ns[f]);
        assert.equal(x.seq, (seq + k * 1400) >>> 0);
        assert.equal(x.flags, k === 14 ? TcpFlag.Ack | TcpFlag.Psh : TcpFlag.Ack);
      });
      assert.deepEqual(Buffer.concat(wire.map((s) => fields(s).payload)), payload);
      // the server's node delivers them unchanged, as ordinary packets (its TUN coalesces them, not the proxy)
      assert.deepEqual(
        n2.written.map((w) => w.gso),
        Array<number>(15).fill(0),
      );
      assert.deepEqual(
        n2.written.map((w) => w.packet),
        wire,
      );
      assert.equal(n1.proxy.counters.tunnelOut, 15);
    });

    it('a super-packet to an instance on the same node goes back into the TUN whole, gso word and checksum right', async (t) => {
      const { n1 } = twoNodes(t);
      const payload = randomBytes(createSeededRandom(2), 30000);
      const original = buildTcp({
        src: C.ns[f],
        dst: L.ip[f],
        srcPort: 40001,
        dstPort: 5201,
        seq: 77,
        flags: TcpFlag.Ack,
        payload,
      });
      n1.tun.inject(withPartialChecksum(original), 1398);
      await until(() => n1.written.length === 1, 'the local delivery');
      const [w] = n1.written;
      assert.equal(w!.gso, 1398);
      assert.equal(n1.tunnel.wire.length, 0);
      const x = fields(w!.packet);
      assert.equal(x.src, C.ip[f]);
      assert.equal(x.dst, L.ns[f]);
      assert.deepEqual(x.payload, payload);
      const done = completePartialChecksum(w!.packet);
      assert.ok(
        fullChecksumsValid(done, 0, done.length),
        'the adjusted partial checksum completes to a valid one',
      );
    });

    it('a UDP super-packet (USO) becomes datagrams with their own UDP headers', async (t) => {
      const { n1, n2 } = twoNodes(t);
      const payload = randomBytes(createSeededRandom(3), 5000);
      const sp = withPartialChecksum(
        buildUdp({ src: C.ns[f], dst: T.ip[f], srcPort: 5000, dstPort: 443, payload }),
      );
      n1.tun.inject(sp, 1200);
      await until(() => n2.written.length === 5, 'the datagrams at n2');
      for (const d of n1.tunnel.wire) {
        assert.ok(fullChecksumsValid(d, 0, d.length));
        assert.equal(fields(d).dst, T.ns[f]);
      }
      assert.deepEqual(Buffer.concat(n1.tunnel.wire.map((d) => fields(d).payload)), payload);
    });

    it('a packet the kernel dropped on read (length 0, gso word 0) is a counted drop among super-packets', async (t) => {
      const { n1, n2 } = twoNodes(t);
      const payload = randomBytes(createSeededRandom(5), 4200);
      const sp = withPartialChecksum(
        buildTcp({ src: C.ns[f], dst: T.ip[f], srcPort: 40003, dstPort: 5201, seq: 1, payload }),
      );
      // what the addon makes of a read that failed with EINVAL ("unexpected GSO type"): an empty entry
      n1.tun.inject(Buffer.alloc(0));
      n1.tun.inject(sp, 1400);
      n1.tun.inject(Buffer.alloc(0));
      await until(() => n1.proxy.counters.tunIn === 3, 'all read');
      await until(() => n2.written.length === 3, 'the segments at n2');
      assert.equal(n1.proxy.counters.drops[Drop.Truncated], 2);
      assert.deepEqual(Buffer.concat(n1.tunnel.wire.map((s) => fields(s).payload)), payload);
    });

    it('a super-packet to an unknown address waits whole and follows the answer as its segments', async (t) => {
      const { n1, n2 } = twoNodes(t);
      n2.table.apply(UNKNOWN.job, table(UNKNOWN, [U]));
      const payload = randomBytes(createSeededRandom(4), 10000);
      const sp = withPartialChecksum(
        buildTcp({ src: C.ns[f], dst: UNKNOWN.rr[f], srcPort: 40002, dstPort: 80, seq: 1, payload }),
      );
      n1.tun.inject(sp, 1400);
      await until(() => n1.dir.questions.length === 1, 'the question');
      assert.equal(n1.tunnel.wire.length, 0);
      n1.table.apply(UNKNOWN.job, table(UNKNOWN, [U])); // the answer
      await until(() => n2.written.length === 8, 'the held segments at n2');
      for (const s of n1.tunnel.wire) {
        assert.ok(fullChecksumsValid(s, 0, s.length));
        assert.equal(fields(s).dst, U.ns[f]);
      }
      assert.deepEqual(Buffer.concat(n1.tunnel.wire.map((s) => fields(s).payload)), payload);
    });
  });
}
