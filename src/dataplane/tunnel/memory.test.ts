import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { buildEcho, buildTcp, fullChecksumsValid, randomBytes, createSeededRandom } from '../packet/build.ts';
import { TcpFlag } from '../packet/constants.ts';
import { expectedSegments, headerBytes, type Shape, superPacket } from '../packet/segment.case.ts';
import { Collector, REPO_ROOT } from '../tun/fixtures.ts';
import { MemorySwitch, createMemoryTunnelPair } from './memory.ts';
import { OutboundBatch, decodeEndpoint, endpoint } from './tunnel.ts';
import { runTunnelConformance } from './tunnel.case.ts';

runTunnelConformance('Memory tunnel pair', () => {
  const [a, b] = createMemoryTunnelPair();
  return {
    a,
    b,
    endpointOfA: a.endpoint,
    endpointOfB: b.endpoint,
    unreachable: endpoint('10.255.9.9', 9),
    dispose: () => {
      a.close();
      b.close();
    },
  };
});

describe('MemorySwitch', () => {
  it('connects N tunnels by endpoint and counts datagrams to nobody as lost', async () => {
    const network = new MemorySwitch();
    const nodes = ['10.0.0.1', '10.0.0.2', 'fd00::3'].map((host) => network.open(host, 50103));
    const got = nodes.map((node) => {
      const c = new Collector<string>();
      node.start((batch, sources) => {
        for (let i = 0; i < batch.count; i++) {
          const o = batch.offsets[i] ?? 0;
          const from = decodeEndpoint(sources, i * 18).host;
          c.push(`${from}: ${batch.buffer.toString('latin1', o, o + (batch.lengths[i] ?? 0))}`);
        }
      });
      return c;
    });
    const [n1, n2, n3] = nodes;
    assert.ok(n1 && n2 && n3);
    const out = new OutboundBatch(3);
    const text = Buffer.from('to2to3lost');
    out.reset(text);
    out.pushTo(0, 3, n2.endpoint);
    out.pushTo(3, 3, n3.endpoint);
    out.pushTo(6, 4, endpoint('10.0.0.9', 50103));
    assert.equal(out.sendThrough(n1), 3);
    assert.deepEqual(await got[1]?.take(1), ['10.0.0.1: to2']);
    assert.deepEqual(await got[2]?.take(1), ['10.0.0.1: to3']);
    assert.equal(network.lost, 1);
    for (const n of nodes) n.close();
  });

  it('picks free ports, refuses a taken endpoint, and frees it on close', () => {
    const network = new MemorySwitch();
    const a = network.open('10.0.0.1');
    const b = network.open('10.0.0.1');
    assert.notEqual(a.port, b.port);
    assert.throws(() => network.open('10.0.0.1', a.port), /in use/);
    a.close();
    network.open('10.0.0.1', a.port).close();
    b.close();
  });
});

