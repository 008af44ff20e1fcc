/**
 * @module dataplane/packet/build
 * Packet builders and checksum oracles for tests and benchmarks; never on the data path (they allocate freely).
 * Builders produce valid IPv4/IPv6 TCP, UDP and ICMP echo packets with correct checksums, fragment packets the
 * way a kernel does, and reassemble fragments. `fullChecksumsValid` recomputes every checksum from scratch with
 * its own header walk, independent of ParsedPacket and of the incremental code in rewrite.ts, so tests can
 * assert "the incrementally updated checksum equals a full recomputation".
 */
import { IpAddress } from '../../addressing/ip.ts';
import { finishChecksum, foldSum, onesComplementSum, pseudoHeaderSum } from './checksum.ts';
import {
  ICMP_HEADER_BYTES,
  IcmpType,
  IpProto,
  IPV4_MIN_HEADER_BYTES,
  IPV6_FRAGMENT_HEADER_BYTES,
  IPV6_HEADER_BYTES,
  TCP_MIN_HEADER_BYTES,
  TcpFlag,
  UDP_HEADER_BYTES,
} from './constants.ts';

/** IP-level fields shared by every builder. The family of `src` and `dst` selects IPv4 or IPv6. */
export interface IpSpec {
  /** Source address: text, or 4 / 16 network-order bytes (same family as dst). */
  readonly src: string | Uint8Array;
  /** Destination address: text or bytes. */
  readonly dst: string | Uint8Array;
  /** IPv4 TTL / IPv6 hop limit; default 64. */
  readonly ttl?: number;
  /** IPv4 identification; default 0. Ignored for IPv6. */
  readonly ipId?: number;
  /** IPv4 don't-fragment flag; default false. */
  readonly dontFragment?: boolean;
  /** IPv4 options, a multiple of 4 bytes, at most 40. */
  readonly ipv4Options?: Uint8Array;
  /**
   * IPv6 extension headers to put before the transport, in order: IpProto.HopByHop, DestinationOptions or
   * Routing (8 bytes each; Routing with segments left = `routingSegmentsLeft`).
   */
  readonly extensionHeaders?: readonly number[];
  /** Segments-left value of generated Routing headers; default 0. */
  readonly routingSegmentsLeft?: number;
}

/** A TCP segment. */
export interface TcpSpec extends IpSpec {
  /** Source port. */
  readonly srcPort: number;
  /** Destination port. */
  readonly dstPort: number;
  /** Flags byte (TcpFlag bits); default ACK. */
  readonly flags?: number;
  /** Sequence number; default 1. */
  readonly seq?: number;
  /** Acknowledgment number; default 0. */
  readonly ack?: number;
  /** Receive window; default 65535. */
  readonly window?: number;
  /** TCP options, a multiple of 4 bytes, at most 40. */
  readonly tcpOptions?: Uint8Array;
  /** Segment data; default empty. */
  readonly payload?: Uint8Array;
}

/** A UDP datagram. */
export interface UdpSpec extends IpSpec {
  /** Source port. */
  readonly srcPort: number;
  /** Destination port. */
  readonly dstPort: number;
  /** Datagram data; default empty. */
  readonly payload?: Uint8Array;
  /** Send checksum 0 ("no checksum", RFC 768) instead of a computed one. */
  readonly noChecksum?: boolean;
}

/** An ICMP (IPv4) or ICMPv6 (IPv6) echo request or reply. */
export interface EchoSpec extends IpSpec {
  /** Build a reply instead of a request. */
  readonly reply?: boolean;
  /** Echo identifier. */
  readonly id: number;
  /** Echo sequence number; default 1. */
  readonly seq?: number;
  /** Echo data; default empty. */
  readonly payload?: Uint8Array;
}

const EMPTY = new Uint8Array(0);

function toAddress(a: string | Uint8Array): IpAddress {
  return typeof a === 'string' ? IpAddress.parse(a) : IpAddress.fromBytes(a);
}

function addressBytes(spec: IpSpec): { src: Uint8Array; dst: Uint8Array } {
  const src = toAddress(spec.src);
  const dst = toAddress(spec.dst);
  if (src.family !== dst.family)
    throw new Error(`mixed address families: ${src.toString()} -> ${dst.toString()}`);
  return { src: src.toBytes(), dst: dst.toBytes() };
}

/**
 * Wraps the transport bytes `l4` (checksum field zero) in an IP header and fills in the checksums.
 * `checksumAt` is the checksum field's offset in l4 (-1: none); `pseudo` says whether it covers the pseudo-header.
 */
