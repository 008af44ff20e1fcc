/**
 * Software TSO/USO in the addon, which UdpTunnel.send does on its way to sendmmsg (seen through
 * segmentPackets of the addon's test build, which copies out what the send path gathers, and through real
 * sends over loopback): random super-packets, as a kernel hands them over (partial checksum), must come out as
 * exactly the segments an independent builder makes from the same fields: payload cut at the MSS, IPv4 id + k,
 * sequence number + k * MSS, CWR on the first segment only, FIN and PSH on the last only, every checksum full
 * and valid.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildEcho,
  buildTcp,
  buildUdp,
  createSeededRandom,
  fragmentPacket,
  fullChecksumsValid,
  randomBytes,
  withPartialChecksum,
} from '../packet/build.ts';
import { IpProto, TcpFlag, VNET_HDR_BYTES } from '../packet/index.ts';
import { Collector } from '../tun/fixtures.ts';
import { TestSegmenter } from '../tun/test-segmenter.ts';
import { loadNativeTestIo, nativeIoAvailable } from '../tun/native.ts';
import { endpoint, ENDPOINT_BYTES, OutboundBatch } from './tunnel.ts';
import { UdpTunnel } from './udp.ts';

// Never skipped: the addon is built by npm install; without it these tests fail.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');

interface Shape {
  v6: boolean;
  udp: boolean;
  payload: Buffer;
  mss: number;
  flags: number;
  seq: number;
  ipId: number;
  ipv4Options?: Uint8Array;
  extensionHeaders?: number[];
  tcpOptions?: Uint8Array;
}

const SRC4 = '10.30.0.10';
const DST4 = '10.18.0.66';
const SRC6 = 'fdff::10';
const DST6 = 'fc00::102';

/** The complete packet with `payload`, as the builder makes it (full checksums). */
function build(s: Shape, payload: Buffer, k = 0, flags = s.flags): Buffer {
  const ip = {
    src: s.v6 ? SRC6 : SRC4,
    dst: s.v6 ? DST6 : DST4,
    ttl: 63,
    ipId: (s.ipId + k) & 0xffff,
    dontFragment: true,
    ...(s.ipv4Options && !s.v6 ? { ipv4Options: s.ipv4Options } : {}),
    ...(s.extensionHeaders && s.v6 ? { extensionHeaders: s.extensionHeaders } : {}),
  };
  if (s.udp) return buildUdp({ ...ip, srcPort: 5353, dstPort: 443, payload });
  return buildTcp({
    ...ip,
    srcPort: 40000,
    dstPort: 5201,
    seq: (s.seq + k * s.mss) >>> 0,
    ack: 0x12345678,
    window: 1234,
    flags,
    ...(s.tcpOptions ? { tcpOptions: s.tcpOptions } : {}),
    payload,
  });
}

/** The super-packet as the kernel reads it out: one header, all the payload, a partial checksum. */
function superPacket(s: Shape): Buffer {
  return withPartialChecksum(build(s, s.payload));
}

/** The segments a correct TSO/USO makes of it. */
function expectedSegments(s: Shape): Buffer[] {
  const n = Math.max(1, Math.ceil(s.payload.length / s.mss));
  return Array.from({ length: n }, (_, k) => {
    let flags = s.flags;
    if (k > 0) flags &= ~TcpFlag.Cwr;
    if (k < n - 1) flags &= ~(TcpFlag.Fin | TcpFlag.Psh);
    return build(s, s.payload.subarray(k * s.mss, (k + 1) * s.mss), k, flags);
  });
}