describe('MemoryTunnel with super-packets', () => {
  const random = createSeededRandom(0x3e3);
  const tcp4: Shape = {
    v6: false,
    udp: false,
    payload: randomBytes(random, 5000),
    mss: 1400,
    flags: TcpFlag.Ack | TcpFlag.Psh,
    seq: 1000,
    ipId: 7,
    dontFragment: true,
  };
  const udp6: Shape = {
    v6: true,
    udp: true,
    payload: randomBytes(random, 4001),
    mss: 1232,
    flags: 0,
    seq: 0,
    ipId: 0,
    dontFragment: false,
  };

  it('cuts each super-packet into its wire packets, one datagram each, in order; a malformed one counts as failed', async () => {
    const network = new MemorySwitch();
    const [a, b] = [network.open('10.255.0.1', 50103), network.open('10.255.0.2', 50103)];
    const wire: Buffer[] = [];
    network.onDatagram = (datagram) => wire.push(Buffer.from(datagram));
    const got = new Collector<{ packet: Buffer; from: string }>();
    b.start((batch, sources) => {
      for (let i = 0; i < batch.count; i++) {
        const o = batch.offsets[i] ?? 0;
        const { host, port } = decodeEndpoint(sources, i * 18);
        got.push({
          packet: Buffer.from(batch.buffer.subarray(o, o + (batch.lengths[i] ?? 0))),
          from: `${host}:${port}`,
        });
      }
    });
    const ordinary = buildTcp({
      src: '10.30.0.10',
      dst: '10.18.0.66',
      srcPort: 1,
      dstPort: 2,
      payload: Buffer.alloc(64, 1),
    });
    const notTcpOrUdp = buildEcho({
      src: '10.30.0.10',
      dst: '10.18.0.66',
      id: 1,
      payload: Buffer.alloc(3000),
    });
    const packets = [
      { packet: ordinary, gso: 0 },
      { packet: superPacket(tcp4), gso: tcp4.mss },
      { packet: notTcpOrUdp, gso: 1400 },
      { packet: superPacket(udp6), gso: udp6.mss },
      { packet: ordinary, gso: 0 },
    ];
    const out = new OutboundBatch(packets.length);
    out.reset(Buffer.concat([Buffer.alloc(3), ...packets.map((p) => p.packet)]));
    let at = 3;
    for (const p of packets) {
      out.pushTo(at, p.packet.length, b.endpoint, 0, p.gso);
      at += p.packet.length;
    }
    const tcpSegments = expectedSegments(tcp4);
    const udpSegments = expectedSegments(udp6);
    assert.equal(tcpSegments.length, 4);
    assert.equal(udpSegments.length, 4);
    const result = a.send(out);
    assert.deepEqual({ ...result }, { sent: 10, failed: 1 });
    assert.equal(a.counters.sent, 10);
    const expected = [ordinary, ...tcpSegments, ...udpSegments, ordinary];
    assert.deepEqual(wire, expected, 'the wire carries the wire packets, nothing else');
    const received = await got.take(10);
    assert.deepEqual(
      received.map((r) => r.packet),
      expected,
    );
    assert.ok(received.every((r) => r.from === '10.255.0.1:50103'));
    for (const r of received) assert.ok(fullChecksumsValid(r.packet, 0, r.packet.length));
    const payloadOf = (s: Shape, from: number, to: number) =>
      Buffer.concat(received.slice(from, to).map((r) => r.packet.subarray(headerBytes(s))));
    assert.deepEqual(payloadOf(tcp4, 1, 5), tcp4.payload);
    assert.deepEqual(payloadOf(udp6, 5, 9), udp6.payload);
    a.close();
    b.close();
  });

  it('refuses a wire packet longer than a UDP datagram can be, and sends nothing after close', () => {
    const [a, b] = createMemoryTunnelPair();
    // IPv6 allows 65,575-byte packets; a UDP datagram holds at most 65,507 bytes
    const big: Shape = { ...tcp4, v6: true, payload: Buffer.alloc(65535 - 20, 3), mss: 30000 };
    const out = new OutboundBatch(2);
    const packet = superPacket(big);
    out.reset(packet);
    out.pushTo(0, packet.length, b.endpoint, 0, 30000);
    out.pushTo(0, packet.length, b.endpoint, 0, 0xffff);
    assert.deepEqual({ ...a.send(out) }, { sent: 3, failed: 1 });
    assert.equal(a.counters.rejected, 1);
    a.close();
    assert.deepEqual({ ...a.send(out) }, { sent: 0, failed: 0 });
    b.close();
  });

  it('segments without the native addon: loading memory.ts and sending a super-packet never loads it', async () => {
    const script = `
      const addonLoaded = () => process.report.getReport().sharedObjects.some((f) => f.endsWith('oaknet_native.node'));
      const { createMemoryTunnelPair } = await import('./src/dataplane/tunnel/memory.ts');
      const { OutboundBatch } = await import('./src/dataplane/tunnel/tunnel.ts');
      const { buildTcp, withPartialChecksum } = await import('./src/dataplane/packet/build.ts');
      const [a, b] = createMemoryTunnelPair();
      const packet = withPartialChecksum(
        buildTcp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(5000) }),
      );
      const out = new OutboundBatch(1);
      out.reset(packet);
      out.pushTo(0, packet.length, b.endpoint, 0, 1000);
      const { sent, failed } = a.send(out);
      const before = addonLoaded();
      // the control: the check sees the addon once something loads it (null: the addon is not built)
      let after = null;
      try {
        (await import('./src/dataplane/tun/native.ts')).loadNativeIo();
        after = addonLoaded();
      } catch {}
      console.log(JSON.stringify({ sent, failed, before, after }));
      a.close();
      b.close();
    `;
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: REPO_ROOT, env, timeout: 30_000 },
    );
    const { after, ...rest } = JSON.parse(stdout) as { after: boolean | null };
    assert.deepEqual(rest, { sent: 5, failed: 0, before: false });
    assert.notEqual(after, false, 'the check sees the addon when it is loaded');
  });
});
