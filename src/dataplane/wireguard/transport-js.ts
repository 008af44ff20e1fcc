/**
 * @module dataplane/wireguard/transport-js
 * TransportSessions in TypeScript: node:crypto ChaCha20-Poly1305 per packet. The in-memory tunnel uses it, and
 * it is the reference the native sessions are tested against. Receiving follows wireguard-go's order
 * (`device/receive.go`): find the session by receiver index, refuse exhausted counters, verify the tag, and
 * only then let the replay window take the counter, so a forged datagram can never move the window.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import {
  OpenVerdict,
  REJECT_AFTER_MESSAGES,
  REPLAY_WINDOW_BITS,
  SessionStat,
  TRANSPORT_HEADER_BYTES,
  TRANSPORT_TAG_BYTES,
  type MutableBatch,
  type TransportSessions,
} from './sessions.ts';
import { MessageType } from './constants.ts';
import { counterNonce } from './primitives.ts';

const BLOCK_BITS = 32;
/** One block more than the window needs, so that a whole window stays valid while the newest block fills. */
const RING_BLOCKS = REPLAY_WINDOW_BITS / BLOCK_BITS + 1;

/**
 * The sliding window of received counters (RFC 6479, as wireguard-go's `replay/replay.go`): a ring of bit
 * blocks. A counter is accepted once, if it is below REJECT_AFTER_MESSAGES and less than REPLAY_WINDOW_BITS
 * behind the highest one accepted (the highest itself is 0 behind). Call `accept` only after the message's tag
 * verified.
 */
export class ReplayWindow {
  private readonly ring = new Uint32Array(RING_BLOCKS);
  /** Highest counter accepted, -1n before the first. */
  private top = -1n;

  /** The highest counter accepted so far (-1n: none). */
  get highest(): bigint {
    return this.top;
  }

  /** Forgets every counter (a new session). */
  reset(): void {
    this.ring.fill(0);
    this.top = -1n;
  }

  /** True when `counter` would be accepted now (nothing changes). */
  check(counter: bigint): boolean {
    if (counter < 0n || counter >= REJECT_AFTER_MESSAGES) return false;
    if (counter > this.top) return true;
    if (this.top - counter >= BigInt(REPLAY_WINDOW_BITS)) return false;
    const block = Number((counter / BigInt(BLOCK_BITS)) % BigInt(RING_BLOCKS));
    const bit = 1 << Number(counter % BigInt(BLOCK_BITS));
    return ((this.ring[block] ?? 0) & bit) === 0;
  }

  /** Takes `counter` if it is new and inside the window: true; false for a duplicate, a stale or an exhausted one. */
  accept(counter: bigint): boolean {
    if (!this.check(counter)) return false;
    const blockBits = BigInt(BLOCK_BITS);
    const blockOf = counter / blockBits;
    if (counter > this.top) {
      // clear the blocks the window slides over: those after the old top's block, up to the new one's
      const topBlock = this.top < 0n ? -1n : this.top / blockBits;
      let steps = blockOf - topBlock;
      if (steps > BigInt(RING_BLOCKS)) steps = BigInt(RING_BLOCKS);
      for (let i = 1n; i <= steps; i++) this.ring[Number((topBlock + i) % BigInt(RING_BLOCKS))] = 0;
      this.top = counter;
    }
    const block = Number(blockOf % BigInt(RING_BLOCKS));
    this.ring[block] = ((this.ring[block] ?? 0) | (1 << Number(counter % blockBits))) >>> 0;
    return true;
  }
}

interface Session {
  send: Buffer;
  recv: Buffer;
  localIndex: number;
  remoteIndex: number;
  sendCounter: bigint;
  readonly window: ReplayWindow;
  packetsOut: number;
  bytesOut: number;
  packetsIn: number;
  bytesIn: number;
}

/**
 * Length of the packet inside a padded plaintext: the IP header's length for IPv4 (total length) and IPv6
 * (payload length + 40) when it fits, else the padded length as it is (a probe, or a broken header the TUN
 * refuses).
 */
export function unpaddedLength(buf: Uint8Array, at: number, padded: number): number {
  if (padded === 0) return 0;
  const version = (buf[at] ?? 0) >> 4;
  let length = -1;
  if (version === 4 && padded >= 20) length = ((buf[at + 2] ?? 0) << 8) | (buf[at + 3] ?? 0);
  else if (version === 6 && padded >= 40) length = 40 + (((buf[at + 4] ?? 0) << 8) | (buf[at + 5] ?? 0));
  return length >= 0 && length <= padded ? length : padded;
}

