/**
 * @module dataplane/packet/offload
 * What a packet carries when the TUN offloads segmentation and checksums (IFF_VNET_HDR, TUNSETOFFLOAD): the
 * kernel hands ProxyTUN TCP (and UDP) "super-packets" of up to 64 KiB, one header for many segments, and takes
 * them back the same way. The data path sees this as one number per packet, its gso word (`PacketBatch.gso`):
 *
 * - 0: an ordinary packet whose checksums are complete;
 * - n > 0: a TCP or UDP super-packet whose payload is cut into n-byte segments (the MSS) on the way out, and
 *   whose transport checksum field is partial: it holds the folded, NOT complemented one's-complement sum of
 *   the pseudo-header over the super-packet's transport length (virtio's VIRTIO_NET_HDR_F_NEEDS_CSUM, and
 *   Linux's convention for it). Whoever completes it (a tunnel's segmenter, or the kernel for a
 *   super-packet written back to the TUN) sums the transport bytes into it and stores the complement.
 *
 * A NAT rewrite of a partial checksum is the mirror image of the usual RFC 1624 update: the field is a sum,
 * not its complement, so an address change m -> m' adds the delta (~m + m') to it: F' = F + D, where a
 * complete checksum gets HC' = ~(~HC + D). Port and identifier changes do not touch it at all (the header
 * words are summed when the checksum is completed). `rewrite.ts` does this when `ParsedPacket.l4ChecksumPartial`
 * is set.
 *
 * The virtio_net_hdr constants below describe the 10-byte header of the TUN (legacy layout, host byte
 * order) for tests and tools; the addon builds and parses it.
 */
import { foldSum } from './checksum.ts';

/** Bytes of struct virtio_net_hdr in front of every packet on a TUN opened with offloads. */
export const VNET_HDR_BYTES = 10;

/** virtio_net_hdr.flags bits. */
export const VnetFlag = {
  /** The transport checksum is partial: complete it from csum_start, store it at csum_start + csum_offset. */
  NeedsCsum: 1,
  /** The checksum was verified. */
  DataValid: 2,
} as const;

/** virtio_net_hdr.gso_type values. */
export const VnetGso = {
  None: 0,
  TcpV4: 1,
  TcpV6: 4,
  UdpL4: 5,
  /** Flag: the TCP super-packet has ECN (CWR goes on its first segment only). */
  Ecn: 0x80,
} as const;

/** A decoded virtio_net_hdr (tests and tools; the data path never builds one). */
export interface VnetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** Reads the virtio_net_hdr at buf[offset] (host byte order: little-endian on every platform Node runs oaknet on). */
export function readVnetHeader(buf: Buffer, offset = 0): VnetHeader {
  return {
    flags: buf.readUInt8(offset),
    gsoType: buf.readUInt8(offset + 1),
    hdrLen: buf.readUInt16LE(offset + 2),
    gsoSize: buf.readUInt16LE(offset + 4),
    csumStart: buf.readUInt16LE(offset + 6),
    csumOffset: buf.readUInt16LE(offset + 8),
  };
}

/**
 * A partial checksum field (a pseudo-header sum, see the module comment) after the words it covers changed by
 * `delta` (a sum of RFC 1624 terms ~m + m', < 2^31): F + delta, folded. A delta of 0 returns it unchanged.
 */
export function addToPartialChecksum(field: number, delta: number): number {
  if (delta === 0) return field;
  return foldSum(field + delta);
}
