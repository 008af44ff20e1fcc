/**
 * @module dataplane/wireguard/sessions
 * The transport half of WireGuard (whitepaper section 5.4.6): sessions that hold a pair of keys, and what
 * seals and opens transport data messages with them over whole batches. The handshake (TypeScript,
 * `handshake.ts`) installs a session's keys in a slot; the tunnel seals outgoing wire packets with the slot
 * that `AddressedBatch.sessions[i]` names, inside the same call that cuts and sends them (native: OpenSSL's
 * EVP ChaCha20-Poly1305, one reused context per session and direction; in-memory: `transport-js.ts`), and
 * the receiver opens a received batch in one call.
 *
 * Wire format of a transport message: type 4 (u8), 3 zero bytes, receiver index (u32 LE), counter (u64 LE),
 * then ChaCha20-Poly1305 of the packet zero-padded to a multiple of 16 (nonce: 4 zero bytes + counter LE,
 * no associated data), 16-byte tag. Opening trims the padding by the IP header's length (IPv4 total length,
 * IPv6 payload length + 40); a plaintext that is not IPv4/IPv6 (an RTT probe, first byte 0) keeps its padded
 * length, and a keepalive is length 0.
 */
import type { PacketBatch } from '../tun/tun.ts';

/** Bytes a transport message adds in front of the plaintext (type, reserved, receiver index, counter). */
export const TRANSPORT_HEADER_BYTES = 16;
/** Poly1305 tag after the ciphertext. */
export const TRANSPORT_TAG_BYTES = 16;
/** Largest overhead on a packet: header, tag and at most 15 bytes of padding. */
export const TRANSPORT_OVERHEAD_MAX = TRANSPORT_HEADER_BYTES + TRANSPORT_TAG_BYTES + 15;
/** Counters at or beyond this are refused on receive and never used on send (whitepaper: 2^64 - 2^13 - 1). */
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;
/** A session's sender should rekey after this many messages (2^60). */
export const REKEY_AFTER_MESSAGES = 2n ** 60n;
/**
 * Bits of the replay window ring (RFC 6479, as wireguard-go and Linux): a counter at least 8,128 behind the
 * highest one seen (one 64-bit block less than the ring; the JavaScript window takes up to 8,191) is still
 * taken once. Both far above the 2,048.
 */
export const REPLAY_WINDOW_BITS = 8192;

/** What opening a received datagram found (verdicts[i]); a value >= 0 is the session slot that opened it. */
export const enum OpenVerdict {
  /** Not a transport message (a handshake message, or not WireGuard at all): left as it was. */
  NotTransport = -1,
  /** A transport message whose receiver index names no installed session. */
  UnknownIndex = -2,
  /** The tag did not verify (forged, corrupted, wrong key). */
  AuthFailed = -3,
  /** Its counter was seen already, or is behind the replay window. */
  Replayed = -4,
  /** Type 4 but shorter than header + tag, or longer than a slot can hold. */
  Malformed = -5,
  /** The counter is at or beyond REJECT_AFTER_MESSAGES. */
  Exhausted = -6,
}

/** Fields of `TransportSessions.stats`' output, in order. */
export const enum SessionStat {
  /** The next counter the sender will use (messages sealed so far). */
  SendCounter = 0,
  /** The highest counter received and opened (-1: none). */
  RecvHighest = 1,
  PacketsOut = 2,
  BytesOut = 3,
  PacketsIn = 4,
  BytesIn = 5,
}
export const SESSION_STAT_FIELDS = 6;

/** A received batch the opener may change: offsets and lengths of opened datagrams are moved to their plaintext. */
export type MutableBatch = PacketBatch;

/** The sessions of one tunnel, in slots 0..capacity-1. */
export interface TransportSessions {
  readonly capacity: number;
  /**
   * Installs keys in `slot`: send and recv are 32-byte ChaCha20-Poly1305 keys; datagrams whose receiver index
   * is `localIndex` open with recv; sealed ones carry `remoteIndex`. Resets the slot's send counter to 0, its
   * replay window and its stats. `localIndex` must be unique among installed slots.
   */
  install(slot: number, send: Uint8Array, recv: Uint8Array, localIndex: number, remoteIndex: number): void;
  /** Forgets the slot's keys (zeroed); datagrams for its index become UnknownIndex. */
  remove(slot: number): void;
  /** Writes the slot's SESSION_STAT_FIELDS numbers into out (counters as doubles: exact below 2^53). */
  stats(slot: number, out: Float64Array): void;
  /**
   * Opens every transport message of datagrams 0..count-1 in place: verdicts[i] gets the slot (>= 0: the
   * plaintext is now at offsets[i], lengths[i]) or an OpenVerdict. A datagram of length 0 is Malformed.
   */
  open(batch: MutableBatch, verdicts: Int32Array): void;
  /**
   * Seals one whole wire packet with `slot` into out[outOffset...] and returns the message's length (used by
   * the in-memory tunnel and by handshakes' first packets; the UDP tunnel seals inside its native send).
   * -1 when the slot has no keys or its counter is exhausted.
   */
  seal(slot: number, packet: Uint8Array, out: Uint8Array, outOffset: number): number;
  /** Frees the sessions (native contexts); idempotent. */
  close(): void;
}
