/**
 * @module dataplane/packet
 * The proxy's packet library: allocation-free decoding into a reused ParsedPacket, in-place NAT rewrites with
 * incremental (RFC 1624) checksum updates, and the checksum arithmetic they share. IPv4 and IPv6 use one path.
 * Builders, oracles and captured fixtures for tests live in build.ts and fixtures.ts and are not exported here,
 * so the data path cannot depend on them by accident.
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