/** TransportSessions with node:crypto; `capacity` slots. Bytes counted are whole wire datagrams, as `wg` counts. */
export class JsTransportSessions implements TransportSessions {
  readonly capacity: number;
  private readonly slots: (Session | undefined)[];
  private readonly byIndex = new Map<number, number>();
  private closed = false;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`bad capacity ${capacity}`);
    this.capacity = capacity;
    this.slots = new Array<Session | undefined>(capacity).fill(undefined);
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.capacity)
      throw new RangeError(`bad slot ${slot}`);
  }

  install(slot: number, send: Uint8Array, recv: Uint8Array, localIndex: number, remoteIndex: number): void {
    this.checkSlot(slot);
    if (this.closed) throw new Error('sessions are closed');
    if (send.length !== 32 || recv.length !== 32) throw new RangeError('session keys are 32 bytes');
    const owner = this.byIndex.get(localIndex >>> 0);
    if (owner !== undefined && owner !== slot) {
      throw new RangeError(`local index ${localIndex} is installed in slot ${owner}`);
    }
    this.remove(slot);
    const window = new ReplayWindow();
    this.slots[slot] = {
      send: Buffer.from(send),
      recv: Buffer.from(recv),
      localIndex: localIndex >>> 0,
      remoteIndex: remoteIndex >>> 0,
      sendCounter: 0n,
      window,
      packetsOut: 0,
      bytesOut: 0,
      packetsIn: 0,
      bytesIn: 0,
    };
    this.byIndex.set(localIndex >>> 0, slot);
  }

  remove(slot: number): void {
    this.checkSlot(slot);
    const s = this.slots[slot];
    if (!s) return;
    s.send.fill(0);
    s.recv.fill(0);
    this.byIndex.delete(s.localIndex);
    this.slots[slot] = undefined;
  }

  stats(slot: number, out: Float64Array): void {
    this.checkSlot(slot);
    const s = this.slots[slot];
    out[SessionStat.SendCounter] = s ? Number(s.sendCounter) : 0;
    out[SessionStat.RecvHighest] = s ? Number(s.window.highest) : -1;
    out[SessionStat.PacketsOut] = s?.packetsOut ?? 0;
    out[SessionStat.BytesOut] = s?.bytesOut ?? 0;
    out[SessionStat.PacketsIn] = s?.packetsIn ?? 0;
    out[SessionStat.BytesIn] = s?.bytesIn ?? 0;
  }

  open(batch: MutableBatch, verdicts: Int32Array): void {
    const { buffer, offsets, lengths } = batch;
    for (let i = 0; i < batch.count; i++) verdicts[i] = this.openOne(buffer, offsets, lengths, i);
  }

  private openOne(buffer: Buffer, offsets: Uint32Array, lengths: Uint32Array, i: number): number {
    const at = offsets[i] ?? 0;
    const length = lengths[i] ?? 0;
    if (length === 0) return OpenVerdict.Malformed;
    if (buffer[at] !== MessageType.Transport) return OpenVerdict.NotTransport;
    if (length < TRANSPORT_HEADER_BYTES + TRANSPORT_TAG_BYTES) return OpenVerdict.Malformed;
    if (buffer[at + 1] !== 0 || buffer[at + 2] !== 0 || buffer[at + 3] !== 0) return OpenVerdict.Malformed;
    const slot = this.byIndex.get(buffer.readUInt32LE(at + 4));
    const s = slot === undefined ? undefined : this.slots[slot];
    if (slot === undefined || !s) return OpenVerdict.UnknownIndex;
    const counter = buffer.readBigUInt64LE(at + 8);
    if (counter >= REJECT_AFTER_MESSAGES) return OpenVerdict.Exhausted;
    if (!s.window.check(counter)) return OpenVerdict.Replayed;

    const bodyAt = at + TRANSPORT_HEADER_BYTES;
    const bodyLength = length - TRANSPORT_HEADER_BYTES - TRANSPORT_TAG_BYTES;
    const decipher = createDecipheriv('chacha20-poly1305', s.recv, counterNonce(counter), {
      authTagLength: TRANSPORT_TAG_BYTES,
    });
    decipher.setAuthTag(buffer.subarray(bodyAt + bodyLength, at + length));
    const plain = decipher.update(buffer.subarray(bodyAt, bodyAt + bodyLength));
    try {
      decipher.final();
    } catch {
      plain.fill(0);
      return OpenVerdict.AuthFailed;
    }
    if (!s.window.accept(counter)) return OpenVerdict.Replayed;
    plain.copy(buffer, bodyAt);
    s.packetsIn++;
    s.bytesIn += length;
    offsets[i] = bodyAt;
    lengths[i] = unpaddedLength(buffer, bodyAt, bodyLength);
    return slot;
  }

  seal(slot: number, packet: Uint8Array, out: Uint8Array, outOffset: number): number {
    this.checkSlot(slot);
    const s = this.slots[slot];
    if (!s || s.sendCounter >= REJECT_AFTER_MESSAGES) return -1;
    const padded = (packet.length + 15) & ~15;
    const total = TRANSPORT_HEADER_BYTES + padded + TRANSPORT_TAG_BYTES;
    if (outOffset < 0 || outOffset + total > out.length) {
      throw new RangeError(`seal needs ${total} bytes at ${outOffset}, the buffer has ${out.length}`);
    }
    const counter = s.sendCounter++;
    const o = Buffer.from(out.buffer, out.byteOffset + outOffset, total);
    o[0] = MessageType.Transport;
    o[1] = o[2] = o[3] = 0;
    o.writeUInt32LE(s.remoteIndex, 4);
    o.writeBigUInt64LE(counter, 8);
    const cipher = createCipheriv('chacha20-poly1305', s.send, counterNonce(counter), {
      authTagLength: TRANSPORT_TAG_BYTES,
    });
    let w = TRANSPORT_HEADER_BYTES;
    w += cipher.update(packet).copy(o, w);
    if (padded > packet.length) w += cipher.update(Buffer.alloc(padded - packet.length)).copy(o, w);
    w += cipher.final().copy(o, w);
    cipher.getAuthTag().copy(o, w);
    s.packetsOut++;
    s.bytesOut += total;
    return total;
  }

  close(): void {
    if (this.closed) return;
    for (let i = 0; i < this.capacity; i++) this.remove(i);
    this.closed = true;
  }
}