function randomShape(random: () => number): Shape {
  const v6 = random() < 0.5;
  const udp = random() < 0.25;
  const options = (max: number) => {
    const n = Math.floor(random() * (max / 4 + 1)) * 4;
    const b = randomBytes(random, n);
    return b.fill(1, 0, n); // NOPs: content does not matter to segmentation
  };
  const big = random() < 0.8;
  const payloadLength = big ? Math.floor(random() * 60000) : Math.floor(random() * 3000);
  const mss = [536, 1220, 1398, 1410, 1440, 8960][Math.floor(random() * 6)]!;
  const flagChoices = [
    TcpFlag.Ack,
    TcpFlag.Ack | TcpFlag.Psh,
    TcpFlag.Ack | TcpFlag.Psh | TcpFlag.Fin,
    TcpFlag.Ack | TcpFlag.Cwr | TcpFlag.Ece,
    TcpFlag.Ack | TcpFlag.Cwr | TcpFlag.Psh | TcpFlag.Fin,
  ];
  return {
    v6,
    udp,
    payload: randomBytes(random, payloadLength),
    mss,
    flags: flagChoices[Math.floor(random() * flagChoices.length)]!,
    seq: Math.floor(random() * 2 ** 32),
    ipId: Math.floor(random() * 65536),
    ...(random() < 0.3 ? { ipv4Options: options(40) } : {}),
    ...(random() < 0.3
      ? {
          extensionHeaders:
            random() < 0.5 ? [IpProto.HopByHop] : [IpProto.HopByHop, IpProto.DestinationOptions],
        }
      : {}),
    ...(random() < 0.6 ? { tcpOptions: options(40) } : {}),
  };
}

const NOWHERE = endpoint('192.0.2.1', 50103);

/** Segments `packets` (with gso words) in one go; returns the outputs as Buffers and their endpoints. */
function segmentAll(
  segmenter: TestSegmenter,
  packets: Array<{ packet: Buffer; gso: number; to?: Buffer }>,
): { out: Buffer[]; to: string[]; fills: number } {
  const input = new OutboundBatch(packets.length);
  input.reset(Buffer.concat(packets.map((p) => p.packet)));
  let at = 0;
  for (const p of packets) {
    input.pushTo(at, p.packet.length, p.to ?? NOWHERE, 0, p.gso);
    at += p.packet.length;
  }
  const out: Buffer[] = [];
  const to: string[] = [];
  let fills = 0;
  for (let i = 0; i < input.count;) {
    const next = segmenter.fill(input, i);
    assert.ok(next > i, 'every fill makes progress');
    i = next;
    fills++;
    const o = segmenter.out;
    for (let k = 0; k < o.count; k++) {
      out.push(Buffer.from(o.buffer.subarray(o.offsets[k], o.offsets[k]! + o.lengths[k]!)));
      to.push(o.endpoints.toString('hex', k * ENDPOINT_BYTES, (k + 1) * ENDPOINT_BYTES));
    }
  }
  return { out, to, fills };
}

