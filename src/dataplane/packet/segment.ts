/**
 * @module dataplane/packet/segment
 * Software TSO/USO in TypeScript: cuts one offloaded super-packet (offload.ts: one IP and TCP/UDP header for up
 * to 64 KiB of payload, a partial transport checksum, and its gso word n) into the ordinary IP packets a NIC
 * would put on the wire, n payload bytes each, every one with headers and checksums of its own.
 *
 * Why it exists: offloads belong to the devices, so a Tunnel cuts the super-packets handed to its `send`
 * itself. The UDP tunnel does it in C (native/offload.c `plan_segments` and `write_segment_header`, inside
 * udp.c's send); the in-memory tunnel does it here, so tests of the proxy over it need no compiled addon. Both
 * make the same wire packets: segment-native.test.ts holds this file to the C code byte for byte (through the
 * addon's test build), refusals of malformed input included. Their room differs: the UDP tunnel refuses a
 * super-packet whose segments need more than 1,024 datagrams or 256 KiB of headers, the in-memory one more than
 * 1,024 datagrams or 1 MiB in all (only IPv6 with kilobytes of extension headers and a tiny MSS tells).
 *
 * Wire packet k of N gets, as Linux GSO does it: IPv4 total length, identification + k (mod 2^16) and a
 * fresh header checksum, or the IPv6 payload length (extension headers are copied as they are); TCP sequence
 * number + k * n, CWR on the first packet only (whatever the ECN state), FIN and PSH on the last only; the UDP
 * length; a full transport checksum (UDP's 0 sent as 0xffff). The incoming checksum field is not read, nor
 * are bytes after the IP packet's own length. IPv4 and IPv6 share one path: only the header offsets differ.
 */
import { finishChecksum, onesComplementSum } from './checksum.ts';
import { IpProto, TcpFlag } from './constants.ts';

/** Why `segmentPacket` made no wire packets (negative, so any result below 1 is a failure). */
export const SegmentFailure = {
  /**
   * A super-packet that cannot be cut: not an unfragmented IPv4/IPv6 TCP or UDP packet (a fragment, another
   * protocol, an IPv6 extension header other than hop-by-hop, destination options or a routing header with no
   * segments left), or truncated or inconsistent headers. Drop it and count it; trying again will not help.
   */
  Malformed: -1,
  /** Its wire packets need more bytes or slots than `out` has left: send what `out` holds and try again with it empty (if it was empty, drop the packet). */
  NoRoom: -2,
} as const;

/** One of the SegmentFailure values. */
export type SegmentFailure = (typeof SegmentFailure)[keyof typeof SegmentFailure];

/** Where wire packets are appended: a batch whose packets lie back to back in `buffer` (tun/tun.ts `BatchBuilder` and tunnel/tunnel.ts `OutboundBatch` fit). */
export interface SegmentOutput {
  /** Holds the wire packets; the next one starts where the last one in the batch ends (at 0 when empty). */
  readonly buffer: Buffer;
  /** Packets in the batch. */
  readonly count: number;
  /** Most packets the batch holds. */
  readonly capacity: number;
  /** Start of packet i in `buffer`. */
  readonly offsets: Uint32Array;
  /** Length of packet i. */
  readonly lengths: Uint32Array;
  /** Appends packet buffer[offset, offset + length); called only while count < capacity. */
  push(offset: number, length: number): boolean;
}

/**
 * Appends the wire packets of packet buf[offset, offset + length) with gso word `gso` to `out`: written back
 * to back into out.buffer after out's last packet (which must not overlap buf's packet), and pushed with
 * gso word 0. A gso word of 0 is an ordinary packet, copied as it is; a nonzero one cuts the payload into
 * segments of that many bytes (one segment when it is at least the payload, however large). Returns the
 * number of wire packets appended (>= 1), or a SegmentFailure, in which case `out` is unchanged. Never
 * throws for the packet's bytes; throws RangeError for a range outside buf or a gso word that is not a
 * uint32 (caller bugs). Linear in the packet's size, allocation-free.
 */
