/**
 * @module dataplane/proxy/pending
 * Packets that wait for the control plane: the first packets to an address the node does not know yet (or from
 * an instance whose own entry has not arrived). They wait per key in bounded queues while other traffic flows
 * on; when the answer comes they are processed again, and when it does not they are dropped and counted. The
 * bounds (per key and in total) keep a flood to unknown addresses from eating memory.
 */

/** A held packet: a copy, with its gso word (0 but for an offloaded super-packet, held whole). */
export interface HeldPacket {
  packet: Buffer;
  gso: number;
}

interface Held extends HeldPacket {
  at: number;
}

export class PendingPackets {
  private readonly queues = new Map<number | string, Held[]>();
  private total = 0;

  constructor(
    /** Most packets held for one key. */
    readonly perKey = 64,
    /** Most packets held in all. */
    readonly limit = 2048,
  ) {}

  /** Number of packets held. */
  get size(): number {
    return this.total;
  }

  /** True when key has packets waiting (so its question was asked already). */
  has(key: number | string): boolean {
    return this.queues.has(key);
  }

  /** Holds a copy of buf[offset, offset+length) (with its gso word) under key; false (nothing held) when a bound is hit. */
  hold(key: number | string, buf: Uint8Array, offset: number, length: number, now: number, gso = 0): boolean {
    let q = this.queues.get(key);
    if ((q && q.length >= this.perKey) || this.total >= this.limit) return false;
    if (!q) {
      q = [];
      this.queues.set(key, q);
    }
    q.push({ packet: Buffer.from(buf.subarray(offset, offset + length)), gso, at: now });
    this.total++;
    return true;
  }

  /** Removes and returns the packets held under key, oldest first. */
  take(key: number | string): Buffer[] {
    return this.takeHeld(key).map((h) => h.packet);
  }

  /** Removes and returns the packets held under key with their gso words, oldest first. */
  takeHeld(key: number | string): HeldPacket[] {
    const q = this.queues.get(key);
    if (!q) return [];
    this.queues.delete(key);
    this.total -= q.length;
    return q;
  }

  /** Drops packets held longer than maxAgeMs; returns how many. */
  expire(now: number, maxAgeMs: number): number {
    let dropped = 0;
    for (const [key, q] of this.queues) {
      const keep = q.filter((h) => now - h.at <= maxAgeMs);
      dropped += q.length - keep.length;
      if (keep.length) this.queues.set(key, keep);
      else this.queues.delete(key);
    }
    this.total -= dropped;
    return dropped;
  }
}
