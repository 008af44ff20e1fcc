/**
 * @module dataplane/wireguard/ratelimit
 * Handshake messages per source address, as wireguard-go's ratelimiter: under load, after a message's MAC2
 * proved that its sender receives at its address, each source IP may have INITIATIONS_PER_SECOND messages
 * (a burst of INITIATIONS_BURST) go on to the Diffie-Hellman work; the rest are dropped. Sources are kept
 * while they are active (forgotten after a second without messages) and bounded in number.
 */

/** Per source address (wireguard-go: packetsPerSecond 20, packetsBurstable 5). */
export const INITIATIONS_PER_SECOND = 20;
export const INITIATIONS_BURST = 5;
/** Sources tracked at most; a new source beyond it is refused until old ones are forgotten. */
export const SOURCES_MAX = 65_536;

const COST_MS = 1000 / INITIATIONS_PER_SECOND;
const BUCKET_MS = COST_MS * INITIATIONS_BURST;

export class SourceRateLimiter {
  /** Per source key: the time (ms) its bucket is full again (a virtual-time token bucket). */
  private readonly sources = new Map<string, number>();

  constructor(private readonly max = SOURCES_MAX) {}

  /** Whether a message from `source` (its address bytes, as text) may go on now; takes one token. */
  allow(source: string, now: number): boolean {
    const full = this.sources.get(source);
    if (full === undefined && this.sources.size >= this.max) return false;
    const start = full === undefined || full < now ? now : full;
    if (start + COST_MS - now > BUCKET_MS) return false;
    this.sources.set(source, start + COST_MS);
    return true;
  }

  /** Forgets sources whose buckets are full again (quiet for a while). */
  sweep(now: number): void {
    for (const [k, full] of this.sources) if (full < now - 1000) this.sources.delete(k);
  }

  get size(): number {
    return this.sources.size;
  }
}