describe('segmentPackets (software TSO/USO)', () => {
  it('cuts 400 random TCP/UDP super-packets, IPv4 and IPv6, exactly as an independent builder would', () => {
    const random = createSeededRandom(0x7501);
    const segmenter = new TestSegmenter();
    for (let n = 0; n < 400; n++) {
      const s = randomShape(random);
      const { out } = segmentAll(segmenter, [{ packet: superPacket(s), gso: s.mss }]);
      const expected = expectedSegments(s);
      const what = `case ${n}: ${s.udp ? 'UDP' : 'TCP'}/IPv${s.v6 ? 6 : 4}, ${s.payload.length} B, MSS ${s.mss}`;
      assert.equal(out.length, expected.length, what);
      out.forEach((segment, k) => {
        assert.ok(fullChecksumsValid(segment, 0, segment.length), `${what}: segment ${k} checksums`);
        assert.deepEqual(segment, expected[k], `${what}: segment ${k}`);
      });
      const headerLength = expected[0]!.length - Math.min(s.payload.length, s.mss);
      assert.deepEqual(Buffer.concat(out.map((b) => b.subarray(headerLength))), s.payload, what);
    }
    assert.equal(segmenter.dropped, 0);
  });

  it('copies ordinary packets (gso 0) byte for byte, fragments and ICMP included, in order with the segments', () => {
    const tcp = buildTcp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2, payload: Buffer.alloc(100, 7) });
    const echo = buildEcho({ src: SRC6, dst: DST6, id: 9, payload: Buffer.alloc(40) });
    const fragments = fragmentPacket(
      buildUdp({ src: SRC4, dst: DST4, srcPort: 3, dstPort: 4, payload: Buffer.alloc(3000, 1) }),
      1400,
    );
    const s: Shape = {
      v6: false,
      udp: false,
      payload: Buffer.alloc(5000, 2),
      mss: 1400,
      flags: TcpFlag.Ack,
      seq: 1,
      ipId: 1,
    };
    const [a, b] = [endpoint('192.0.2.1', 1), endpoint('2001:db8::2', 2)];
    const { out, to } = segmentAll(new TestSegmenter(), [
      { packet: tcp, gso: 0, to: a },
      { packet: superPacket(s), gso: s.mss, to: b },
      { packet: echo, gso: 0, to: a },
      ...fragments.map((f) => ({ packet: f, gso: 0, to: b })),
    ]);
    const segments = expectedSegments(s);
    assert.deepEqual(out, [tcp, ...segments, echo, ...fragments]);
    const hex = (e: Buffer) => e.toString('hex');
    assert.deepEqual(to, [hex(a), ...segments.map(() => hex(b)), hex(a), ...fragments.map(() => hex(b))]);
  });

  it('fills a small scratch buffer a part at a time, never splitting a super-packet, and drops one that cannot fit', () => {
    const random = createSeededRandom(42);
    const shapes = [0, 1, 2, 3].map(() => ({ ...randomShape(random), payload: randomBytes(random, 20000) }));
    const whole = segmentAll(
      new TestSegmenter(),
      shapes.map((s) => ({ packet: superPacket(s), gso: s.mss })),
    );
    const small = new TestSegmenter({ bytes: 45000 });
    const parts = segmentAll(
      small,
      shapes.map((s) => ({ packet: superPacket(s), gso: s.mss })),
    );
    assert.deepEqual(parts.out, whole.out);
    assert.ok(parts.fills >= 2, `fills ${parts.fills}`);
    const tiny = new TestSegmenter({ bytes: 10000 });
    const s = shapes[0]!;
    const ok = buildTcp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2 });
    const r = segmentAll(tiny, [
      { packet: superPacket(s), gso: s.mss },
      { packet: ok, gso: 0 },
    ]);
    assert.deepEqual(r.out, [ok]);
    assert.equal(tiny.dropped, 1);
    const few = new TestSegmenter({ capacity: 4 });
    assert.deepEqual(segmentAll(few, [{ packet: superPacket(s), gso: s.mss }]).out, []);
    assert.equal(few.dropped, 1, 'more segments than the batch holds');
  });

  it('drops, and counts, a "super-packet" that is not an unfragmented TCP/UDP packet', () => {
    const segmenter = new TestSegmenter();
    const echo = buildEcho({ src: SRC4, dst: DST4, id: 1, payload: Buffer.alloc(3000) });
    const [firstFragment] = fragmentPacket(
      buildUdp({ src: SRC4, dst: DST4, srcPort: 3, dstPort: 4, payload: Buffer.alloc(3000, 1) }),
      1400,
    );
    const garbage = Buffer.alloc(60, 0x45);
    const { out } = segmentAll(segmenter, [
      { packet: echo, gso: 1000 },
      { packet: firstFragment!, gso: 1000 },
      { packet: garbage, gso: 1000 },
    ]);
    assert.deepEqual(out, []);
    assert.equal(segmenter.dropped, 3);
  });

  it('cuts a super-packet with a gso word larger than its payload into one segment, even near 2^32', () => {
    for (const udp of [false, true]) {
      const s: Shape = {
        v6: false,
        udp,
        payload: Buffer.alloc(3000, 5),
        mss: 3000,
        flags: TcpFlag.Ack | TcpFlag.Psh,
        seq: 10,
        ipId: 3,
      };
      const expected = expectedSegments(s);
      assert.equal(expected.length, 1);
      const segmenter = new TestSegmenter();
      for (const gso of [3000, 3001, 0xffff, 0x10000, 0xfffffff0, 0xffffffff]) {
        const { out } = segmentAll(segmenter, [{ packet: superPacket(s), gso }]);
        assert.deepEqual(out, expected, `${udp ? 'UDP' : 'TCP'}, gso ${gso}`);
      }
      assert.equal(segmenter.dropped, 0);
    }
  });

  it('refuses, with a RangeError, out arrays without room for a single output', () => {
    assert.throws(() => new TestSegmenter({ capacity: 0 }), RangeError);
    const io = loadNativeTestIo();
    const packet = buildTcp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2, payload: Buffer.alloc(10) });
    const stats = new Uint32Array(2);
    const segment = (outOffsets: Uint32Array, outLengths: Uint32Array, outEndpoints: Buffer | null) =>
      io.segmentPackets(
        {
          buffer: packet,
          offsets: Uint32Array.of(0),
          lengths: Uint32Array.of(packet.length),
          count: 1,
          gso: null,
          endpoints: outEndpoints ? Buffer.alloc(ENDPOINT_BYTES) : null,
        },
        0,
        { buffer: Buffer.alloc(2000), offsets: outOffsets, lengths: outLengths, endpoints: outEndpoints },
        stats,
      );
    assert.throws(() => segment(new Uint32Array(0), new Uint32Array(4), null), RangeError);
    assert.throws(() => segment(new Uint32Array(4), new Uint32Array(0), null), RangeError);
    assert.throws(() => segment(new Uint32Array(4), new Uint32Array(4), Buffer.alloc(17)), RangeError);
    assert.equal(segment(new Uint32Array(1), new Uint32Array(1), Buffer.alloc(18)), 1);
    assert.deepEqual(stats, Uint32Array.of(1, 0));
  });

  it("split() returns one packet's wire packets as Buffers of their own", () => {
    const s: Shape = {
      v6: true,
      udp: false,
      payload: Buffer.alloc(4000, 3),
      mss: 1000,
      flags: TcpFlag.Ack | TcpFlag.Psh,
      seq: 99,
      ipId: 0,
    };
    const packet = superPacket(s);
    const framed = Buffer.concat([Buffer.alloc(7), packet]);
    assert.deepEqual(new TestSegmenter().split(framed, 7, packet.length, s.mss), expectedSegments(s));
  });
});

