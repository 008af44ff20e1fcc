/**
 * @module dataplane/wireguard/handshake
 * The Noise_IKpsk2 handshake of WireGuard (whitepaper 5.4.2-5.4.5) as four pure steps, initiator and responder:
 *
 *   initiator                                   responder
 *   createInitiation  -- 148 bytes, type 1 -->  consumeInitiation (peer's static key, its TAI64N timestamp)
 *   consumeResponse   <--  92 bytes, type 2 --  createResponse    (session keys)
 *
 * Each step takes the state of the one before and returns a new one (nothing is mutated), so a caller keeps
 * as many handshakes in flight as it likes. Every message carries MAC1 (keyed by the receiver's public key)
 * and, when the sender holds a cookie from the receiver (cookie.ts), MAC2. What the caller decides: whether
 * the peer a `consumeInitiation` found is known, and whether its timestamp is later than the last one accepted
 * from it (replay protection of initiations); MAC2 and load are the CookieChecker's. Malformed or forged input
 * returns null, never throws.
 */
import {
  CONSTRUCTION,
  IDENTIFIER,
  INITIATION_BYTES,
  InitiationField,
  KEY_BYTES,
  LABEL_MAC1,
  MAC_BYTES,
  MessageType,
  RESPONSE_BYTES,
  ResponseField,
} from './constants.ts';
import { type KeyPair } from './keys.ts';
import {
  aeadOpen,
  aeadSeal,
  dh,
  equalBytes,
  generateKeyPairRaw,
  hash,
  kdf1,
  kdf2,
  kdf3,
  mac,
  privateKeyObject,
  tai64n,
} from './primitives.ts';

const EMPTY = new Uint8Array(0);
const ZERO_PSK = new Uint8Array(KEY_BYTES);

/** C_i = HASH(CONSTRUCTION): the initial chaining key. */
export const INITIAL_CHAINING_KEY: Buffer = hash(Buffer.from(CONSTRUCTION));
/** H_i = HASH(C_i || IDENTIFIER): the initial hash. */
export const INITIAL_HASH: Buffer = hash(INITIAL_CHAINING_KEY, Buffer.from(IDENTIFIER));

/** The key of MAC1 on messages to the owner of `publicKey`: HASH(LABEL_MAC1 || publicKey). */
export function mac1Key(publicKey: Uint8Array): Buffer {
  return hash(Buffer.from(LABEL_MAC1), publicKey);
}

/** Where MAC1 sits in a handshake message (initiation or response), or -1 for any other message. */
export function mac1Offset(message: Uint8Array): number {
  if (message.length === INITIATION_BYTES && message[0] === MessageType.Initiation)
    return InitiationField.Mac1;
  if (message.length === RESPONSE_BYTES && message[0] === MessageType.Response) return ResponseField.Mac1;
  return -1;
}

/** A copy of a handshake message's MAC1 (what a cookie reply to it is bound to), or null. */
export function messageMac1(message: Uint8Array): Uint8Array | null {
  const at = mac1Offset(message);
  return at < 0 ? null : Uint8Array.from(message.subarray(at, at + MAC_BYTES));
}

/** Writes MAC1 (key: the receiver's) and MAC2 (cookie, or zeros) over the tail of a handshake message. */
function writeMacs(message: Buffer, receiverPublic: Uint8Array, cookie: Uint8Array | undefined): void {
  const at = message.length - 2 * MAC_BYTES;
  message.set(mac(mac1Key(receiverPublic), message.subarray(0, at)), at);
  if (cookie) message.set(mac(cookie, message.subarray(0, at + MAC_BYTES)), at + MAC_BYTES);
  else message.fill(0, at + MAC_BYTES);
}

/** True when a handshake message's MAC1 is right for a receiver whose MAC1 key is `key`. */
export function verifyMac1(message: Uint8Array, key: Uint8Array): boolean {
  const at = mac1Offset(message);
  if (at < 0) return false;
  return equalBytes(mac(key, message.subarray(0, at)), message.subarray(at, at + MAC_BYTES));
}

function reservedZero(message: Uint8Array): boolean {
  return message[1] === 0 && message[2] === 0 && message[3] === 0;
}

function u32(message: Uint8Array, at: number): number {
  return Buffer.from(message.buffer, message.byteOffset, message.byteLength).readUInt32LE(at);
}

/** Session keys of a finished handshake: 32-byte ChaCha20-Poly1305 keys, as TransportSessions.install takes. */
export interface SessionKeys {
  readonly send: Buffer;
  readonly recv: Buffer;
}

/** What the initiator keeps between its initiation and the response. */
export interface InitiatorState {
  readonly local: KeyPair;
  readonly peerPublic: Uint8Array;
  readonly psk: Uint8Array;
  /** The index the initiation named as its sender: the response's receiver index. */
  readonly senderIndex: number;
  readonly chainingKey: Buffer;
  readonly hash: Buffer;
  readonly ephemeralPrivate: Buffer;
  /** MAC1 of the initiation, to which a cookie reply must be bound. */
  readonly mac1: Uint8Array;
}

