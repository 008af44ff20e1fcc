/**
 * @module addressing/plan
 * The platform's address plan: which prefixes hold worker subnetworks, ServiceIPs and instance IPs, and how
 * a worker's subnetwork is cut into gateway and namespace addresses. IPv4 and IPv6 are planned together:
 * worker i owns the i-th /26 and the i-th /120, and the namespace at host slot k owns +k in both.
 *
 * Defaults (the seed design, reference section 3):
 * - worker /26 blocks: every /26 of 10.16.0.0/12 except those in 10.30.0.0/16: 15,360 workers;
 *   worker /120 blocks: fc00::/7 minus fdfe::/16 (reserved) and fdff::/16 (services);
 * - ServiceIPs and instance IPs (IPv4): 10.30.0.0/16, one shared pool;
 * - IPv6 per policy: instance IPs fdff::/20 (upstream's two /21 blocks), Closest fdff:1000::/21,
 *   round robin fdff:2000::/21.
 */
import { InvalidInputError } from '../errors.ts';
import { BlockSpace } from './block-space.ts';
import { Cidr } from './cidr.ts';
import { familyBits, type IpAddress } from './ip.ts';

/** The configurable ranges; every field is a prefix in CIDR text. */
export interface AddressPlanConfig {
  workerRangeV4: string;
  workerPrefixV4: number;
  workerRangeV6: string;
  workerPrefixV6: number;
  /** IPv6 prefixes inside workerRangeV6 that never hold workers (besides the service range). */
  reservedV6: string[];
  serviceRangeV4: string;
  /** The whole intercepted IPv6 semantic range; the three policy blocks lie inside it. */
  serviceRangeV6: string;
  instanceRangeV6: string;
  closestRangeV6: string;
  rrRangeV6: string;
}

export const DEFAULT_ADDRESS_PLAN: Readonly<AddressPlanConfig> = Object.freeze({
  workerRangeV4: '10.16.0.0/12',
  workerPrefixV4: 26,
  workerRangeV6: 'fc00::/7',
  workerPrefixV6: 120,
  reservedV6: ['fdfe::/16'],
  serviceRangeV4: '10.30.0.0/16',
  serviceRangeV6: 'fdff::/16',
  instanceRangeV6: 'fdff::/20',
  closestRangeV6: 'fdff:1000::/21',
  rrRangeV6: 'fdff:2000::/21',
});

/** A worker's pair of subnetworks. */
export interface WorkerSubnet {
  v4: Cidr;
  v6: Cidr;
}

/** First host slot of a namespace inside a worker subnetwork (+0 is the network, +1 the gateway). */
export const FIRST_NAMESPACE_SLOT = 2;

/** The address ranges, as indexed spaces an allocator can hand out. */
export class AddressPlan {
  readonly config: Readonly<AddressPlanConfig>;
  /** Worker /26 blocks. */
  readonly workerV4: BlockSpace;
  /** Worker /120 blocks. */
  readonly workerV6: BlockSpace;
  /** Number of workers the plan can hold (both families must have a block). */
  readonly workerCapacity: number;
  /** IPv4 ServiceIPs and instance IPs (network and broadcast address of the range left out). */
  readonly serviceV4: BlockSpace;
  readonly instanceV6: BlockSpace;
  readonly closestV6: BlockSpace;
  readonly rrV6: BlockSpace;
  readonly serviceRangeV4: Cidr;
  readonly serviceRangeV6: Cidr;
  /** Namespace host slots per worker: FIRST_NAMESPACE_SLOT..lastNamespaceSlot. */
  readonly lastNamespaceSlot: number;

