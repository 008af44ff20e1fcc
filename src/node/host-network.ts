/**
 * @module node/host-network
 * What the NetManager needs from the host's network stack (the bridge, the veths into instance namespaces,
 * routes into the TUN, forwarding and NAT rules). `node/net/environment.ts` implements it with iproute2 and
 * nftables; tests may substitute a fake.
 */
import type { Cidr } from '../addressing/cidr.ts';
import type { IpAddress } from '../addressing/ip.ts';

export interface HostNetworkConfig {
  bridge: string;
  tun: string;
  nftTable: string;
  mtu: number;
  subnetV4: Cidr;
  subnetV6: Cidr;
  /** Prefixes routed into the TUN (the platform's ranges; the local subnetworks stay on the bridge). */
  tunRoutes: Cidr[];
}

/** A serialisable record of one instance's wiring (kept in the state file to undo it after a restart). */
export type Attachment = unknown;

export interface AttachSpec {
  /** A process in the instance's network namespace. */
  pid: number;
  /** Short unique token for device names. */
  id: string;
  nsip: IpAddress;
  nsipv6?: IpAddress;
  /** Upstream's portMappings text (hostPort[:containerPort][/tcp|/udp];...). */
  portMappings: string;
}

export interface HostNetwork {
  /** Builds bridge, sysctls and rules; removes leftovers of an earlier run first. */
  setUp(): Promise<void>;
  /** Routes the configured prefixes into the TUN (once it exists). */
  addTunRoutes(): Promise<void>;
  /** Wires an instance's namespace; rolls back and throws on failure. */
  attach(spec: AttachSpec): Promise<Attachment>;
  /** Removes an instance's wiring; tolerates what is already gone. */
  detach(attachment: Attachment): Promise<void>;
  /**
   * Packets forwarded towards the instances that the host dropped (not from the TUN, a port mapping or a
   * reply); optional, for status.
   */
  forwardDrops?(): Promise<number>;
  /** Removes everything setUp and attach created. */
  tearDown(): Promise<void>;
}
