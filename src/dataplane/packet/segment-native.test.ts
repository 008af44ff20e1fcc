/**
 * The TypeScript segmenter (segment.ts) against the addon's (native/offload.c, which the UDP tunnel's send
 * uses; reached through segmentPackets of the test build, native/test_exports.c): for random super-packets, edge cases, malformed inputs
 * and thousands of random mutations, with room to spare and with room cut to the byte and the slot, both must
 * make the same wire packets byte for byte, or refuse the same way (malformed: dropped; no room: left for
 * the next fill). The addon is required: without it this file fails, it does not skip.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadNativeTestIo } from '../tun/native.ts';
import { BatchBuilder } from '../tun/tun.ts';
import { createSeededRandom } from './build.ts';
import { edgeCases, malformedCases, mutate, randomGso, randomShape, superPacket } from './segment.case.ts';
import { SegmentFailure, segmentPacket } from './segment.ts';

// Never skipped: throws (saying how to build the addon) when it is missing.
const io = loadNativeTestIo();

/** What one segmenter made of a packet: a SegmentFailure or the count, and the wire packets' bytes. */
interface Outcome {
  result: number;
  wire: Buffer[];
}

const PREFIX = Buffer.from('P');

/**
 * The addon's verdict on `packet`: it is segmented into an out with `room` bytes and `slots` outputs left
 * after an ordinary one-byte packet put there first, so that "does not fit" (the fill stops before it) and
 * "malformed" (dropped and counted) can be told apart, as segmentPackets reports them.
 */
function native(packet: Buffer, gso: number, room: number, slots: number): Outcome {
  const input = Buffer.concat([PREFIX, packet]);
  const out = Buffer.alloc(PREFIX.length + room);
  const outOffsets = new Uint32Array(1 + slots);
  const outLengths = new Uint32Array(1 + slots);
  const stats = new Uint32Array(2);
  const next = io.segmentPackets(
    {
      buffer: input,
      offsets: Uint32Array.of(0, PREFIX.length),
      lengths: Uint32Array.of(PREFIX.length, packet.length),
      gso: Uint32Array.of(0, gso),
      count: 2,
    },
    0,
    { buffer: out, offsets: outOffsets, lengths: outLengths },
    stats,
  );
  const made = stats[0]!;
  const dropped = stats[1]!;
  let result: number;
  if (next === 1) {
    assert.ok(made === 1 && dropped === 0, 'stopped before the packet');
    result = SegmentFailure.NoRoom;
  } else if (dropped === 1) {
    assert.equal(made, 1, 'dropped the packet');
    result = SegmentFailure.Malformed;
  } else {
    assert.ok(next === 2 && made >= 2, 'segmented the packet');
    result = made - 1;
  }
  const wire: Buffer[] = [];
  for (let k = 1; k < made; k++)
    wire.push(Buffer.from(out.subarray(outOffsets[k], outOffsets[k]! + outLengths[k]!)));
  return { result, wire };
}

/** The same with segment.ts, into an out laid out the same way. */
function typescript(packet: Buffer, gso: number, room: number, slots: number): Outcome {
  const out = new BatchBuilder(1 + slots);
  out.reset(Buffer.alloc(PREFIX.length + room));
  assert.equal(segmentPacket(PREFIX, 0, PREFIX.length, 0, out), 1);
  const result = segmentPacket(packet, 0, packet.length, gso, out);
  const wire: Buffer[] = [];
  for (let k = 1; k < out.count; k++)
    wire.push(Buffer.from(out.buffer.subarray(out.offsets[k], out.offsets[k]! + out.lengths[k]!)));
  if (result < 0) assert.equal(out.count, 1, 'a refusal leaves out unchanged');
  return { result, wire };
}

const BIG_ROOM = 8 << 20;
const BIG_SLOTS = 8192;

/** Asserts both segmenters agree on `packet`; returns the outcome. */
function agree(packet: Buffer, gso: number, what: string, room = BIG_ROOM, slots = BIG_SLOTS): Outcome {
  const c = native(packet, gso, room, slots);
  const ts = typescript(packet, gso, room, slots);
  assert.equal(ts.result, c.result, `${what}: result (gso ${gso}, room ${room}, slots ${slots})`);
  assert.equal(ts.wire.length, c.wire.length, `${what}: count`);
  ts.wire.forEach((w, k) => {
    if (!w.equals(c.wire[k]!))
      assert.deepEqual(w, c.wire[k], `${what}: wire packet ${k} differs from the addon's`);
  });
  return c;
}

