/**
 * @module addressing/cidr
 * A prefix (network address + length) of either family.
 */
import { InvalidInputError } from '../errors.ts';
import { familyBits, IpAddress, type IpFamily } from './ip.ts';

export class Cidr {
  private constructor(
    /** The first address of the prefix (host bits zero). */
    readonly network: IpAddress,
    /** Prefix length in bits. */
    readonly prefix: number,
  ) {}

  /** Parses "a.b.c.d/n" or "x::/n"; the address must be the network address (host bits zero). */
  static parse(text: string): Cidr {
    const slash = text.indexOf('/');
    if (slash < 0) throw new InvalidInputError(`not a prefix (missing /len): ${JSON.stringify(text)}`);
    const ip = IpAddress.parse(text.slice(0, slash));
    const lenText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText))
      throw new InvalidInputError(`bad prefix length in ${JSON.stringify(text)}`);
    return Cidr.of(ip, Number(lenText));
  }

  /** The prefix of length `prefix` starting at `network`; throws InvalidInputError if host bits are set. */
  static of(network: IpAddress, prefix: number): Cidr {
    const bits = familyBits(network.family);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) {
      throw new InvalidInputError(`prefix length ${prefix} is out of range for IPv${network.family}`);
    }
    const hostBits = BigInt(bits - prefix);
    if (network.value & ((1n << hostBits) - 1n)) {
      throw new InvalidInputError(`${network.toString()}/${prefix} has host bits set`);
    }
    return new Cidr(network, prefix);
  }

  get family(): IpFamily {
    return this.network.family;
  }

  /** Number of addresses in the prefix. */
  get size(): bigint {
    return 1n << BigInt(familyBits(this.family) - this.prefix);
  }

  /** The last address of the prefix. */
  get last(): IpAddress {
    return this.network.add(this.size - 1n);
  }

  /** The address at `offset` from the network address; throws if outside the prefix. */
  at(offset: bigint | number): IpAddress {
    const o = BigInt(offset);
    if (o < 0n || o >= this.size) throw new Error(`offset ${o} outside ${this.toString()}`);
    return this.network.add(o);
  }

  /** Offset of `ip` from the network address, or undefined when ip is not inside. */
  offsetOf(ip: IpAddress): bigint | undefined {
    return this.contains(ip) ? ip.value - this.network.value : undefined;
  }

  contains(ip: IpAddress): boolean {
    return ip.family === this.family && ip.value >= this.network.value && ip.value <= this.last.value;
  }

  /** True when `other` lies entirely inside this prefix. */
  covers(other: Cidr): boolean {
    return other.family === this.family && other.prefix >= this.prefix && this.contains(other.network);
  }

  /** True when the two prefixes share at least one address. */
  overlaps(other: Cidr): boolean {
    return this.covers(other) || other.covers(this);
  }

  equals(other: Cidr): boolean {
    return this.prefix === other.prefix && this.network.equals(other.network);
  }

  toString(): string {
    return `${this.network.toString()}/${this.prefix}`;
  }

  toJSON(): string {
    return this.toString();
  }
}