export function segmentPacket(
  buf: Buffer,
  offset: number,
  length: number,
  gso: number,
  out: SegmentOutput,
): number {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0)
    throw new RangeError(`bad packet range ${offset}+${length}`);
  if (offset + length > buf.length)
    throw new RangeError(`packet ${offset}+${length} lies outside a ${buf.length}-byte buffer`);
  if (!Number.isInteger(gso) || gso < 0 || gso > 0xffffffff) throw new RangeError(`bad gso word ${gso}`);
  const count = out.count;
  const slots = out.capacity - count;
  const start = count === 0 ? 0 : out.offsets[count - 1]! + out.lengths[count - 1]!;
  const dst = out.buffer;
  const room = dst.length - start;
  if (slots <= 0) return SegmentFailure.NoRoom;
  if (gso === 0) {
    if (length > room) return SegmentFailure.NoRoom;
    copyBytes(buf, offset, length, dst, start);
    out.push(start, length);
    return 1;
  }

  const parsed = parseTransport(buf, offset, length);
  if (parsed < 0) return SegmentFailure.Malformed;
  const l4 = parsed >>> 8; // transport header offset from the start of the packet
  const proto = parsed & 0xff;
  const v4 = buf[offset]! >> 4 === 4;
  const tcp = proto === IpProto.Tcp;
  const total = v4 ? buf.readUInt16BE(offset + 2) : 40 + buf.readUInt16BE(offset + 4);
  const l4Header = tcp ? (buf[offset + l4 + 12]! >> 4) * 4 : 8;
  const hdr = l4 + l4Header;
  const payload = total - hdr;
  // ceil(payload / gso), and 1 for no payload at all (a lone header still goes out)
  const segments = payload <= gso ? 1 : Math.floor((payload - 1) / gso) + 1;
  if (segments > slots || segments * hdr + payload > room) return SegmentFailure.NoRoom;

  const seq = tcp ? buf.readUInt32BE(offset + l4 + 4) : 0;
  const id = v4 ? buf.readUInt16BE(offset + 4) : 0;
  const flags = tcp ? buf[offset + l4 + 13]! : 0;
  const addresses = v4 ? onesComplementSum(buf, offset + 12, 8) : onesComplementSum(buf, offset + 8, 32);
  let o = start;
  for (let k = 0; k < segments; k++) {
    const at = k * gso;
    const plen = payload - at < gso ? payload - at : gso;
    const l4Length = l4Header + plen;
    copyBytes(buf, offset, hdr, dst, o);
    // the transport header is an even number of bytes, so the payload's words are the checksum's words
    const payloadSum = copyAndSum(buf, offset + hdr + at, plen, dst, o + hdr);
    if (v4) {
      dst.writeUInt16BE(hdr + plen, o + 2);
      dst.writeUInt16BE((id + k) & 0xffff, o + 4);
      dst[o + 10] = 0;
      dst[o + 11] = 0;
      dst.writeUInt16BE(finishChecksum(onesComplementSum(dst, o, l4)), o + 10);
    } else {
      dst.writeUInt16BE(hdr + plen - 40, o + 4);
    }
    const t = o + l4;
    const pseudo = addresses + proto + l4Length; // l4Length < 2^16: its high half of the pseudo-header is 0
    if (tcp) {
      let f = flags;
      if (k > 0) f &= ~TcpFlag.Cwr;
      if (k + 1 < segments) f &= ~(TcpFlag.Fin | TcpFlag.Psh);
      dst.writeUInt32BE((seq + at) >>> 0, t + 4);
      dst[t + 13] = f;
      dst[t + 16] = 0;
      dst[t + 17] = 0;
      dst.writeUInt16BE(finishChecksum(onesComplementSum(dst, t, l4Header, pseudo + payloadSum)), t + 16);
    } else {
      dst.writeUInt16BE(l4Length, t + 4);
      dst[t + 6] = 0;
      dst[t + 7] = 0;
      const c = finishChecksum(onesComplementSum(dst, t, 8, pseudo + payloadSum));
      dst.writeUInt16BE(c === 0 ? 0xffff : c, t + 6);
    }
    out.push(o, hdr + plen);
    o += hdr + plen;
  }
  return segments;
}

/*
 * Copies by hand: on Node 20, Buffer.copy and set() of a subarray make a view object per call, and these run
 * for every wire packet.
 */

/** Copies src[from, from + length) to dst[at..). */
function copyBytes(src: Buffer, from: number, length: number, dst: Buffer, at: number): void {
  for (let i = 0; i < length; i++) dst[at + i] = src[from + i]!;
}

/**
 * Copies src[from, from + length) to dst[at..) and returns the unfolded one's-complement sum of those bytes
 * as big-endian 16-bit words (an odd last byte padded with zero): the copy and the checksum in one pass.
 * Below 2^32 for up to 64 KiB, so it can be added to other sums and folded once.
 */
function copyAndSum(src: Buffer, from: number, length: number, dst: Buffer, at: number): number {
  let sum = 0;
  const even = length & ~1;
  for (let i = 0; i < even; i += 2) {
    const hi = src[from + i]!;
    const lo = src[from + i + 1]!;
    dst[at + i] = hi;
    dst[at + i + 1] = lo;
    sum += (hi << 8) | lo;
  }
  if (length & 1) {
    const last = src[from + even]!;
    dst[at + even] = last;
    sum += last << 8;
  }
  return sum;
}

/**
 * The transport of the packet p[start, start + len) as (its offset from start) * 256 + its protocol, or -1
 * unless it is an unfragmented IPv4/IPv6 TCP or UDP packet whose headers fit its IP length, which fits len
 * (the addon's parse_l4, check for check). Two numbers in one so that the data path needs no result object.
 */
function parseTransport(p: Buffer, start: number, len: number): number {
  if (len < 20) return -1;
  const version = p[start]! >> 4;
  let pos: number;
  let total: number;
  let next: number;
  if (version === 4) {
    pos = (p[start]! & 0x0f) * 4;
    total = p.readUInt16BE(start + 2);
    if (pos < 20 || total < pos || total > len || (p.readUInt16BE(start + 6) & 0x3fff) !== 0) return -1;
    next = p[start + 9]!;
  } else if (version === 6) {
    if (len < 40) return -1;
    total = 40 + p.readUInt16BE(start + 4);
    if (total > len) return -1;
    next = p[start + 6]!;
    pos = 40;
    while (next === IpProto.HopByHop || next === IpProto.DestinationOptions || next === IpProto.Routing) {
      if (pos + 8 > total) return -1;
      const ext = (p[start + pos + 1]! + 1) * 8;
      // a routing header with segments left: the pseudo-header would name another destination
      if (pos + ext > total || (next === IpProto.Routing && p[start + pos + 3] !== 0)) return -1;
      next = p[start + pos]!;
      pos += ext;
    }
  } else {
    return -1;
  }
  if (next === IpProto.Tcp) {
    if (pos + 20 > total) return -1;
    const l4Header = (p[start + pos + 12]! >> 4) * 4;
    if (l4Header < 20 || pos + l4Header > total) return -1;
  } else if (next === IpProto.Udp) {
    if (pos + 8 > total) return -1;
  } else {
    return -1;
  }
  return pos * 256 + next;
}
