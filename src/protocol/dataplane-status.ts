/**
 * @module protocol/dataplane-status
 * The data plane's status: one schema for what ProxyTUN reports (DataPlane.status()), what the NetManager
 * serves in GET /status, what `oaknet status` prints and what tests and benchmarks read. Keys are snake_case,
 * like the rest of the node API.
 */
import { Type, type Static } from 'typebox';

const Count = Type.Integer({ minimum: 0 });

/** The TUN's offloads (a TUN opened with IFF_VNET_HDR). */
export const TunOffloadStatus = Type.Object({
  /** TUNSETOFFLOAD features in force: csum, tso4, tso6, tsoecn, uso4, uso6. */
  features: Type.Array(Type.String()),
  super_packets_read: Count,
  /** write() calls made. */
  writes: Count,
  /** Segments written as part of a coalesced super-packet. */
  coalesced_packets: Count,
  /** Coalesced super-packets the kernel refused (then written segment by segment). */
  coalesce_refused: Count,
});
export type TunOffloadStatus = Static<typeof TunOffloadStatus>;

/** The tunnel socket's offloads. */
export const TunnelOffloadStatus = Type.Object({
  gso: Type.Boolean(),
  gro: Type.Boolean(),
  /** Runs of datagrams the kernel refused as one GSO message (then sent one by one). */
  gso_refused: Count,
});
export type TunnelOffloadStatus = Static<typeof TunnelOffloadStatus>;

/** A peer node this node probes (for Closest_IP and liveness). */
export const PeerStatus = Type.Object({
  /** The peer's tunnel endpoint, host:port. */
  node: Type.String(),
  /** The estimate: the minimum of the last samples (ms); null before the first answer. */
  rtt_ms: Type.Union([Type.Number(), Type.Null()]),
  /** Exponentially smoothed round-trip time (ms), for display; null before the first answer. */
  average_ms: Type.Union([Type.Number(), Type.Null()]),
  samples: Count,
  /** False once a peer that answered before left the last probes unanswered. */
  reachable: Type.Boolean(),
});
export type PeerStatus = Static<typeof PeerStatus>;

/** A peer node of the tunnel as WireGuard sees it. */
export const PeerTunnelStatus = Type.Object({
  /** The peer's tunnel endpoint, host:port. */
  node: Type.String(),
  /** Its WireGuard public key (base64); null: a peer without one (an upstream NetManager). */
  public_key: Type.Union([Type.String(), Type.Null()]),
  /** Whether packets to and from it are encrypted. */
  encrypted: Type.Boolean(),
  /** established, handshaking, idle (no session yet), plaintext (allowed), refused (plaintext not allowed). */
  state: Type.Union([
    Type.Literal('established'),
    Type.Literal('handshaking'),
    Type.Literal('idle'),
    Type.Literal('plaintext'),
    Type.Literal('refused'),
  ]),
  /** ISO time of the last completed handshake; null before one. */
  last_handshake: Type.Union([Type.String(), Type.Null()]),
  handshakes: Count,
  /** Transport bytes opened from it and sealed to it (WireGuard messages, headers included). */
  bytes_in: Count,
  bytes_out: Count,
  /** Packets waiting for a handshake to it. */
  waiting_packets: Count,
  /** Datagrams from or to it dropped, by reason. */
  drops: Type.Record(Type.String(), Count),
});
export type PeerTunnelStatus = Static<typeof PeerTunnelStatus>;

/** The tunnel's WireGuard side. */
export const WireGuardStatus = Type.Object({
  /** wireguard: this node has a key and encrypts to every peer that has one; off: plaintext only. */
  encryption: Type.Union([Type.Literal('wireguard'), Type.Literal('off')]),
  public_key: Type.Union([Type.String(), Type.Null()]),
  /** The cluster's policy for peers without a key (--allow-plaintext-peers). */
  allow_plaintext_peers: Type.Boolean(),
  /** Tunnel endpoints left out because the tables give them two keys (or their key two endpoints). */
  peer_conflicts: Count,
  /** Cookie replies sent (under load, to handshakes without a valid MAC2). */
  cookies_sent: Count,
  /** Datagrams dropped by the tunnel (unknown endpoints and keys, failed or replayed packets...), all peers. */
  dropped: Count,
  drops: Type.Record(Type.String(), Count),
  peers: Type.Array(PeerTunnelStatus),
});
export type WireGuardStatus = Static<typeof WireGuardStatus>;

export const DataPlaneStatus = Type.Object({
  /** Generation of the service-table snapshot in use. */
  generation: Count,
  /** Open flows. */
  flows: Count,
  /** Packets waiting for the control plane (an unknown address, an instance's own entry) or a first fragment. */
  waiting_packets: Count,
  /** Packets read from the TUN and from the tunnel. */
  tun_in: Count,
  tunnel_in: Count,
  /** Packets written to the TUN and wire datagrams sent into the tunnel. */
  tun_out: Count,
  tunnel_out: Count,
  /** Packets delivered on this node without the network. */
  local: Count,
  flows_created: Count,
  resets_sent: Count,
  /** Table queries not asked because too many were asked (a scan of the semantic range). */
  questions_throttled: Count,
  /** IPv6 multicast the kernel sent into the TUN (link chatter), ignored. */
  multicast_ignored: Count,
  /** Drops by reason (only reasons that occurred). */
  drops: Type.Record(Type.String(), Count),
  /** Sum of drops. */
  dropped: Count,
  offloads: Type.Object({
    tun: Type.Union([TunOffloadStatus, Type.Null()]),
    tunnel: Type.Union([TunnelOffloadStatus, Type.Null()]),
  }),
  peers: Type.Array(PeerStatus),
  /** The tunnel's encryption, peers and drops (absent on a data plane without the WireGuard tunnel). */
  wireguard: Type.Optional(WireGuardStatus),
  /** Services this node has open flows to (the node keeps watching them). */
  services: Type.Array(Type.Object({ job: Type.String(), flows: Count })),
});
export type DataPlaneStatus = Static<typeof DataPlaneStatus>;
