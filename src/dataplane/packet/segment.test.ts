/**
 * Software TSO/USO in TypeScript (segment.ts), without the addon: random super-packets, TCP and UDP over IPv4
 * and IPv6, must come out as exactly the wire packets an independent builder makes from the same fields (and
 * with every property checked one by one: checksums, lengths, IPv4 ids, sequence numbers, flags, the payload);
 * malformed ones are refused without an exception, and so is none of a few thousand random mutations thrown on.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchBuilder } from '../tun/tun.ts';
import { buildTcp, createSeededRandom, fullChecksumsValid, randomBytes } from './build.ts';
import { TcpFlag } from './constants.ts';
import {
  edgeCases,
  expectedSegments,
  headerBytes,
  malformedCases,
  mutate,
  randomGso,
  randomShape,
  type Shape,
  SRC4,
  DST4,
  superPacket,
} from './segment.case.ts';
import { SegmentFailure, segmentPacket } from './segment.ts';

function scratch(bytes: number, capacity: number): BatchBuilder {
  const out = new BatchBuilder(capacity);
  out.reset(Buffer.alloc(bytes));
  return out;
}

/** Runs segmentPacket on an emptied `out`; returns its result and copies of the wire packets. */
function segment(packet: Buffer, gso: number, out: BatchBuilder): { n: number; wire: Buffer[] } {
  out.reset();
  const n = segmentPacket(packet, 0, packet.length, gso, out);
  const wire: Buffer[] = [];
  for (let k = 0; k < out.count; k++)
    wire.push(Buffer.from(out.buffer.subarray(out.offsets[k], out.offsets[k]! + out.lengths[k]!)));
  return { n, wire };
}

function describeShape(s: Shape, n: number): string {
  return `case ${n}: ${s.udp ? 'UDP' : 'TCP'}/IPv${s.v6 ? 6 : 4}, ${s.payload.length} B, MSS ${s.mss}`;
}

/** Checks the wire packets of `s` field by field (what the builder comparison also covers, spelled out). */
function checkFields(s: Shape, wire: Buffer[], what: string): void {
  const hdr = headerBytes(s);
  const l4 = hdr - (s.udp ? 8 : 20 + (s.tcpOptions?.length ?? 0));
  const n = wire.length;
  assert.equal(n, Math.max(1, Math.ceil(s.payload.length / s.mss)), `${what}: count`);
  wire.forEach((w, k) => {
    const plen = Math.min(s.mss, s.payload.length - k * s.mss);
    const at = `${what}: packet ${k}`;
    assert.equal(w.length, hdr + plen, `${at} length`);
    assert.ok(fullChecksumsValid(w, 0, w.length), `${at} checksums`);
    if (s.v6) {
      assert.equal(w.readUInt16BE(4), hdr + plen - 40, `${at} IPv6 payload length`);
    } else {
      assert.equal(w.readUInt16BE(2), hdr + plen, `${at} IPv4 total length`);
      assert.equal(w.readUInt16BE(4), (s.ipId + k) & 0xffff, `${at} IPv4 id`);
    }
    if (s.udp) {
      assert.equal(w.readUInt16BE(l4 + 4), 8 + plen, `${at} UDP length`);
      assert.notEqual(w.readUInt16BE(l4 + 6), 0, `${at} UDP checksum present`);
    } else {
      assert.equal(w.readUInt32BE(l4 + 4), (s.seq + k * s.mss) >>> 0, `${at} seq`);
      const f = w[l4 + 13]!;
      const first = k === 0;
      const last = k === n - 1;
      assert.equal(f & TcpFlag.Cwr, first ? s.flags & TcpFlag.Cwr : 0, `${at} CWR`);
      assert.equal(
        f & (TcpFlag.Fin | TcpFlag.Psh),
        last ? s.flags & (TcpFlag.Fin | TcpFlag.Psh) : 0,
        `${at} FIN/PSH`,
      );
      const others = ~(TcpFlag.Cwr | TcpFlag.Fin | TcpFlag.Psh) & 0xff;
      assert.equal(f & others, s.flags & others, `${at} other flags`);
    }
  });
  assert.deepEqual(Buffer.concat(wire.map((w) => w.subarray(hdr))), s.payload, `${what}: payload`);
}

