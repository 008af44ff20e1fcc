import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { blake2s } from '@noble/hashes/blake2.js';
import {
  aeadOpen,
  aeadSeal,
  chachaOpen,
  chachaSeal,
  counterNonce,
  dh,
  equalBytes,
  generateKeyPairRaw,
  hash,
  hmac,
  kdf1,
  kdf2,
  kdf3,
  mac,
  publicKeyOf,
  tai64n,
  timestampAfter,
  xaeadOpen,
  xaeadSeal,
} from './primitives.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const range = (n: number, from = 0): Buffer =>
  Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

const SUNSCREEN = Buffer.from(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);

describe('HASH: BLAKE2s-256', () => {
  it('RFC 7693 appendix B: BLAKE2s-256("abc")', () => {
    assert.equal(
      hash(Buffer.from('abc')).toString('hex'),
      '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982',
    );
  });
  it('hashes the concatenation of its parts', () => {
    assert.deepEqual(hash(Buffer.from('a'), Buffer.from('bc')), hash(Buffer.from('abc')));
  });
});

describe('keyed BLAKE2s (the library under MAC), blake2s-kat: key 00..1f, input 00..n-1', () => {
  const vectors: [number, string][] = [
    [0, '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49'],
    [1, '40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1'],
    [2, '6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803'],
    [63, 'c65382513f07460da39833cb666c5ed82e61b9e998f4b0c4287cee56c3cc9bcd'],
    [64, '8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4'],
  ];
  for (const [n, want] of vectors) {
    it(`${n} bytes`, () => {
      assert.equal(Buffer.from(blake2s(range(n), { key: range(32), dkLen: 32 })).toString('hex'), want);
    });
  }
  it('MAC is keyed BLAKE2s with a 16-byte output (the digest length is a parameter, not a truncation)', () => {
    const m = mac(range(32), range(3));
    assert.equal(m.length, 16);
    assert.deepEqual(Buffer.from(m), Buffer.from(blake2s(range(3), { key: range(32), dkLen: 16 })));
    assert.notDeepEqual(
      Buffer.from(m),
      Buffer.from(blake2s(range(3), { key: range(32), dkLen: 32 })).subarray(0, 16),
    );
  });
});

describe('HMAC-BLAKE2s and the KDFs', () => {
  // No published HMAC-BLAKE2s vector: check against RFC 2104 built by hand on BLAKE2s (block size 64)
  function hmacByHand(key: Uint8Array, data: Uint8Array): Buffer {
    const k = Buffer.alloc(64);
    Buffer.from(key.length > 64 ? createHash('blake2s256').update(key).digest() : key).copy(k);
    const ipad = Buffer.from(k.map((b) => b ^ 0x36));
    const opad = Buffer.from(k.map((b) => b ^ 0x5c));
    const inner = createHash('blake2s256').update(ipad).update(data).digest();
    return createHash('blake2s256').update(opad).update(inner).digest();
  }
  it('HMAC equals RFC 2104 over BLAKE2s for short, 32-byte and long keys', () => {
    for (const key of [range(5), range(32), range(100)]) {
      assert.deepEqual(hmac(key, range(77)), hmacByHand(key, range(77)));
    }
    assert.deepEqual(hmac(range(32), range(10), range(5, 10)), hmac(range(32), range(15)));
  });
  it('KDF1/2/3 are the whitepaper HKDF chain', () => {
    const key = range(32, 7);
    const input = range(40, 3);
    const t0 = hmacByHand(key, input);
    const t1 = hmacByHand(t0, Uint8Array.of(1));
    const t2 = hmacByHand(t0, Buffer.concat([t1, Uint8Array.of(2)]));
    const t3 = hmacByHand(t0, Buffer.concat([t2, Uint8Array.of(3)]));
    assert.deepEqual(kdf1(key, input), t1);
    assert.deepEqual(kdf2(key, input), [t1, t2]);
    assert.deepEqual(kdf3(key, input), [t1, t2, t3]);
  });
});

describe('AEAD: ChaCha20-Poly1305', () => {
  const key = range(32, 0x80);
  const nonce = hex('070000004041424344454647');
  const aad = hex('50515253c0c1c2c3c4c5c6c7');
  const sealed = hex(`
    d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b
    1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
    3ff4def08e4b7a9de576d26586cec64b6116 1ae10b594f09e26a7e902ecbd0600691`);
  it('RFC 8439 2.8.2: seal', () => {
    assert.deepEqual(chachaSeal(key, nonce, SUNSCREEN, aad), sealed);
  });
  it('RFC 8439 2.8.2: open, and null on a flipped bit, wrong aad, or a short input', () => {
    assert.deepEqual(chachaOpen(key, nonce, sealed, aad), SUNSCREEN);
    const bad = Buffer.from(sealed);
    bad[5] = (bad[5] ?? 0) ^ 1;
    assert.equal(chachaOpen(key, nonce, bad, aad), null);
    assert.equal(chachaOpen(key, nonce, sealed, Buffer.alloc(0)), null);
    assert.equal(chachaOpen(key, nonce, sealed.subarray(0, 15), aad), null);
  });
  it('the WireGuard nonce is 4 zero bytes and the counter u64 little-endian', () => {
    assert.equal(counterNonce(0x0102030405060708n).toString('hex'), '000000000807060504030201');
    assert.equal(counterNonce(2n ** 64n - 1n).toString('hex'), '00000000ffffffffffffffff');
    const c = 0x4746454443424140n; // the RFC nonce without its 07000000 prefix cannot be expressed: check framing
    assert.deepEqual(aeadSeal(key, c, SUNSCREEN, aad), chachaSeal(key, counterNonce(c), SUNSCREEN, aad));
    assert.deepEqual(aeadOpen(key, c, aeadSeal(key, c, SUNSCREEN, aad), aad), SUNSCREEN);
    assert.equal(aeadOpen(key, c + 1n, aeadSeal(key, c, SUNSCREEN, aad), aad), null);
    assert.equal(aeadSeal(key, 0n, new Uint8Array(0), aad).length, 16);
  });
});