function wrap(
  spec: IpSpec,
  proto: number,
  l4: Buffer,
  checksumAt: number,
  pseudo: boolean,
  udpZero = false,
): Buffer {
  const { src, dst } = addressBytes(spec);
  const ttl = spec.ttl ?? 64;
  let header: Buffer;
  let srcAt: number;
  let dstAt: number;
  if (src.length === 4) {
    const options = spec.ipv4Options ?? EMPTY;
    if (options.length % 4 !== 0 || options.length > 40)
      throw new Error('IPv4 options must be 4k bytes, <= 40');
    const hl = IPV4_MIN_HEADER_BYTES + options.length;
    header = Buffer.alloc(hl);
    header[0] = 0x40 | (hl >> 2);
    header.writeUInt16BE(hl + l4.length, 2);
    header.writeUInt16BE(spec.ipId ?? 0, 4);
    header.writeUInt16BE(spec.dontFragment ? 0x4000 : 0, 6);
    header[8] = ttl;
    header[9] = proto;
    header.set(src, 12);
    header.set(dst, 16);
    header.set(options, 20);
    header.writeUInt16BE(finishChecksum(onesComplementSum(header, 0, hl)), 10);
    srcAt = 12;
    dstAt = 16;
  } else {
    const ext = spec.extensionHeaders ?? [];
    header = Buffer.alloc(IPV6_HEADER_BYTES + ext.length * 8);
    header[0] = 0x60;
    header.writeUInt16BE(header.length - IPV6_HEADER_BYTES + l4.length, 4);
    header[7] = ttl;
    header.set(src, 8);
    header.set(dst, 24);
    let nextAt = 6;
    ext.forEach((kind, i) => {
      const at = IPV6_HEADER_BYTES + i * 8;
      header[nextAt] = kind;
      nextAt = at;
      if (kind === IpProto.Routing) {
        header[at + 2] = 253; // RFC 4727 experimental routing type
        header[at + 3] = spec.routingSegmentsLeft ?? 0;
      } else if (kind === IpProto.HopByHop || kind === IpProto.DestinationOptions) {
        header[at + 2] = 1; // PadN option covering the remaining 4 bytes
        header[at + 3] = 4;
      } else {
        throw new Error(`builder cannot generate extension header ${kind}`);
      }
    });
    header[nextAt] = proto;
    srcAt = 8;
    dstAt = 24;
  }
  const packet = Buffer.concat([header, l4]);
  if (checksumAt >= 0 && !udpZero) {
    const initial = pseudo ? pseudoHeaderSum(packet, srcAt, dstAt, src.length, proto, l4.length) : 0;
    let sum = finishChecksum(onesComplementSum(packet, header.length, l4.length, initial));
    if (proto === IpProto.Udp && sum === 0) sum = 0xffff;
    packet.writeUInt16BE(sum, header.length + checksumAt);
  }
  return packet;
}

/** A TCP segment with a correct checksum. */
export function buildTcp(spec: TcpSpec): Buffer {
  const options = spec.tcpOptions ?? EMPTY;
  if (options.length % 4 !== 0 || options.length > 40) throw new Error('TCP options must be 4k bytes, <= 40');
  const payload = spec.payload ?? EMPTY;
  const hl = TCP_MIN_HEADER_BYTES + options.length;
  const l4 = Buffer.alloc(hl + payload.length);
  l4.writeUInt16BE(spec.srcPort, 0);
  l4.writeUInt16BE(spec.dstPort, 2);
  l4.writeUInt32BE((spec.seq ?? 1) >>> 0, 4);
  l4.writeUInt32BE((spec.ack ?? 0) >>> 0, 8);
  l4[12] = (hl >> 2) << 4;
  l4[13] = spec.flags ?? TcpFlag.Ack;
  l4.writeUInt16BE(spec.window ?? 65535, 14);
  l4.set(options, TCP_MIN_HEADER_BYTES);
  l4.set(payload, hl);
  return wrap(spec, IpProto.Tcp, l4, 16, true);
}

/** A UDP datagram with a correct checksum (or 0 with `noChecksum`). */
export function buildUdp(spec: UdpSpec): Buffer {
  const payload = spec.payload ?? EMPTY;
  const l4 = Buffer.alloc(UDP_HEADER_BYTES + payload.length);
  l4.writeUInt16BE(spec.srcPort, 0);
  l4.writeUInt16BE(spec.dstPort, 2);
  l4.writeUInt16BE(l4.length, 4);
  l4.set(payload, UDP_HEADER_BYTES);
  return wrap(spec, IpProto.Udp, l4, 6, true, spec.noChecksum === true);
}

