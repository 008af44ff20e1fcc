/**
 * The TUN writer's coalescing (GRO done in the addon), through coalescePackets (the addon's test build), which
 * copies out exactly what writeVnetPackets hands the kernel: runs of consecutive segments of one TCP flow must become one super-packet
 * behind a correct virtio_net_hdr (TCPV4/TCPV6, gso_size = the MSS, NEEDS_CSUM at the TCP checksum, which holds
 * the pseudo-header sum), whose completed form is the packet a sender would have built whole; anything else must
 * go out as it came, alone, behind an all-zero header (or, with a gso word, the header for that super-packet).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildEcho,
  buildTcp,
  buildUdp,
  completePartialChecksum,
  computeIpv4HeaderChecksum,
  createSeededRandom,
  fullChecksumsValid,
  randomBytes,
  withPartialChecksum,
  type TcpSpec,
} from '../packet/build.ts';
import { IpProto, TcpFlag, VNET_HDR_BYTES, VnetFlag, VnetGso, readVnetHeader } from '../packet/index.ts';
import type { VnetHeader } from '../packet/offload.ts';
import { OutboundBatch } from '../tunnel/tunnel.ts';
import { TestSegmenter } from './test-segmenter.ts';
import { loadNativeTestIo, nativeIoAvailable } from './native.ts';

// Never skipped: the addon is built by npm install; without it these tests fail.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');

const io = loadNativeTestIo();
const ZERO: VnetHeader = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };

interface Output {
  vnet: VnetHeader;
  packet: Buffer;
}

/** What the TUN writer would write for these packets, one entry per write. */
function coalesce(packets: Array<Buffer | { packet: Buffer; gso: number }>): Output[] {
  const list = packets.map((p) => (Buffer.isBuffer(p) ? { packet: p, gso: 0 } : p));
  const buffer = Buffer.concat(list.map((p) => p.packet));
  const offsets = new Uint32Array(list.length);
  const lengths = new Uint32Array(list.length);
  const gso = new Uint32Array(list.length);
  let at = 0;
  list.forEach((p, i) => {
    offsets[i] = at;
    lengths[i] = p.packet.length;
    gso[i] = p.gso;
    at += p.packet.length;
  });
  const out = Buffer.alloc(buffer.length + list.length * (VNET_HDR_BYTES + 100));
  const outOffsets = new Uint32Array(list.length);
  const outLengths = new Uint32Array(list.length);
  const n = io.coalescePackets(
    { buffer, offsets, lengths, gso, count: list.length },
    { buffer: out, offsets: outOffsets, lengths: outLengths },
  );
  return Array.from({ length: n }, (_, i) => {
    const o = outOffsets[i]!;
    return {
      vnet: readVnetHeader(out, o),
      packet: Buffer.from(out.subarray(o + VNET_HDR_BYTES, o + outLengths[i]!)),
    };
  });
}

const BASE: TcpSpec = {
  src: '10.30.0.2',
  dst: '10.18.0.2',
  srcPort: 5201,
  dstPort: 40000,
  ack: 777,
  window: 500,
  ttl: 63,
  dontFragment: true,
};

/** Consecutive segments of one flow with these payload sizes, from sequence number `seq`. */
function run(sizes: number[], spec: Partial<TcpSpec> = {}, seq = 1000): Buffer[] {
  return sizes.map((size) => {
    const s = buildTcp({ ...BASE, ...spec, seq, payload: Buffer.alloc(size, seq & 0xff) });
    seq = (seq + size) >>> 0;
    return s;
  });
}

/** The super-packet vnet header the writer must produce. */
function gsoHeader(v6: boolean, mss: number, tcpHeader = 20): VnetHeader {
  const l4 = v6 ? 40 : 20;
  return {
    flags: VnetFlag.NeedsCsum,
    gsoType: v6 ? VnetGso.TcpV6 : VnetGso.TcpV4,
    hdrLen: l4 + tcpHeader,
    gsoSize: mss,
    csumStart: l4,
    csumOffset: 16,
  };
}

function payloadSizes(outputs: Output[]): number[] {
  return outputs.map((o) => {
    const l4 =
      (o.packet[0]! >> 4 === 4 ? 20 : 40) + ((o.packet[(o.packet[0]! >> 4 === 4 ? 20 : 40) + 12]! >> 4) << 2);
    return o.packet.length - l4;
  });
}

