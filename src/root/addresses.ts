/**
 * @module root/addresses
 * Every address pool the root hands out from, over one AddressPlan: worker subnetworks (a /26 and a /120
 * per worker), the shared IPv4 pool of ServiceIPs and instance IPs, and the IPv6 block of each policy.
 */
import { PoolAllocator, type AllocationTx } from '../addressing/allocator.ts';
import type { BlockSpace } from '../addressing/block-space.ts';
import { IpAddress } from '../addressing/ip.ts';
import type { AddressPlan, WorkerSubnet } from '../addressing/plan.ts';
import { InvalidInputError } from '../errors.ts';

/** Which IPv6 block an address comes from. */
export type V6Role = 'rr' | 'closest' | 'instance';

interface Pool {
  space: BlockSpace;
  allocator: PoolAllocator;
}

export class RootAddresses {
  private readonly workers: PoolAllocator;
  private readonly v4: Pool;
  private readonly v6: Record<V6Role, Pool>;

  constructor(readonly plan: AddressPlan) {
    this.workers = new PoolAllocator('worker', plan.workerCapacity, (i) =>
      plan.workerSubnet(i).v4.toString(),
    );
    const pool = (name: string, space: BlockSpace): Pool => ({
      space,
      allocator: new PoolAllocator(name, space.capacity, (i) => space.addressAt(i).toString()),
    });
    this.v4 = pool('service-v4', plan.serviceV4);
    this.v6 = {
      rr: pool('rr-v6', plan.rrV6),
      closest: pool('closest-v6', plan.closestV6),
      instance: pool('instance-v6', plan.instanceV6),
    };
  }

  /** A new worker subnetwork pair for owner. */
  allocateWorker(tx: AllocationTx, owner: string): { index: number; subnet: WorkerSubnet } {
    const index = this.workers.allocate(tx, owner);
    return { index, subnet: this.plan.workerSubnet(index) };
  }

  releaseWorker(tx: AllocationTx, index: number): boolean {
    return this.workers.release(tx, index);
  }

  /**
   * An IPv4 ServiceIP or instance IP for owner: `wanted` when given (it must lie in the service range and be
   * free), else the next free one. `field` names where `wanted` came from, for messages.
   */
  allocateV4(tx: AllocationTx, owner: string, wanted?: string, field = 'address'): string {
    return this.allocateFrom(this.v4, tx, owner, wanted, 4, field);
  }

  /** An IPv6 address of the role's block for owner, `wanted` or the next free one. */
  allocateV6(tx: AllocationTx, role: V6Role, owner: string, wanted?: string, field = 'address'): string {
    return this.allocateFrom(this.v6[role], tx, owner, wanted, 6, field);
  }

  /** Returns a ServiceIP or instance IP (either family) to its pool; false when it was not allocated. */
  release(tx: AllocationTx, address: string): boolean {
    const ip = IpAddress.tryParse(address);
    if (!ip) return false;
    for (const pool of [this.v4, this.v6.rr, this.v6.closest, this.v6.instance]) {
      const index = pool.space.indexOf(ip);
      if (index !== undefined) return pool.allocator.release(tx, index);
    }
    return false;
  }

  /** Up to n addresses that the next allocations would hand out, without reserving them. */
  peekAvailable(tx: AllocationTx, family: 4 | 6, n: number): string[] {
    const pool = family === 4 ? this.v4 : this.v6.instance;
    const out: string[] = [];
    for (let i = 0; i < pool.space.capacity && out.length < n; i++) {
      if (pool.allocator.ownerOf(tx, i) === undefined) out.push(pool.space.addressAt(i).toString());
    }
    return out;
  }

  /** Allocation counts, for status. */
  usage(tx: AllocationTx): Record<string, { used: number; capacity: number }> {
    const entry = (a: PoolAllocator) => ({ used: a.allocatedCount(tx), capacity: a.capacity });
    return {
      worker: entry(this.workers),
      'service-v4': entry(this.v4.allocator),
      'rr-v6': entry(this.v6.rr.allocator),
      'closest-v6': entry(this.v6.closest.allocator),
      'instance-v6': entry(this.v6.instance.allocator),
    };
  }

  private allocateFrom(
    pool: Pool,
    tx: AllocationTx,
    owner: string,
    wanted: string | undefined,
    family: 4 | 6,
    field: string,
  ): string {
    if (wanted === undefined || wanted === '') {
      return pool.space.addressAt(pool.allocator.allocate(tx, owner)).toString();
    }
    const ip = IpAddress.tryParse(wanted);
    if (!ip || ip.family !== family)
      throw new InvalidInputError(`${field} ${JSON.stringify(wanted)} is not an IPv${family} address`);
    pool.allocator.claim(tx, pool.space.requireIndexOf(ip), owner);
    return ip.toString();
  }
}
