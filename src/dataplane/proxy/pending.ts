/**
 * @module dataplane/proxy/pending
 * Bounded per-key queues of packets that wait: for the control plane (the first packets to an address the node
 * does not know yet, or from an instance whose own entry has not arrived) or for a fragment's first fragment.
 * When the wait ends they are processed again, in order; when it does not they are dropped and counted. The
 * bounds (packets and bytes per key and in total) keep a flood to unknown addresses from eating memory. A
 * super-packet waits whole, with its gso word.
 */

/** A packet that waits: a copy of its bytes and its gso word (0: an ordinary packet). */
export interface HeldPacket {
  readonly packet: Buffer;
  readonly gso: number;
}

interface Held extends HeldPacket {
  readonly at: number;
}

interface Queue {
  held: Held[];
  bytes: number;
}

export class PendingPackets {
  private readonly queues = new Map<number | string, Queue>();
  private total = 0;
  private totalBytes = 0;

  constructor(
    /** Most packets held for one key. */
    readonly perKey = 64,
    /** Most packets held in all. */
    readonly limit = 2048,
    /** Most bytes held in all (super-packets are up to 64 KiB each). */
    readonly byteLimit = 4 << 20,
    /** Most bytes held for one key, so one address cannot take the whole budget. */
    readonly perKeyBytes = 256 << 10,
  ) {}

  /** Number of packets held. */
  get size(): number {
    return this.total;
  }

  /** True when key has packets waiting. */
  has(key: number | string): boolean {
    return this.queues.has(key);
  }

  /** The keys with packets waiting. */
  keys(): IterableIterator<number | string> {
    return this.queues.keys();
  }

  /**
   * Holds a copy of buf[offset, offset+length) (with its gso word) under key; false (nothing held) when a bound
   * is hit.
   */
  hold(key: number | string, buf: Uint8Array, offset: number, length: number, now: number, gso = 0): boolean {
    let q = this.queues.get(key);
    if (
      (q && (q.held.length >= this.perKey || q.bytes + length > this.perKeyBytes)) ||
      this.total >= this.limit ||
      this.totalBytes + length > this.byteLimit
    )
      return false;
    if (!q) {
      q = { held: [], bytes: 0 };
      this.queues.set(key, q);
    }
    q.held.push({ packet: Buffer.from(buf.subarray(offset, offset + length)), gso, at: now });
    q.bytes += length;
    this.total++;
    this.totalBytes += length;
    return true;
  }

  /** Removes and returns the packets held under key, oldest first. */
  take(key: number | string): HeldPacket[] {
    const q = this.queues.get(key);
    if (!q) return [];
    this.queues.delete(key);
    this.total -= q.held.length;
    this.totalBytes -= q.bytes;
    return q.held;
  }

  /** Drops packets held longer than maxAgeMs; returns how many. */
  expire(now: number, maxAgeMs: number): number {
    let dropped = 0;
    for (const [key, q] of this.queues) {
      const keep = q.held.filter((h) => now - h.at <= maxAgeMs);
      if (keep.length === q.held.length) continue;
      dropped += q.held.length - keep.length;
      const bytes = keep.reduce((n, h) => n + h.packet.length, 0);
      this.totalBytes -= q.bytes - bytes;
      if (keep.length) this.queues.set(key, { held: keep, bytes });
      else this.queues.delete(key);
    }
    this.total -= dropped;
    return dropped;
  }
}
