/**
 * @module dataplane/proxy/prefix-set
 * "Is this address inside one of these prefixes?" on raw packet bytes, without allocating: IPv4 prefixes as
 * (network, mask) integers, IPv6 prefixes as byte arrays compared up to their length.
 */
import type { Cidr } from '../../addressing/cidr.ts';

export class PrefixSet {
  private readonly v4: Array<{ net: number; mask: number }> = [];
  private readonly v6: Array<{ bytes: Uint8Array; bits: number }> = [];

  constructor(prefixes: readonly Cidr[]) {
    for (const c of prefixes) {
      if (c.family === 4) {
        const mask = c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0;
        this.v4.push({ net: Number(c.network.value) & mask, mask });
      } else {
        this.v6.push({ bytes: c.network.toBytes(), bits: c.prefix });
      }
    }
  }

  /** True when the len-byte (4 or 16) address at buf[off] lies in one of the prefixes. */
  contains(buf: Uint8Array, off: number, len: number): boolean {
    if (len === 4) {
      const a = ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
      for (const p of this.v4) if ((a & p.mask) >>> 0 === p.net >>> 0) return true;
      return false;
    }
    for (const p of this.v6) if (matches(buf, off, p.bytes, p.bits)) return true;
    return false;
  }
}

function matches(buf: Uint8Array, off: number, net: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (buf[off + i] !== net[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (buf[off + whole]! & mask) === (net[whole]! & mask);
}
