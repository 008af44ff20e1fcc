import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { buildEcho, buildUdp } from '../packet/build.ts';
import { consumeInitiation, consumeResponse, createInitiation, createResponse } from './handshake.ts';
import { KeyPair } from './keys.ts';
import {
  OpenVerdict,
  REJECT_AFTER_MESSAGES,
  REPLAY_WINDOW_BITS,
  SESSION_STAT_FIELDS,
  SessionStat,
  type MutableBatch,
} from './sessions.ts';
import { JsTransportSessions, ReplayWindow } from './transport-js.ts';

describe('ReplayWindow', () => {
  const W = BigInt(REPLAY_WINDOW_BITS);
  it('takes counters in order, each once', () => {
    const w = new ReplayWindow();
    for (let c = 0n; c < 20_000n; c++) assert.ok(w.accept(c), `${c}`);
    assert.equal(w.highest, 19_999n);
    assert.ok(!w.accept(19_999n));
    assert.ok(!w.accept(0n));
  });
  it('takes counters out of order within the window, once', () => {
    const w = new ReplayWindow();
    assert.ok(w.accept(100n));
    assert.ok(w.accept(50n));
    assert.ok(!w.accept(50n));
    assert.ok(w.accept(99n));
    assert.ok(w.accept(0n));
    assert.ok(!w.accept(0n));
    assert.ok(w.accept(101n));
    assert.equal(w.highest, 101n);
  });
  it('the window is REPLAY_WINDOW_BITS counters ending at the highest', () => {
    const w = new ReplayWindow();
    const top = 3n * W + 17n;
    assert.ok(w.accept(top));
    assert.ok(w.check(top - W + 1n), 'the oldest counter inside the window');
    assert.ok(!w.check(top - W), 'just behind the window');
    assert.ok(w.accept(top - W + 1n));
    assert.ok(!w.accept(top - W + 1n));
    assert.ok(!w.accept(top - W));
    assert.ok(!w.accept(0n));
  });
  it('a jump clears what slid out, and bits seen before a wrap do not shadow new counters', () => {
    const w = new ReplayWindow();
    for (let c = 0n; c < 64n; c++) assert.ok(w.accept(c));
    // same ring positions, one window and a bit later: must be new
    const later = W + 32n;
    for (let c = later; c < later + 64n; c++) assert.ok(w.accept(c), `${c}`);
    assert.ok(!w.accept(63n));
    // a huge jump
    assert.ok(w.accept(10n * W));
    for (let c = 10n * W - W + 1n; c < 10n * W; c += 97n) assert.ok(w.accept(c), `${c}`);
    assert.ok(!w.accept(later));
  });
  it('never takes REJECT_AFTER_MESSAGES (2^64 - 2^13 - 1) or beyond; takes the one before', () => {
    const w = new ReplayWindow();
    assert.equal(REJECT_AFTER_MESSAGES, 2n ** 64n - 2n ** 13n - 1n);
    assert.ok(!w.accept(REJECT_AFTER_MESSAGES));
    assert.ok(!w.accept(2n ** 64n - 1n));
    assert.ok(w.accept(REJECT_AFTER_MESSAGES - 1n));
    assert.ok(!w.accept(REJECT_AFTER_MESSAGES - 1n));
    assert.ok(w.accept(REJECT_AFTER_MESSAGES - 2n));
    assert.ok(!w.accept(REJECT_AFTER_MESSAGES - 1n - W));
    w.reset();
    assert.equal(w.highest, -1n);
    assert.ok(w.accept(0n));
  });
});

function pair(capacity = 4) {
  const a = KeyPair.generate();
  const b = KeyPair.generate();
  const init = createInitiation(a, b.publicKey, undefined, 10, Date.now());
  const got = consumeInitiation(b, init.message);
  assert.ok(got);
  const resp = createResponse(got.state, 20);
  assert.ok(resp);
  const done = consumeResponse(init.state, resp.message);
  assert.ok(done);
  const alice = new JsTransportSessions(capacity);
  const bob = new JsTransportSessions(capacity);
  alice.install(1, done.keys.send, done.keys.recv, 10, done.remoteIndex);
  bob.install(2, resp.keys.send, resp.keys.recv, 20, resp.remoteIndex);
  return { alice, bob };
}

function batchOf(datagrams: readonly Uint8Array[]): MutableBatch {
  const buffer = Buffer.alloc(datagrams.reduce((n, d) => n + d.length + 3, 0));
  const offsets = new Uint32Array(datagrams.length);
  const lengths = new Uint32Array(datagrams.length);
  let at = 1;
  datagrams.forEach((d, i) => {
    buffer.set(d, at);
    offsets[i] = at;
    lengths[i] = d.length;
    at += d.length + 3;
  });
  return { buffer, offsets, lengths, count: datagrams.length };
}

function seal(s: JsTransportSessions, slot: number, packet: Uint8Array): Buffer {
  const out = Buffer.alloc(packet.length + 64);
  const n = s.seal(slot, packet, out, 5);
  assert.ok(n > 0);
  return out.subarray(5, 5 + n);
}

function plaintext(batch: MutableBatch, i: number): Buffer {
  const at = batch.offsets[i] ?? 0;
  return batch.buffer.subarray(at, at + (batch.lengths[i] ?? 0));
}

