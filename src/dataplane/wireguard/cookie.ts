/**
 * @module dataplane/wireguard/cookie
 * WireGuard's cookies (whitepaper 5.3, 5.4.7): how a responder under load makes an initiator prove that it owns
 * its source address before it spends a DH on it.
 *
 * Responder: a `CookieChecker` checks MAC1 (keyed by HASH("mac1----" || own public key)) on every handshake
 * message; under load it also wants MAC2 = MAC(cookie, message up to MAC2), where the cookie is
 * MAC(secret, source address bytes) and the secret is random, renewed every COOKIE_REFRESH_TIME. A message
 * without a valid MAC2 is answered with a cookie reply (type 3, 64 bytes): the cookie sealed with
 * XChaCha20-Poly1305 under HASH("cookie--" || own public key), a random 24-byte nonce, the message's MAC1 as
 * associated data. Initiator: `consumeCookieReply` opens it with the peer's public key and the MAC1 it sent
 * last, and keeps the cookie COOKIE_REFRESH_TIME for the MAC2 of its next messages.
 */
import { randomBytes } from 'node:crypto';
import {
  COOKIE_BYTES,
  COOKIE_REFRESH_TIME,
  COOKIE_REPLY_BYTES,
  CookieReplyField,
  KEY_BYTES,
  LABEL_COOKIE,
  MAC_BYTES,
  MessageType,
  XNONCE_BYTES,
} from './constants.ts';
import { mac1Key, mac1Offset, verifyMac1 } from './handshake.ts';
import { equalBytes, hash, mac, xaeadOpen, xaeadSeal } from './primitives.ts';

/** The key cookie replies from the owner of `publicKey` are sealed with: HASH("cookie--" || publicKey). */
export function cookieKey(publicKey: Uint8Array): Buffer {
  return hash(Buffer.from(LABEL_COOKIE), publicKey);
}

/** The responder's side: checks MAC1 and MAC2 of handshake messages to it and makes cookie replies. */
export class CookieChecker {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private secret: Buffer = Buffer.alloc(KEY_BYTES);
  /** When the secret was made; -Infinity: never (the first use makes one). */
  private secretMadeAt = -Infinity;

  /**
   * @param localPublic the responder's static public key
   * @param random source of the secret and the nonces (tests pass a deterministic one)
   */
  constructor(
    localPublic: Uint8Array,
    private readonly random: (n: number) => Uint8Array = randomBytes,
  ) {
    if (localPublic.length !== KEY_BYTES) throw new RangeError(`a public key is ${KEY_BYTES} bytes`);
    this.mac1Key = mac1Key(localPublic);
    this.cookieKey = cookieKey(localPublic);
  }

  /** True when the initiation or response carries the right MAC1 for this responder. */
  checkMac1(message: Uint8Array): boolean {
    return verifyMac1(message, this.mac1Key);
  }

  /**
   * True when the message carries the MAC2 of the cookie this responder gives `source` (the sender's address
   * and port as the tunnel names them) now. False while the secret is older than COOKIE_REFRESH_TIME (no
   * cookie given under it counts any more) or before any cookie was given.
   */
  checkMac2(message: Uint8Array, source: Uint8Array, nowMs: number = Date.now()): boolean {
    const at = mac1Offset(message);
    if (at < 0 || nowMs - this.secretMadeAt > COOKIE_REFRESH_TIME) return false;
    const cookie = mac(this.secret, source);
    const end = at + MAC_BYTES;
    return equalBytes(mac(cookie, message.subarray(0, end)), message.subarray(end, end + MAC_BYTES));
  }

  /**
   * A 64-byte cookie reply to a handshake message: `receiverIndex` is that message's sender index, `mac1` its
   * MAC1, `source` the address it came from. Renews the secret when it is older than COOKIE_REFRESH_TIME.
   */
  createReply(
    receiverIndex: number,
    mac1: Uint8Array,
    source: Uint8Array,
    nowMs: number = Date.now(),
  ): Buffer {
    if (mac1.length !== MAC_BYTES) throw new RangeError(`a MAC1 is ${MAC_BYTES} bytes`);
    if (nowMs - this.secretMadeAt > COOKIE_REFRESH_TIME) {
      this.secret = Buffer.from(this.random(KEY_BYTES));
      this.secretMadeAt = nowMs;
    }
    const cookie = mac(this.secret, source);
    const nonce = this.random(XNONCE_BYTES);
    const reply = Buffer.alloc(COOKIE_REPLY_BYTES);
    reply[0] = MessageType.CookieReply;
    reply.writeUInt32LE(receiverIndex >>> 0, CookieReplyField.Receiver);
    reply.set(nonce, CookieReplyField.Nonce);
    reply.set(xaeadSeal(this.cookieKey, nonce, cookie, mac1), CookieReplyField.Cookie);
    return reply;
  }
}

/** A cookie an initiator holds: MAC2 key of its messages to that responder until `expiresAt`. */
export interface HeldCookie {
  readonly cookie: Uint8Array;
  /** The index the reply was addressed to (the sender index of the message it answers). */
  readonly receiverIndex: number;
  /** Milliseconds (the clock of `nowMs`) after which the cookie must not be used. */
  readonly expiresAt: number;
}

/**
 * Opens a cookie reply from the responder whose static public key is `peerPublic`, to the message whose MAC1
 * was `lastSentMac1`. Null when it is not a well-formed cookie reply or does not authenticate (another
 * responder, another message, tampered).
 */
export function consumeCookieReply(
  message: Uint8Array,
  peerPublic: Uint8Array,
  lastSentMac1: Uint8Array | null | undefined,
  nowMs: number = Date.now(),
): HeldCookie | null {
  if (message.length !== COOKIE_REPLY_BYTES || message[0] !== MessageType.CookieReply) return null;
  if (message[1] !== 0 || message[2] !== 0 || message[3] !== 0) return null;
  if (!lastSentMac1 || lastSentMac1.length !== MAC_BYTES || peerPublic.length !== KEY_BYTES) return null;
  const nonce = message.subarray(CookieReplyField.Nonce, CookieReplyField.Cookie);
  const sealed = message.subarray(CookieReplyField.Cookie);
  const cookie = xaeadOpen(cookieKey(peerPublic), nonce, sealed, lastSentMac1);
  if (!cookie || cookie.length !== COOKIE_BYTES) return null;
  const receiverIndex = Buffer.from(message.buffer, message.byteOffset, message.byteLength).readUInt32LE(
    CookieReplyField.Receiver,
  );
  return { cookie, receiverIndex, expiresAt: nowMs + COOKIE_REFRESH_TIME };
}
