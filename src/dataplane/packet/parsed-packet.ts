/**
 * @module dataplane/packet/parsed-packet
 * A minimal, allocation-free decoding of one IPv4 or IPv6 packet, enough for an L4 NAT proxy to key a flow and
 * rewrite it in place. The proxy owns one ParsedPacket per loop and calls `decode` for every packet: `decode`
 * overwrites every field, never allocates, never throws, and answers malformed input with a DecodeError code
 * (a small integer, so drops can be counted per reason in an array) instead of an exception.
 *
 * IPv4 and IPv6 go through one code path: addresses are described by a byte offset into the caller's buffer plus
 * a length (4 or 16), never copied into objects. Only the words that matter are read: version, lengths, the
 * fragment fields, the IPv6 extension-header chain (hop-by-hop, routing, destination options, fragment) and the
 * first 8 to 20 bytes of the transport header. Every length is checked before the bytes it covers are read.
 *
 * Fragments follow RFC 1858 / RFC 7112: a first fragment too short to hold the transport header (the ports and,
 * for TCP, the flags) is a TinyFragment, and so is a TCP fragment at offset 8, which could overwrite the flags of
 * the first one. A non-first fragment has no transport header (`l4Offset === -1`); the proxy must map it by
 * fragment id. IPv4 header checksums are not verified: packets come from the local kernel through a TUN device.
 */
import {
  ICMP_HEADER_BYTES,
  IcmpType,
  IP_MAX_DATAGRAM_BYTES,
  IpProto,
  IPV4_MIN_HEADER_BYTES,
  IPV6_FRAGMENT_HEADER_BYTES,
  IPV6_HEADER_BYTES,
  TCP_MIN_HEADER_BYTES,
  UDP_HEADER_BYTES,
} from './constants.ts';

/** Why `decode` refused a packet. Values are small consecutive integers: usable as counter-array indexes. */
export const DecodeError = {
  /** Well-formed; the packet can be proxied. */
  Ok: 0,
  /** offset/length lie outside the buffer (or are not integers): a caller bug, reported rather than thrown. */
  OutOfBounds: 1,
  /** Fewer bytes than the fixed IP header (20 for IPv4, 40 for IPv6), or an empty packet. */
  TooShort: 2,
  /** The version nibble is neither 4 nor 6. */
  BadVersion: 3,
  /** IPv4 IHL below 5, or the header is longer than the total length. */
  BadHeaderLength: 4,
  /** The IPv4 total length / IPv6 payload length claims more bytes than were captured (truncated packet). */
  BadTotalLength: 5,
  /** An IPv6 extension header runs past the end of the packet, is repeated wrongly or is out of order. */
  BadExtensionHeader: 6,
  /** An IPv6 Routing header with segments left: the L4 checksum uses a destination not in the IP header. */
  UnsupportedExtensionHeader: 7,
  /** Inconsistent fragment fields: data past 65535 bytes or a non-final fragment not a multiple of 8 bytes. */
  BadFragment: 8,
  /** RFC 1858 / RFC 7112: a first fragment without the whole transport header, or a TCP fragment at offset 8. */
  TinyFragment: 9,
  /** An unfragmented packet too short for its TCP, UDP or ICMP header. */
  TruncatedTransport: 10,
  /** A TCP data offset below 5 words or a UDP length below 8 bytes or beyond the packet. */
  BadTransportHeader: 11,
  /** The IP header decoded fine but the transport is not TCP, UDP or the family's ICMP; may be passed on. */
  UnsupportedProtocol: 12,
} as const;

/** One of the DecodeError values. */
export type DecodeError = (typeof DecodeError)[keyof typeof DecodeError];

const DECODE_ERROR_NAMES: readonly string[] = Object.keys(DecodeError);

/** The DecodeError's name for logs and metrics labels ('Ok', 'TooShort', ...); 'Unknown' for other numbers. */
export function decodeErrorName(error: number): string {
  return DECODE_ERROR_NAMES[error] ?? 'Unknown';
}

