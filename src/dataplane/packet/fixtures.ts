/**
 * @module dataplane/packet/fixtures
 * Real packets captured on a Linux 6.18 kernel, as hex, so the decoder and the checksum code are checked against
 * bytes a kernel produced rather than only against our own builders (which could share our misunderstandings).
 *
 * How they were captured: two network namespaces `pkfx-a` and `pkfx-b` joined by a veth pair
 * (`pkfx-va` 10.99.0.1/24 fd99::1/64, `pkfx-vb` 10.99.0.2/24 fd99::2/64, MTU 1500) with checksum and
 * segmentation offloads switched off (`ethtool -K pkfx-va tx off rx off tso off gso off gro off`) so every checksum
 * on the wire is final. Traffic: `ping -c1`, `ping -6 -c1`, `ping -s 3000` (fragmented ICMP), a python3 TCP client
 * and server on port 8080, python3 UDP datagrams to port 9999 (18 bytes, 3001 bytes = fragmented, and one with
 * SO_NO_CHECK). Captured with `ip netns exec pkfx-a tcpdump -i pkfx-va -w cap.pcap`; a python3 script removed the
 * pcap record headers and the 14-byte Ethernet header. The namespaces were deleted afterwards.
 *
 * The packets are in `fixtures-ipv4.ts` and `fixtures-ipv6.ts`, re-exported here; this module adds every one
 * of them in capture order.
 */
import {
  V4_ICMP_ECHO_REQUEST,
  V4_ICMP_ECHO_REPLY,
  V4_ICMP_FRAGMENT_1,
  V4_ICMP_FRAGMENT_2,
  V4_ICMP_FRAGMENT_3,
  V4_TCP_SYN,
  V4_TCP_SYN_ACK,
  V4_TCP_DATA,
  V4_TCP_FIN,
  V4_UDP,
  V4_UDP_FRAGMENT_1,
  V4_UDP_FRAGMENT_2,
  V4_UDP_FRAGMENT_3,
  V4_UDP_ZERO_CHECKSUM,
} from './fixtures-ipv4.ts';
import {
  V6_ICMP_NEIGHBOR_SOLICITATION,
  V6_ICMP_ECHO_REQUEST,
  V6_ICMP_ECHO_REPLY,
  V6_ICMP_FRAGMENT_1,
  V6_ICMP_FRAGMENT_2,
  V6_ICMP_FRAGMENT_3,
  V6_TCP_SYN,
  V6_TCP_SYN_ACK,
  V6_TCP_DATA,
  V6_TCP_FIN,
  V6_UDP,
  V6_UDP_FRAGMENT_1,
  V6_UDP_FRAGMENT_2,
  V6_UDP_FRAGMENT_3,
} from './fixtures-ipv6.ts';

export * from './fixtures-ipv4.ts';
export * from './fixtures-ipv6.ts';

/** A captured IP packet. */
export interface PacketFixture {
  /** Stable name for test titles. */
  readonly name: string;
  /** What the packet is. */
  readonly description: string;
  /** The raw IP packet (no link-layer header) as lowercase hex. */
  readonly hex: string;
}

/** The fixture's bytes in a fresh Buffer the caller may modify. */
export function fixtureBytes(fixture: PacketFixture): Buffer {
  return Buffer.from(fixture.hex, 'hex');
}

/** Every captured packet, in capture order. */
export const ALL_FIXTURES: readonly PacketFixture[] = [
  V4_ICMP_ECHO_REQUEST,
  V4_ICMP_ECHO_REPLY,
  V6_ICMP_NEIGHBOR_SOLICITATION,
  V6_ICMP_ECHO_REQUEST,
  V6_ICMP_ECHO_REPLY,
  V4_ICMP_FRAGMENT_1,
  V4_ICMP_FRAGMENT_2,
  V4_ICMP_FRAGMENT_3,
  V6_ICMP_FRAGMENT_1,
  V6_ICMP_FRAGMENT_2,
  V6_ICMP_FRAGMENT_3,
  V4_TCP_SYN,
  V4_TCP_SYN_ACK,
  V4_TCP_DATA,
  V4_TCP_FIN,
  V4_UDP,
  V4_UDP_FRAGMENT_1,
  V4_UDP_FRAGMENT_2,
  V4_UDP_FRAGMENT_3,
  V4_UDP_ZERO_CHECKSUM,
  V6_TCP_SYN,
  V6_TCP_SYN_ACK,
  V6_TCP_DATA,
  V6_TCP_FIN,
  V6_UDP,
  V6_UDP_FRAGMENT_1,
  V6_UDP_FRAGMENT_2,
  V6_UDP_FRAGMENT_3,
];
