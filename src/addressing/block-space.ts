/**
 * @module addressing/block-space
 * An indexed space of equal blocks: every /`blockPrefix` inside `range`, in address order, minus the blocks
 * that touch an excluded prefix. Index i <-> block is a pure function both ways, so an allocator only has to
 * keep integers. With blockPrefix equal to the address width the blocks are single addresses.
 */
import { AddressOutOfRangeError } from '../errors.ts';
import { Cidr } from './cidr.ts';
import { familyBits, IpAddress } from './ip.ts';

interface Gap {
  /** First excluded raw block index. */
  start: bigint;
  /** One past the last excluded raw block index. */
  end: bigint;
}

export class BlockSpace {
  /** Number of blocks, capped at Number.MAX_SAFE_INTEGER (IPv6 spaces are larger than anyone allocates). */
  readonly capacity: number;
  private readonly gaps: readonly Gap[];
  private readonly blockShift: bigint;

  constructor(
    readonly range: Cidr,
    readonly blockPrefix: number,
    exclude: readonly Cidr[] = [],
  ) {
    const bits = familyBits(range.family);
    if (blockPrefix < range.prefix || blockPrefix > bits) {
      throw new Error(`block /${blockPrefix} does not fit in ${range.toString()}`);
    }
    this.blockShift = BigInt(bits - blockPrefix);
    const rawCount = 1n << BigInt(blockPrefix - range.prefix);
    const gaps: Gap[] = [];
    for (const ex of exclude) {
      if (ex.family !== range.family || !ex.overlaps(range)) continue;
      const lo = ex.network.value > range.network.value ? ex.network.value : range.network.value;
      const hi = ex.last.value < range.last.value ? ex.last.value : range.last.value;
      gaps.push({ start: this.rawIndex(lo), end: this.rawIndex(hi) + 1n });
    }
    gaps.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const merged: Gap[] = [];
    for (const g of gaps) {
      const prev = merged[merged.length - 1];
      if (prev && g.start <= prev.end) prev.end = g.end > prev.end ? g.end : prev.end;
      else merged.push({ ...g });
    }
    this.gaps = merged;
    const excluded = merged.reduce((sum, g) => sum + (g.end - g.start), 0n);
    const count = rawCount - excluded;
    this.capacity = count > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(count);
  }

  /** The block at `index` (0 <= index < capacity). */
  at(index: number): Cidr {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.capacity) {
      throw new Error(`block index ${index} outside 0..${this.capacity - 1}`);
    }
    let raw = BigInt(index);
    for (const g of this.gaps) {
      if (raw >= g.start) raw += g.end - g.start;
      else break;
    }
    return Cidr.of(
      IpAddress.fromValue(this.range.family, this.range.network.value + (raw << this.blockShift)),
      this.blockPrefix,
    );
  }

  /** The first address of the block at `index`. */
  addressAt(index: number): IpAddress {
    return this.at(index).network;
  }

  /** Index of the block that holds `ip`, or undefined when ip is outside the range or in an excluded block. */
  indexOf(ip: IpAddress): number | undefined {
    if (!this.range.contains(ip)) return undefined;
    const raw = this.rawIndex(ip.value);
    let skipped = 0n;
    for (const g of this.gaps) {
      if (raw < g.start) break;
      if (raw < g.end) return undefined;
      skipped += g.end - g.start;
    }
    const index = raw - skipped;
    return index < BigInt(this.capacity) ? Number(index) : undefined;
  }

  /** Like indexOf, but throws AddressOutOfRangeError naming the range. */
  requireIndexOf(ip: IpAddress): number {
    const index = this.indexOf(ip);
    if (index === undefined) throw new AddressOutOfRangeError(ip.toString(), this.describe());
    return index;
  }

  /** The range, its block size and exclusions, for messages. */
  describe(): string {
    const base =
      this.blockPrefix === familyBits(this.range.family)
        ? this.range.toString()
        : `${this.range.toString()} (/${this.blockPrefix} blocks)`;
    return this.gaps.length ? `${base} minus reserved parts` : base;
  }

  private rawIndex(value: bigint): bigint {
    return (value - this.range.network.value) >> this.blockShift;
  }
}
