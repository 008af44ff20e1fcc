/**
 * @module node/net/bridge
 * The node side of the plumbing: the instances' bridge (with a MAC address of its own), the kernel switches
 * for forwarding, and the TUN's settings and routes.
 */
import type { IpAddress } from '../../addressing/ip.ts';
import { InvalidInputError, SystemError } from '../../errors.ts';
import type { EnvironmentContext } from './environment-config.ts';
import { ipBatch } from './runner.ts';

/**
 * The bridge's MAC address: 02:6f and the four bytes of the IPv4 gateway (10.16.0.65 -> 02:6f:0a:10:00:41).
 * A bridge without an address of its own takes the lowest MAC among its ports and changes it when that
 * port goes; instances that cached the old gateway MAC then lose new connections until their neighbour
 * entry fails (20-60 s). The kernel keeps a MAC given at creation whatever ports come and go. It is derived
 * from the subnetwork, which the NetManager keeps in its state file, so the bridge re-created after a
 * restart has the same MAC and nothing more is stored. 02: locally administered unicast; 6f ('o'): apart
 * from Docker's 02:42; the gateway: a different MAC on every node.
 */
export function bridgeMacFor(gatewayV4: IpAddress): string {
  if (gatewayV4.family !== 4)
    throw new InvalidInputError(`bridge MAC needs an IPv4 gateway, not ${gatewayV4.toString()}`);
  return [0x02, 0x6f, ...gatewayV4.toBytes()].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * Deletes `leftovers` (links of an earlier run, enslaved ones first) and creates the bridge with its MAC,
 * MTU, gateway addresses and IPv6 on, and up. Two ip batches.
 */
export async function createBridge(ctx: EnvironmentContext, leftovers: readonly string[]): Promise<void> {
  const { bridge, mtu, subnetV4, subnetV6 } = ctx.config;
  await ipBatch(ctx.runner, [
    ...leftovers.map((name) => `link del dev ${name}`),
    `link add name ${bridge} address ${ctx.bridgeMac} mtu ${mtu} type bridge`,
  ]);
  // A new device inherits conf/default; make sure IPv6 is on before adding the v6 gateway.
  await ctx.sysctl.write(`net/ipv6/conf/${bridge}/disable_ipv6`, '0');
  await ipBatch(ctx.runner, [
    `addr add ${ctx.gatewayV4.toString()}/${subnetV4.prefix} dev ${bridge}`,
    `addr add ${ctx.gatewayV6.toString()}/${subnetV6.prefix} dev ${bridge} nodad`,
    `link set dev ${bridge} up`,
  ]);
}

/** Turns on IPv4 and IPv6 forwarding, keeping router advertisements on interfaces that take them. */
export async function enableForwarding(ctx: EnvironmentContext): Promise<void> {
  const { sysctl, logger } = ctx;
  if ((await sysctl.read('net/ipv6/conf/all/forwarding')) === '0') {
    // with forwarding on, an interface with accept_ra=1 stops taking router advertisements, and an uplink
    // configured by SLAAC loses its IPv6 route when the lifetimes run out: 2 keeps taking them
    const names = (await sysctl.list('net/ipv6/conf')).filter(
      (n) => n !== 'all' && n !== 'default' && n !== 'lo',
    );
    for (const name of names) {
      if ((await sysctl.read(`net/ipv6/conf/${name}/accept_ra`)) !== '1') continue;
      await sysctl.write(`net/ipv6/conf/${name}/accept_ra`, '2');
      logger.info(
        { interface: name },
        'accept_ra=2, so router advertisements still count with forwarding on',
      );
    }
  }
  await sysctl.write('net/ipv4/ip_forward', '1');
  await sysctl.write('net/ipv6/conf/all/forwarding', '1');
}

/**
 * Configures the existing TUN: IPv6 on, rp_filter loose (0, or 2 when conf/all is strict, since the kernel
 * uses the larger of the two), MTU, up, and a route via the TUN for each of `tunRoutes` (`route replace`:
 * idempotent). SystemError when the TUN does not exist.
 */
export async function configureTun(ctx: EnvironmentContext): Promise<void> {
  const { tun, mtu, tunRoutes } = ctx.config;
  const { sysctl } = ctx;
  if ((await sysctl.read(`net/ipv4/conf/${tun}/rp_filter`)) === undefined) {
    throw new SystemError(`TUN device ${tun} does not exist; create it before addTunRoutes`);
  }
  await sysctl.write(`net/ipv6/conf/${tun}/disable_ipv6`, '0');
  const all = await sysctl.read('net/ipv4/conf/all/rp_filter');
  await sysctl.write(`net/ipv4/conf/${tun}/rp_filter`, all === undefined || all === '0' ? '0' : '2');
  await ipBatch(ctx.runner, [
    `link set dev ${tun} mtu ${mtu} up`,
    ...tunRoutes.map((r) => `route replace ${r.toString()} dev ${tun}`),
  ]);
  ctx.logger.info({ tun, routes: tunRoutes.map((r) => r.toString()) }, 'routes via the TUN added');
}
