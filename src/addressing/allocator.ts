/**
 * @module addressing/allocator
 * A durable allocator of indices 0..capacity-1 (of a BlockSpace) with owners.
 *
 * Policy: fresh indices first (a cursor that only moves up), then released ones, oldest release first. A
 * released address therefore rests as long as possible before anyone gets it again, which gives the caches of
 * nodes and clusters the most time to forget it (upstream's recycled-ServiceIP bug, oakestra-net #138).
 *
 * State lives in the caller's transaction under `pool/<name>/`:
 *   next           the cursor: every index >= next is fresh (never handed out, or claimed by a user)
 *   used/<i>       owner of index i
 *   free/<seq>     released index, in release order (all below next, none used)
 *   freeat/<i>     seq of index i in the free list
 *   seq            last release sequence number
 * All of it changes inside the caller's transaction, so an allocation and the record that owns it commit
 * together or not at all.
 */
import { AddressInUseError, AddressSpaceExhaustedError } from '../errors.ts';

/** The part of a store transaction an allocator needs (store/Tx satisfies it). */
export interface AllocationTx {
  get<T>(key: string): T | undefined;
  put(key: string, value: string | number): void;
  delete(key: string): boolean;
  list<T>(prefix: string, limit?: number): Array<[string, T]>;
  count(prefix: string): number;
}

const INDEX_DIGITS = 16;

function pad(n: number): string {
  return n.toString().padStart(INDEX_DIGITS, '0');
}

export class PoolAllocator {
  private readonly prefix: string;

  constructor(
    /** Pool name, unique in the store. */
    readonly name: string,
    /** Number of indices the pool holds. */
    readonly capacity: number,
    /** Describes index i in messages (e.g. its address). */
    private readonly describe: (index: number) => string = String,
  ) {
    this.prefix = `pool/${name}/`;
  }

  /** Takes a free index for owner; throws AddressSpaceExhaustedError when none is left. */
  allocate(tx: AllocationTx, owner: string): number {
    let next = tx.get<number>(this.prefix + 'next') ?? 0;
    while (next < this.capacity && tx.get<string>(this.usedKey(next)) !== undefined) next++;
    if (next < this.capacity) {
      tx.put(this.usedKey(next), owner);
      tx.put(this.prefix + 'next', next + 1);
      return next;
    }
    tx.put(this.prefix + 'next', next);
    const [oldest] = tx.list<number>(this.prefix + 'free/', 1);
    if (!oldest) throw new AddressSpaceExhaustedError(this.name, this.capacity);
    const [key, index] = oldest;
    tx.delete(key);
    tx.delete(this.freeAtKey(index));
    tx.put(this.usedKey(index), owner);
    return index;
  }

  /** Takes a specific index for owner; throws AddressInUseError when someone holds it. */
  claim(tx: AllocationTx, index: number, owner: string): void {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.capacity) {
      throw new Error(`index ${index} outside pool ${this.name}`);
    }
    const holder = tx.get<string>(this.usedKey(index));
    if (holder !== undefined) throw new AddressInUseError(this.describe(index), holder);
    const seq = tx.get<number>(this.freeAtKey(index));
    if (seq !== undefined) {
      tx.delete(this.prefix + 'free/' + pad(seq));
      tx.delete(this.freeAtKey(index));
    }
    tx.put(this.usedKey(index), owner);
  }

  /** Returns index to the pool; false when it was not allocated. */
  release(tx: AllocationTx, index: number): boolean {
    if (!tx.delete(this.usedKey(index))) return false;
    const next = tx.get<number>(this.prefix + 'next') ?? 0;
    if (index < next) {
      const seq = (tx.get<number>(this.prefix + 'seq') ?? 0) + 1;
      tx.put(this.prefix + 'seq', seq);
      tx.put(this.prefix + 'free/' + pad(seq), index);
      tx.put(this.freeAtKey(index), seq);
    }
    return true;
  }

  /** Owner of index, or undefined when it is free. */
  ownerOf(tx: AllocationTx, index: number): string | undefined {
    return tx.get<string>(this.usedKey(index));
  }

  /** Every allocated index with its owner, in index order. */
  allocated(tx: AllocationTx): Array<{ index: number; owner: string }> {
    const at = this.prefix.length + 'used/'.length;
    return tx
      .list<string>(this.prefix + 'used/')
      .map(([key, owner]) => ({ index: Number(key.slice(at)), owner }));
  }

  /** How many indices are allocated (without reading them). */
  allocatedCount(tx: AllocationTx): number {
    return tx.count(this.prefix + 'used/');
  }

  private usedKey(index: number): string {
    return this.prefix + 'used/' + pad(index);
  }

  private freeAtKey(index: number): string {
    return this.prefix + 'freeat/' + pad(index);
  }
}
