/**
 * @module dataplane/wireguard/primitives
 * The cryptographic building blocks of WireGuard (whitepaper 5.4), each a thin call into a vetted library and
 * nothing more: node:crypto (OpenSSL) for X25519, ChaCha20-Poly1305 and BLAKE2s / HMAC-BLAKE2s; @noble/hashes
 * for keyed BLAKE2s (MAC) and @noble/ciphers for XChaCha20-Poly1305, which OpenSSL lacks. Failures that input
 * from the network can cause (a tag that does not verify, an all-zero shared secret) return null; wrong sizes
 * from our own code are programmer errors and throw.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  timingSafeEqual,
} from 'node:crypto';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { KEY_BYTES, MAC_BYTES, TAG_BYTES, TIMESTAMP_BYTES, XNONCE_BYTES } from './constants.ts';

/** HASH(input...): BLAKE2s-256 of the concatenation. */
export function hash(...parts: readonly Uint8Array[]): Buffer {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** MAC(key, input): keyed BLAKE2s with a 16-byte output (RFC 7693 keyed mode), for MAC1, MAC2 and cookies. */
export function mac(key: Uint8Array, input: Uint8Array): Uint8Array {
  return blake2s(input, { key, dkLen: MAC_BYTES });
}

/** HMAC(key, input...): RFC 2104 HMAC over BLAKE2s-256 (block size 64). */
export function hmac(key: Uint8Array, ...parts: readonly Uint8Array[]): Buffer {
  const h = createHmac('blake2s256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

/** KDF1(key, input): HKDF with BLAKE2s as the whitepaper defines it, one 32-byte output. */
export function kdf1(key: Uint8Array, input: Uint8Array): Buffer {
  const prk = hmac(key, input);
  return hmac(prk, ONE);
}

/** KDF2(key, input): two 32-byte outputs. */
export function kdf2(key: Uint8Array, input: Uint8Array): [Buffer, Buffer] {
  const prk = hmac(key, input);
  const t1 = hmac(prk, ONE);
  const t2 = hmac(prk, t1, TWO);
  return [t1, t2];
}

/** KDF3(key, input): three 32-byte outputs. */
export function kdf3(key: Uint8Array, input: Uint8Array): [Buffer, Buffer, Buffer] {
  const prk = hmac(key, input);
  const t1 = hmac(prk, ONE);
  const t2 = hmac(prk, t1, TWO);
  const t3 = hmac(prk, t2, THREE);
  return [t1, t2, t3];
}

/** The 12-byte ChaCha20-Poly1305 nonce of a WireGuard counter: 4 zero bytes, then the counter u64 LE. */
export function counterNonce(counter: bigint): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(counter, 4);
  return nonce;
}

function checkKey(key: Uint8Array, what: string): void {
  if (key.length !== KEY_BYTES) throw new RangeError(`${what} must be ${KEY_BYTES} bytes, got ${key.length}`);
}

/** ChaCha20-Poly1305 (RFC 8439) with an explicit 12-byte nonce: ciphertext followed by the 16-byte tag. */
export function chachaSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Buffer {
  checkKey(key, 'AEAD key');
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** Opens what chachaSeal made; null when it is shorter than a tag or the tag does not verify. */
export function chachaOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Buffer | null {
  checkKey(key, 'AEAD key');
  if (sealed.length < TAG_BYTES) return null;
  const body = sealed.subarray(0, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  decipher.setAAD(aad, { plaintextLength: body.length });
  const out = decipher.update(body);
  try {
    decipher.final();
  } catch {
    out.fill(0);
    return null;
  }
  return out;
}

/** AEAD(key, counter, plaintext, aad) of the whitepaper: ChaCha20-Poly1305 with the counter's nonce. */
export function aeadSeal(key: Uint8Array, counter: bigint, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  return chachaSeal(key, counterNonce(counter), plaintext, aad);
}

/** Opens what aeadSeal made; null when it is shorter than a tag or the tag does not verify. */
export function aeadOpen(
  key: Uint8Array,
  counter: bigint,
  sealed: Uint8Array,
  aad: Uint8Array,
): Buffer | null {
  return chachaOpen(key, counterNonce(counter), sealed, aad);
}

/** XAEAD(key, nonce, plaintext, aad): XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) with a 24-byte nonce. */
export function xaeadSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkKey(key, 'XAEAD key');
  if (nonce.length !== XNONCE_BYTES) throw new RangeError(`XAEAD nonce must be ${XNONCE_BYTES} bytes`);
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** Opens what xaeadSeal made; null when the tag does not verify. */
export function xaeadOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Uint8Array | null {
  checkKey(key, 'XAEAD key');
  if (nonce.length !== XNONCE_BYTES) throw new RangeError(`XAEAD nonce must be ${XNONCE_BYTES} bytes`);
  if (sealed.length < TAG_BYTES) return null;
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(sealed);
  } catch {
    return null;
  }
}

// PKCS#8 wrapping of a raw X25519 private key (RFC 8410): SEQUENCE { version 0, AlgorithmIdentifier
// id-X25519, OCTET STRING { OCTET STRING key } }. A private key imports without its public half this way.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** A node:crypto KeyObject of a raw 32-byte X25519 private key. */
export function privateKeyObject(privateKey: Uint8Array): KeyObject {
  checkKey(privateKey, 'X25519 private key');
  return createPrivateKey({
    key: Buffer.concat([PKCS8_X25519_PREFIX, privateKey]),
    format: 'der',
    type: 'pkcs8',
  });
}

/** A node:crypto KeyObject of a raw 32-byte X25519 public key (JWK import: any 32 bytes are a u-coordinate). */
export function publicKeyObject(publicKey: Uint8Array): KeyObject {
  checkKey(publicKey, 'X25519 public key');
  return createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(publicKey).toString('base64url') },
    format: 'jwk',
  });
}