describe("coalescePackets (the TUN writer's GRO)", () => {
  it('turns the segments of 300 random super-packets back into those super-packets', () => {
    const random = createSeededRandom(0x6e0);
    const segmenter = new TestSegmenter();
    for (let n = 0; n < 300; n++) {
      const v6 = random() < 0.5;
      const mss = [536, 1000, 1398, 1410][Math.floor(random() * 4)]!;
      const payload = randomBytes(random, 1 + Math.floor(random() * 60000));
      const tcpOptions = random() < 0.5 ? Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]) : undefined;
      const spec: TcpSpec = {
        ...BASE,
        ...(v6 ? { src: 'fdff::2', dst: 'fc00::2' } : {}),
        seq: Math.floor(random() * 2 ** 32),
        ipId: Math.floor(random() * 65536),
        flags: random() < 0.5 ? TcpFlag.Ack : TcpFlag.Ack | TcpFlag.Psh,
        ...(tcpOptions ? { tcpOptions } : {}),
        payload,
      };
      const whole = buildTcp(spec);
      const segments = segmenter.split(withPartialChecksum(whole), 0, whole.length, mss);
      const outputs = coalesce(segments);
      const what = `case ${n}: IPv${v6 ? 6 : 4}, ${payload.length} B, MSS ${mss}, ${segments.length} segments`;
      assert.equal(outputs.length, Math.ceil(segments.length / 64), what);
      if (segments.length === 1) {
        assert.deepEqual(outputs[0], { vnet: ZERO, packet: whole }, what);
        continue;
      }
      if (outputs.length === 1) {
        assert.deepEqual(outputs[0]!.vnet, gsoHeader(v6, mss, tcpOptions ? 32 : 20), what);
        assert.deepEqual(completePartialChecksum(outputs[0]!.packet), whole, what);
      }
      // over 64 segments: cut in runs of 64; their payloads still make up the whole
      const l4 = (v6 ? 40 : 20) + (tcpOptions ? 32 : 20);
      assert.deepEqual(Buffer.concat(outputs.map((o) => o.packet.subarray(l4))), payload, what);
      for (const o of outputs) {
        const done = o.vnet.flags ? completePartialChecksum(o.packet) : o.packet;
        assert.ok(fullChecksumsValid(done, 0, done.length), what);
      }
    }
  });

  it('keeps flows apart and the order as given: only consecutive segments of one flow merge', () => {
    const a = run([1000, 1000, 1000]);
    const b = run([1000, 1000], { dstPort: 40001 });
    const outputs = coalesce([a[0]!, a[1]!, b[0]!, b[1]!, a[2]!]);
    assert.deepEqual(payloadSizes(outputs), [2000, 2000, 1000]);
    assert.equal(outputs[1]!.packet.readUInt16BE(22), 40001);
    assert.deepEqual(outputs[2], { vnet: ZERO, packet: a[2] });
  });

  it('ends a run at a gap, a shorter segment, or a PSH (which the super-packet then carries)', () => {
    const gap = [...run([1000]), ...run([1000], {}, 5000)];
    assert.deepEqual(
      coalesce(gap).map((o) => o.vnet),
      [ZERO, ZERO],
    );
    assert.deepEqual(payloadSizes(coalesce(run([1000, 1000, 500, 1000, 1000]))), [2500, 2000]);
    const psh = run([1000, 1000, 1000]);
    psh[1] = buildTcp({
      ...BASE,
      seq: 2000,
      flags: TcpFlag.Ack | TcpFlag.Psh,
      payload: Buffer.alloc(1000, 2000 & 0xff),
    });
    const outputs = coalesce(psh);
    assert.deepEqual(payloadSizes(outputs), [2000, 1000]);
    assert.equal(outputs[0]!.packet[33]! & TcpFlag.Psh, TcpFlag.Psh);
    assert.deepEqual(
      completePartialChecksum(outputs[0]!.packet),
      buildTcp({
        ...BASE,
        seq: 1000,
        flags: TcpFlag.Ack | TcpFlag.Psh,
        payload: Buffer.concat([Buffer.alloc(1000, 1000 & 0xff), Buffer.alloc(1000, 2000 & 0xff)]),
      }),
    );
  });

  it('leaves alone segments with other flags, and those differing in any header field but length, id, seq', () => {
    for (const flags of [TcpFlag.Syn, TcpFlag.Fin, TcpFlag.Rst, TcpFlag.Urg, TcpFlag.Cwr, TcpFlag.Ece, 0]) {
      const segs = run([1000, 1000, 1000, 1000]);
      segs[1] = buildTcp({
        ...BASE,
        seq: 2000,
        flags: TcpFlag.Ack | flags,
        payload: Buffer.alloc(1000, 2000 & 0xff),
      });
      if (flags === 0)
        segs[1] = buildTcp({ ...BASE, seq: 2000, flags: 0, payload: Buffer.alloc(1000, 2000 & 0xff) });
      const outputs = coalesce(segs);
      assert.deepEqual(payloadSizes(outputs), [1000, 1000, 2000], `flags ${flags}`);
      assert.deepEqual(outputs[1], { vnet: ZERO, packet: segs[1] });
    }
    const variants: Array<Partial<TcpSpec>> = [
      { ack: 778 },
      { window: 501 },
      { ttl: 62 },
      { dontFragment: false },
      { tcpOptions: Buffer.from([1, 1, 1, 1]) },
      { srcPort: 5202 },
      { src: '10.30.0.3' },
    ];
    for (const v of variants) {
      const first = run([1000]);
      const second = run([1000], v, 2000);
      assert.deepEqual(
        coalesce([...first, ...second]).map((o) => o.vnet),
        [ZERO, ZERO],
        JSON.stringify(v),
      );
    }
    const tos = run([1000, 1000]);
    tos[1]![1] = 0x01; // ECN CE on the second: the kernel must see it
    tos[1]!.writeUInt16BE(0, 10);
    tos[1]!.writeUInt16BE(computeIpv4HeaderChecksum(tos[1]!, 0), 10);
    assert.equal(coalesce(tos).length, 2);
  });

  it('does not coalesce IPv4 options, IPv6 extension headers, pure ACKs, UDP or ICMP', () => {
    const cases: Buffer[][] = [
      run([1000, 1000], { ipv4Options: Buffer.from([1, 1, 1, 0]) }),
      run([1000, 1000], { src: 'fdff::2', dst: 'fc00::2', extensionHeaders: [IpProto.HopByHop] }),
      run([0, 0]),
      [0, 1].map(() =>
        buildUdp({ src: '10.30.0.2', dst: '10.18.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(1000) }),
      ),
      [0, 1].map(() => buildEcho({ src: '10.30.0.2', dst: '10.18.0.2', id: 3, payload: Buffer.alloc(1000) })),
    ];
    for (const packets of cases) {
      assert.deepEqual(
        coalesce(packets),
        packets.map((packet) => ({ vnet: ZERO, packet })),
      );
    }
  });

  it('coalesces IPv6 segments like IPv4 ones', () => {
    const segs = run([1200, 1200, 300], { src: 'fdff::2', dst: 'fc00::2' });
    const [o] = coalesce(segs);
    assert.deepEqual(o?.vnet, gsoHeader(true, 1200));
    assert.deepEqual(
      completePartialChecksum(o.packet),
      buildTcp({
        ...BASE,
        src: 'fdff::2',
        dst: 'fc00::2',
        seq: 1000,
        payload: Buffer.concat(segs.map((s) => s.subarray(60))),
      }),
    );
  });

  it('writes a segment with a wrong checksum alone, as it came (for the kernel to drop)', () => {
    const segs = run([1000, 1000, 1000, 1000]);
    segs[1]![500] = segs[1]![500]! ^ 0xff;
    const outputs = coalesce(segs);
    assert.deepEqual(payloadSizes(outputs), [1000, 1000, 2000]);
    assert.deepEqual(outputs[1], { vnet: ZERO, packet: segs[1] });
    const badHead = run([1000, 1000]);
    badHead[0]![100] = badHead[0]![100]! ^ 1;
    assert.deepEqual(payloadSizes(coalesce(badHead)), [1000, 1000]);
  });

  it('does not coalesce an IPv4 segment whose header checksum is wrong: it goes alone, as it came', () => {
    const member = run([1000, 1000, 1000, 1000]);
    member[1]![11] = member[1]![11]! ^ 0x5a; // the IP header checksum only: the TCP checksum still holds
    const outputs = coalesce(member);
    assert.deepEqual(payloadSizes(outputs), [1000, 1000, 2000]);
    assert.deepEqual(outputs[1], { vnet: ZERO, packet: member[1] });
    const head = run([1000, 1000, 1000]);
    head[0]![10] = head[0]![10]! ^ 0x01;
    const fromHead = coalesce(head);
    assert.deepEqual(payloadSizes(fromHead), [1000, 2000]);
    assert.deepEqual(fromHead[0], { vnet: ZERO, packet: head[0] });
  });

  it('without DF coalesces IPv4 segments only while the id goes up by one per segment', () => {
    /** Segments without DF with these ids. */
    const withIds = (ids: number[]) =>
      ids.map((ipId, k) =>
        buildTcp({
          ...BASE,
          dontFragment: false,
          ipId,
          seq: 1000 + k * 1000,
          payload: Buffer.alloc(1000, k),
        }),
      );
    const incrementing = coalesce(withIds([0xfffe, 0xffff, 0, 1]));
    assert.deepEqual(payloadSizes(incrementing), [4000], 'ids wrap around as 16-bit numbers');
    assert.equal(incrementing[0]!.packet.readUInt16BE(4), 0xfffe, 'the super-packet has the first id');
    assert.deepEqual(payloadSizes(coalesce(withIds([7, 7, 7]))), [1000, 1000, 1000], 'fixed ids');
    assert.deepEqual(payloadSizes(coalesce(withIds([7, 8, 10, 11]))), [2000, 2000], 'a gap');
    // with DF the id is not looked at (Linux allows fixed ids there)
    const df = [7, 7, 7].map((ipId, k) =>
      buildTcp({ ...BASE, ipId, seq: 1000 + k * 1000, payload: Buffer.alloc(1000, k) }),
    );
    assert.deepEqual(payloadSizes(coalesce(df)), [3000]);
  });

  it('writes a TCP/UDP packet whose gso word no virtio header holds (>= 0xffff) as its one segment', () => {
    const tcp = buildTcp({ ...BASE, seq: 5, payload: Buffer.alloc(3000, 1) });
    const udp = buildUdp({
      src: 'fdff::2',
      dst: 'fc00::2',
      srcPort: 1,
      dstPort: 2,
      payload: Buffer.alloc(3000, 2),
    });
    for (const gso of [0xffff, 0x10000, 0xffffffff]) {
      const partial = [withPartialChecksum(tcp), withPartialChecksum(udp)];
      const copies = partial.map((p) => Buffer.from(p));
      assert.deepEqual(
        coalesce(partial.map((packet) => ({ packet, gso }))),
        [
          { vnet: ZERO, packet: tcp },
          { vnet: ZERO, packet: udp },
        ],
        `gso ${gso}`,
      );
      assert.deepEqual(partial, copies, 'the input is left as it was');
    }
    const echo = buildEcho({ src: '10.30.0.2', dst: '10.18.0.2', id: 3, payload: Buffer.alloc(100) });
    assert.deepEqual(coalesce([{ packet: echo, gso: 0xffff }]), [], 'still refused on ICMP');
  });

  it('stops a run at 64 segments and at 64 KiB', () => {
    assert.deepEqual(payloadSizes(coalesce(run(Array<number>(100).fill(100)))), [6400, 3600]);
    assert.deepEqual(payloadSizes(coalesce(run(Array<number>(50).fill(1400)))), [64400, 5600]);
  });

  it('writes a packet with a gso word alone behind the GSO header for it (ECN for a CWR segment, UDP_L4 for UDP)', () => {
    const tcp = withPartialChecksum(
      buildTcp({ ...BASE, seq: 1, flags: TcpFlag.Ack | TcpFlag.Cwr, payload: Buffer.alloc(5000) }),
    );
    const udp = withPartialChecksum(
      buildUdp({ src: 'fdff::2', dst: 'fc00::2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(5000) }),
    );
    const plain = run([1000, 1000]);
    const outputs = coalesce([{ packet: tcp, gso: 1400 }, ...plain, { packet: udp, gso: 1200 }]);
    assert.deepEqual(outputs[0], {
      vnet: { ...gsoHeader(false, 1400), gsoType: VnetGso.TcpV4 | VnetGso.Ecn },
      packet: tcp,
    });
    assert.deepEqual(payloadSizes(outputs.slice(1, 2)), [2000]);
    assert.deepEqual(outputs[2], {
      vnet: {
        flags: VnetFlag.NeedsCsum,
        gsoType: VnetGso.UdpL4,
        hdrLen: 48,
        gsoSize: 1200,
        csumStart: 40,
        csumOffset: 6,
      },
      packet: udp,
    });
    const echo = buildEcho({ src: '10.30.0.2', dst: '10.18.0.2', id: 3, payload: Buffer.alloc(100) });
    assert.deepEqual(coalesce([{ packet: echo, gso: 1000 }]), [], 'a gso word on ICMP is refused');
  });

  it('is what OutboundBatch-built batches look like too (offsets anywhere in one buffer)', () => {
    const segs = run([1000, 1000]);
    const batch = new OutboundBatch(2);
    batch.reset(Buffer.concat([Buffer.alloc(3), segs[0]!, Buffer.alloc(5), segs[1]!]));
    batch.push(3, segs[0]!.length);
    batch.push(3 + segs[0]!.length + 5, segs[1]!.length);
    const out = Buffer.alloc(5000);
    const offsets = new Uint32Array(2);
    const lengths = new Uint32Array(2);
    assert.equal(io.coalescePackets(batch, { buffer: out, offsets, lengths }), 1);
    assert.equal(lengths[0], VNET_HDR_BYTES + 40 + 2000);
  });
});
