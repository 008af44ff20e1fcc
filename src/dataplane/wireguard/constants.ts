/**
 * @module dataplane/wireguard/constants
 * WireGuard's protocol constants (whitepaper section 6 and the message formats of 5.4), in two groups as
 * wireguard-go's `device/constants.go` keeps them: what the protocol fixes, then what this implementation
 * chooses. Times are milliseconds. The message-count limits live beside the transport contract
 * (`sessions.ts`) and are re-exported here.
 */
export {
  REJECT_AFTER_MESSAGES,
  REKEY_AFTER_MESSAGES,
  REPLAY_WINDOW_BITS,
  TRANSPORT_HEADER_BYTES,
  TRANSPORT_TAG_BYTES,
} from './sessions.ts';

// ---- fixed by the protocol (whitepaper 6.1, 5.4.7) ----

/** A sender starts a new handshake when its current session is this old. */
export const REKEY_AFTER_TIME = 120_000;
/** A session older than this is neither used to send nor to receive. */
export const REJECT_AFTER_TIME = 180_000;
/** An initiator gives up retrying a handshake after this long. */
export const REKEY_ATTEMPT_TIME = 90_000;
/** An initiation unanswered for this long (plus jitter) is sent again. */
export const REKEY_TIMEOUT = 5_000;
/** Upper bound of the random jitter added to REKEY_TIMEOUT. */
export const REKEY_TIMEOUT_JITTER_MAX = 333;
/** A peer that received data and sent nothing back for this long sends a keepalive. */
export const KEEPALIVE_TIMEOUT = 10_000;
/** A cookie (initiator side) and a cookie secret (responder side) are valid this long. */
export const COOKIE_REFRESH_TIME = 120_000;

/** Message types: the first byte of every WireGuard datagram, followed by three zero bytes. */
export const enum MessageType {
  Initiation = 1,
  Response = 2,
  CookieReply = 3,
  Transport = 4,
}

/** Exact sizes of the handshake messages and the smallest transport message (a keepalive). */
export const INITIATION_BYTES = 148;
export const RESPONSE_BYTES = 92;
export const COOKIE_REPLY_BYTES = 64;
export const TRANSPORT_MIN_BYTES = 32;

/** Field offsets of the initiation (5.4.2). */
export const enum InitiationField {
  Sender = 4,
  Ephemeral = 8,
  Static = 40,
  Timestamp = 88,
  Mac1 = 116,
  Mac2 = 132,
}

/** Field offsets of the response (5.4.3). */
export const enum ResponseField {
  Sender = 4,
  Receiver = 8,
  Ephemeral = 12,
  Empty = 44,
  Mac1 = 60,
  Mac2 = 76,
}

/** Field offsets of the cookie reply (5.4.7). */
export const enum CookieReplyField {
  Receiver = 4,
  Nonce = 8,
  Cookie = 32,
}

/** Lengths of the building blocks. */
export const KEY_BYTES = 32;
export const MAC_BYTES = 16;
export const TAG_BYTES = 16;
export const TIMESTAMP_BYTES = 12;
export const COOKIE_BYTES = 16;
export const XNONCE_BYTES = 24;

/** Noise protocol name and WireGuard's identifier and labels (5.4, 5.4.4). */
export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';