/** An ICMP (IPv4) or ICMPv6 (IPv6) echo request/reply with a correct checksum. */
export function buildEcho(spec: EchoSpec): Buffer {
  const payload = spec.payload ?? EMPTY;
  const v6 = toAddress(spec.src).family === 6;
  const l4 = Buffer.alloc(ICMP_HEADER_BYTES + payload.length);
  if (v6) l4[0] = spec.reply ? IcmpType.Echo6Reply : IcmpType.Echo6Request;
  else l4[0] = spec.reply ? IcmpType.EchoReply : IcmpType.EchoRequest;
  l4.writeUInt16BE(spec.id, 4);
  l4.writeUInt16BE(spec.seq ?? 1, 6);
  l4.set(payload, ICMP_HEADER_BYTES);
  return wrap(spec, v6 ? IpProto.Icmpv6 : IpProto.Icmp, l4, 2, v6);
}

/** IPv4 header checksum of the header at buf[offset..), computed with the checksum field taken as zero. */
export function computeIpv4HeaderChecksum(buf: Uint8Array, offset: number): number {
  const hl = ((buf[offset] ?? 0) & 0x0f) << 2;
  const sum = onesComplementSum(buf, offset, 10) + onesComplementSum(buf, offset + 12, hl - 12);
  return finishChecksum(sum);
}

/** Where an unfragmented packet's transport starts, found by an independent walk; undefined if fragmented. */
function transportOf(buf: Uint8Array, off: number): { proto: number; at: number; end: number } | undefined {
  const v = (buf[off] ?? 0) >> 4;
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v === 4) {
    const hl = ((buf[off] ?? 0) & 0x0f) * 4;
    if ((view.readUInt16BE(off + 6) & 0x3fff) !== 0) return undefined;
    return { proto: view[off + 9] ?? 0, at: off + hl, end: off + view.readUInt16BE(off + 2) };
  }
  const end = off + IPV6_HEADER_BYTES + view.readUInt16BE(off + 4);
  let next = view[off + 6] ?? 0;
  let at = off + IPV6_HEADER_BYTES;
  for (;;) {
    if (next === IpProto.HopByHop || next === IpProto.Routing || next === IpProto.DestinationOptions) {
      next = view[at] ?? 0;
      at += ((view[at + 1] ?? 0) + 1) * 8;
    } else if (next === IpProto.Fragment) {
      if ((view.readUInt16BE(at + 2) & 0xfff9) !== 0) return undefined;
      next = view[at] ?? 0;
      at += IPV6_FRAGMENT_HEADER_BYTES;
    } else {
      return { proto: next, at, end };
    }
  }
}

/**
 * True when every checksum of the IP packet at buf[offset..offset+length) equals a full recomputation: the
 * IPv4 header checksum, and for unfragmented TCP/UDP/ICMP/ICMPv6 the transport checksum (UDP over IPv4 may
 * carry 0 = none; a computed 0 must be sent as 0xffff). Fragments only get their IPv4 header checked; other
 * protocols only their IP header. Test helper: assumes a structurally valid packet.
 */
export function fullChecksumsValid(buf: Uint8Array, offset: number, length: number): boolean {
  if (length < 1) return false;
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const v = (buf[offset] ?? 0) >> 4;
  if (v === 4 && computeIpv4HeaderChecksum(buf, offset) !== view.readUInt16BE(offset + 10)) return false;
  const t = transportOf(buf, offset);
  if (!t) return true;
  const addrLength = v === 4 ? 4 : 16;
  const srcAt = offset + (v === 4 ? 12 : 8);
  const dstAt = srcAt + addrLength;
  let checksumAt: number;
  let pseudo = true;
  let l4Length = t.end - t.at;
  if (t.proto === IpProto.Tcp) checksumAt = 16;
  else if (t.proto === IpProto.Udp) {
    checksumAt = 6;
    l4Length = view.readUInt16BE(t.at + 4);
  } else if (t.proto === IpProto.Icmp && v === 4) {
    checksumAt = 2;
    pseudo = false;
  } else if (t.proto === IpProto.Icmpv6 && v === 6) checksumAt = 2;
  else return true;
  const stored = view.readUInt16BE(t.at + checksumAt);
  if (t.proto === IpProto.Udp && stored === 0) return v === 4;
  const initial = pseudo ? pseudoHeaderSum(buf, srcAt, dstAt, addrLength, t.proto, l4Length) : 0;
  const sum =
    initial +
    onesComplementSum(buf, t.at, checksumAt) +
    onesComplementSum(buf, t.at + checksumAt + 2, l4Length - checksumAt - 2);
  let expected = finishChecksum(foldSum(sum));
  if (t.proto === IpProto.Udp && expected === 0) expected = 0xffff;
  return expected === stored;
}