describe('UdpTunnel.send cutting super-packets (in the same native call as sendmmsg and UDP GSO)', () => {
  /** A batch of these packets (with gso words) back to back in one buffer, each to its endpoint. */
  function batchOf(packets: Array<{ packet: Buffer; gso: number; to: Buffer }>): OutboundBatch {
    const input = new OutboundBatch(packets.length);
    input.reset(Buffer.concat(packets.map((p) => p.packet)));
    let at = 0;
    for (const p of packets) {
      input.pushTo(at, p.packet.length, p.to, 0, p.gso);
      at += p.packet.length;
    }
    return input;
  }

  for (const offload of [false, true]) {
    it(`puts on the wire exactly the segments segmentPackets makes, in order, per peer (${
      offload ? 'UDP GSO and GRO' : 'no offloads'
    })`, async () => {
      const a = UdpTunnel.open({ offload });
      const b = UdpTunnel.open({ offload, batchSize: 64, maxDatagramBytes: 9100 });
      const c = UdpTunnel.open({ offload, batchSize: 64, maxDatagramBytes: 9100 });
      try {
        const toB = endpoint('127.0.0.1', b.port);
        const toC = endpoint('::1', c.port);
        const random = createSeededRandom(offload ? 0x5e1d : 0x5e1e);
        // 40 super-packets and ordinary packets, to two peers: about 1,700 wire datagrams, more than one
        // gathering of the send scratch (1,024), and one "super-packet" that cannot be cut
        const packets: Array<{ packet: Buffer; gso: number; to: Buffer }> = [];
        for (let n = 0; n < 40; n++) {
          const shape = randomShape(random);
          const s = {
            ...shape,
            mss: Math.min(shape.mss, 1440),
            payload: randomBytes(random, 20000 + Math.floor(random() * 40000)),
          };
          const to = random() < 0.5 ? toB : toC;
          packets.push({ packet: superPacket(s), gso: s.mss, to });
          if (random() < 0.3) packets.push({ packet: build(s, randomBytes(random, 300)), gso: 0, to });
        }
        const echo = buildEcho({ src: SRC4, dst: DST4, id: 1, payload: Buffer.alloc(3000) });
        packets.splice(7, 0, { packet: echo, gso: 1000, to: toB });
        const expected = segmentAll(new TestSegmenter({ bytes: 8 << 20, capacity: 4096 }), packets);
        assert.ok(expected.out.length > 1024, `${expected.out.length} wire datagrams`);
        const wanted = (peer: Buffer) =>
          expected.out.filter((_, k) => expected.to[k] === peer.toString('hex'));

        const got = { b: new Collector<Buffer>(), c: new Collector<Buffer>() };
        for (const [t, into] of [
          [b, got.b],
          [c, got.c],
        ] as const) {
          t.start((batch) => {
            for (let i = 0; i < batch.count; i++) {
              const o = batch.offsets[i]!;
              into.push(Buffer.from(batch.buffer.subarray(o, o + batch.lengths[i]!)));
            }
          });
        }
        const result = a.send(batchOf(packets));
        assert.deepEqual({ ...result }, { sent: expected.out.length, failed: 1 }, 'the echo is dropped');
        assert.deepEqual(a.counters, { sent: expected.out.length, rejected: 0, busy: 0 });
        for (const [peer, into] of [
          [toB, got.b],
          [toC, got.c],
        ] as const) {
          const want = wanted(peer);
          const received = await into.take(want.length);
          received.forEach((datagram, k) =>
            assert.ok(datagram.equals(want[k]!), `datagram ${k} of ${want.length} differs`),
          );
        }
        if (offload) assert.equal(a.gsoRefused, 0);
      } finally {
        a.close();
        b.close();
        c.close();
      }
    });
  }

  it('drops, as one failed datagram, a super-packet of more segments than the send scratch holds', () => {
    const a = UdpTunnel.open({ offload: true });
    try {
      const s: Shape = {
        v6: false,
        udp: false,
        payload: Buffer.alloc(60000, 1),
        mss: 50, // 1,200 segments
        flags: TcpFlag.Ack,
        seq: 1,
        ipId: 1,
      };
      const ok = buildTcp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2, payload: Buffer.alloc(10) });
      const to = endpoint('127.0.0.1', 9);
      const result = a.send(
        batchOf([
          { packet: superPacket(s), gso: s.mss, to },
          { packet: ok, gso: 0, to },
        ]),
      );
      assert.deepEqual({ ...result }, { sent: 1, failed: 1 });
    } finally {
      a.close();
    }
  });
});

