/**
 * @module dataplane/packet/constants
 * Wire constants of IPv4, IPv6, TCP, UDP and ICMP used by the packet decoder, the rewriter and the builders.
 * They are plain numbers in `as const` objects (not TypeScript enums) so comparisons on the data path are
 * integer compares and the values can index counter arrays.
 */

/** IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers"). */
export const IpProto = {
  /** IPv6 Hop-by-Hop Options header (RFC 8200 §4.3). */
  HopByHop: 0,
  /** ICMP for IPv4 (RFC 792). */
  Icmp: 1,
  /** TCP (RFC 9293). */
  Tcp: 6,
  /** UDP (RFC 768). */
  Udp: 17,
  /** IPv6 Routing header (RFC 8200 §4.4). */
  Routing: 43,
  /** IPv6 Fragment header (RFC 8200 §4.5). */
  Fragment: 44,
  /** Encapsulating Security Payload (RFC 4303). */
  Esp: 50,
  /** Authentication Header (RFC 4302). */
  Ah: 51,
  /** ICMP for IPv6 (RFC 4443). */
  Icmpv6: 58,
  /** IPv6 "No Next Header" (RFC 8200 §4.7). */
  NoNextHeader: 59,
  /** IPv6 Destination Options header (RFC 8200 §4.6). */
  DestinationOptions: 60,
} as const;

/** TCP header flag bits as found in byte 13 of the TCP header. */
export const TcpFlag = {
  /** No more data from sender. */
  Fin: 0x01,
  /** Synchronize sequence numbers. */
  Syn: 0x02,
  /** Reset the connection. */
  Rst: 0x04,
  /** Push function. */
  Psh: 0x08,
  /** Acknowledgment field is significant. */
  Ack: 0x10,
  /** Urgent pointer field is significant. */
  Urg: 0x20,
  /** ECN-Echo (RFC 3168). */
  Ece: 0x40,
  /** Congestion Window Reduced (RFC 3168). */
  Cwr: 0x80,
} as const;

/** ICMP / ICMPv6 message types the proxy cares about. */
export const IcmpType = {
  /** ICMPv4 echo reply. */
  EchoReply: 0,
  /** ICMPv4 echo request. */
  EchoRequest: 8,
  /** ICMPv6 echo request. */
  Echo6Request: 128,
  /** ICMPv6 echo reply. */
  Echo6Reply: 129,
} as const;

/** Bytes in an IPv4 header without options. */
export const IPV4_MIN_HEADER_BYTES = 20;
/** Bytes in the fixed IPv6 header. */
export const IPV6_HEADER_BYTES = 40;
/** Bytes in an IPv6 Fragment extension header. */
export const IPV6_FRAGMENT_HEADER_BYTES = 8;
/** Bytes in a TCP header without options. */
export const TCP_MIN_HEADER_BYTES = 20;
/** Bytes in a UDP header. */
export const UDP_HEADER_BYTES = 8;
/** Bytes in an ICMP / ICMPv6 header (type, code, checksum, 4 bytes of rest-of-header). */
export const ICMP_HEADER_BYTES = 8;
/** Largest IP datagram: the 16-bit IPv4 total length / IPv6 payload length limit. */
export const IP_MAX_DATAGRAM_BYTES = 65535;