  constructor(config: Partial<AddressPlanConfig> = {}) {
    const c: AddressPlanConfig = { ...DEFAULT_ADDRESS_PLAN, ...config };
    this.config = Object.freeze(c);
    const workerRangeV4 = family(Cidr.parse(c.workerRangeV4), 4, 'workerRangeV4');
    const workerRangeV6 = family(Cidr.parse(c.workerRangeV6), 6, 'workerRangeV6');
    this.serviceRangeV4 = family(Cidr.parse(c.serviceRangeV4), 4, 'serviceRangeV4');
    this.serviceRangeV6 = family(Cidr.parse(c.serviceRangeV6), 6, 'serviceRangeV6');
    const reservedV6 = c.reservedV6.map((r) => family(Cidr.parse(r), 6, 'reservedV6'));
    const v6Policies = {
      instanceRangeV6: Cidr.parse(c.instanceRangeV6),
      closestRangeV6: Cidr.parse(c.closestRangeV6),
      rrRangeV6: Cidr.parse(c.rrRangeV6),
    };
    const policyList = Object.entries(v6Policies);
    for (const [name, range] of policyList) {
      if (!this.serviceRangeV6.covers(range)) {
        throw new InvalidInputError(
          `${name} ${range.toString()} must lie inside serviceRangeV6 ${this.serviceRangeV6.toString()}`,
        );
      }
    }
    for (let i = 0; i < policyList.length; i++) {
      for (let j = i + 1; j < policyList.length; j++) {
        const [a, ra] = policyList[i]!;
        const [b, rb] = policyList[j]!;
        if (ra.overlaps(rb)) throw new InvalidInputError(`${a} and ${b} overlap`);
      }
    }
    for (const [name, prefix, range] of [
      ['workerPrefixV4', c.workerPrefixV4, workerRangeV4],
      ['workerPrefixV6', c.workerPrefixV6, workerRangeV6],
    ] as const) {
      const bits = familyBits(range.family);
      if (!Number.isInteger(prefix) || prefix < range.prefix || prefix > bits) {
        throw new InvalidInputError(
          `${name} ${prefix} must be an integer from ${range.prefix} to ${bits} (blocks inside ${range.toString()})`,
        );
      }
    }
    const hostBits = familyBits(4) - c.workerPrefixV4;
    if (hostBits < 2 || familyBits(6) - c.workerPrefixV6 < hostBits) {
      throw new InvalidInputError(
        'worker IPv6 blocks must hold at least as many addresses as the IPv4 blocks',
      );
    }
    this.workerV4 = new BlockSpace(workerRangeV4, c.workerPrefixV4, [this.serviceRangeV4]);
    this.workerV6 = new BlockSpace(workerRangeV6, c.workerPrefixV6, [this.serviceRangeV6, ...reservedV6]);
    this.workerCapacity = Math.min(this.workerV4.capacity, this.workerV6.capacity);
    const s4 = this.serviceRangeV4;
    this.serviceV4 = new BlockSpace(s4, 32, [Cidr.of(s4.network, 32), Cidr.of(s4.last, 32)]);
    const single = (r: Cidr): BlockSpace => new BlockSpace(r, 128, [Cidr.of(r.network, 128)]);
    this.instanceV6 = single(v6Policies.instanceRangeV6);
    this.closestV6 = single(v6Policies.closestRangeV6);
    this.rrV6 = single(v6Policies.rrRangeV6);
    this.lastNamespaceSlot = (1 << hostBits) - 2;
  }

  /** The subnetworks of worker `index`. */
  workerSubnet(index: number): WorkerSubnet {
    return { v4: this.workerV4.at(index), v6: this.workerV6.at(index) };
  }

  /** True when `ip` is a ServiceIP or instance IP address (the semantic ranges ProxyTUN intercepts). */
  isSemantic(ip: IpAddress): boolean {
    return (ip.family === 4 ? this.serviceRangeV4 : this.serviceRangeV6).contains(ip);
  }
}

/** The gateway (bridge) address of a worker subnetwork: +1. */
export function gatewayAddress(subnet: Cidr): IpAddress {
  return subnet.at(1);
}

/** The namespace address at host `slot` of a worker subnetwork. */
export function namespaceAddress(subnet: Cidr, slot: number): IpAddress {
  return subnet.at(slot);
}

function family(c: Cidr, f: 4 | 6, name: string): Cidr {
  if (c.family !== f) throw new InvalidInputError(`${name} must be an IPv${f} prefix, got ${c.toString()}`);
  return c;
}
