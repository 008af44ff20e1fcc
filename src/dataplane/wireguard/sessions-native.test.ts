/**
 * NativeTransportSessions (native/wg.c) against an independent reference, node:crypto's ChaCha20-Poly1305:
 * messages it seals decrypt there (header, counter, zero padding), messages sealed there open here; forged,
 * replayed, unknown and exhausted ones get their verdicts; opened plaintexts are trimmed by their IP header;
 * and over a real UdpTunnel pair on loopback with UDP GSO/GRO, a sealed 64 KiB TCP super-packet arrives as
 * GRO batches that one wgOpen call each turns into exactly the segments the unsealed path delivers.
 */
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes as cryptoRandom } from 'node:crypto';
import { describe, it } from 'node:test';
import { buildTcp, buildUdp, withPartialChecksum } from '../packet/build.ts';
import { TcpFlag } from '../packet/index.ts';
import { Collector } from '../tun/fixtures.ts';
import { loadNativeIo, nativeIoAvailable } from '../tun/native.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { endpoint, OutboundBatch } from '../tunnel/tunnel.ts';
import { UdpTunnel } from '../tunnel/udp.ts';
import { NativeTransportSessions } from './sessions-native.ts';
import {
  OpenVerdict,
  REJECT_AFTER_MESSAGES,
  SESSION_STAT_FIELDS,
  SessionStat,
  TRANSPORT_HEADER_BYTES,
  TRANSPORT_TAG_BYTES,
} from './sessions.ts';

// Never skipped: the addon is built by npm install; without it these tests fail.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');

const KEY_A = cryptoRandom(32);
const KEY_B = cryptoRandom(32);
const INDEX_A = 0x11223344;
const INDEX_B = 0xdeadbeef;

function nonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

/** A transport message sealed by node:crypto: the reference sender. */
function refSeal(key: Uint8Array, receiver: number, counter: bigint, packet: Uint8Array): Buffer {
  const padded = Buffer.alloc(Math.ceil(packet.length / 16) * 16);
  padded.set(packet);
  const c = createCipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  const body = Buffer.concat([c.update(padded), c.final()]);
  const header = Buffer.alloc(16);
  header[0] = 4;
  header.writeUInt32LE(receiver, 4);
  header.writeBigUInt64LE(counter, 8);
  return Buffer.concat([header, body, c.getAuthTag()]);
}

/** The reference receiver: header fields and the padded plaintext, or throws when the tag fails. */
function refOpen(key: Uint8Array, message: Buffer): { receiver: number; counter: bigint; padded: Buffer } {
  assert.deepEqual([...message.subarray(0, 4)], [4, 0, 0, 0]);
  const counter = message.readBigUInt64LE(8);
  const d = createDecipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  d.setAuthTag(message.subarray(message.length - 16));
  const padded = Buffer.concat([d.update(message.subarray(16, message.length - 16)), d.final()]);
  return { receiver: message.readUInt32LE(4), counter, padded };
}

/** A (sender, receiver) pair of tables, sender's slot 1 -> receiver's slot 2. */
function pair(): { tx: NativeTransportSessions; rx: NativeTransportSessions; close: () => void } {
  const tx = new NativeTransportSessions(4);
  const rx = new NativeTransportSessions(8);
  tx.install(1, KEY_A, KEY_B, INDEX_A, INDEX_B);
  rx.install(2, KEY_B, KEY_A, INDEX_B, INDEX_A);
  return {
    tx,
    rx,
    close: () => {
      tx.close();
      rx.close();
    },
  };
}

/** Opens these datagrams (back to back in one buffer, with a gap) in one call. */
function openAll(
  s: NativeTransportSessions,
  datagrams: Uint8Array[],
): { verdicts: number[]; out: Buffer[]; batch: PacketBatch } {
  const buffer = Buffer.alloc(datagrams.reduce((n, d) => n + d.length + 3, 0));
  const offsets = new Uint32Array(datagrams.length);
  const lengths = new Uint32Array(datagrams.length);
  let at = 0;
  datagrams.forEach((d, i) => {
    buffer.set(d, at);
    offsets[i] = at;
    lengths[i] = d.length;
    at += d.length + 3;
  });
  const verdicts = new Int32Array(datagrams.length);
  const batch = { buffer, offsets, lengths, count: datagrams.length };
  s.open(batch, verdicts);
  const out = datagrams.map((_, i) => Buffer.from(buffer.subarray(offsets[i], offsets[i]! + lengths[i]!)));
  return { verdicts: [...verdicts], out, batch };
}