function rawPublic(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('X25519 key export without x');
  return Buffer.from(jwk.x, 'base64url');
}

/** DH_PUBKEY(private): the X25519 public key of a raw private key (clamping is part of X25519). */
export function publicKeyOf(privateKey: Uint8Array): Buffer {
  return rawPublic(createPublicKey(privateKeyObject(privateKey)));
}

/** DH_GENERATE(): a fresh X25519 key pair as raw bytes. */
export function generateKeyPairRaw(): { privateKey: Buffer; publicKey: Buffer } {
  const { privateKey } = generateKeyPairSync('x25519');
  const jwk = privateKey.export({ format: 'jwk' });
  if (typeof jwk.d !== 'string' || typeof jwk.x !== 'string')
    throw new Error('X25519 key export without d/x');
  return { privateKey: Buffer.from(jwk.d, 'base64url'), publicKey: Buffer.from(jwk.x, 'base64url') };
}

/**
 * DH(private, public): the X25519 shared secret, or null when it is all zero (a low-order public key: the
 * whitepaper's and RFC 7748's check; OpenSSL refuses to derive it) or the public key is not 32 bytes.
 */
export function dh(privateKey: Uint8Array | KeyObject, publicKey: Uint8Array): Buffer | null {
  if (publicKey.length !== KEY_BYTES) return null;
  let shared: Buffer;
  try {
    shared = diffieHellman({
      privateKey: privateKey instanceof Uint8Array ? privateKeyObject(privateKey) : privateKey,
      publicKey: publicKeyObject(publicKey),
    });
  } catch {
    return null;
  }
  return isZero(shared) ? null : shared;
}

/** True when every byte is 0, in time independent of the contents. */
export function isZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const b of bytes) acc |= b;
  return acc === 0;
}

/** Constant-time equality (length differences are not secret). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// TAI64N: an 8-byte big-endian TAI64 label (2^62 + TAI seconds; TAI runs 10 s ahead of the Unix epoch's
// seconds in the label as wireguard-go and the kernel write it) and 4 big-endian nanoseconds.
const TAI64_BASE = 2n ** 62n + 10n;
/** Nanoseconds are rounded down to a multiple of 2^24 (~16.8 ms), as wireguard-go does, not to leak a fine clock. */
const WHITENER_MASK = 0x1000000 - 1;

/** TAI64N(now): the 12-byte timestamp of `nowMs` (milliseconds since the Unix epoch). */
export function tai64n(nowMs: number): Buffer {
  const seconds = Math.floor(nowMs / 1000);
  const nanos = Math.floor((nowMs - seconds * 1000) * 1e6);
  const out = Buffer.alloc(TIMESTAMP_BYTES);
  out.writeBigUInt64BE(TAI64_BASE + BigInt(seconds), 0);
  out.writeUInt32BE((nanos & ~WHITENER_MASK) >>> 0, 8);
  return out;
}

/** True when TAI64N timestamp a is strictly later than b (both 12 bytes; big-endian, so a byte compare). */
export function timestampAfter(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) > 0;
}