describe('segmentPacket (software TSO/USO in TypeScript)', () => {
  it('cuts 500 random TCP/UDP super-packets, IPv4 and IPv6, exactly as an independent builder would', () => {
    const random = createSeededRandom(0x5e6);
    const out = scratch(8 << 20, 8192);
    const seen = { tcp4: 0, tcp6: 0, udp4: 0, udp6: 0, multi: 0 };
    for (let c = 0; c < 500; c++) {
      const s = randomShape(random);
      const what = describeShape(s, c);
      const { n, wire } = segment(superPacket(s), s.mss, out);
      const expected = expectedSegments(s);
      assert.equal(n, expected.length, what);
      wire.forEach((w, k) => assert.deepEqual(w, expected[k], `${what}: packet ${k}`));
      checkFields(s, wire, what);
      seen[`${s.udp ? 'udp' : 'tcp'}${s.v6 ? 6 : 4}`]++;
      if (n > 1) seen.multi++;
    }
    for (const [kind, count] of Object.entries(seen)) assert.ok(count >= 50, `${kind}: ${count} cases`);
  });

  it('keeps CWR on the first packet only and FIN and PSH on the last only; IPv4 ids and sequence numbers wrap', () => {
    const out = scratch(1 << 20, 1024);
    for (const v6 of [false, true]) {
      const s: Shape = {
        v6,
        udp: false,
        payload: randomBytes(createSeededRandom(1), 4000),
        mss: 1000,
        flags: TcpFlag.Ack | TcpFlag.Cwr | TcpFlag.Ece | TcpFlag.Psh | TcpFlag.Fin,
        seq: 0xfffffc18, // 2^32 - 1000: the second packet starts at 0
        ipId: 0xfffe,
        dontFragment: true,
      };
      const { wire } = segment(superPacket(s), s.mss, out);
      const l4 = v6 ? 40 : 20;
      assert.deepEqual(
        wire.map((w) => w[l4 + 13]),
        [
          TcpFlag.Ack | TcpFlag.Cwr | TcpFlag.Ece,
          TcpFlag.Ack | TcpFlag.Ece,
          TcpFlag.Ack | TcpFlag.Ece,
          TcpFlag.Ack | TcpFlag.Ece | TcpFlag.Psh | TcpFlag.Fin,
        ],
      );
      assert.deepEqual(
        wire.map((w) => w.readUInt32BE(l4 + 4)),
        [0xfffffc18, 0, 1000, 2000],
      );
      if (!v6)
        assert.deepEqual(
          wire.map((w) => w.readUInt16BE(4)),
          [0xfffe, 0xffff, 0, 1],
        );
      checkFields(s, wire, `IPv${v6 ? 6 : 4}`);
      // one packet keeps every flag
      const one = segment(superPacket({ ...s, mss: 4000 }), 4000, out);
      assert.equal(one.wire[0]![l4 + 13], s.flags);
    }
  });

  it('makes one packet of a super-packet whose gso word is at least its payload, up to 2^32 - 1', () => {
    const out = scratch(1 << 20, 1024);
    for (const v6 of [false, true]) {
      for (const udp of [false, true]) {
        const s: Shape = {
          v6,
          udp,
          payload: Buffer.alloc(3000, 5),
          mss: 3000,
          flags: TcpFlag.Ack | TcpFlag.Psh,
          seq: 10,
          ipId: 3,
          dontFragment: false,
        };
        const expected = expectedSegments(s);
        assert.equal(expected.length, 1);
        for (const gso of [3000, 3001, 0xfffe, 0xffff, 0x10000, 0xfffffff0, 0xffffffff]) {
          const { n, wire } = segment(superPacket(s), gso, out);
          assert.equal(n, 1, `gso ${gso}`);
          assert.deepEqual(wire, expected, `${udp ? 'UDP' : 'TCP'}/IPv${v6 ? 6 : 4}, gso ${gso}`);
        }
      }
    }
  });

  it('accepts the edge cases the addon accepts (no payload, gso 1, 64 KiB packets, trailing bytes, ...)', () => {
    const out = scratch(1 << 20, 1024);
    for (const c of edgeCases()) {
      const { n, wire } = segment(c.packet, c.gso, out);
      assert.equal(n, c.segments, c.name);
      for (const w of wire) assert.ok(fullChecksumsValid(w, 0, w.length), `${c.name}: checksums`);
    }
  });

  it('copies an ordinary packet (gso word 0) as it is, whatever its bytes', () => {
    const out = scratch(1 << 16, 4);
    const tcp = buildTcp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2, payload: Buffer.alloc(100, 7) });
    for (const packet of [
      tcp,
      Buffer.alloc(0),
      Buffer.from('not an IP packet'),
      ...malformedCases().map((c) => c.packet),
    ]) {
      const { n, wire } = segment(packet, 0, out);
      assert.equal(n, 1);
      assert.deepEqual(wire, [packet]);
    }
  });

  it('appends after the packets already in out, and answers NoRoom (out unchanged) when bytes or slots run short', () => {
    const s: Shape = {
      v6: false,
      udp: false,
      payload: randomBytes(createSeededRandom(7), 5000),
      mss: 1400,
      flags: TcpFlag.Ack,
      seq: 1,
      ipId: 1,
      dontFragment: true,
    };
    const packet = superPacket(s);
    const expected = expectedSegments(s); // 4 packets of 40 + 1400, 1400, 1400, 800
    const need = expected.reduce((sum, p) => sum + p.length, 0);
    const framed = Buffer.concat([Buffer.alloc(13, 0xaa), packet, Buffer.alloc(5, 0xbb)]);
    const ordinary = Buffer.from('hello');

    const out = scratch(5 + need, 5);
    assert.equal(segmentPacket(ordinary, 0, ordinary.length, 0, out), 1);
    assert.equal(segmentPacket(framed, 13, packet.length, s.mss, out), 4, 'exact fit');
    assert.equal(out.count, 5);
    assert.deepEqual(out.buffer.subarray(0, 5), ordinary);
    let at = 5;
    expected.forEach((p, k) => {
      assert.equal(out.offsets[k + 1], at);
      assert.equal(out.lengths[k + 1], p.length);
      assert.deepEqual(out.buffer.subarray(at, at + p.length), p);
      assert.equal(out.gso[k + 1], 0);
      at += p.length;
    });
    assert.equal(segmentPacket(ordinary, 0, 1, 0, out), SegmentFailure.NoRoom, 'no slot left');

    const short = scratch(5 + need - 1, 5);
    assert.equal(segmentPacket(ordinary, 0, ordinary.length, 0, short), 1);
    assert.equal(
      segmentPacket(packet, 0, packet.length, s.mss, short),
      SegmentFailure.NoRoom,
      'one byte short',
    );
    assert.equal(short.count, 1);
    const few = scratch(1 << 16, 4);
    assert.equal(segmentPacket(ordinary, 0, ordinary.length, 0, few), 1);
    assert.equal(
      segmentPacket(packet, 0, packet.length, s.mss, few),
      SegmentFailure.NoRoom,
      'one slot short',
    );
    assert.equal(few.count, 1);
    assert.equal(segmentPacket(ordinary, 0, ordinary.length, 0, scratch(4, 4)), SegmentFailure.NoRoom);
    assert.equal(segmentPacket(ordinary, 0, 0, 0, scratch(0, 1)), 1, 'an empty packet always fits');
  });

  it('refuses malformed super-packets (truncated, wrong lengths, fragments, other protocols, ...) as Malformed', () => {
    const out = scratch(1 << 20, 1024);
    const cases = malformedCases();
    assert.ok(cases.length >= 25);
    for (const c of cases) {
      for (const gso of [c.gso, 1, 0xffff, 0xffffffff]) {
        out.reset();
        assert.equal(segmentPacket(c.packet, 0, c.packet.length, gso, out), SegmentFailure.Malformed, c.name);
        assert.equal(out.count, 0, c.name);
      }
    }
  });

  it('never throws on 5,000 randomly mutated super-packets; what it accepts comes out well formed', () => {
    const random = createSeededRandom(0xf022);
    const out = scratch(1 << 20, 512);
    const tally = { ok: 0, malformed: 0, noRoom: 0 };
    for (let c = 0; c < 5000; c++) {
      const s = randomShape(random, 3000);
      const packet = mutate(random, superPacket(s));
      const gso = randomGso(random);
      out.reset();
      out.push(0, 0); // a packet already there: failures must leave it alone
      const n = segmentPacket(packet, 0, packet.length, gso, out);
      if (n < 0) {
        assert.ok(n === SegmentFailure.Malformed || n === SegmentFailure.NoRoom, `case ${c}: result ${n}`);
        assert.equal(out.count, 1, `case ${c}: out unchanged`);
        tally[n === SegmentFailure.Malformed ? 'malformed' : 'noRoom']++;
        continue;
      }
      tally.ok++;
      assert.equal(out.count, 1 + n);
      let at = 0;
      for (let k = 1; k <= n; k++) {
        assert.equal(out.offsets[k], at, `case ${c}: back to back`);
        const w = out.buffer.subarray(at, at + out.lengths[k]!);
        if (gso !== 0) assert.ok(fullChecksumsValid(w, 0, w.length), `case ${c}: packet ${k} checksums`);
        at += out.lengths[k]!;
      }
      assert.ok(at <= out.buffer.length);
    }
    assert.ok(tally.ok > 500 && tally.malformed > 500 && tally.noRoom > 10, JSON.stringify(tally));
  });

  it('throws RangeError only for caller bugs: a range outside the buffer, a gso word that is not a uint32', () => {
    const out = scratch(1 << 16, 4);
    const packet = buildTcp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2 });
    assert.throws(() => segmentPacket(packet, 1, packet.length, 0, out), RangeError);
    assert.throws(() => segmentPacket(packet, -1, 2, 0, out), RangeError);
    assert.throws(() => segmentPacket(packet, 0, 1.5, 0, out), RangeError);
    for (const gso of [-1, 0.5, 2 ** 32, Number.NaN])
      assert.throws(() => segmentPacket(packet, 0, packet.length, gso, out), RangeError, `gso ${gso}`);
    assert.equal(out.count, 0);
  });
});
