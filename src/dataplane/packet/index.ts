/**
 * @module dataplane/packet
 * The proxy's packet library: allocation-free decoding into a reused ParsedPacket, in-place NAT rewrites with
 * incremental (RFC 1624) checksum updates, the checksum arithmetic they share, the one packet the data path
 * builds (a TCP reset) and software segmentation of super-packets (for the in-memory tunnel). IPv4 and IPv6 use
 * one path. Builders, oracles and captured fixtures for tests live in build.ts and fixtures.ts and are not
 * exported here, so the data path cannot depend on them by accident.
 */

/** Decoding: the reused per-loop view, its failure reasons and address helpers. */
export {
  DECODE_ERROR_COUNT,
  DecodeError,
  decodeErrorName,
  formatAddress,
  ParsedPacket,
  sameAddress,
} from './parsed-packet.ts';

/** In-place NAT rewrites with incremental checksum updates. */
export { setDstAddress, setDstPort, setEchoId, setSrcAddress, setSrcPort } from './rewrite.ts';

/** The TCP reset the proxy sends a client whose connection cannot go on. */
export { RESET_MAX_BYTES, type TcpReset, writeTcpReset } from './rst.ts';

/** Software TSO/USO: a super-packet cut into wire packets with full checksums. */
export { type SegmentOutput, SegmentFailure, segmentPacket } from './segment.ts';

/** Internet checksum arithmetic (RFC 1071 full sums, RFC 1624 incremental updates, pseudo-headers). */
export {
  applyChecksumDelta,
  finishChecksum,
  foldSum,
  internetChecksum,
  onesComplementSum,
  pseudoHeaderSum,
  updateChecksum16,
  wordDelta,
} from './checksum.ts';

/** Offloaded super-packets: the partial-checksum arithmetic and the virtio_net_hdr constants. */
export {
  addToPartialChecksum,
  readVnetHeader,
  VNET_HDR_BYTES,
  VnetFlag,
  VnetGso,
  type VnetHeader,
} from './offload.ts';

/** Wire constants. */
export {
  ICMP_HEADER_BYTES,
  IcmpType,
  IP_MAX_DATAGRAM_BYTES,
  IpProto,
  IPV4_MIN_HEADER_BYTES,
  IPV6_FRAGMENT_HEADER_BYTES,
  IPV6_HEADER_BYTES,
  TCP_MIN_HEADER_BYTES,
  TcpFlag,
  UDP_HEADER_BYTES,
} from './constants.ts';