describe('malformed input through segmenting, coalescing planning and UdpTunnel.send', () => {
  const GSO_WORDS = [0, 0, 0, 1, 7, 536, 1398, 1440, 8960, 0xfffe, 0xffff, 0x10000, 0xffffffff];

  /** A mutated packet (mostly a valid super-packet or packet with a few header bytes changed), or noise. */
  function mutated(random: () => number): { packet: Buffer; gso: number } {
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
    const gso = random() < 0.3 ? Math.floor(random() * 2 ** 32) : pick(GSO_WORDS);
    if (random() < 0.15) {
      const noise = randomBytes(random, Math.floor(random() * (random() < 0.5 ? 80 : 3000)));
      if (noise.length && random() < 0.7) noise[0] = (random() < 0.5 ? 0x40 : 0x60) | (noise[0]! & 0x0f);
      return { packet: noise, gso };
    }
    const s = { ...randomShape(random), payload: randomBytes(random, Math.floor(random() * 9000)) };
    let packet = random() < 0.6 ? superPacket(s) : build(s, s.payload);
    const headers = Math.min(packet.length, 130);
    for (let m = Math.floor(random() * 6); m > 0; m--) {
      const at = Math.floor(random() * headers);
      switch (Math.floor(random() * 5)) {
        case 0:
          packet[at] = packet[at]! ^ (1 << Math.floor(random() * 8));
          break;
        case 1:
          packet[at] = Math.floor(random() * 256);
          break;
        case 2: // a length field
          if (packet.length >= 6) packet.writeUInt16BE(Math.floor(random() * 65536), s.v6 ? 4 : 2);
          break;
        case 3: {
          // truncated, the length field saying so or not
          packet = packet.subarray(0, Math.floor(random() * (packet.length + 1)));
          if (random() < 0.5 && packet.length >= 40)
            packet.writeUInt16BE(s.v6 ? packet.length - 40 : packet.length, s.v6 ? 4 : 2);
          break;
        }
        default: // next header / IHL
          if (packet.length > 9)
            packet[s.v6 ? 6 : 0] = s.v6 ? pick([0, 6, 17, 43, 44, 60, 58]) : 0x40 | (at & 15);
      }
    }
    return { packet, gso };
  }

  it('20,000 mutated packets: no crash, nothing written outside the outputs, the input left alone, every wire datagram accounted for', () => {
    const random = createSeededRandom(0xbad5eed);
    const io = loadNativeTestIo();
    const segmenter = new TestSegmenter({ bytes: 8 << 20, capacity: 1024 });
    const tunnel = UdpTunnel.open({ offload: true }); // with GSO, where the kernel has it
    const nowhere = endpoint('127.0.0.1', 9);
    const GUARD = 64;
    let inputs = 0;
    let wire = 0;
    let sent = 0;
    try {
      while (inputs < 20000) {
        const packets = Array.from({ length: 1 + Math.floor(random() * 8) }, () => mutated(random));
        inputs += packets.length;
        const batch = new OutboundBatch(packets.length);
        batch.reset(Buffer.concat(packets.map((p) => p.packet)));
        let at = 0;
        for (const p of packets) {
          batch.pushTo(at, p.packet.length, nowhere, 0, p.gso);
          at += p.packet.length;
        }
        const before = Buffer.from(batch.buffer);

        // coalescing planning (what a vnet TUN write would hand the kernel), into an out with a guard after it
        const room = batch.buffer.length + packets.length * (VNET_HDR_BYTES + 100);
        const backing = Buffer.alloc(room + GUARD, 0xa5);
        const outOffsets = new Uint32Array(packets.length);
        const outLengths = new Uint32Array(packets.length);
        const n = io.coalescePackets(batch, {
          buffer: backing.subarray(0, room),
          offsets: outOffsets,
          lengths: outLengths,
        });
        assert.ok(n >= 0 && n <= packets.length);
        for (let k = 0; k < n; k++) {
          assert.ok(outLengths[k]! >= VNET_HDR_BYTES && outOffsets[k]! + outLengths[k]! <= room);
        }
        assert.ok(
          backing.subarray(room).every((b) => b === 0xa5),
          'coalescePackets wrote past its out',
        );

        // segmenting (what UdpTunnel.send puts on the wire)
        const dropped = segmenter.dropped;
        let outputs = 0;
        for (let i = 0; i < batch.count;) {
          const next = segmenter.fill(batch, i);
          assert.ok(next > i, 'every fill makes progress');
          i = next;
          const o = segmenter.out;
          for (let k = 0; k < o.count; k++) assert.ok(o.offsets[k]! + o.lengths[k]! <= o.buffer.length);
          outputs += o.count;
        }
        assert.ok(batch.buffer.equals(before), 'segmenting and coalescing leave the input as it was');

        // the real send path: every wire datagram is sent or failed, a dropped super-packet fails as one
        const result = tunnel.send(batch);
        assert.equal(result.sent + result.failed, outputs + segmenter.dropped - dropped, `inputs ${inputs}`);
        assert.ok(batch.buffer.equals(before), 'sending leaves the input as it was');
        wire += outputs;
        sent += result.sent;
      }
      assert.ok(wire > 20000 && sent > 0.9 * wire, `${sent} of ${wire} wire datagrams sent`);
      assert.equal(tunnel.counters.sent, sent);
    } finally {
      tunnel.close();
    }
  });
});
