/**
 * @module node/net/environment-config
 * What a NodeEnvironment is given (its configuration and collaborators), the checks on the configuration,
 * and the context its parts (bridge, veths, firewall, tear-down) share.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../../addressing/cidr.ts';
import type { IpAddress } from '../../addressing/ip.ts';
import { InvalidInputError } from '../../errors.ts';
import type { CommandRunner } from './runner.ts';
import type { Sysctl } from './sysctl.ts';

/** What the caller decides about the node's plumbing. */
export interface NodeEnvironmentConfig {
  /** Bridge of the instances (<= 15 characters), e.g. "oaknetbr0". */
  bridge: string;
  /** The proxy's TUN device (<= 15 characters); created elsewhere, used by addTunRoutes and matched by name. */
  tun: string;
  /** MTU of the bridge, the veths and the TUN (1280-65535; upstream uses 1450). */
  mtu: number;
  /** The node's IPv4 instance subnet (upstream: a /26); the gateway is its first host address. */
  subnetV4: Cidr;
  /** The node's IPv6 instance subnet (upstream: a /120); the gateway is its first host address. */
  subnetV6: Cidr;
  /** Prefixes routed into the TUN (e.g. 10.16.0.0/12 and fc00::/7); the node's subnets stay on the bridge. */
  tunRoutes: readonly Cidr[];
  /** Name of the nftables table (family inet) holding all our rules; must not be an nft keyword. */
  nftTable: string;
}

/** What NodeEnvironment needs from outside. */
export interface NodeEnvironmentDeps {
  /** Spawns ip, nft and nsenter. */
  runner: CommandRunner;
  logger: Logger;
  /** Kernel parameters; default ProcSysctl (/proc/sys of this process's namespace). */
  sysctl?: Sysctl;
}

/** What the parts of one NodeEnvironment share. */
export interface EnvironmentContext {
  /** The checked configuration (frozen). */
  readonly config: Readonly<NodeEnvironmentConfig>;
  /** The bridge's IPv4 address: subnetV4 + 1. */
  readonly gatewayV4: IpAddress;
  /** The bridge's IPv6 address: subnetV6 + 1. */
  readonly gatewayV6: IpAddress;
  /** The bridge's MAC address (bridgeMacFor). */
  readonly bridgeMac: string;
  readonly runner: CommandRunner;
  readonly logger: Logger;
  readonly sysctl: Sysctl;
}

/** A Linux interface name: 1-15 of [A-Za-z0-9_.-]. */
export const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const TABLE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** Throws InvalidInputError when `c` is not a usable configuration. */
export function checkConfig(c: NodeEnvironmentConfig): void {
  const bad = (why: string): never => {
    throw new InvalidInputError(`invalid node network configuration: ${why}`);
  };
  for (const [what, name] of [
    ['bridge', c.bridge],
    ['tun', c.tun],
  ] as const) {
    if (!IFNAME.test(name) || name === '.' || name === '..')
      bad(`${what} name ${JSON.stringify(name)} must be 1-15 of [A-Za-z0-9_.-]`);
  }
  if (c.bridge === c.tun) bad('bridge and tun must have different names');
  if (!Number.isInteger(c.mtu) || c.mtu < 1280 || c.mtu > 65535) bad(`mtu ${c.mtu} is not in 1280-65535`);
  if (c.subnetV4.family !== 4 || c.subnetV4.prefix > 30) bad(`subnetV4 ${c.subnetV4.toString()}`);
  if (c.subnetV6.family !== 6 || c.subnetV6.prefix > 126) bad(`subnetV6 ${c.subnetV6.toString()}`);
  for (const r of c.tunRoutes) {
    const subnet = r.family === 4 ? c.subnetV4 : c.subnetV6;
    if (subnet.covers(r))
      bad(
        `tun route ${r.toString()} lies inside the node subnet ${subnet.toString()}, which stays on the bridge`,
      );
  }
  if (!TABLE.test(c.nftTable)) bad(`nftTable ${JSON.stringify(c.nftTable)} must match ${TABLE.source}`);
}