describe('segment.ts against the addon (segmentPackets)', () => {
  it('makes the same bytes as the addon for 1,000 random super-packets, TCP and UDP, IPv4 and IPv6', () => {
    const random = createSeededRandom(0xc0de);
    let segments = 0;
    for (let c = 0; c < 1000; c++) {
      const s = randomShape(random);
      const { result } = agree(superPacket(s), s.mss, `case ${c}`);
      assert.ok(result >= 1, `case ${c}: accepted`);
      segments += result;
    }
    assert.ok(segments > 10000, `${segments} wire packets compared`);
  });

  it('agrees on the edge cases and the malformed inputs, with every kind of gso word', () => {
    for (const c of [...edgeCases(), ...malformedCases()])
      for (const gso of [0, c.gso, 1, 7, 1448, 0xffff, 0x10000, 0xffffffff]) agree(c.packet, gso, c.name);
    for (const c of malformedCases())
      assert.equal(agree(c.packet, c.gso, c.name).result, SegmentFailure.Malformed, c.name);
  });

  it('agrees on where the room runs out: bytes and slots, to the last one', () => {
    const random = createSeededRandom(0x5107);
    for (let c = 0; c < 300; c++) {
      const s = randomShape(random, 20000);
      const packet = superPacket(s);
      const whole = agree(packet, s.mss, `case ${c}`);
      const n = whole.result;
      const bytes = whole.wire.reduce((sum, w) => sum + w.length, 0);
      agree(packet, s.mss, `case ${c}, exact`, bytes, n);
      assert.equal(
        agree(packet, s.mss, `case ${c}, a byte short`, bytes - 1, n).result,
        SegmentFailure.NoRoom,
      );
      assert.equal(
        agree(packet, s.mss, `case ${c}, a slot short`, bytes, n - 1).result,
        SegmentFailure.NoRoom,
      );
      agree(packet, 0, `case ${c}, ordinary, exact`, packet.length, 1);
      agree(packet, 0, `case ${c}, ordinary, a byte short`, packet.length - 1, 1);
    }
  });

  it('agrees on 6,000 randomly mutated super-packets, with random room', () => {
    const random = createSeededRandom(0xfa22);
    const tally = { ok: 0, malformed: 0, noRoom: 0 };
    for (let c = 0; c < 6000; c++) {
      const s = randomShape(random, 4000);
      const packet = mutate(random, superPacket(s));
      const gso = randomGso(random);
      const tight = random() < 0.3;
      const room = tight ? Math.floor(random() * 8000) : BIG_ROOM;
      const slots = tight ? Math.floor(random() * 8) : BIG_SLOTS;
      const { result } = agree(packet, gso, `case ${c}`, room, slots);
      tally[
        result === SegmentFailure.Malformed ? 'malformed' : result === SegmentFailure.NoRoom ? 'noRoom' : 'ok'
      ]++;
    }
    assert.ok(tally.ok > 1000 && tally.malformed > 1000 && tally.noRoom > 200, JSON.stringify(tally));
  });

  it('can fill a batch as segmentPackets does: the same outputs, stop index and drops, in small outs', () => {
    const random = createSeededRandom(0xf111);
    for (let round = 0; round < 60; round++) {
      // a batch of ordinary packets, super-packets and malformed ones
      const packets: Array<{ packet: Buffer; gso: number }> = [];
      for (let i = 0; i < 12; i++) {
        const s = randomShape(random, 12000);
        const kind = random();
        if (kind < 0.2)
          packets.push({ packet: superPacket({ ...s, payload: s.payload.subarray(0, 1000) }), gso: 0 });
        else if (kind < 0.35)
          packets.push({ packet: mutate(random, superPacket(s)), gso: randomGso(random) });
        else packets.push({ packet: superPacket(s), gso: s.mss });
      }
      const buffer = Buffer.concat(packets.map((p) => p.packet));
      const offsets = new Uint32Array(packets.length);
      const lengths = new Uint32Array(packets.length);
      const gso = new Uint32Array(packets.length);
      let at = 0;
      packets.forEach((p, i) => {
        offsets[i] = at;
        lengths[i] = p.packet.length;
        gso[i] = p.gso;
        at += p.packet.length;
      });
      const room = 2000 + Math.floor(random() * 40000);
      const slots = 1 + Math.floor(random() * 40);
      const cOut = Buffer.alloc(room);
      const cOffsets = new Uint32Array(slots);
      const cLengths = new Uint32Array(slots);
      const stats = new Uint32Array(2);
      const ts = new BatchBuilder(slots);
      ts.reset(Buffer.alloc(room));
      for (let from = 0; from < packets.length;) {
        const next = io.segmentPackets(
          { buffer, offsets, lengths, gso, count: packets.length },
          from,
          { buffer: cOut, offsets: cOffsets, lengths: cLengths },
          stats,
        );
        // the same fill with segment.ts
        ts.reset();
        let i = from;
        let dropped = 0;
        for (; i < packets.length; i++) {
          const n = segmentPacket(buffer, offsets[i]!, lengths[i]!, gso[i]!, ts);
          if (n === SegmentFailure.NoRoom && ts.count > 0) break;
          if (n < 0) dropped++;
        }
        const what = `round ${round}, fill from ${from}`;
        assert.equal(i, next, `${what}: next`);
        assert.equal(ts.count, stats[0], `${what}: outputs`);
        assert.equal(dropped, stats[1], `${what}: dropped`);
        assert.deepEqual(
          ts.offsets.subarray(0, ts.count),
          cOffsets.subarray(0, ts.count),
          `${what}: offsets`,
        );
        assert.deepEqual(
          ts.lengths.subarray(0, ts.count),
          cLengths.subarray(0, ts.count),
          `${what}: lengths`,
        );
        const end = ts.count === 0 ? 0 : ts.offsets[ts.count - 1]! + ts.lengths[ts.count - 1]!;
        assert.ok(ts.buffer.subarray(0, end).equals(cOut.subarray(0, end)), `${what}: bytes`);
        from = next;
      }
    }
  });
});