function sealOne(s: NativeTransportSessions, slot: number, packet: Uint8Array): Buffer {
  const out = Buffer.alloc(packet.length + 64);
  const n = s.seal(slot, packet, out, 5);
  assert.ok(n > 0, `seal returned ${n}`);
  return out.subarray(5, 5 + n);
}

function stats(s: NativeTransportSessions, slot: number): Float64Array {
  const out = new Float64Array(SESSION_STAT_FIELDS);
  s.stats(slot, out);
  return out;
}

const PROBE = (n: number) => Buffer.alloc(n, 0x5a).fill(0, 0, 1); // first byte 0: an RTT probe
const V4 = buildUdp({
  src: '10.30.0.10',
  dst: '10.18.0.66',
  srcPort: 1,
  dstPort: 2,
  payload: Buffer.alloc(33, 1),
});
const V6 = buildUdp({
  src: 'fdff::10',
  dst: 'fc00::102',
  srcPort: 1,
  dstPort: 2,
  payload: Buffer.alloc(21, 2),
});

describe('NativeTransportSessions against node:crypto', () => {
  it('seals messages node:crypto opens: header, counter, remote index, zero padding to 16', () => {
    const { tx, close } = pair();
    try {
      for (const [k, n] of [0, 1, 15, 16, 17, 1400, 65535].entries()) {
        const packet = cryptoRandom(n);
        const message = sealOne(tx, 1, packet);
        assert.equal(message.length, TRANSPORT_HEADER_BYTES + Math.ceil(n / 16) * 16 + TRANSPORT_TAG_BYTES);
        const { receiver, counter, padded } = refOpen(KEY_A, message);
        assert.equal(receiver, INDEX_B);
        assert.equal(counter, BigInt(k));
        assert.ok(padded.subarray(0, n).equals(packet));
        assert.ok(
          padded.subarray(n).every((b) => b === 0),
          'zero padding',
        );
      }
      const s = stats(tx, 1);
      assert.equal(s[SessionStat.SendCounter], 7);
      assert.equal(s[SessionStat.PacketsOut], 7);
      assert.equal(s[SessionStat.BytesOut], 0 + 1 + 15 + 16 + 17 + 1400 + 65535);
      assert.equal(s[SessionStat.RecvHighest], -1);
    } finally {
      close();
    }
  });

  it('opens messages node:crypto sealed, in place, in one call', () => {
    const { rx, close } = pair();
    try {
      const packets = [V4, V6, PROBE(24), PROBE(100)];
      const messages = packets.map((p, k) => refSeal(KEY_A, INDEX_B, BigInt(k), p));
      const { verdicts, out, batch } = openAll(rx, messages);
      assert.deepEqual(verdicts, [2, 2, 2, 2]);
      assert.ok(out[0]!.equals(V4), 'IPv4 trimmed to its total length');
      assert.ok(out[1]!.equals(V6), 'IPv6 trimmed to 40 + payload length');
      assert.equal(out[2]!.length, 32, 'a probe keeps its padded length');
      assert.ok(out[2]!.subarray(0, 24).equals(PROBE(24)));
      assert.equal(out[3]!.length, 112);
      assert.equal(batch.offsets[1], messages[0]!.length + 3 + 16, 'offset moved to the plaintext');
      const s = stats(rx, 2);
      assert.equal(s[SessionStat.RecvHighest], 3);
      assert.equal(s[SessionStat.PacketsIn], 4);
      assert.equal(s[SessionStat.BytesIn], V4.length + V6.length + 32 + 112);
    } finally {
      close();
    }
  });

  it('round-trips native to native, and a keepalive opens as length 0 with the slot', () => {
    const { tx, rx, close } = pair();
    try {
      const packets = [V4, Buffer.alloc(0), V6];
      const { verdicts, out } = openAll(
        rx,
        packets.map((p) => sealOne(tx, 1, p)),
      );
      assert.deepEqual(verdicts, [2, 2, 2]);
      assert.ok(out[0]!.equals(V4));
      assert.equal(out[1]!.length, 0);
      assert.ok(out[2]!.equals(V6));
    } finally {
      close();
    }
  });

  it('refuses tampered tags, ciphertexts and headers (AuthFailed), unknown indexes, non-transport and short input', () => {
    const { tx, rx, close } = pair();
    try {
      const good = sealOne(tx, 1, V4);
      const flip = (at: number) => {
        const m = Buffer.from(good);
        m[at]! ^= 1;
        return m;
      };
      const otherIndex = Buffer.from(good);
      otherIndex.writeUInt32LE(12345, 4);
      const handshake = Buffer.alloc(148);
      handshake[0] = 1;
      const reserved = flip(2);
      const { verdicts, out } = openAll(rx, [
        flip(good.length - 1), // tag
        flip(20), // ciphertext
        flip(8), // counter (nonce): another message
        otherIndex,
        handshake,
        reserved,
        good.subarray(0, 31),
        Buffer.alloc(0),
        PROBE(24),
        good,
      ]);
      assert.deepEqual(verdicts, [
        OpenVerdict.AuthFailed,
        OpenVerdict.AuthFailed,
        OpenVerdict.AuthFailed,
        OpenVerdict.UnknownIndex,
        OpenVerdict.NotTransport,
        OpenVerdict.NotTransport,
        OpenVerdict.Malformed,
        OpenVerdict.Malformed,
        OpenVerdict.NotTransport,
        2,
      ]);
      assert.ok(out[4]!.equals(handshake), 'not transport: untouched');
      assert.ok(out[8]!.equals(PROBE(24)));
      assert.ok(out[9]!.equals(V4), 'the forgeries before did not burn its counter');
    } finally {
      close();
    }
  });

  it('takes each counter once: duplicates, out of order inside the window, behind it, and the exhaustion limit', () => {
    const { rx, close } = pair();
    try {
      const m = (c: bigint) => refSeal(KEY_A, INDEX_B, c, PROBE(20));
      const verdicts = (counters: bigint[]) => openAll(rx, counters.map(m)).verdicts;
      const R = OpenVerdict.Replayed;
      assert.deepEqual(verdicts([0n, 0n, 2n, 1n, 2n, 1n]), [2, R, 2, 2, R, R]);
      // the window: 8128 behind the highest (8192 bits less one word, as the kernel and wireguard-go)
      assert.deepEqual(verdicts([10000n, 10000n - 8128n, 10000n - 8129n, 9999n, 5000n, 5000n]), [
        2,
        2,
        R,
        2,
        2,
        R,
      ]);
      // far ahead: the whole ring is cleared, old counters are behind
      assert.deepEqual(verdicts([1_000_000n, 999_999n, 10000n, 1_000_000n - 8128n]), [2, 2, R, 2]);
      const last = REJECT_AFTER_MESSAGES - 1n;
      assert.deepEqual(verdicts([REJECT_AFTER_MESSAGES, 2n ** 64n - 1n, last, last]), [
        OpenVerdict.Exhausted,
        OpenVerdict.Exhausted,
        2,
        R,
      ]);
      assert.equal(stats(rx, 2)[SessionStat.RecvHighest], Number(last));
      // a forged message with a fresh counter does not move the window
      const forged = m(last - 1n);
      forged[20]! ^= 1;
      assert.deepEqual(openAll(rx, [forged, m(last - 1n)]).verdicts, [OpenVerdict.AuthFailed, 2]);
    } finally {
      close();
    }
  });

  it('trims by the IP header, and an IP header longer than the plaintext is Malformed', () => {
    const { tx, rx, close } = pair();
    try {
      const longV4 = Buffer.from(V4);
      longV4.writeUInt16BE(V4.length + 20, 2); // beyond its padding
      const shortV4 = Buffer.from(V4);
      shortV4.writeUInt16BE(19, 2);
      const longV6 = Buffer.from(V6);
      longV6.writeUInt16BE(V6.length, 4);
      const tinyV4 = Buffer.from([0x45, 0, 0, 4]);
      const padV4 = Buffer.from(V4);
      padV4.writeUInt16BE(V4.length + 3, 2); // within the padding: the pad bytes are delivered
      const { verdicts, out } = openAll(
        rx,
        [longV4, shortV4, longV6, tinyV4, padV4].map((p) => sealOne(tx, 1, p)),
      );
      const X = OpenVerdict.Malformed;
      assert.deepEqual(verdicts, [X, X, X, X, 2]);
      assert.equal(out[4]!.length, V4.length + 3);
    } finally {
      close();
    }
  });

  it('install, remove and reinstall: indexes, counters and stats reset, keys gone', () => {
    const { tx, rx, close } = pair();
    try {
      const m0 = sealOne(tx, 1, V4);
      rx.remove(2);
      assert.deepEqual(openAll(rx, [m0]).verdicts, [OpenVerdict.UnknownIndex]);
      const out = Buffer.alloc(200);
      assert.equal(tx.seal(2, V4, out, 0), -1, 'a slot without keys');
      tx.remove(1);
      assert.equal(tx.seal(1, V4, out, 0), -1, 'a removed slot');
      assert.deepEqual([...stats(tx, 1)], [0, -1, 0, 0, 0, 0]);
      // many slots, indexes that collide in the map, removals in between: every index still finds its slot
      const big = new NativeTransportSessions(64);
      try {
        for (let s = 0; s < 64; s++) big.install(s, KEY_A, KEY_B, s * 4096, s);
        for (let s = 0; s < 64; s += 3) big.remove(s);
        for (let s = 0; s < 64; s += 6) big.install(s, KEY_A, KEY_B, 0xffffffff - s, s);
        for (let s = 0; s < 64; s++) {
          const index = s % 6 === 0 ? 0xffffffff - s : s % 3 === 0 ? -1 : s * 4096;
          const { verdicts } = openAll(big, [refSeal(KEY_B, index < 0 ? s * 4096 : index, 0n, PROBE(20))]);
          assert.equal(verdicts[0], index < 0 ? OpenVerdict.UnknownIndex : s, `slot ${s}`);
        }
        assert.throws(() => big.install(1, KEY_A, KEY_B, 0xffffffff, 1), RangeError, 'index in use');
        big.install(0, KEY_A, KEY_B, 0xffffffff, 1); // its own index again: fine
      } finally {
        big.close();
      }
      rx.install(2, KEY_B, KEY_A, INDEX_B, INDEX_A);
      assert.deepEqual(openAll(rx, [m0]).verdicts, [2], 'a fresh replay window');
    } finally {
      close();
    }
  });

  it('validates arguments (TypeError, RangeError) and refuses a closed table', () => {
    const io = loadNativeIo();
    const s = new NativeTransportSessions(2);
    try {
      s.install(0, KEY_A, KEY_B, 1, 2);
      const out = Buffer.alloc(100);
      assert.throws(() => s.seal(0, V4, out, 60), RangeError);
      assert.throws(() => s.seal(2, V4, out, 0), RangeError);
      assert.throws(() => s.seal(-1, V4, out, 0), RangeError);
      assert.throws(() => s.seal(0.5, V4, out, 0), RangeError);
      assert.throws(() => s.install(0, KEY_A.subarray(1), KEY_B, 1, 2), RangeError);
      assert.throws(() => s.install(0, KEY_A, KEY_B, 2 ** 32, 2), RangeError);
      assert.throws(() => s.install(0, 'key' as unknown as Uint8Array, KEY_B, 1, 2), TypeError);
      assert.throws(() => s.stats(0, new Float64Array(5)), RangeError);
      assert.throws(() => s.stats(0, new Uint32Array(6) as unknown as Float64Array), TypeError);
      const batch = {
        buffer: Buffer.alloc(10),
        offsets: new Uint32Array(2),
        lengths: new Uint32Array(2),
        count: 2,
      };
      assert.throws(() => s.open(batch, new Int32Array(1)), RangeError);
      assert.throws(
        () => s.open({ ...batch, lengths: new Uint32Array([5, 11]) }, new Int32Array(2)),
        RangeError,
      );
      assert.throws(() => io.wgStats({} as never, 0, new Float64Array(6)), TypeError);
      assert.throws(() => io.wgSessionsCreate(0), RangeError);
      const f = new OutboundBatch(1);
      assert.throws(() => f.setSession(0, 1), RangeError);
    } finally {
      s.close();
      s.close();
    }
    assert.throws(
      () => io.wgStats(s.handle, 0, new Float64Array(6)),
      (e: Error & { code?: string }) => e.code === 'ERR_WG_CLOSED',
    );
    io.wgClose(s.handle); // idempotent
  });
});

