import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createSeededRandom, randomBytes } from './build.ts';
import {
  applyChecksumDelta,
  finishChecksum,
  foldSum,
  internetChecksum,
  onesComplementSum,
  pseudoHeaderSum,
  updateChecksum16,
  wordDelta,
} from './checksum.ts';

/** The most literal RFC 1071 implementation: add words with end-around carry after every addition. */
function naiveChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += ((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0);
    if (sum > 0xffff) sum -= 0xffff;
  }
  return ~sum & 0xffff;
}

test('RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2', () => {
  const b = Buffer.from('0001f203f4f5f6f7', 'hex');
  assert.equal(onesComplementSum(b, 0, b.length), 0xddf2);
  assert.equal(internetChecksum(b, 0, b.length), 0x220d);
});

test('odd length pads the last byte with zero', () => {
  const b = Buffer.from('0102ab', 'hex');
  assert.equal(onesComplementSum(b, 0, 3), 0x0102 + 0xab00);
  assert.equal(onesComplementSum(b, 2, 1), 0xab00);
  assert.equal(onesComplementSum(b, 0, 0), 0);
});

test('full sum matches a naive implementation on random ranges, including odd offsets and 64 KiB', () => {
  const random = createSeededRandom(1071);
  for (let i = 0; i < 300; i++) {
    const b = randomBytes(random, Math.floor(random() * 3000));
    const off = Math.floor(random() * Math.min(7, b.length + 1));
    const len = Math.floor(random() * (b.length - off + 1));
    assert.equal(internetChecksum(b, off, len), naiveChecksum(b.subarray(off, off + len)));
  }
  const big = Buffer.alloc(70000, 0xff);
  assert.equal(internetChecksum(big, 0, big.length), naiveChecksum(big));
  assert.equal(internetChecksum(big, 1, 65535), naiveChecksum(big.subarray(1, 65536)));
});

test('full sum rejects ranges outside the buffer', () => {
  const b = Buffer.alloc(4);
  assert.throws(() => onesComplementSum(b, 2, 3), RangeError);
  assert.throws(() => onesComplementSum(b, -1, 1), RangeError);
});

test('foldSum folds end-around carries, also beyond 32 bits', () => {
  assert.equal(foldSum(0), 0);
  assert.equal(foldSum(0xffff), 0xffff);
  assert.equal(foldSum(0x10000), 1);
  assert.equal(foldSum(0x1fffe), 0xffff);
  assert.equal(foldSum(2 ** 40 + 5), foldSum(2 ** 40 % 0xffff) + 5);
  assert.equal(finishChecksum(0x1fffe), 0);
});

test('RFC 1624 incremental update equals a full recomputation for random word changes', () => {
  const random = createSeededRandom(1624);
  for (let i = 0; i < 3000; i++) {
    const words = 1 + Math.floor(random() * 40);
    const b = randomBytes(random, words * 2);
    let checksum = internetChecksum(b, 0, b.length);
    const changes = 1 + Math.floor(random() * 4);
    let delta = 0;
    for (let c = 0; c < changes; c++) {
      const at = Math.floor(random() * words) * 2;
      const oldWord = b.readUInt16BE(at);
      const newWord = random() < 0.1 ? oldWord : Math.floor(random() * 0x10000);
      b.writeUInt16BE(newWord, at);
      if (random() < 0.5) checksum = updateChecksum16(checksum, oldWord, newWord);
      else delta += oldWord === newWord ? 0 : wordDelta(oldWord, newWord);
    }
    checksum = applyChecksumDelta(checksum, delta);
    assert.equal(checksum, internetChecksum(b, 0, b.length), `case ${i}`);
  }
});

test('RFC 1624 §4 example: 0xdd2f checksum, word 0x5555 becomes 0x3285', () => {
  // HC = 0xdd2f, m = 0x5555, m' = 0x3285 gives HC' = 0x0000 by eqn. 3 (eqn. 2 would give 0xffff).
  assert.equal(updateChecksum16(0xdd2f, 0x5555, 0x3285), 0x0000);
});

test('a zero delta and an unchanged word leave the checksum bit-identical', () => {
  for (const c of [0, 1, 0x1234, 0xfffe, 0xffff]) {
    assert.equal(applyChecksumDelta(c, 0), c);
    assert.equal(updateChecksum16(c, 0xabcd, 0xabcd), c);
  }
});

test('pseudoHeaderSum equals the sum of the literal IPv4 and IPv6 pseudo-headers', () => {
  const random = createSeededRandom(768);
  for (let i = 0; i < 200; i++) {
    const v6 = random() < 0.5;
    const n = v6 ? 16 : 4;
    const packet = randomBytes(random, 2 * n + 3);
    const proto = Math.floor(random() * 256);
    const len = Math.floor(random() * 0x10000);
    const literal = Buffer.alloc(v6 ? 40 : 12);
    packet.copy(literal, 0, 3, 3 + 2 * n);
    if (v6) {
      literal.writeUInt32BE(len, 32);
      literal[39] = proto;
    } else {
      literal[9] = proto;
      literal.writeUInt16BE(len, 10);
    }
    assert.equal(
      pseudoHeaderSum(packet, 3, 3 + n, n, proto, len),
      onesComplementSum(literal, 0, literal.length),
    );
  }
});
