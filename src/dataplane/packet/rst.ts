/**
 * @module dataplane/packet/rst
 * The one packet the data path builds itself: a TCP reset, so that a client whose connection cannot go on
 * (its instance vanished, or no instance can take it) learns at once instead of timing out. Written into a
 * caller-owned buffer: IPv4 (TTL 64, ID 0) or IPv6 (hop limit 64), a 20-byte TCP header with window 0 and no
 * options, checksums complete.
 */
import { finishChecksum, onesComplementSum, pseudoHeaderSum } from './checksum.ts';
import {
  IpProto,
  IPV4_MIN_HEADER_BYTES,
  IPV6_HEADER_BYTES,
  TCP_MIN_HEADER_BYTES,
  TcpFlag,
} from './constants.ts';

/** The longest reset (IPv6): room a caller's buffer needs. */
export const RESET_MAX_BYTES = IPV6_HEADER_BYTES + TCP_MIN_HEADER_BYTES;

export interface TcpReset {
  /** Source and destination addresses, both 4 or both 16 bytes. */
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq: number;
  /** With an acknowledgment number the segment is RST|ACK; without one a bare RST. */
  readonly ack?: number;
}

/** Writes the reset into out[0, n) and returns n (40 for IPv4, 60 for IPv6). */
export function writeTcpReset(out: Buffer, r: TcpReset): number {
  const len = r.src.length;
  if ((len !== 4 && len !== 16) || r.dst.length !== len)
    throw new RangeError('reset needs two 4- or 16-byte addresses');
  const ipBytes = len === 4 ? IPV4_MIN_HEADER_BYTES : IPV6_HEADER_BYTES;
  const total = ipBytes + TCP_MIN_HEADER_BYTES;
  if (out.length < total) throw new RangeError(`reset needs ${total} bytes, the buffer has ${out.length}`);
  out.fill(0, 0, total);
  let srcAt: number;
  let dstAt: number;
  if (len === 4) {
    out[0] = 0x45;
    out.writeUInt16BE(total, 2);
    out[8] = 64;
    out[9] = IpProto.Tcp;
    srcAt = 12;
    dstAt = 16;
  } else {
    out[0] = 0x60;
    out.writeUInt16BE(TCP_MIN_HEADER_BYTES, 4);
    out[6] = IpProto.Tcp;
    out[7] = 64;
    srcAt = 8;
    dstAt = 24;
  }
  out.set(r.src, srcAt);
  out.set(r.dst, dstAt);
  if (len === 4) out.writeUInt16BE(finishChecksum(onesComplementSum(out, 0, IPV4_MIN_HEADER_BYTES)), 10);
  const t = ipBytes;
  out.writeUInt16BE(r.srcPort, t);
  out.writeUInt16BE(r.dstPort, t + 2);
  out.writeUInt32BE(r.seq >>> 0, t + 4);
  out.writeUInt32BE((r.ack ?? 0) >>> 0, t + 8);
  out[t + 12] = (TCP_MIN_HEADER_BYTES >> 2) << 4;
  out[t + 13] = r.ack === undefined ? TcpFlag.Rst : TcpFlag.Rst | TcpFlag.Ack;
  const pseudo = pseudoHeaderSum(out, srcAt, dstAt, len, IpProto.Tcp, TCP_MIN_HEADER_BYTES);
  out.writeUInt16BE(finishChecksum(onesComplementSum(out, t, TCP_MIN_HEADER_BYTES, pseudo)), t + 16);
  return total;
}