describe('sealed super-packets over a UdpTunnel pair (UDP GSO out, UDP GRO in, one wgOpen per batch)', () => {
  const SRC = '10.30.0.10';
  const DST = '10.18.0.66';
  const MSS = 1400;
  const payload = Buffer.from(Array.from({ length: 65000 }, (_, i) => (i * 7 + (i >> 8)) & 0xff));
  const superPacket = withPartialChecksum(
    buildTcp({
      src: SRC,
      dst: DST,
      ttl: 63,
      ipId: 100,
      dontFragment: true,
      srcPort: 40000,
      dstPort: 5201,
      seq: 1000,
      ack: 1,
      window: 500,
      flags: TcpFlag.Ack | TcpFlag.Psh,
      payload,
    }),
  );
  const segments = Math.ceil(payload.length / MSS);

  it('delivers exactly the segments the unsealed path does, GSO used on send and GRO on receive', async () => {
    const txKeys = new NativeTransportSessions(4);
    const rxKeys = new NativeTransportSessions(4);
    txKeys.install(3, KEY_A, KEY_B, INDEX_A, INDEX_B);
    rxKeys.install(1, KEY_B, KEY_A, INDEX_B, INDEX_A);
    const a = UdpTunnel.open({ offload: true, sessions: txKeys });
    const sealedRx = UdpTunnel.open({ offload: true, batchSize: 16 });
    const plainRx = UdpTunnel.open({ offload: true, batchSize: 16 });
    try {
      assert.ok(a.offloads.gso && sealedRx.offloads.gro, 'this kernel has UDP GSO and GRO');
      const sealed = new Collector<Buffer>();
      const plain = new Collector<Buffer>();
      let opens = 0;
      let groRuns = 0;
      const verdicts = new Int32Array(16 * 128);
      sealedRx.start((batch) => {
        for (let i = 1; i < batch.count; i++)
          if (batch.offsets[i] === batch.offsets[i - 1]! + batch.lengths[i - 1]!) groRuns++;
        rxKeys.open(batch, verdicts); // the whole batch, one call
        opens++;
        for (let i = 0; i < batch.count; i++) {
          assert.equal(verdicts[i], 1, `datagram ${i} of a batch of ${batch.count}`);
          const o = batch.offsets[i]!;
          sealed.push(Buffer.from(batch.buffer.subarray(o, o + batch.lengths[i]!)));
        }
      });
      plainRx.start((batch) => {
        for (let i = 0; i < batch.count; i++) {
          const o = batch.offsets[i]!;
          plain.push(Buffer.from(batch.buffer.subarray(o, o + batch.lengths[i]!)));
        }
      });
      const out = new OutboundBatch(2);
      out.reset(Buffer.concat([superPacket, superPacket]));
      out.pushTo(0, superPacket.length, endpoint('127.0.0.1', sealedRx.port), 0, MSS, 3);
      out.pushTo(superPacket.length, superPacket.length, endpoint('127.0.0.1', plainRx.port), 0, MSS);
      const result = a.send(out);
      assert.deepEqual({ ...result }, { sent: 2 * segments, failed: 0 });
      assert.ok(a.gsoMessages >= 2, `${a.gsoMessages} GSO messages`);
      const [got, want] = await Promise.all([sealed.take(segments), plain.take(segments)]);
      got.forEach((g, k) => assert.ok(g.equals(want[k]!), `segment ${k} differs`));
      assert.ok(groRuns > 0, 'the sealed datagrams came in GRO runs');
      assert.ok(opens < segments, `${opens} wgOpen calls for ${segments} datagrams`);
      const s = stats(txKeys, 3);
      assert.equal(s[SessionStat.PacketsOut], segments);
      assert.equal(stats(rxKeys, 1)[SessionStat.PacketsIn], segments);
      assert.equal(a.sealDropped, 0);

      // a slot without keys (and a table-less tunnel) drops instead of sending plaintext
      txKeys.remove(3);
      const again = a.send(out);
      assert.deepEqual({ ...again }, { sent: segments, failed: segments });
      assert.equal(a.sealDropped, segments);
      const bare = UdpTunnel.open({ offload: true });
      try {
        assert.deepEqual({ ...bare.send(out) }, { sent: segments, failed: segments });
      } finally {
        bare.close();
      }
      // a slot outside the table, or below -1, is a bug: RangeError, nothing sent
      out.setSession(0, 4);
      assert.throws(() => a.send(out), RangeError);
      out.setSession(0, -2);
      assert.throws(() => a.send(out), RangeError);
      await plain.take(2 * segments);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(sealed.length, 0, 'nothing arrived from the unsealable packets');
    } finally {
      a.close();
      sealedRx.close();
      plainRx.close();
      txKeys.close();
      rxKeys.close();
    }
  });
});