/** What the responder keeps between a consumed initiation and its response. */
export interface ResponderState {
  readonly local: KeyPair;
  readonly peerPublic: Buffer;
  /** The initiator's sender index: the response's receiver index and the remote index of the session. */
  readonly remoteIndex: number;
  readonly chainingKey: Buffer;
  readonly hash: Buffer;
  readonly peerEphemeral: Buffer;
}

/** A sealed handshake message and what its sender keeps. */
export interface Outgoing<S> {
  readonly message: Buffer;
  readonly state: S;
}

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index > 0xffffffff) throw new RangeError(`bad index ${index}`);
}

function checkPsk(psk: Uint8Array): void {
  if (psk.length !== KEY_BYTES) throw new RangeError(`a preshared key is ${KEY_BYTES} bytes`);
}

/**
 * The first message (5.4.2). `senderIndex` is the local index the session will have, `nowMs` the clock for
 * the TAI64N timestamp, `cookie` the last cookie the responder gave (valid: cookie.ts) for MAC2. Throws only
 * when `peerPublic` is a low-order key (the caller's configuration is wrong).
 */
export function createInitiation(
  local: KeyPair,
  peerPublic: Uint8Array,
  psk: Uint8Array | undefined,
  senderIndex: number,
  nowMs: number,
  cookie?: Uint8Array,
): Outgoing<InitiatorState> {
  checkIndex(senderIndex);
  const key = psk ?? ZERO_PSK;
  checkPsk(key);
  if (peerPublic.length !== KEY_BYTES) throw new RangeError(`a public key is ${KEY_BYTES} bytes`);
  const msg = Buffer.alloc(INITIATION_BYTES);
  msg[0] = MessageType.Initiation;
  msg.writeUInt32LE(senderIndex, InitiationField.Sender);

  let h = hash(INITIAL_HASH, peerPublic);
  const ephemeral = generateKeyPairRaw();
  let c = kdf1(INITIAL_CHAINING_KEY, ephemeral.publicKey);
  msg.set(ephemeral.publicKey, InitiationField.Ephemeral);
  h = hash(h, ephemeral.publicKey);

  const es = dh(ephemeral.privateKey, peerPublic);
  const ss = dh(local.privateKeyObject, peerPublic);
  if (!es || !ss) throw new RangeError('the peer public key is a low-order point');
  let k: Buffer;
  [c, k] = kdf2(c, es);
  const encStatic = aeadSeal(k, 0n, local.publicKey, h);
  msg.set(encStatic, InitiationField.Static);
  h = hash(h, encStatic);

  [c, k] = kdf2(c, ss);
  const encTimestamp = aeadSeal(k, 0n, tai64n(nowMs), h);
  msg.set(encTimestamp, InitiationField.Timestamp);
  h = hash(h, encTimestamp);

  writeMacs(msg, peerPublic, cookie);
  const mac1 = Uint8Array.from(msg.subarray(InitiationField.Mac1, InitiationField.Mac2));
  return {
    message: msg,
    state: {
      local,
      peerPublic: Uint8Array.from(peerPublic),
      psk: Uint8Array.from(key),
      senderIndex,
      chainingKey: c,
      hash: h,
      ephemeralPrivate: ephemeral.privateKey,
      mac1,
    },
  };
}

/** What a valid initiation told the responder. */
export interface ConsumedInitiation {
  /** The initiator's static public key (the caller checks it is a known peer). */
  readonly peerPublic: Buffer;
  /** Its 12-byte TAI64N timestamp (the caller checks it is later than the last one accepted from that peer). */
  readonly timestamp: Buffer;
  readonly state: ResponderState;
}

/**
 * Opens an initiation addressed to `local` (5.4.2, responder side): checks its size, type, MAC1 and both
 * AEADs. Null for anything malformed or forged. MAC2 is not checked here (CookieChecker.checkMac2 is, under load).
 */
