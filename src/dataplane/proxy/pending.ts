/**
 * @module dataplane/proxy/pending
 * Bounded per-key queues of packets that wait: for the control plane (the first packets to an address the node
 * does not know yet, or from an instance whose own entry has not arrived) or for a fragment's first fragment.
 * When the wait ends they are processed again, in order; when it does not they are dropped and counted. The
 * bounds (per key, and packets and bytes in total) keep a flood to unknown addresses from eating memory. A
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

export class PendingPackets {
  private readonly queues = new Map<number | string, Held[]>();
  private total = 0;
  private totalBytes = 0;

  constructor(
    /** Most packets held for one key. */
    readonly perKey = 64,
    /** Most packets held in all. */
    readonly limit = 2048,
    /** Most bytes held in all (super-packets are up to 64 KiB each). */
    readonly byteLimit = 4 << 20,
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
      (q && q.length >= this.perKey) ||
      this.total >= this.limit ||
      this.totalBytes + length > this.byteLimit
    )
      return false;
    if (!q) {
      q = [];
      this.queues.set(key, q);
    }
    q.push({ packet: Buffer.from(buf.subarray(offset, offset + length)), gso, at: now });
    this.total++;
    this.totalBytes += length;
    return true;
  }

  /** Removes and returns the packets held under key, oldest first. */
  take(key: number | string): HeldPacket[] {
    const q = this.queues.get(key);
    if (!q) return [];
    this.queues.delete(key);
    this.total -= q.length;
    for (const h of q) this.totalBytes -= h.packet.length;
    return q;
  }

  /** Drops packets held longer than maxAgeMs; returns how many. */
  expire(now: number, maxAgeMs: number): number {
    let dropped = 0;
    for (const [key, q] of this.queues) {
      const keep = q.filter((h) => now - h.at <= maxAgeMs);
      if (keep.length === q.length) continue;
      dropped += q.length - keep.length;
      for (const h of q) if (now - h.at > maxAgeMs) this.totalBytes -= h.packet.length;
      if (keep.length) this.queues.set(key, keep);
      else this.queues.delete(key);
    }
    this.total -= dropped;
    return dropped;
  }
}
