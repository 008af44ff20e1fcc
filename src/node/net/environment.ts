/**
 * @module node/net/environment
 * The NetManager's host plumbing: the instances' bridge, the kernel switches, one nftables table, the routes
 * towards the proxy's TUN, and one veth per instance with its addresses, routes and port mappings.
 * It follows upstream's layout (reference 4.1) so packets take the same path, and fixes upstream's defects:
 * - sysctls are written to /proc/sys and read back (upstream's rp_filter `echo ... >` was a no-op);
 * - every firewall rule lives in one `inet` table that set-up recreates atomically and tear-down deletes, so
 *   nothing leaks (upstream never removed its per-veth FORWARD rules and named the wrong device `tun0`);
 * - port mappings are elements of two DNAT maps, not one rule each, and are removed only if they still lead to
 *   the instance being detached (a host port reused by a later instance is left alone);
 * - masquerade covers every interface except the bridge and the TUN, not a guess by name (`en`, `eth`, `wl`);
 * - the bridge has a MAC address of its own (bridge.ts), so the gateway's MAC does not change under the
 *   instances when one of them is withdrawn;
 * - hairpin works: an instance can reach its own mapping through the node's address;
 * - failures roll back what the step did and throw; nothing exits the process.
 *
 * - the forward chain lets into the bridge only what comes from the TUN, replies of the instances' own
 *   connections and published port mappings (nft-script.ts); upstream accepted everything, so a host on the
 *   underlay that routed the node's subnets via the node reached every instance, bypassing the proxy.
 *
 * Firewall caveat: accept rules in our table cannot override a drop elsewhere. nftables runs every base chain
 * on a hook and a packet must be accepted by all of them, so another table whose forward chain has policy drop
 * (docker's `ip filter FORWARD`, a distribution firewall) still drops instance traffic. setUp logs a warning
 * naming such chains; the operator must allow the bridge and the TUN there.
 * Port mappings answer on every local address of the node except loopback: 127.0.0.1/::1 would need
 * route_localnet, which lets instances reach services bound to the node's loopback (CVE-2020-8558).
 *
 * Spawns per operation: setUp 5 (list links, 2 ip batches, nft script, nft listing for the warning);
 * attach 2 ip batches + 1 nft when there are mappings; detach 1 ip + 2 nft when there are mappings (the nft
 * and ip steps run side by side). Measured in a namespace on this machine: setUp 30-60 ms, attach 13-20 ms,
 * detach 27-35 ms; most of it is the kernel waiting for RCU grace periods (nft commit, device unregister).
 * Operations of one NodeEnvironment run one at a time (an internal queue).
 * The parts: bridge.ts (bridge, forwarding, TUN), veth.ts (instances), firewall.ts (nft table, port
 * mappings), leftovers.ts (tear-down), attachment.ts (the records), environment-config.ts (configuration).
 * Removing a mapping does not cut connections already established through it (their conntrack entries stay
 * until they time out); flushing them would need conntrack netlink, which nothing here speaks yet.
 */
import type { IpAddress } from '../../addressing/ip.ts';
import { SystemError } from '../../errors.ts';
import { type AttachRequest, type Attachment, attachmentFromJson, planAttach } from './attachment.ts';
import { bridgeMacFor, configureTun, createBridge, enableForwarding } from './bridge.ts';
import {
  checkConfig,
  type EnvironmentContext,
  type NodeEnvironmentConfig,
  type NodeEnvironmentDeps,
} from './environment-config.ts';
import { createTable, readBoundaryDrops, warnAboutForeignForwardDrops } from './firewall.ts';
import type { CounterValue } from './nft-script.ts';
import { inspectLinks, tearDownAll } from './leftovers.ts';
import { ProcSysctl } from './sysctl.ts';
import { attachInstance, detachInstance } from './veth.ts';

export {
  type AttachRequest,
  type Attachment,
  attachmentFromJson,
  containerVethName,
  hostVethName,
} from './attachment.ts';
export { bridgeMacFor } from './bridge.ts';
export type { NodeEnvironmentConfig, NodeEnvironmentDeps } from './environment-config.ts';

/** Builds, maintains and removes the node's bridge, firewall table, TUN routes and instance veths. */
export class NodeEnvironment {
  /** The configuration (frozen copy). */
  readonly config: Readonly<NodeEnvironmentConfig>;
  /** The bridge's IPv4 address: subnetV4 + 1. */
  readonly gatewayV4: IpAddress;
  /** The bridge's IPv6 address: subnetV6 + 1. */
  readonly gatewayV6: IpAddress;
  /** The bridge's MAC address, derived from gatewayV4 (bridgeMacFor): the same after every restart. */
  readonly bridgeMac: string;

