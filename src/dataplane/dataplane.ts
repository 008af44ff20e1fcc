/**
 * @module dataplane/dataplane
 * The data plane as the NetManager sees it, and all it sees: hand it a snapshot of the service tables, read
 * its typed status, close it. What the data plane needs from the control plane goes out through one port: a
 * lookup that misses asks for an address, and the answer comes back as a later snapshot. Nothing else crosses
 * the boundary: no callbacks into the data path, no shared mutable records, no addresses as text.
 *
 * Why: the control plane (MQTT, table queries, interests) and the data path (batches of packets) run on one
 * event loop but at different paces. A snapshot is a value (built whole by the control side, swapped in whole
 * between batches, compared with its predecessor to find what changed), so neither side can see the other
 * half-way through a change, and the data path's state stays its own.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../addressing/cidr.ts';
import type { IpAddress } from '../addressing/ip.ts';
import type { DataPlaneStatus } from '../protocol/dataplane-status.ts';
import type { IdleTimeouts } from './proxy/conntrack.ts';
import { ProxyTun } from './proxy/proxy.ts';
import type { ServiceSnapshot } from './snapshot.ts';
import type { Tun } from './tun/tun.ts';
import type { Tunnel } from './tunnel/tunnel.ts';
import type { KeyPair } from './wireguard/keys.ts';
import type { TransportSessions } from './wireguard/sessions.ts';
import { WgTunnel } from './wireguard/wg-tunnel.ts';

export interface DataPlane {
  /**
   * Uses `snapshot` from the next batch on (a newer one given before that replaces it). Flows to instances
   * that left are moved to the same instance's new record, chosen again (UDP, ICMP) or reset (TCP); packets that
   * waited for an address or an instance the snapshot knows go on; packets to addresses it answers as unknown
   * are dropped. Returns at once; safe to call at any time, also from inside an AddressLookup.
   */
  apply(snapshot: ServiceSnapshot): void;
  /** Counters, flows, waiting packets, peers and offloads, as GET /status and `oaknet status` show them. */
  status(): DataPlaneStatus;
  /** Stops reading and closes the TUN and the tunnel; idempotent. */
  close(): void;
}

/** The data plane's one way out to the control plane. */
export interface AddressLookup {
  /**
   * Asks about a semantic address the snapshot does not know. The answer is a later snapshot that knows the
   * address, or names it unknown; the data plane keeps the packets to it meanwhile (bounded) and asks at
   * most once per address while a question is in flight.
   */
  ask(address: IpAddress): void;
}

/** The devices the data plane moves packets between; it owns them from start to close. */
export interface DataPlaneDevices {
  readonly tun: Tun;
  readonly tunnel: Tunnel;
}

export interface DataPlaneConfig {
  /** ServiceIP and instance IP ranges (10.30.0.0/16, fdff::/16). */
  semanticRanges: readonly Cidr[];
  /** Period of the RTT probes to peer nodes (ms, default 1000; 0: no probes, Closest uses topology only). */
  probeIntervalMs?: number;
  /** How long a packet waits for the control plane (ms, default 3000). */
  resolveTimeoutMs?: number;
  /** Idle timeouts of flows in ms. */
  idle?: Partial<IdleTimeouts>;
  /**
   * The tunnel's WireGuard side: the node's static key pair and the sessions its raw tunnel seals with (native
   * for the UDP tunnel). Without it (or with identity null) the node has no key and speaks plaintext, which
   * only peers without a key, where the cluster allows plaintext peers, accept. In both cases only peers in
   * the snapshot's tables are talked to.
   */
  wireguard?: {
    identity: KeyPair | null;
    sessions: TransportSessions | null;
    persistentKeepaliveSeconds?: number;
    underLoadPerSecond?: number;
  };
}

/** Starts ProxyTUN on the devices: reading begins at once, with an empty snapshot until the first apply. */
export function startDataPlane(
  devices: DataPlaneDevices,
  config: DataPlaneConfig,
  lookup: AddressLookup,
  log: Logger,
): DataPlane {
  const wg = new WgTunnel(devices.tunnel, {
    identity: config.wireguard?.identity ?? null,
    // through the proxy: only semantic addresses, within its question budget
    ask: (address) => proxy.askAbout(address),
    sessions: config.wireguard?.sessions ?? null,
    ...(config.wireguard?.persistentKeepaliveSeconds !== undefined
      ? { persistentKeepaliveSeconds: config.wireguard.persistentKeepaliveSeconds }
      : {}),
    ...(config.wireguard?.underLoadPerSecond !== undefined
      ? { underLoadPerSecond: config.wireguard.underLoadPerSecond }
      : {}),
  });
  const proxy = new ProxyTun({ tun: devices.tun, tunnel: wg }, config, lookup, log);
  proxy.start();
  return {
    apply(snapshot) {
      proxy.apply(snapshot);
      wg.use(snapshot); // after: packets it releases for a newly named key run against this snapshot
    },
    status: () => ({ ...proxy.status(), wireguard: wg.status() }),
    close: () => proxy.close(),
  };
}
