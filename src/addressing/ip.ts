/**
 * @module addressing/ip
 * An IP address as a value: family plus a bigint. IPv4 and IPv6 share every operation, so no code needs
 * `_v6` twins. Text is strict: dotted-quad IPv4, RFC 4291 IPv6 without zone; output is canonical
 * (RFC 5952 for IPv6).
 */
import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { InvalidInputError } from '../errors.ts';

export type IpFamily = 4 | 6;

/** Bits in an address of the family. */
export function familyBits(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

export class IpAddress {
  private constructor(
    /** 4 or 6. */
    readonly family: IpFamily,
    /** The address as an unsigned integer of familyBits(family) bits. */
    readonly value: bigint,
  ) {}

  /** Parses dotted-quad IPv4 or IPv6 text; throws InvalidInputError on anything else. */
  static parse(text: string): IpAddress {
    const parsed = IpAddress.tryParse(text);
    if (!parsed) throw new InvalidInputError(`not an IP address: ${JSON.stringify(text)}`);
    return parsed;
  }

  /** Like parse, but returns undefined for bad text. */
  static tryParse(text: string): IpAddress | undefined {
    if (isIPv4(text)) {
      let v = 0n;
      for (const part of text.split('.')) v = (v << 8n) | BigInt(Number(part));
      return new IpAddress(4, v);
    }
    if (isIPv6(text) && !text.includes('%')) {
      // ipaddr.js reads the deprecated IPv4-compatible form "::a.b.c.d" as "::ffff:a.b.c.d"; RFC 4291
      // 2.5.5.1 gives it the value a.b.c.d (the dotted quad was already checked by isIPv6).
      const compatible = /^::(\d+\.\d+\.\d+\.\d+)$/.exec(text);
      if (compatible) return new IpAddress(6, IpAddress.parse(compatible[1]!).value);
      return IpAddress.fromBytes(Uint8Array.from(ipaddr.IPv6.parse(text).toByteArray()));
    }
    return undefined;
  }

  /** An address from its 4 or 16 network-order bytes. */
  static fromBytes(bytes: Uint8Array): IpAddress {
    if (bytes.length !== 4 && bytes.length !== 16)
      throw new Error(`address bytes must be 4 or 16, got ${bytes.length}`);
    let v = 0n;
    for (const b of bytes) v = (v << 8n) | BigInt(b);
    return new IpAddress(bytes.length === 4 ? 4 : 6, v);
  }

  /** An address of the family from its integer value; throws if the value does not fit. */
  static fromValue(family: IpFamily, value: bigint): IpAddress {
    if (value < 0n || value >> BigInt(familyBits(family)) !== 0n) {
      throw new Error(`value ${value} does not fit an IPv${family} address`);
    }
    return new IpAddress(family, value);
  }

  /** This address plus n (n may be negative); throws if the result leaves the family's space. */
  add(n: bigint | number): IpAddress {
    return IpAddress.fromValue(this.family, this.value + BigInt(n));
  }

  equals(other: IpAddress): boolean {
    return this.family === other.family && this.value === other.value;
  }

  /** The 4 or 16 network-order bytes. */
  toBytes(): Uint8Array {
    const n = this.family === 4 ? 4 : 16;
    const out = new Uint8Array(n);
    let v = this.value;
    for (let i = n - 1; i >= 0; i--) {
      out[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    return out;
  }

  /** Canonical text: dotted quad, or RFC 5952 IPv6. */
  toString(): string {
    if (this.family === 4) {
      const v = Number(this.value);
      return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
    }
    return new ipaddr.IPv6(Array.from(this.toBytes())).toRFC5952String();
  }

  toJSON(): string {
    return this.toString();
  }
}

/** Canonical text of an address given as text; throws InvalidInputError for bad text. */
export function canonicalIp(text: string): string {
  return IpAddress.parse(text).toString();
}