/**
 * A copy of an unfragmented TCP/UDP packet with its transport checksum made partial, as a kernel hands an
 * offloaded packet over (packet/offload.ts): the field holds the folded, uncomplemented pseudo-header sum over
 * the transport length. Throws for other packets.
 */
export function withPartialChecksum(packet: Uint8Array): Buffer {
  const p = Buffer.from(packet);
  const { t, at, srcAt, dstAt, addrLength } = checksumSite(p);
  p.writeUInt16BE(pseudoHeaderSum(p, srcAt, dstAt, addrLength, t.proto, t.end - t.at), at);
  return p;
}

/**
 * A copy of a TCP/UDP packet whose transport checksum is partial, with the checksum completed the way a NIC
 * (or the kernel's skb_checksum_help) does: the one's-complement sum of the transport bytes, the partial field
 * included, complemented (UDP's 0 as 0xffff). A correct partial field gives a packet `fullChecksumsValid` accepts.
 */
export function completePartialChecksum(packet: Uint8Array): Buffer {
  const p = Buffer.from(packet);
  const { t, at } = checksumSite(p);
  let sum = finishChecksum(onesComplementSum(p, t.at, t.end - t.at));
  if (t.proto === IpProto.Udp && sum === 0) sum = 0xffff;
  p.writeUInt16BE(sum, at);
  return p;
}

function checksumSite(p: Buffer): {
  t: { proto: number; at: number; end: number };
  at: number;
  srcAt: number;
  dstAt: number;
  addrLength: number;
} {
  const t = transportOf(p, 0);
  if (!t || (t.proto !== IpProto.Tcp && t.proto !== IpProto.Udp))
    throw new Error('not an unfragmented TCP/UDP packet');
  const v4 = (p[0] ?? 0) >> 4 === 4;
  return {
    t,
    at: t.at + (t.proto === IpProto.Tcp ? 16 : 6),
    srcAt: v4 ? 12 : 8,
    dstAt: v4 ? 16 : 24,
    addrLength: v4 ? 4 : 16,
  };
}

/** Walks an IPv6 packet to its Fragment header; returns its offset and that of the byte naming it, or -1s. */
function findIpv6FragmentHeader(p: Buffer): { at: number; nextAt: number; unfragmentableEnd: number } {
  let next = p[6] ?? 0;
  let nextAt = 6;
  let at = IPV6_HEADER_BYTES;
  let unfragmentableEnd = IPV6_HEADER_BYTES;
  let unfragmentableNextAt = 6;
  while (next === IpProto.HopByHop || next === IpProto.Routing || next === IpProto.DestinationOptions) {
    const len = ((p[at + 1] ?? 0) + 1) * 8;
    if (next !== IpProto.DestinationOptions) {
      unfragmentableEnd = at + len;
      unfragmentableNextAt = at;
    }
    next = p[at] ?? 0;
    nextAt = at;
    at += len;
  }
  if (next === IpProto.Fragment) return { at, nextAt, unfragmentableEnd: at };
  return { at: -1, nextAt: unfragmentableNextAt, unfragmentableEnd };
}

/**
 * Splits an unfragmented IP packet into fragments of at most `mtu` bytes, as a sending kernel would: IPv4 by
 * the header's fragment fields (keeping its identification), IPv6 by inserting a Fragment header with id
 * `ipv6FragmentId` after the unfragmentable part. A packet that fits is returned as a single copy. Throws
 * for packets that are already fragments, IPv4 packets with DF set, or an MTU too small for 8 data bytes.
 */