/** Number of DecodeError values: the length of a per-reason counter array. */
export const DECODE_ERROR_COUNT = DECODE_ERROR_NAMES.length;

const EMPTY = new Uint8Array(0);

/** Big-endian 16-bit read; the caller has checked that both bytes exist. */
function u16(buf: Uint8Array, i: number): number {
  return (buf[i]! << 8) | buf[i + 1]!;
}

/** Big-endian unsigned 32-bit read; the caller has checked that the bytes exist. */
function readU32(buf: Uint8Array, i: number): number {
  return ((buf[i]! << 24) | (buf[i + 1]! << 16) | (buf[i + 2]! << 8) | buf[i + 3]!) >>> 0;
}

/** True when next-header value `n` is an IPv6 extension header that this decoder walks. */
function isWalkedExtension(n: number): boolean {
  return (
    n === IpProto.HopByHop ||
    n === IpProto.Routing ||
    n === IpProto.DestinationOptions ||
    n === IpProto.Fragment
  );
}

/**
 * The decoded view of one packet. Create one per processing loop and reuse it: `decode` overwrites every field.
 * Fields are plain mutable properties for speed; only `decode` and the functions in rewrite.ts should set them.
 */
export class ParsedPacket {
  /** The buffer of the last decode (an empty array before the first one). Valid while that buffer is unchanged. */
  buffer: Uint8Array = EMPTY;
  /** Why the last decode failed, or DecodeError.Ok. Always valid. */
  error: DecodeError = DecodeError.TooShort;
  /** IP version 4 or 6; 0 when the version nibble was not read or not 4/6. */
  version: 0 | 4 | 6 = 0;
  /** Absolute offset of the IP header in `buffer`. Valid when version !== 0. */
  ipOffset = 0;
  /**
   * Bytes from the IP header to the upper-layer data: IPv4 IHL×4, or 40 plus every IPv6 extension header walked
   * (up to and including a Fragment header). Valid when error is Ok, UnsupportedProtocol or a transport error.
   */
  ipHeaderLength = 0;
  /** The IP packet's length from its header (IPv4 total length, IPv6 40 + payload length). Valid when srcOffset >= 0. */
  totalLength = 0;
  /**
   * Transport protocol number after walking IPv6 extension headers; 0 when unknown (e.g. an IPv6 non-first
   * fragment whose fragmentable part starts with another extension header). Valid when srcOffset >= 0.
   */
  proto = 0;
  /** Absolute offset of the source address bytes; -1 when the IP header did not decode. */
  srcOffset = -1;
  /** Absolute offset of the destination address bytes; -1 when the IP header did not decode. */
  dstOffset = -1;
  /** Address length: 4 (IPv4) or 16 (IPv6); 0 when the IP header did not decode. */
  addrLength: 0 | 4 | 16 = 0;
  /**
   * Absolute offset of the upper-layer header (TCP, UDP, ICMP, or the unsupported protocol's header); -1 for a
   * non-first fragment (no upper-layer header) or when decoding stopped before it.
   */
  l4Offset = -1;
  /** Bytes from l4Offset to the end of the IP packet (only this fragment's share for a first fragment); 0 when l4Offset is -1. */
  l4Length = 0;
  /**
   * Absolute offset of the TCP/UDP/ICMP/ICMPv6 checksum field; -1 when the packet has no such header. Valid when
   * error is Ok. A UDP checksum of 0 there means "no checksum" (IPv4; IPv6 only on RFC 6936 tunnel ports).
   */
  l4ChecksumOffset = -1;
  /** TCP/UDP source port, or the ICMP/ICMPv6 echo identifier; 0 otherwise. Valid when error is Ok. */
  srcPort = 0;
  /** TCP/UDP destination port, or the ICMP/ICMPv6 echo identifier (same as srcPort); 0 otherwise. Valid when error is Ok. */
  dstPort = 0;
  /** TCP flags byte (see TcpFlag). Valid when error is Ok, proto is TCP and l4Offset >= 0; 0 otherwise. */
  tcpFlags = 0;
  /** ICMP/ICMPv6 type. Valid when error is Ok, proto is the family's ICMP and l4Offset >= 0; 0 otherwise. */
  icmpType = 0;
  /** ICMP/ICMPv6 code. Valid under the same conditions as icmpType. */
  icmpCode = 0;
  /** True for an ICMP/ICMPv6 echo request or reply (srcPort/dstPort then hold the identifier). Valid when error is Ok. */
  isEcho = false;
  /** True when the packet is one fragment of a larger datagram (offset > 0 or more-fragments set). Valid when srcOffset >= 0. */
  isFragment = false;
  /** True for the fragment at offset 0 of a fragmented datagram; false for unfragmented packets. */
  isFirstFragment = false;
  /** Fragment offset in bytes; 0 when not a fragment. */
  fragmentOffset = 0;
  /** The more-fragments flag. */
  moreFragments = false;
  /** Bytes of the datagram this fragment carries (after the IP header and any Fragment header); 0 when not a fragment. */
  fragmentDataLength = 0;
  /** IPv4 identification (16 bits) or IPv6 Fragment header identification (32 bits); 0 for IPv6 without one. */
  fragmentId = 0;
  /**
   * True when the transport checksum field holds a partial sum (an offloaded super-packet, see offload.ts), so
   * rewrites adjust it as a sum. `decode` clears it; the caller sets it from the packet's gso word.
   */
  l4ChecksumPartial = false;