  private readonly ctx: EnvironmentContext;
  private queue: Promise<unknown> = Promise.resolve();

  /** Validates the configuration (InvalidInputError); touches nothing on the system. */
  constructor(config: NodeEnvironmentConfig, deps: NodeEnvironmentDeps) {
    checkConfig(config);
    this.config = Object.freeze({ ...config, tunRoutes: [...config.tunRoutes] });
    this.gatewayV4 = config.subnetV4.at(1);
    this.gatewayV6 = config.subnetV6.at(1);
    this.bridgeMac = bridgeMacFor(this.gatewayV4);
    this.ctx = {
      config: this.config,
      gatewayV4: this.gatewayV4,
      gatewayV6: this.gatewayV6,
      bridgeMac: this.bridgeMac,
      runner: deps.runner,
      logger: deps.logger,
      sysctl: deps.sysctl ?? new ProcSysctl(),
    };
  }

  /**
   * Creates the bridge (its MAC, MTU, gateway addresses, up), turns on forwarding, and (re)creates the nft
   * table. Leftovers of a previous run (the bridge, veths on it, the table) are removed by name first, so it
   * is idempotent and safe after a crash. On failure it removes what it made and throws SystemError.
   */
  setUp(): Promise<void> {
    return this.serial(async () => {
      const { sysctl, logger } = this.ctx;
      const t0 = performance.now();
      if ((await sysctl.read('net/ipv6/conf/all/disable_ipv6')) === undefined) {
        throw new SystemError(
          'IPv6 is not available in this kernel (no /proc/sys/net/ipv6; ipv6.disable=1?)',
        );
      }
      try {
        const { leftovers } = await inspectLinks(this.ctx);
        if (leftovers.length > 0)
          logger.info({ links: leftovers }, 'removing leftover links of a previous run');
        await createBridge(this.ctx, leftovers);
        await enableForwarding(this.ctx);
        await createTable(this.ctx);
      } catch (err) {
        await tearDownAll(this.ctx).catch((cleanupErr: unknown) =>
          logger.warn({ err: cleanupErr }, 'clean-up after a failed set-up failed too'),
        );
        throw err;
      }
      await warnAboutForeignForwardDrops(this.ctx);
      logger.info(
        { bridge: this.config.bridge, mac: this.bridgeMac, ms: Math.round(performance.now() - t0) },
        'node network set up',
      );
    });
  }

  /**
   * Configures the TUN once it exists: IPv6 on, rp_filter loose (0, or 2 when conf/all is strict, since the
   * kernel uses the larger of the two), MTU, up, and a route via the TUN for each of `tunRoutes`.
   * Idempotent (`route replace`). SystemError when the TUN does not exist.
   */
  addTunRoutes(): Promise<void> {
    return this.serial(() => configureTun(this.ctx));
  }

  /**
   * Connects the namespace of `pid` to the bridge: a veth (host end on the bridge, hairpin on), the other end
   * moved in as eth0 (or `oakc<id>` if eth0 exists), the addresses and default routes via the gateways (replacing
   * any default route the namespace had), and the port mappings (DNAT from the node's addresses, both families when nsipv6 is given).
   * InvalidInputError for bad input (nothing done); ConflictError when a host port is already mapped;
   * SystemError when a command fails. Any failure removes the veth again.
   */
  async attach(req: AttachRequest): Promise<Attachment> {
    // Validate before queueing, so bad input fails fast and touches nothing.
    const plan = planAttach(this.config, req);
    return await this.serial(() => attachInstance(this.ctx, plan));
  }

  /**
   * Disconnects an attachment: removes its port mappings (only those that still lead to it) and its veth.
   * Whatever is already gone (the namespace died, a tear-down ran) is fine. SystemError on other failures,
   * after trying every step.
   */
  async detach(att: Attachment): Promise<void> {
    const a = attachmentFromJson(att);
    return await this.serial(() => detachInstance(this.ctx, a));
  }

  /**
   * Packets (and bytes) the forward boundary dropped since setUp: traffic forwarded towards the instances
   * that came neither from the TUN, nor from a published port mapping, nor as a reply (nft-script.ts). Zeros
   * when the table does not exist. Not queued behind other operations (a read).
   */
  forwardDrops(): Promise<CounterValue> {
    return readBoundaryDrops(this.ctx);
  }

  /** Removes the bridge, every veth on it, the nft table and the TUN routes, by name. Idempotent. */
  tearDown(): Promise<void> {
    return this.serial(() => tearDownAll(this.ctx));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.queue.then(fn, fn);
    this.queue = result.catch(() => undefined);
    return result;
  }
}
