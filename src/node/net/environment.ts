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
 * - hairpin works: an instance can reach its own mapping through the node's address;
 * - failures roll back what the step did and throw; nothing exits the process.
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
 * Removing a mapping does not cut connections already established through it (their conntrack entries stay
 * until they time out); flushing them would need conntrack netlink, which nothing here speaks yet.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { ConflictError, InvalidInputError, SystemError } from '../../errors.ts';
import {
  addElementsScript,
  deleteElementsScript,
  deleteTableScript,
  elementsFor,
  type MapElement,
  parseMapElements,
  tableScript,
} from './nft-script.ts';
import { type PortMapping, parsePortMappings, validatePortMapping } from './port-mappings.ts';
import {
  CommandFailedError,
  type CommandRunner,
  ipBatch,
  ipJson,
  isAlreadyGone,
  isRecord,
  nft,
  nftJson,
} from './runner.ts';
import { ProcSysctl, type Sysctl } from './sysctl.ts';

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

/** One instance to connect. */
export interface AttachRequest {
  /** A process in the instance's network namespace (e.g. the container's task). */
  pid: number;
  /** Short unique token naming the veths `oakv<id>`/`oakc<id>`: 1-11 of [A-Za-z0-9_-]. */
  id: string;
  /** The instance's IPv4 address inside the node's subnetV4. */
  nsip: IpAddress;
  /** The instance's IPv6 address inside subnetV6; without it the instance gets no IPv6. */
  nsipv6?: IpAddress;
  /** Upstream's `portMappings` string (see port-mappings.ts) or already parsed mappings. */
  portMappings: string | readonly PortMapping[];
}