  /**
   * Decodes the packet at buf[offset..offset+length), overwriting every field. Returns true when the packet is
   * well-formed enough to proxy (error === Ok); otherwise `error` says why. Never throws, never allocates.
   * Bytes after the IP total length (link padding) are ignored.
   */
  decode(buf: Uint8Array, offset: number, length: number): boolean {
    this.buffer = buf;
    this.version = 0;
    this.ipOffset = offset;
    this.ipHeaderLength = 0;
    this.totalLength = 0;
    this.proto = 0;
    this.srcOffset = -1;
    this.dstOffset = -1;
    this.addrLength = 0;
    this.l4Offset = -1;
    this.l4Length = 0;
    this.l4ChecksumOffset = -1;
    this.srcPort = 0;
    this.dstPort = 0;
    this.tcpFlags = 0;
    this.icmpType = 0;
    this.icmpCode = 0;
    this.isEcho = false;
    this.isFragment = false;
    this.isFirstFragment = false;
    this.fragmentOffset = 0;
    this.moreFragments = false;
    this.fragmentDataLength = 0;
    this.fragmentId = 0;
    this.l4ChecksumPartial = false;

    if ((offset | 0) !== offset || (length | 0) !== length || offset < 0 || length < 0) {
      return this.fail(DecodeError.OutOfBounds);
    }
    if (offset + length > buf.length) return this.fail(DecodeError.OutOfBounds);
    if (length === 0) return this.fail(DecodeError.TooShort);
    const v = buf[offset]! >> 4;
    if (v === 4) return this.decode4(buf, offset, length);
    if (v === 6) return this.decode6(buf, offset, length);
    return this.fail(DecodeError.BadVersion);
  }

  /** True when the last decode succeeded (error === Ok). */
  get ok(): boolean {
    return this.error === DecodeError.Ok;
  }

  /** TCP sequence number. Valid when error is Ok and proto is TCP with l4Offset >= 0. */
  tcpSeq(): number {
    return readU32(this.buffer, this.l4Offset + 4);
  }

  /** TCP acknowledgment number (meaningful when the ACK flag is set). Valid as tcpSeq. */
  tcpAck(): number {
    return readU32(this.buffer, this.l4Offset + 8);
  }

  /** TCP payload bytes (of this packet, or of a whole super-packet); 0 for a bare header. Valid as tcpSeq. */
  tcpPayloadLength(): number {
    return Math.max(0, this.l4Length - ((this.buffer[this.l4Offset + 12]! >> 4) << 2));
  }