describe('JsTransportSessions', () => {
  it('seals to the wire format and opens in place, trimming IPv4 and IPv6 padding', () => {
    const { alice, bob } = pair();
    const v4 = buildEcho({ src: '10.99.0.2', dst: '10.99.0.1', id: 7, payload: Buffer.from('abc') });
    const v6 = buildUdp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1, dstPort: 2, payload: randomBytes(21) });
    const probe = Buffer.from([0, 1, 2, 3, 4]);
    const wire = [
      seal(alice, 1, v4),
      seal(alice, 1, v6),
      seal(alice, 1, new Uint8Array(0)),
      seal(alice, 1, probe),
    ];
    assert.equal(wire[0]?.[0], 4);
    assert.equal(wire[0]?.readUInt32LE(4), 20, 'the remote index');
    assert.equal(wire[1]?.readBigUInt64LE(8), 1n, 'the counter');
    assert.equal(wire[0]?.length, 16 + Math.ceil(v4.length / 16) * 16 + 16);
    assert.equal(wire[2]?.length, 32, 'a keepalive');
    const batch = batchOf(wire);
    const verdicts = new Int32Array(4);
    bob.open(batch, verdicts);
    assert.deepEqual([...verdicts], [2, 2, 2, 2]);
    assert.deepEqual(plaintext(batch, 0), v4);
    assert.deepEqual(plaintext(batch, 1), v6);
    assert.equal(batch.lengths[2], 0);
    assert.deepEqual(
      plaintext(batch, 3),
      Buffer.concat([probe, Buffer.alloc(11)]),
      'a probe keeps its padding',
    );
    const stats = new Float64Array(SESSION_STAT_FIELDS);
    bob.stats(2, stats);
    assert.equal(stats[SessionStat.RecvHighest], 3);
    assert.equal(stats[SessionStat.PacketsIn], 4);
    assert.equal(
      stats[SessionStat.BytesIn],
      wire.reduce((n, w) => n + w.length, 0),
    );
    alice.stats(1, stats);
    assert.equal(stats[SessionStat.SendCounter], 4);
    assert.equal(stats[SessionStat.PacketsOut], 4);
  });

  it('verdicts: not transport, unknown index, forged, replayed, malformed', () => {
    const { alice, bob } = pair();
    const packet = buildEcho({ src: '10.0.0.1', dst: '10.0.0.2', id: 1 });
    const good = seal(alice, 1, packet);
    const forged = Buffer.from(good);
    forged[20] = (forged[20] ?? 0) ^ 1;
    const unknown = Buffer.from(good);
    unknown.writeUInt32LE(99, 4);
    const reserved = Buffer.from(good);
    reserved[1] = 1;
    const handshake = Buffer.alloc(148);
    handshake[0] = 1;
    const exhausted = Buffer.from(good);
    exhausted.writeBigUInt64LE(REJECT_AFTER_MESSAGES, 8);
    const batch = batchOf([
      forged,
      good,
      good,
      unknown,
      handshake,
      good.subarray(0, 31),
      new Uint8Array(0),
      reserved,
      exhausted,
    ]);
    batch.lengths[6] = 0;
    const verdicts = new Int32Array(9);
    bob.open(batch, verdicts);
    assert.deepEqual(
      [...verdicts],
      [
        OpenVerdict.AuthFailed,
        2,
        OpenVerdict.Replayed,
        OpenVerdict.UnknownIndex,
        OpenVerdict.NotTransport,
        OpenVerdict.Malformed,
        OpenVerdict.Malformed,
        OpenVerdict.Malformed,
        OpenVerdict.Exhausted,
      ],
    );
    assert.equal(batch.lengths[4], 148, 'a handshake message is left as it was');
  });

  it('a forged datagram does not move the replay window', () => {
    const { alice, bob } = pair();
    const first = seal(alice, 1, new Uint8Array(0));
    const forged = Buffer.from(first);
    forged.writeBigUInt64LE(1_000_000n, 8);
    const verdicts = new Int32Array(2);
    bob.open(batchOf([forged, first]), verdicts);
    assert.deepEqual([...verdicts], [OpenVerdict.AuthFailed, 2]);
    const stats = new Float64Array(SESSION_STAT_FIELDS);
    bob.stats(2, stats);
    assert.equal(stats[SessionStat.RecvHighest], 0);
  });

  it('remove, reinstall and close; duplicate local indexes are refused', () => {
    const { alice, bob } = pair();
    const wire = seal(alice, 1, new Uint8Array(0));
    bob.remove(2);
    const verdicts = new Int32Array(1);
    bob.open(batchOf([wire]), verdicts);
    assert.equal(verdicts[0], OpenVerdict.UnknownIndex);
    assert.equal(bob.seal(2, new Uint8Array(0), Buffer.alloc(64), 0), -1);
    assert.throws(() => alice.install(0, Buffer.alloc(32), Buffer.alloc(32), 10, 1), RangeError);
    alice.install(1, Buffer.alloc(32, 1), Buffer.alloc(32, 2), 10, 1); // the same slot may take its index again
    alice.close();
    alice.close();
    assert.equal(alice.seal(1, new Uint8Array(0), Buffer.alloc(64), 0), -1);
  });
});