export function fragmentPacket(packet: Uint8Array, mtu: number, ipv6FragmentId = 0x0a0b0c0d): Buffer[] {
  const p = Buffer.from(packet);
  if (p.length <= mtu) return [p];
  const v = (p[0] ?? 0) >> 4;
  const out: Buffer[] = [];
  if (v === 4) {
    const hl = ((p[0] ?? 0) & 0x0f) * 4;
    const flags = p.readUInt16BE(6);
    if (flags & 0x4000) throw new Error('packet has DF set');
    if (flags & 0x3fff) throw new Error('packet is already a fragment');
    const per = Math.floor((mtu - hl) / 8) * 8;
    if (per < 8) throw new Error(`MTU ${mtu} too small`);
    const data = p.subarray(hl, p.readUInt16BE(2));
    for (let o = 0; o < data.length; o += per) {
      const chunk = data.subarray(o, Math.min(data.length, o + per));
      const f = Buffer.concat([p.subarray(0, hl), chunk]);
      f.writeUInt16BE(f.length, 2);
      f.writeUInt16BE((o >> 3) | (o + per < data.length ? 0x2000 : 0), 6);
      f.writeUInt16BE(0, 10);
      f.writeUInt16BE(computeIpv4HeaderChecksum(f, 0), 10);
      out.push(f);
    }
    return out;
  }
  const { at, nextAt, unfragmentableEnd } = findIpv6FragmentHeader(p);
  if (at >= 0) throw new Error('packet is already a fragment');
  const unfragmentable = Buffer.from(p.subarray(0, unfragmentableEnd));
  const firstFragmentableHeader = unfragmentable[nextAt] ?? 0;
  unfragmentable[nextAt] = IpProto.Fragment;
  const data = p.subarray(unfragmentableEnd, IPV6_HEADER_BYTES + p.readUInt16BE(4));
  const per = Math.floor((mtu - unfragmentableEnd - IPV6_FRAGMENT_HEADER_BYTES) / 8) * 8;
  if (per < 8) throw new Error(`MTU ${mtu} too small`);
  for (let o = 0; o < data.length; o += per) {
    const chunk = data.subarray(o, Math.min(data.length, o + per));
    const fh = Buffer.alloc(IPV6_FRAGMENT_HEADER_BYTES);
    fh[0] = firstFragmentableHeader;
    fh.writeUInt16BE(o | (o + per < data.length ? 1 : 0), 2);
    fh.writeUInt32BE(ipv6FragmentId >>> 0, 4);
    const f = Buffer.concat([unfragmentable, fh, chunk]);
    f.writeUInt16BE(f.length - IPV6_HEADER_BYTES, 4);
    out.push(f);
  }
  return out;
}

/**
 * Reassembles the fragments of one datagram (any order) into the unfragmented packet: IPv4 with fragment
 * fields cleared and a fresh header checksum, IPv6 with the Fragment header removed. Throws on gaps, overlaps
 * or a missing last fragment.
 */
export function reassemble(fragments: readonly Uint8Array[]): Buffer {
  const parts = fragments.map((f) => {
    const b = Buffer.from(f);
    if ((b[0] ?? 0) >> 4 === 4) {
      const hl = ((b[0] ?? 0) & 0x0f) * 4;
      const ff = b.readUInt16BE(6);
      const data = b.subarray(hl, b.readUInt16BE(2));
      return {
        b,
        offset: (ff & 0x1fff) * 8,
        more: (ff & 0x2000) !== 0,
        head: b.subarray(0, hl),
        data,
        nextAt: -1,
      };
    }
    const { at, nextAt } = findIpv6FragmentHeader(b);
    if (at < 0) throw new Error('IPv6 packet without a Fragment header');
    const fo = b.readUInt16BE(at + 2);
    const data = b.subarray(at + IPV6_FRAGMENT_HEADER_BYTES, IPV6_HEADER_BYTES + b.readUInt16BE(4));
    return { b, offset: fo & 0xfff8, more: (fo & 1) !== 0, head: b.subarray(0, at), data, nextAt };
  });
  parts.sort((x, y) => x.offset - y.offset);
  let expect = 0;
  for (const part of parts) {
    if (part.offset !== expect)
      throw new Error(`fragment gap or overlap at ${expect} (next at ${part.offset})`);
    expect += part.data.length;
  }
  const first = parts[0];
  const last = parts[parts.length - 1];
  if (!first || !last || last.more) throw new Error('missing last fragment');
  const head = Buffer.from(first.head);
  const whole = Buffer.concat([head, ...parts.map((x) => x.data)]);
  if ((head[0] ?? 0) >> 4 === 4) {
    whole.writeUInt16BE(whole.length, 2);
    whole.writeUInt16BE(whole.readUInt16BE(6) & 0x4000, 6);
    whole.writeUInt16BE(0, 10);
    whole.writeUInt16BE(computeIpv4HeaderChecksum(whole, 0), 10);
  } else {
    const fragmentHeaderAt = head.length;
    whole[first.nextAt] = first.b[fragmentHeaderAt] ?? 0;
    whole.writeUInt16BE(whole.length - IPV6_HEADER_BYTES, 4);
  }
  return whole;
}

/**
 * A deterministic pseudo-random generator (mulberry32) returning floats in [0, 1), so randomized tests and
 * benchmarks replay exactly from their seed.
 */
export function createSeededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` bytes from a generator made by createSeededRandom. */
export function randomBytes(random: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(random() * 256);
  return b;
}
