/**
 * @module dataplane/wireguard/keys
 * Static key pairs and their text form. `wg genkey` / `wg pubkey` write a key as standard base64 of its 32
 * bytes (44 characters, one '=' of padding); that is the only form accepted here, so a key typed into a config
 * file, an environment variable or a flag either is exactly a key or is refused with a clear InvalidInputError.
 */
import { randomBytes } from 'node:crypto';
import { InvalidInputError } from '../../errors.ts';
import { KEY_BYTES } from './constants.ts';
import { dh, privateKeyObject, publicKeyOf } from './primitives.ts';
import type { KeyObject } from 'node:crypto';

const BASE64_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** Parses a key in `wg`'s base64 form (44 characters decoding to exactly 32 bytes). */
export function parseKey(text: string, what = 'WireGuard key'): Buffer {
  const trimmed = text.trim();
  if (trimmed.length !== 44 || !BASE64_KEY.test(trimmed)) {
    throw new InvalidInputError(
      `${what} must be 44 characters of base64 (as "wg genkey" prints), got ${trimmed.length} characters` +
        (trimmed.length === 44 ? ' that are not base64 of 32 bytes' : ''),
    );
  }
  const bytes = Buffer.from(trimmed, 'base64');
  if (bytes.length !== KEY_BYTES)
    throw new InvalidInputError(`${what} does not decode to ${KEY_BYTES} bytes`);
  return bytes;
}

/** The `wg` text form of a 32-byte key. */
export function formatKey(key: Uint8Array): string {
  if (key.length !== KEY_BYTES) throw new RangeError(`a key is ${KEY_BYTES} bytes, got ${key.length}`);
  return Buffer.from(key).toString('base64');
}

/** Clamps a private key as X25519 does (RFC 7748 5): clear bits 0-2 and 255, set bit 254. Returns a copy. */
export function clampPrivateKey(key: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new RangeError(`a key is ${KEY_BYTES} bytes, got ${key.length}`);
  const out = Buffer.from(key);
  out[0] = (out[0] ?? 0) & 248;
  out[31] = ((out[31] ?? 0) & 127) | 64;
  return out;
}

/** A static key pair: the raw keys and the private KeyObject that DH uses. */
export class KeyPair {
  readonly privateKey: Buffer;
  readonly publicKey: Buffer;
  /** The private key as node:crypto needs it (imported once). */
  readonly privateKeyObject: KeyObject;

  private constructor(privateKey: Buffer) {
    this.privateKey = privateKey;
    this.privateKeyObject = privateKeyObject(privateKey);
    this.publicKey = publicKeyOf(privateKey);
  }

  /** A fresh random key pair, its private key clamped (as `wg genkey` writes it). */
  static generate(): KeyPair {
    return new KeyPair(clampPrivateKey(randomBytes(KEY_BYTES)));
  }

  /** The key pair of a raw 32-byte private key (stored as given; X25519 clamps when it uses it). */
  static fromPrivateKey(privateKey: Uint8Array): KeyPair {
    if (privateKey.length !== KEY_BYTES) {
      throw new InvalidInputError(`a WireGuard private key is ${KEY_BYTES} bytes, got ${privateKey.length}`);
    }
    return new KeyPair(Buffer.from(privateKey));
  }

  /** The key pair of a private key in `wg`'s base64 form. */
  static fromText(text: string): KeyPair {
    return new KeyPair(parseKey(text, 'WireGuard private key'));
  }

  /** The public key in `wg`'s base64 form. */
  publicText(): string {
    return formatKey(this.publicKey);
  }
}

let probe: KeyPair | undefined;

/**
 * Whether a 32-byte key is a usable X25519 public key: not a low-order point (DH with one gives all zeros for
 * every private key, so one probe key finds them all). WireGuard refuses such keys; a table must not hand one
 * to the tunnel.
 */
export function isUsablePublicKey(key: Uint8Array): boolean {
  probe ??= KeyPair.generate();
  return dh(probe.privateKeyObject, key) !== null;
}