/** A connected instance, as plain JSON so a restarted NetManager can detach it. */
export interface Attachment {
  /** The token given to attach. */
  id: string;
  /** The pid given to attach. */
  pid: number;
  /** Host end of the veth, on the bridge. */
  hostVeth: string;
  /** Name of the other end inside the instance's namespace: "eth0", or `oakc<id>` when eth0 was taken. */
  containerVeth: string;
  /** IPv4 address of the instance. */
  nsip: string;
  /** IPv6 address of the instance, when it has one. */
  nsipv6?: string;
  /** The port mappings that were installed. */
  portMappings: PortMapping[];
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const ID = /^[A-Za-z0-9_-]{1,11}$/;
const TABLE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** The host end's name for an attachment id. */
export function hostVethName(id: string): string {
  return `oakv${id}`;
}

/** The fallback name of the instance end (when eth0 exists in the namespace) for an attachment id. */
export function containerVethName(id: string): string {
  return `oakc${id}`;
}

/** Checks an Attachment read back from JSON; InvalidInputError when it is not one. */
export function attachmentFromJson(value: unknown): Attachment {
  const bad = (why: string): never => {
    throw new InvalidInputError(`not an attachment record (${why}): ${JSON.stringify(value)}`);
  };
  if (!isRecord(value)) return bad('not an object');
  const { id, pid, hostVeth, containerVeth, nsip, nsipv6, portMappings } = value;
  if (typeof id !== 'string' || !ID.test(id)) return bad('id');
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return bad('pid');
  if (hostVeth !== hostVethName(id)) return bad('hostVeth');
  if (typeof containerVeth !== 'string' || !IFNAME.test(containerVeth)) return bad('containerVeth');
  if (typeof nsip !== 'string' || IpAddress.tryParse(nsip)?.family !== 4) return bad('nsip');
  if (nsipv6 !== undefined && (typeof nsipv6 !== 'string' || IpAddress.tryParse(nsipv6)?.family !== 6))
    return bad('nsipv6');
  if (!Array.isArray(portMappings)) return bad('portMappings');
  const att: Attachment = {
    id,
    pid,
    hostVeth,
    containerVeth,
    nsip,
    portMappings: portMappings.map((m) => validatePortMapping(m)),
  };
  if (typeof nsipv6 === 'string') att.nsipv6 = nsipv6;
  return att;
}

function checkConfig(c: NodeEnvironmentConfig): void {
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

/** Builds, maintains and removes the node's bridge, firewall table, TUN routes and instance veths. */
export class NodeEnvironment {
  /** The configuration (frozen copy). */
  readonly config: Readonly<NodeEnvironmentConfig>;
  /** The bridge's IPv4 address: subnetV4 + 1. */
  readonly gatewayV4: IpAddress;
  /** The bridge's IPv6 address: subnetV6 + 1. */
  readonly gatewayV6: IpAddress;

  private readonly runner: CommandRunner;
  private readonly logger: Logger;
  private readonly sysctl: Sysctl;
  private queue: Promise<unknown> = Promise.resolve();

  /** Validates the configuration (InvalidInputError); touches nothing on the system. */
  constructor(config: NodeEnvironmentConfig, deps: NodeEnvironmentDeps) {
    checkConfig(config);
    this.config = Object.freeze({ ...config, tunRoutes: [...config.tunRoutes] });
    this.gatewayV4 = config.subnetV4.at(1);
    this.gatewayV6 = config.subnetV6.at(1);
    this.runner = deps.runner;
    this.logger = deps.logger;
    this.sysctl = deps.sysctl ?? new ProcSysctl();
  }

  /**
   * Creates the bridge (MTU, gateway addresses, up), turns on forwarding, and (re)creates the nft table.
   * Leftovers of a previous run (the bridge, veths on it, the table) are removed by name first, so it is
   * idempotent and safe after a crash. On failure it removes what it made and throws SystemError.
   */
  setUp(): Promise<void> {
    return this.serial(async () => {
      const { bridge, mtu, subnetV4, subnetV6 } = this.config;
      const t0 = performance.now();
      if ((await this.sysctl.read('net/ipv6/conf/all/disable_ipv6')) === undefined) {
        throw new SystemError(
          'IPv6 is not available in this kernel (no /proc/sys/net/ipv6; ipv6.disable=1?)',
        );
      }
      try {
        const { leftovers } = await this.inspectLinks();
        if (leftovers.length > 0)
          this.logger.info({ links: leftovers }, 'removing leftover links of a previous run');
        await ipBatch(this.runner, [
          ...leftovers.map((name) => `link del dev ${name}`),
          `link add name ${bridge} mtu ${mtu} type bridge`,
        ]);
        // A new device inherits conf/default; make sure IPv6 is on before adding the v6 gateway.
        await this.sysctl.write(`net/ipv6/conf/${bridge}/disable_ipv6`, '0');
        await ipBatch(this.runner, [
          `addr add ${this.gatewayV4.toString()}/${subnetV4.prefix} dev ${bridge}`,
          `addr add ${this.gatewayV6.toString()}/${subnetV6.prefix} dev ${bridge} nodad`,
          `link set dev ${bridge} up`,
        ]);
        await this.enableForwarding();
        await nft(this.runner, tableScript({ ...this.config, table: this.config.nftTable }));
      } catch (err) {
        await this.tearDownNow().catch((cleanupErr: unknown) =>
          this.logger.warn({ err: cleanupErr }, 'clean-up after a failed set-up failed too'),
        );
        throw err;
      }
      await this.warnAboutForeignForwardDrops();
      this.logger.info({ bridge, ms: Math.round(performance.now() - t0) }, 'node network set up');
    });
  }

  /**
   * Configures the TUN once it exists: IPv6 on, rp_filter loose (0, or 2 when conf/all is strict, since the
   * kernel uses the larger of the two), MTU, up, and a route via the TUN for each of `tunRoutes`.
   * Idempotent (`route replace`). SystemError when the TUN does not exist.
   */
  addTunRoutes(): Promise<void> {
    return this.serial(async () => {
      const { tun, mtu, tunRoutes } = this.config;
      if ((await this.sysctl.read(`net/ipv4/conf/${tun}/rp_filter`)) === undefined) {
        throw new SystemError(`TUN device ${tun} does not exist; create it before addTunRoutes`);
      }
      await this.sysctl.write(`net/ipv6/conf/${tun}/disable_ipv6`, '0');
      const all = await this.sysctl.read('net/ipv4/conf/all/rp_filter');
      await this.sysctl.write(`net/ipv4/conf/${tun}/rp_filter`, all === undefined || all === '0' ? '0' : '2');
      await ipBatch(this.runner, [
        `link set dev ${tun} mtu ${mtu} up`,
        ...tunRoutes.map((r) => `route replace ${r.toString()} dev ${tun}`),
      ]);
      this.logger.info({ tun, routes: tunRoutes.map((r) => r.toString()) }, 'routes via the TUN added');
    });
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
    const plan = this.planAttach(req);
    return await this.serial(async () => {
      const t0 = performance.now();
      const { id, pid, nsip, nsipv6, mappings } = plan;
      const { bridge, mtu, subnetV4, subnetV6 } = this.config;
      const hostVeth = hostVethName(id);
      // Whether the veth exists and must be removed on failure: ip stops at the first failing line, so a
      // failure on line 1 created nothing; a failure without a line (timeout) may have created it.
      const veth = { created: 'no' as 'no' | 'yes' | 'maybe' };
      const createVeth = async (peer: string): Promise<void> => {
        try {
          await ipBatch(this.runner, [
            `link add ${hostVeth} mtu ${mtu} type veth peer name ${peer} mtu ${mtu} netns ${pid}`,
            `link set dev ${hostVeth} master ${bridge}`,
            // br_netfilter (if loaded) bridges DNATed packets; hairpin lets one go back out of its ingress port.
            `link set dev ${hostVeth} type bridge_slave hairpin on`,
            `link set dev ${hostVeth} up`,
          ]);
          veth.created = 'yes';
        } catch (err) {
          const line = err instanceof CommandFailedError ? err.failedLine : undefined;
          veth.created = line === 1 ? 'no' : line !== undefined ? 'yes' : 'maybe';
          throw err;
        }
      };
      let peer = 'eth0';
      try {
        try {
          await createVeth(peer);
        } catch (err) {
          // The peer name is checked inside the target namespace: eth0 may exist there already.
          if (!(err instanceof CommandFailedError && err.failedLine === 1 && /File exists/.test(err.stderr)))
            throw err;
          peer = containerVethName(id);
          try {
            await createVeth(peer);
          } catch (err2) {
            if (
              err2 instanceof CommandFailedError &&
              err2.failedLine === 1 &&
              /File exists/.test(err2.stderr)
            ) {
              throw new SystemError(
                `cannot attach ${id}: ${hostVeth} already exists on the node, or both eth0 and ${peer} exist in the namespace of pid ${pid}`,
                { cause: err2 },
              );
            }
            throw err2;
          }
        }
        const inside = [
          'link set dev lo up',
          `addr add ${nsip.toString()}/${subnetV4.prefix} dev ${peer}`,
          ...(nsipv6 ? [`addr add ${nsipv6.toString()}/${subnetV6.prefix} dev ${peer} nodad`] : []),
          `link set dev ${peer} up`,
          `route replace 0.0.0.0/0 via ${this.gatewayV4.toString()} dev ${peer}`,
          ...(nsipv6 ? [`route replace ::/0 via ${this.gatewayV6.toString()} dev ${peer}`] : []),
        ];
        await ipBatch(this.runner, inside, pid);
        const elements = this.elementsOf(mappings, nsip, nsipv6);
        if (elements.length > 0) {
          try {
            await nft(this.runner, addElementsScript(this.config.nftTable, elements));
          } catch (err) {
            if (err instanceof CommandFailedError && /File exists/.test(err.stderr)) {
              throw new ConflictError(
                `cannot map ports ${describeMappings(mappings)} for ${id}: a host port is already mapped to another instance`,
              );
            }
            throw err;
          }
        }
      } catch (err) {
        if (veth.created !== 'no') await this.deleteVeth(hostVeth, 'roll back a failed attach');
        this.logger.warn({ id, pid, err }, 'attach failed; rolled back');
        throw err;
      }
      const att: Attachment = {
        id,
        pid,
        hostVeth,
        containerVeth: peer,
        nsip: nsip.toString(),
        portMappings: mappings,
      };
      if (nsipv6) att.nsipv6 = nsipv6.toString();
      this.logger.debug({ ...att, ms: Math.round(performance.now() - t0) }, 'instance attached');
      return att;
    });
  }

  /**
   * Disconnects an attachment: removes its port mappings (only those that still lead to it) and its veth.
   * Whatever is already gone (the namespace died, a tear-down ran) is fine. SystemError on other failures,
   * after trying every step.
   */
  async detach(att: Attachment): Promise<void> {
    const a = attachmentFromJson(att);
    return await this.serial(async () => {
      const t0 = performance.now();
      // The two steps are independent and each waits for the kernel (an nft commit and a device unregister
      // both wait for an RCU grace period), so they run side by side.
      const results = await Promise.allSettled([
        a.portMappings.length > 0 ? this.removeMappings(a) : Promise.resolve(),
        this.deleteVeth(a.hostVeth, 'detach', true),
      ]);
      const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      if (errors.length > 0) {
        throw new SystemError(
          `detach of ${a.id} incomplete: ${errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ')}`,
          { cause: errors[0] },
        );
      }
      this.logger.debug({ id: a.id, ms: Math.round(performance.now() - t0) }, 'instance detached');
    });
  }

  /** Removes the bridge, every veth on it, the nft table and the TUN routes, by name. Idempotent. */
  tearDown(): Promise<void> {
    return this.serial(() => this.tearDownNow());
  }

  private async tearDownNow(): Promise<void> {
    const { leftovers, tunExists } = await this.inspectLinks();
    await ipBatch(
      this.runner,
      leftovers.map((name) => `link del dev ${name}`),
    );
    await nft(this.runner, deleteTableScript(this.config.nftTable));
    if (tunExists && this.config.tunRoutes.length > 0) {
      try {
        await ipBatch(
          this.runner,
          this.config.tunRoutes.map((r) => `route del ${r.toString()} dev ${this.config.tun}`),
          undefined,
          { force: true },
        );
      } catch (err) {
        // -force runs every line; only "No such process" (route not there) lines are acceptable.
        if (!(err instanceof CommandFailedError && onlyMissing(err.stderr))) throw err;
      }
    }
    this.logger.info({ bridge: this.config.bridge, removed: leftovers }, 'node network torn down');
  }

  /** The bridge and the links enslaved to it (enslaved first), and whether the TUN exists. One spawn. */
  private async inspectLinks(): Promise<{ leftovers: string[]; tunExists: boolean }> {
    const links = await ipJson(this.runner, ['link', 'show']);
    const { bridge, tun } = this.config;
    const names = links.filter(isRecord);
    const enslaved = names.filter((l) => l['master'] === bridge).map((l) => String(l['ifname']));
    const hasBridge = names.some((l) => l['ifname'] === bridge);
    return {
      leftovers: [...enslaved, ...(hasBridge ? [bridge] : [])],
      tunExists: names.some((l) => l['ifname'] === tun),
    };
  }

  private async enableForwarding(): Promise<void> {
    if ((await this.sysctl.read('net/ipv6/conf/all/forwarding')) === '0') {
      // with forwarding on, an interface with accept_ra=1 stops taking router advertisements, and an uplink
      // configured by SLAAC loses its IPv6 route when the lifetimes run out: 2 keeps taking them
      const names = (await this.sysctl.list('net/ipv6/conf')).filter(
        (n) => n !== 'all' && n !== 'default' && n !== 'lo',
      );
      for (const name of names) {
        if ((await this.sysctl.read(`net/ipv6/conf/${name}/accept_ra`)) !== '1') continue;
        await this.sysctl.write(`net/ipv6/conf/${name}/accept_ra`, '2');
        this.logger.info(
          { interface: name },
          'accept_ra=2, so router advertisements still count with forwarding on',
        );
      }
    }
    await this.sysctl.write('net/ipv4/ip_forward', '1');
    await this.sysctl.write('net/ipv6/conf/all/forwarding', '1');
  }

  /** Logs a warning for forward base chains with policy drop in other tables (they still drop our traffic). */
  private async warnAboutForeignForwardDrops(): Promise<void> {
    try {
      const chains = (await nftJson(this.runner, ['list', 'chains']))
        .map((item) => (isRecord(item) ? item['chain'] : undefined))
        .filter(isRecord)
        .filter(
          (c) =>
            c['hook'] === 'forward' &&
            c['policy'] === 'drop' &&
            !(c['family'] === 'inet' && c['table'] === this.config.nftTable),
        )
        .map((c) => `${String(c['family'])} ${String(c['table'])} ${String(c['name'])}`);
      if (chains.length > 0) {
        this.logger.warn(
          { chains, bridge: this.config.bridge, tun: this.config.tun },
          'forward chains with policy drop in other tables will drop instance traffic unless they accept the bridge and the TUN',
        );
      }
    } catch (err) {
      this.logger.debug({ err }, 'could not list nft chains for the forward-policy check');
    }
  }

  private async deleteVeth(name: string, why: string, strict = false): Promise<void> {
    try {
      await this.runner.run('ip', ['link', 'del', 'dev', name]);
    } catch (err) {
      if (isAlreadyGone(err)) return;
      if (strict) throw err;
      this.logger.warn({ err, link: name }, `could not delete the veth to ${why}`);
    }
  }

  private async removeMappings(a: Attachment): Promise<void> {
    let listing: unknown[];
    try {
      listing = await nftJson(this.runner, ['list', 'table', 'inet', this.config.nftTable]);
    } catch (err) {
      if (isAlreadyGone(err)) return; // no table: no mappings
      throw err;
    }
    const present = parseMapElements(listing);
    const wanted = this.elementsOf(
      a.portMappings,
      IpAddress.parse(a.nsip),
      a.nsipv6 === undefined ? undefined : IpAddress.parse(a.nsipv6),
    );
    const toDelete: MapElement[] = [];
    for (const w of wanted) {
      const p = present.find(
        (e) => e.family === w.family && e.protocol === w.protocol && e.hostPort === w.hostPort,
      );
      if (!p) continue;
      if (p.port === w.port && IpAddress.tryParse(p.address)?.equals(IpAddress.parse(w.address)))
        toDelete.push(w);
      else this.logger.warn({ id: a.id, mapping: w, now: p }, 'host port now leads elsewhere; left alone');
    }
    if (toDelete.length > 0) await nft(this.runner, deleteElementsScript(this.config.nftTable, toDelete));
  }

  private elementsOf(
    mappings: readonly PortMapping[],
    nsip: IpAddress,
    nsipv6: IpAddress | undefined,
  ): MapElement[] {
    return [...elementsFor(mappings, nsip), ...(nsipv6 ? elementsFor(mappings, nsipv6) : [])];
  }

  private planAttach(req: AttachRequest): {
    id: string;
    pid: number;
    nsip: IpAddress;
    nsipv6: IpAddress | undefined;
    mappings: PortMapping[];
  } {
    const { subnetV4, subnetV6 } = this.config;
    if (typeof req.id !== 'string' || !ID.test(req.id))
      throw new InvalidInputError(`attachment id ${JSON.stringify(req.id)} must be 1-11 of [A-Za-z0-9_-]`);
    if (!Number.isSafeInteger(req.pid) || req.pid <= 0)
      throw new InvalidInputError(`pid ${String(req.pid)} is not a process id`);
    const v4Offset = subnetV4.offsetOf(req.nsip);
    if (v4Offset === undefined || v4Offset < 2n || v4Offset > subnetV4.size - 2n) {
      throw new InvalidInputError(
        `nsip ${req.nsip.toString()} is not a usable instance address of ${subnetV4.toString()} (network, gateway and broadcast are reserved)`,
      );
    }
    if (req.nsipv6 !== undefined) {
      const v6Offset = subnetV6.offsetOf(req.nsipv6);
      if (v6Offset === undefined || v6Offset < 2n) {
        throw new InvalidInputError(
          `nsipv6 ${req.nsipv6.toString()} is not a usable instance address of ${subnetV6.toString()} (network and gateway are reserved)`,
        );
      }
    }
    const mappings =
      typeof req.portMappings === 'string'
        ? parsePortMappings(req.portMappings)
        : req.portMappings.map((m) => validatePortMapping(m));
    const seen = new Set<string>();
    for (const m of mappings) {
      const key = `${m.protocol}/${m.hostPort}`;
      if (seen.has(key)) throw new InvalidInputError(`host port ${key} is mapped twice`);
      seen.add(key);
    }
    return { id: req.id, pid: req.pid, nsip: req.nsip, nsipv6: req.nsipv6, mappings };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.queue.then(fn, fn);
    this.queue = result.catch(() => undefined);
    return result;
  }
}

function describeMappings(mappings: readonly PortMapping[]): string {
  return mappings.map((m) => `${m.protocol}/${m.hostPort}`).join(', ');
}

/** True when every error line of an `ip -force -batch` run says the route was not there. */
function onlyMissing(stderr: string): boolean {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^Command failed -:\d+$/.test(l))
    .every((l) => /No such process|Cannot find device/.test(l));
}