describe('XAEAD: XChaCha20-Poly1305', () => {
  const key = range(32, 0x80);
  const nonce = range(24, 0x40);
  const aad = hex('50515253c0c1c2c3c4c5c6c7');
  const sealed = hex(`
    bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39
    ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
    21f9664c97637da9768812f615c68b13b52e c0875924c1c7987947deafd8780acf49`);
  it('draft-irtf-cfrg-xchacha-03 A.3.1: seal and open', () => {
    assert.deepEqual(Buffer.from(xaeadSeal(key, nonce, SUNSCREEN, aad)), sealed);
    assert.deepEqual(Buffer.from(xaeadOpen(key, nonce, sealed, aad) ?? []), SUNSCREEN);
  });
  it('null on tampering and a wrong aad', () => {
    const bad = Buffer.from(sealed);
    bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 0x80;
    assert.equal(xaeadOpen(key, nonce, bad, aad), null);
    assert.equal(xaeadOpen(key, nonce, sealed, range(3)), null);
    assert.equal(xaeadOpen(key, nonce, sealed.subarray(0, 8), aad), null);
  });
});

describe('DH: X25519', () => {
  it('RFC 7748 5.2: the two scalar multiplication vectors', () => {
    assert.equal(
      dh(
        hex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'),
        hex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c'),
      )?.toString('hex'),
      'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
    );
    assert.equal(
      dh(
        hex('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d'),
        hex('e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493'),
      )?.toString('hex'),
      '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957',
    );
  });
  it('RFC 7748 6.1: public keys and the shared secret of Alice and Bob', () => {
    const alice = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const bob = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
    const alicePub = publicKeyOf(alice);
    const bobPub = publicKeyOf(bob);
    assert.equal(
      alicePub.toString('hex'),
      '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
    );
    assert.equal(bobPub.toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
    assert.equal(dh(alice, bobPub)?.toString('hex'), shared);
    assert.equal(dh(bob, alicePub)?.toString('hex'), shared);
  });
  it('refuses an all-zero shared secret (low-order points) and a public key of the wrong size', () => {
    const { privateKey } = generateKeyPairRaw();
    assert.equal(dh(privateKey, new Uint8Array(32)), null);
    const one = new Uint8Array(32);
    one[0] = 1;
    assert.equal(dh(privateKey, one), null);
    // a point of order 8 (RFC 7748 / libsodium's blocklist)
    assert.equal(
      dh(privateKey, hex('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800')),
      null,
    );
    assert.equal(dh(privateKey, new Uint8Array(31)), null);
  });
  it('generated key pairs agree', () => {
    const a = generateKeyPairRaw();
    const b = generateKeyPairRaw();
    assert.deepEqual(publicKeyOf(a.privateKey), a.publicKey);
    assert.deepEqual(dh(a.privateKey, b.publicKey), dh(b.privateKey, a.publicKey));
  });
});

describe('TAI64N', () => {
  it('is 8 bytes of 2^62 + 10 + seconds and 4 bytes of nanoseconds, big-endian, whitened to 2^24 ns', () => {
    const t = tai64n(1_700_000_000_123);
    assert.equal(t.length, 12);
    assert.equal(t.readBigUInt64BE(0), 2n ** 62n + 10n + 1_700_000_000n);
    const nanos = t.readUInt32BE(8);
    assert.equal(nanos % 2 ** 24, 0);
    assert.ok(nanos <= 123_000_000 && nanos > 123_000_000 - 2 ** 24);
    assert.equal(tai64n(0).toString('hex'), '400000000000000a00000000');
  });
  it('orders by time: later is after, equal is not', () => {
    assert.ok(timestampAfter(tai64n(2_000), tai64n(1_000)));
    assert.ok(timestampAfter(tai64n(1_500), tai64n(1_000)));
    assert.ok(!timestampAfter(tai64n(1_000), tai64n(1_000)));
    assert.ok(!timestampAfter(tai64n(1_000), tai64n(1_001))); // within one whitening step: equal
    assert.ok(!timestampAfter(tai64n(999), tai64n(1_000)));
  });
});

describe('constant-time compare', () => {
  it('compares contents and lengths', () => {
    assert.ok(equalBytes(range(16), range(16)));
    assert.ok(!equalBytes(range(16), range(16, 1)));
    assert.ok(!equalBytes(range(16), range(15)));
  });
});