  /** The source address as text for logs (slow path: allocates a string); '' when the IP header did not decode. */
  srcAddress(): string {
    return this.srcOffset < 0 ? '' : formatAddress(this.buffer, this.srcOffset, this.addrLength);
  }

  /** The destination address as text for logs (slow path); '' when the IP header did not decode. */
  dstAddress(): string {
    return this.dstOffset < 0 ? '' : formatAddress(this.buffer, this.dstOffset, this.addrLength);
  }

  /**
   * Copies the source address into out[outOffset..) without allocating; returns the bytes copied
   * (addrLength; 0 when the IP header did not decode). Throws RangeError when out is too small (a caller bug).
   */
  copySrcAddress(out: Uint8Array, outOffset = 0): number {
    return this.copyAddress(this.srcOffset, out, outOffset);
  }

  /**
   * Copies the destination address into out[outOffset..) without allocating; returns the bytes copied
   * (addrLength; 0 when the IP header did not decode). Throws RangeError when out is too small (a caller bug).
   */
  copyDstAddress(out: Uint8Array, outOffset = 0): number {
    return this.copyAddress(this.dstOffset, out, outOffset);
  }

  /** True when the source address equals other[otherOffset..otherOffset+otherLength) (same family and bytes). */
  srcAddressEquals(other: Uint8Array, otherOffset = 0, otherLength = other.length - otherOffset): boolean {
    return (
      this.srcOffset >= 0 &&
      otherLength === this.addrLength &&
      sameAddress(this.buffer, this.srcOffset, other, otherOffset, otherLength)
    );
  }

  /** True when the destination address equals other[otherOffset..otherOffset+otherLength). */
  dstAddressEquals(other: Uint8Array, otherOffset = 0, otherLength = other.length - otherOffset): boolean {
    return (
      this.dstOffset >= 0 &&
      otherLength === this.addrLength &&
      sameAddress(this.buffer, this.dstOffset, other, otherOffset, otherLength)
    );
  }

  private copyAddress(at: number, out: Uint8Array, outOffset: number): number {
    const n = this.addrLength;
    if (at < 0) return 0;
    if (outOffset < 0 || outOffset + n > out.length) {
      throw new RangeError(`address of ${n} bytes does not fit at ${outOffset} in ${out.length} bytes`);
    }
    const buf = this.buffer;
    for (let i = 0; i < n; i++) out[outOffset + i] = buf[at + i]!;
    return n;
  }

  private fail(error: DecodeError): false {
    this.error = error;
    return false;
  }

  private decode4(buf: Uint8Array, off: number, length: number): boolean {
    if (length < IPV4_MIN_HEADER_BYTES) return this.fail(DecodeError.TooShort);
    const ihl = (buf[off]! & 0x0f) << 2;
    if (ihl < IPV4_MIN_HEADER_BYTES) return this.fail(DecodeError.BadHeaderLength);
    const total = u16(buf, off + 2);
    if (total > length) return this.fail(DecodeError.BadTotalLength);
    if (total < ihl) return this.fail(DecodeError.BadHeaderLength);

    this.version = 4;
    this.totalLength = total;
    this.ipHeaderLength = ihl;
    this.addrLength = 4;
    this.srcOffset = off + 12;
    this.dstOffset = off + 16;
    this.proto = buf[off + 9]!;

    const frag = u16(buf, off + 6);
    const fragOffset = (frag & 0x1fff) << 3;
    const more = (frag & 0x2000) !== 0;
    this.fragmentId = u16(buf, off + 4);
    if (fragOffset !== 0 || more) {
      this.isFragment = true;
      this.isFirstFragment = fragOffset === 0;
      this.fragmentOffset = fragOffset;
      this.moreFragments = more;
      const data = total - ihl;
      this.fragmentDataLength = data;
      if (fragOffset + data > IP_MAX_DATAGRAM_BYTES || (more && (data & 7) !== 0)) {
        return this.fail(DecodeError.BadFragment);
      }
    }
    return this.decodeTransport(buf, off + ihl, off + total, IpProto.Icmp);
  }