export function consumeInitiation(local: KeyPair, message: Uint8Array): ConsumedInitiation | null {
  if (
    message.length !== INITIATION_BYTES ||
    message[0] !== MessageType.Initiation ||
    !reservedZero(message)
  ) {
    return null;
  }
  if (!verifyMac1(message, mac1Key(local.publicKey))) return null;
  const remoteIndex = u32(message, InitiationField.Sender);
  const peerEphemeral = Buffer.from(message.subarray(InitiationField.Ephemeral, InitiationField.Static));

  let h = hash(INITIAL_HASH, local.publicKey);
  let c = kdf1(INITIAL_CHAINING_KEY, peerEphemeral);
  h = hash(h, peerEphemeral);
  const es = dh(local.privateKeyObject, peerEphemeral);
  if (!es) return null;
  let k: Buffer;
  [c, k] = kdf2(c, es);
  const encStatic = message.subarray(InitiationField.Static, InitiationField.Timestamp);
  const peerPublic = aeadOpen(k, 0n, encStatic, h);
  if (!peerPublic) return null;
  h = hash(h, encStatic);

  const ss = dh(local.privateKeyObject, peerPublic);
  if (!ss) return null;
  [c, k] = kdf2(c, ss);
  const encTimestamp = message.subarray(InitiationField.Timestamp, InitiationField.Mac1);
  const timestamp = aeadOpen(k, 0n, encTimestamp, h);
  if (!timestamp) return null;
  h = hash(h, encTimestamp);

  return {
    peerPublic,
    timestamp,
    state: { local, peerPublic, remoteIndex, chainingKey: c, hash: h, peerEphemeral },
  };
}

/** A response and the session it makes. */
export interface CreatedResponse {
  readonly message: Buffer;
  readonly keys: SessionKeys;
  /** The initiator's index: datagrams of this session go to it. */
  readonly remoteIndex: number;
}

/**
 * The second message (5.4.3) to an initiation consumed with `consumeInitiation`, and the responder's session
 * keys (5.4.5). `senderIndex` is the responder's local index of the session. Returns null only when the
 * initiator's ephemeral key is a low-order point (an all-zero DH).
 */
export function createResponse(
  state: ResponderState,
  senderIndex: number,
  psk?: Uint8Array,
  cookie?: Uint8Array,
): CreatedResponse | null {
  checkIndex(senderIndex);
  const q = psk ?? ZERO_PSK;
  checkPsk(q);
  const msg = Buffer.alloc(RESPONSE_BYTES);
  msg[0] = MessageType.Response;
  msg.writeUInt32LE(senderIndex, ResponseField.Sender);
  msg.writeUInt32LE(state.remoteIndex, ResponseField.Receiver);

  const ephemeral = generateKeyPairRaw();
  const ephemeralKey = privateKeyObject(ephemeral.privateKey);
  let c = kdf1(state.chainingKey, ephemeral.publicKey);
  msg.set(ephemeral.publicKey, ResponseField.Ephemeral);
  let h = hash(state.hash, ephemeral.publicKey);
  const ee = dh(ephemeralKey, state.peerEphemeral);
  const se = dh(ephemeralKey, state.peerPublic);
  if (!ee || !se) return null;
  c = kdf1(c, ee);
  c = kdf1(c, se);
  const [c2, tau, k] = kdf3(c, q);
  h = hash(h, tau);
  const empty = aeadSeal(k, 0n, EMPTY, h);
  msg.set(empty, ResponseField.Empty);
  // (the whitepaper's last HASH(h || empty) feeds nothing further: transport keys come from the chaining key)

  writeMacs(msg, state.peerPublic, cookie);
  const [recv, send] = kdf2(c2, EMPTY);
  return { message: msg, keys: { send, recv }, remoteIndex: state.remoteIndex };
}

/** What a valid response gives the initiator. */
export interface ConsumedResponse {
  readonly keys: SessionKeys;
  /** The responder's index: datagrams of this session go to it. */
  readonly remoteIndex: number;
}

/**
 * Opens the response to the initiation that `state` belongs to (5.4.3, initiator side) and derives the
 * initiator's session keys. Null when it is malformed, names another receiver index, has a wrong MAC1 or does
 * not authenticate (wrong responder, wrong psk, tampered).
 */
export function consumeResponse(state: InitiatorState, message: Uint8Array): ConsumedResponse | null {
  if (message.length !== RESPONSE_BYTES || message[0] !== MessageType.Response || !reservedZero(message)) {
    return null;
  }
  if (u32(message, ResponseField.Receiver) !== state.senderIndex) return null;
  if (!verifyMac1(message, mac1Key(state.local.publicKey))) return null;
  const remoteIndex = u32(message, ResponseField.Sender);
  const peerEphemeral = message.subarray(ResponseField.Ephemeral, ResponseField.Empty);

  let c = kdf1(state.chainingKey, peerEphemeral);
  let h = hash(state.hash, peerEphemeral);
  const ee = dh(state.ephemeralPrivate, peerEphemeral);
  const se = dh(state.local.privateKeyObject, peerEphemeral);
  if (!ee || !se) return null;
  c = kdf1(c, ee);
  c = kdf1(c, se);
  const [c2, tau, k] = kdf3(c, state.psk);
  h = hash(h, tau);
  const empty = message.subarray(ResponseField.Empty, ResponseField.Mac1);
  if (!aeadOpen(k, 0n, empty, h)) return null;

  const [send, recv] = kdf2(c2, EMPTY);
  return { keys: { send, recv }, remoteIndex };
}