  private decode6(buf: Uint8Array, off: number, length: number): boolean {
    if (length < IPV6_HEADER_BYTES) return this.fail(DecodeError.TooShort);
    const total = IPV6_HEADER_BYTES + u16(buf, off + 4);
    if (total > length) return this.fail(DecodeError.BadTotalLength);

    this.version = 6;
    this.totalLength = total;
    this.addrLength = 16;
    this.srcOffset = off + 8;
    this.dstOffset = off + 24;

    const end = off + total;
    let next = buf[off + 6]!;
    let pos = off + IPV6_HEADER_BYTES;
    let sawFragment = false;
    // Each header is at least 8 bytes and must fit before `end`, so the walk ends after at most 8192 steps.
    while (isWalkedExtension(next)) {
      if (next === IpProto.Fragment) {
        if (sawFragment) return this.failHeaders(DecodeError.BadExtensionHeader, pos);
        if (pos + IPV6_FRAGMENT_HEADER_BYTES > end)
          return this.failHeaders(DecodeError.BadExtensionHeader, pos);
        sawFragment = true;
        const fo = u16(buf, pos + 2);
        const fragOffset = fo & 0xfff8;
        const more = (fo & 1) !== 0;
        this.fragmentId = ((buf[pos + 4]! << 24) | (buf[pos + 5]! << 16) | u16(buf, pos + 6)) >>> 0;
        next = buf[pos]!;
        pos += IPV6_FRAGMENT_HEADER_BYTES;
        // Offset 0 without M is an "atomic fragment" (RFC 6946): a whole datagram, processed as unfragmented.
        if (fragOffset !== 0 || more) {
          this.isFragment = true;
          this.isFirstFragment = fragOffset === 0;
          this.fragmentOffset = fragOffset;
          this.moreFragments = more;
          const data = end - pos;
          this.fragmentDataLength = data;
          if (fragOffset + data > IP_MAX_DATAGRAM_BYTES || (more && (data & 7) !== 0)) {
            this.ipHeaderLength = pos - off;
            return this.fail(DecodeError.BadFragment);
          }
          if (fragOffset !== 0) {
            // The bytes after this header are the middle of the fragmentable part: no header chain to walk.
            if (isWalkedExtension(next)) next = 0;
            break;
          }
        }
        continue;
      }
      if (next === IpProto.HopByHop && pos !== off + IPV6_HEADER_BYTES) {
        return this.failHeaders(DecodeError.BadExtensionHeader, pos);
      }
      if (pos + 2 > end) return this.failHeaders(this.chainError(), pos);
      const len = (buf[pos + 1]! + 1) << 3;
      if (pos + len > end) return this.failHeaders(this.chainError(), pos);
      if (next === IpProto.Routing && buf[pos + 3]! !== 0) {
        return this.failHeaders(DecodeError.UnsupportedExtensionHeader, pos);
      }
      next = buf[pos]!;
      pos += len;
    }
    this.proto = next;
    return this.decodeTransport(buf, pos, end, IpProto.Icmpv6);
  }

  /** A truncated header chain in a first fragment violates RFC 7112; otherwise the packet is just malformed. */
  private chainError(): DecodeError {
    return this.isFirstFragment ? DecodeError.TinyFragment : DecodeError.BadExtensionHeader;
  }

  private failHeaders(error: DecodeError, pos: number): false {
    this.ipHeaderLength = pos - this.ipOffset;
    return this.fail(error);
  }

  /**
   * Decodes the upper-layer header at buf[pos..end). `icmpProto` is the ICMP protocol number of this packet's
   * family (1 for IPv4, 58 for IPv6); the other family's ICMP is an unsupported protocol.
   */
  private decodeTransport(buf: Uint8Array, pos: number, end: number, icmpProto: number): boolean {
    this.ipHeaderLength = pos - this.ipOffset;
    const proto = this.proto;
    const supported = proto === IpProto.Tcp || proto === IpProto.Udp || proto === icmpProto;
    if (this.fragmentOffset !== 0) {
      // RFC 1858: a TCP fragment at offset 8 could overwrite the flags of the first fragment.
      if (proto === IpProto.Tcp && this.fragmentOffset === 8) return this.fail(DecodeError.TinyFragment);
      // proto 0 here means an IPv6 chain whose transport is only named in the first fragment.
      if (!supported && !(proto === 0 && this.version === 6))
        return this.fail(DecodeError.UnsupportedProtocol);
      this.error = DecodeError.Ok;
      return true;
    }
    const avail = end - pos;
    this.l4Offset = pos;
    this.l4Length = avail;
    if (!supported) return this.fail(DecodeError.UnsupportedProtocol);
    const short = this.isFragment ? DecodeError.TinyFragment : DecodeError.TruncatedTransport;

    if (proto === IpProto.Tcp) {
      if (avail < TCP_MIN_HEADER_BYTES) return this.fail(short);
      const dataOffset = (buf[pos + 12]! >> 4) << 2;
      if (dataOffset < TCP_MIN_HEADER_BYTES) return this.fail(DecodeError.BadTransportHeader);
      if (dataOffset > avail)
        return this.fail(this.isFragment ? DecodeError.TinyFragment : DecodeError.BadTransportHeader);
      this.srcPort = u16(buf, pos);
      this.dstPort = u16(buf, pos + 2);
      this.tcpFlags = buf[pos + 13]!;
      this.l4ChecksumOffset = pos + 16;
    } else if (proto === IpProto.Udp) {
      if (avail < UDP_HEADER_BYTES) return this.fail(short);
      // The UDP length covers the whole datagram; a first fragment holds only part of it.
      const udpLength = u16(buf, pos + 4);
      if (udpLength < UDP_HEADER_BYTES || (!this.isFragment && udpLength > avail)) {
        return this.fail(DecodeError.BadTransportHeader);
      }
      this.srcPort = u16(buf, pos);
      this.dstPort = u16(buf, pos + 2);
      this.l4ChecksumOffset = pos + 6;
    } else {
      if (avail < ICMP_HEADER_BYTES) return this.fail(short);
      const type = buf[pos]!;
      this.icmpType = type;
      this.icmpCode = buf[pos + 1]!;
      this.l4ChecksumOffset = pos + 2;
      const echo =
        proto === IpProto.Icmp
          ? type === IcmpType.EchoRequest || type === IcmpType.EchoReply
          : type === IcmpType.Echo6Request || type === IcmpType.Echo6Reply;
      if (echo) {
        this.isEcho = true;
        const id = u16(buf, pos + 4);
        this.srcPort = id;
        this.dstPort = id;
      }
    }
    this.error = DecodeError.Ok;
    return true;
  }
}

/** True when a[aOffset..aOffset+length) and b[bOffset..bOffset+length) hold the same bytes. No allocation. */
export function sameAddress(
  a: Uint8Array,
  aOffset: number,
  b: Uint8Array,
  bOffset: number,
  length: number,
): boolean {
  if (aOffset < 0 || bOffset < 0 || aOffset + length > a.length || bOffset + length > b.length) return false;
  for (let i = 0; i < length; i++) {
    if (a[aOffset + i] !== b[bOffset + i]) return false;
  }
  return true;
}

/**
 * Text form of the 4- or 16-byte address at buf[offset..): dotted quad, or RFC 5952 IPv6 (lowercase, longest
 * run of two or more zero groups as "::", leftmost on a tie; IPv4-mapped addresses stay in hex groups, like
 * IpAddress.toString). '' for other lengths. Slow path: allocates.
 */
export function formatAddress(buf: Uint8Array, offset: number, length: number): string {
  if (length === 4) {
    return `${buf[offset] ?? 0}.${buf[offset + 1] ?? 0}.${buf[offset + 2] ?? 0}.${buf[offset + 3] ?? 0}`;
  }
  if (length !== 16) return '';
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((buf[offset + i] ?? 0) << 8) | (buf[offset + i + 1] ?? 0));
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
