/**
 * @module node/netmanager
 * The NetManager of one worker node. It is built once, at process start, from its collaborators: the data
 * plane (already running on the node's TUN and tunnel), the service table and resolver that feed it, the
 * channel to the cluster, the host network, the state file and the process inspector (`createNetManager`
 * assembles the node's own parts). Registration (upstream's POST /register, or at start with a node ID)
 * connects the channel as the worker, gets the node's subnetworks (from the state file after a restart, else
 * from the cluster), sets up the host network for them and tells the service table who the node is; from
 * then on instances can be deployed (instances.ts).
 *
 * Every device and rule it creates is named after the node's configuration and removed on close.
 */
import type { Logger } from 'pino';
import { Cidr } from '../addressing/cidr.ts';
import { IpAddress } from '../addressing/ip.ts';
import { FIRST_NAMESPACE_SLOT, type AddressPlan } from '../addressing/plan.ts';
import {
  type DataPlane,
  type DataPlaneConfig,
  type DataPlaneDevices,
  startDataPlane,
} from '../dataplane/dataplane.ts';
import type { Instance, ServiceAddress } from '../dataplane/snapshot.ts';
import { ConflictError, errorMessage, InvalidInputError, NotRegisteredError } from '../errors.ts';
import { localAddressTowards } from '../protocol/local-address.ts';
import { requireId } from '../protocol/names.ts';
import type { NodeDnsStatus, NodeStatus } from '../protocol/node-api.ts';
import { hostForUrl, requireHostOrIp } from '../protocol/url.ts';
import type { ClusterChannel } from './cluster-channel.ts';
import type { HostNetwork } from './host-network.ts';
import { type DeployReply, type DeployRequest, Instances } from './instances.ts';
import type { ProcessInspector } from './process-inspector.ts';
import { NodeResolver } from './resolver.ts';
import { resolvConf, type ResolvConfOutcome } from './dns/resolv-conf.ts';
import { ServiceTable } from './service-table.ts';
import { SlotAllocator } from './slots.ts';
import type { NodeState, StateFile } from './state.ts';

export type { DeployRequest } from './instances.ts';

/** What the node's DNS server is built with (node/dns/server.ts; a fake in tests). */
export interface NodeDnsStart {
  /** The bridge's gateway addresses, at the configured port. */
  listen: Array<{ host: string; port: number }>;
  /** The node's instance subnets: the only clients (and loopback). */
  allowedSources: string[];
  /** A name of a job the zone does not hold: the node's table query by name (NodeResolver.lookupJob). */
  ask: (job: string) => Promise<'known' | 'unknown' | 'unreachable'>;
  /** Jobs whose names were answered (lower-cased): their interests stay alive. */
  used: (jobs: string[]) => void;
  log: Logger;
}

/** The node's DNS server as the NetManager drives it. */
export interface NodeDns {
  /** The service tables changed: the zone is rebuilt from them. */
  update(
    services: ReadonlyArray<{
      job: string;
      instances: readonly Instance[];
      addresses: readonly ServiceAddress[];
    }>,
    generation: number,
  ): void;
  counters(): Promise<Record<string, number>>;
  /** Writes `text` as the /etc/resolv.conf of a container's own root (node/dns/resolv-conf.ts). */
  installResolvConf?(pid: number, text: string): ResolvConfOutcome;
  close(): Promise<void>;
}

export type StartDns = (options: NodeDnsStart) => Promise<NodeDns>;

/** How the NetManager is reached and what it announces. */
export interface NetManagerConfig {
  /** Broker host of the cluster; /register's cluster_address replaces it. */
  clusterHost: string;
  clusterMqttPort: number;
  /** Address other nodes send tunnel packets to (default: this host's address towards the broker). */
  publicAddress?: string;
  /** UDP tunnel port (announced as host_port). */
  tunnelPort: number;
  /** This node's WireGuard public key (base64, announced as wg_public_key); absent: a plaintext node. */
  publicKey?: string;
  plan: AddressPlan;
  /** How long deploy waits for the instance's own table entry (ms, default 3000). */
  ownEntryTimeoutMs?: number;
  /** The DNS server on the bridge's gateways (absent: none); upstreams only for status. */
  dns?: { port: number; upstreams: string[] };
}

/** What the NetManager is built from. */
export interface NetManagerParts {
  dataPlane: DataPlane;
  table: ServiceTable;
  resolver: NodeResolver;
  cluster: ClusterChannel;
  /** Builds the host network (bridge, rules, TUN routes) for the node's subnetworks once they are known. */
  hostNetwork: (subnets: { v4: Cidr; v6: Cidr }) => HostNetwork;
  stateFile: StateFile;
  processes: ProcessInspector;
  log: Logger;
  /** Starts the DNS server once the bridge exists (with config.dns). */
  startDns?: StartDns;
}

/** The collaborators from outside the node's control plane (real ones in production, fakes in tests). */
export interface NetManagerEnvironment {
  devices: DataPlaneDevices;
  cluster: ClusterChannel;
  hostNetwork: NetManagerParts['hostNetwork'];
  stateFile: StateFile;
  processes: ProcessInspector;
  log: Logger;
  /** Data-plane tuning (the semantic ranges come from the plan). */
  dataPlane?: Omit<DataPlaneConfig, 'semanticRanges'>;
  startDns?: StartDns;
}

/** Builds a NetManager with the node's own parts (service table, resolver, data plane) over `env`. */
export function createNetManager(env: NetManagerEnvironment, config: NetManagerConfig): NetManager {
  const table = new ServiceTable(env.log.child({ component: 'table' }));
  const resolver = new NodeResolver({
    table,
    cluster: env.cluster,
    log: env.log.child({ component: 'resolver' }),
  });
  const dataPlane = startDataPlane(
    env.devices,
    { ...env.dataPlane, semanticRanges: [config.plan.serviceRangeV4, config.plan.serviceRangeV6] },
    resolver,
    env.log.child({ component: 'proxy' }),
  );
  const { devices: _devices, dataPlane: _tuning, ...rest } = env;
  return new NetManager({ ...rest, dataPlane, table, resolver }, config);
}

/** What exists once the node is registered. */
interface Registered {
  workerId: string;
  net: HostNetwork;
  instances: Instances;
  subnetV4: Cidr;
  subnetV6: Cidr;
  hostIp: string;
  clusterUrl: string;
  dns: { server: NodeDns; servers: string[] } | undefined;
}

/** How often the NetManager checks that its own instances are in its table (ms). */
const SELF_CHECK_MS = 10_000;
/** How often interests are checked for expiry (ms). */
const INTEREST_CHECK_MS = 1000;

export class NetManager {
  private registered: Registered | undefined;
  private registering: Promise<void> | undefined;
  private pendingWorker: string | undefined;
  private state: NodeState | undefined;
  /** Deploys and undeploys run one at a time (they share the slots and the state file). */
  private queue: Promise<unknown> = Promise.resolve();
  /** Aborts waits (for a subnetwork, for an own entry) when the NetManager stops. */
  private readonly abort = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  /** The table's servicesVersion the DNS zone was built from. */
  private zoneVersion = -1;

  constructor(
    private readonly parts: NetManagerParts,
    private readonly config: NetManagerConfig,
  ) {
    const port = config.tunnelPort;
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new InvalidInputError(`the tunnel port must be 1-65535, got ${port}`);
    parts.table.onChange((snapshot) => {
      parts.dataPlane.apply(snapshot);
      this.updateZone();
    });
    parts.cluster.onClusterInfo((info) => parts.table.setPlaintextPeers(info.allow_plaintext_peers === true));
    // after a reconnect the cluster may have lost what it knew (a restart): tell it again
    parts.cluster.onReconnect(() => this.registered?.instances.announceAll());
  }

  get workerId(): string | undefined {
    return this.registered?.workerId ?? this.state?.workerId;
  }

  /**
   * Registers this node as worker `workerId` (upstream's POST /register). Registering again with the same ID
   * is a no-op; a different ID is an InvalidInputError (HTTP 400, as upstream answers it).
   */
  async register(workerId: string, clusterAddress?: string, token?: string): Promise<void> {
    requireId(workerId, 'client_id');
    // it becomes the broker's host in a URL: an address or a name, not a URL of its own. (The node enrolls
    // at the cluster API of its command line, never at this address: see node/credentials.ts.)
    if (clusterAddress) requireHostOrIp(clusterAddress, 'cluster_address');
    const current = this.registered?.workerId ?? this.pendingWorker;
    if (current !== undefined) {
      if (current !== workerId)
        throw new InvalidInputError(`already registered as ${current}; restart to change the worker ID`);
      await this.registering;
      return;
    }
    this.pendingWorker = workerId;
    this.registering = this.start(workerId, clusterAddress || this.config.clusterHost, token).catch(
      (err: unknown) => {
        this.pendingWorker = undefined;
        throw err;
      },
    );
    await this.registering;
  }

  private async start(workerId: string, clusterHost: string, token?: string): Promise<void> {
    const { cluster, stateFile, log } = this.parts;
    const { plan } = this.config;
    const stored = stateFile.load();
    if (stored && stored.workerId !== workerId) {
      throw new ConflictError(
        `the state dir ${stateFile.dir} belongs to worker ${stored.workerId}, not ${workerId}`,
      );
    }
    const clusterUrl = `mqtt://${hostForUrl(clusterHost)}:${this.config.clusterMqttPort}`;
    await cluster.prepare?.(workerId, token);
    cluster.connect(workerId, clusterUrl);
    // what was set up so far, undone in reverse when a later step fails
    const undo: Array<() => unknown> = [() => cluster.close()];
    try {
      let subnet: { v4: string; v6: string };
      if (stored) {
        // a restart: the node can forward at once; the cluster link comes up on its own
        subnet = { v4: stored.subnetV4, v6: stored.subnetV6 };
        log.info({ subnet }, 'subnetworks from the state file');
        cluster
          .ready(24 * 3600_000)
          .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'cluster link not ready'));
      } else {
        await cluster.ready();
        subnet = await cluster.requestSubnet(this.abort.signal);
        log.info({ subnet }, 'subnetworks from the cluster');
      }
      const subnetV4 = Cidr.of(IpAddress.parse(subnet.v4), plan.config.workerPrefixV4);
      const subnetV6 = Cidr.of(IpAddress.parse(subnet.v6), plan.config.workerPrefixV6);
      const state: NodeState = stored ?? {
        version: 1,
        workerId,
        subnetV4: subnet.v4,
        subnetV6: subnet.v6,
        nextSlot: FIRST_NAMESPACE_SLOT,
        freeSlots: [],
        instances: [],
      };
      this.state = state;
      await stateFile.save(state);
      const hostIp = this.config.publicAddress ?? (await localAddressTowards(clusterUrl));
      const net = this.parts.hostNetwork({ v4: subnetV4, v6: subnetV6 });
      undo.push(() => net.tearDown());
      await net.setUp();
      await net.addTunRoutes();
      const dns = await this.startDns(subnetV4, subnetV6);
      if (dns) undo.push(() => dns.server.close());
      this.parts.table.setIdentity({
        workerId,
        hostIp,
        hostPort: this.config.tunnelPort,
        subnets: [subnetV4, subnetV6],
      });
      const instances = new Instances({
        state,
        stateFile,
        slots: new SlotAllocator(
          state,
          FIRST_NAMESPACE_SLOT,
          plan.lastNamespaceSlot,
          `namespace addresses of ${state.subnetV4}`,
        ),
        net,
        subnetV4,
        subnetV6,
        hostIp,
        tunnelPort: this.config.tunnelPort,
        ...(this.config.publicKey !== undefined ? { publicKey: this.config.publicKey } : {}),
        cluster,
        resolver: this.parts.resolver,
        table: this.parts.table,
        processes: this.parts.processes,
        log,
        ownEntryTimeoutMs: this.config.ownEntryTimeoutMs ?? 3000,
        signal: this.abort.signal,
        ...(dns?.server.installResolvConf
          ? {
              resolvConf: (pid: number, job: string) =>
                dns.server.installResolvConf!(pid, resolvConf(dns.servers, job, 'the NetManager')),
            }
          : {}),
      });
      this.registered = { workerId, net, instances, subnetV4, subnetV6, hostIp, clusterUrl, dns };
      this.zoneVersion = -1;
      this.updateZone();
      await instances.restore();
      this.every(SELF_CHECK_MS, () => instances.checkOwnEntries());
      this.every(INTEREST_CHECK_MS, () => void this.parts.resolver.expireInterests(this.jobsInUse()));
      log.info(
        {
          workerId,
          subnetV4: subnetV4.toString(),
          subnetV6: subnetV6.toString(),
          hostIp,
          tunnelPort: this.config.tunnelPort,
        },
        'NetManager registered and running',
      );
    } catch (err) {
      this.registered = undefined;
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch (cleanupErr) {
          log.warn({ err: errorMessage(cleanupErr) }, 'cleanup after a failed start failed');
        }
      }
      throw err;
    }
  }

  /** Wires an instance into its network namespace (upstream's /container/deploy). */
  deploy(req: DeployRequest): Promise<DeployReply> {
    return this.serialised(() => this.requireRegistered().instances.deploy(req));
  }

  /** Removes an instance's wiring (upstream's /container/undeploy); unknown instances are fine (200). */
  undeploy(serviceName: string, instanceNumber: number): Promise<void> {
    return this.serialised(() => this.requireRegistered().instances.undeploy(serviceName, instanceNumber));
  }

  status(): NodeStatus {
    const r = this.registered;
    const cluster = this.parts.cluster;
    const table = this.parts.table;
    return {
      registered: r !== undefined,
      worker_id: this.workerId ?? null,
      cluster: r?.clusterUrl ?? null,
      cluster_id: r ? (cluster.clusterInfo?.cluster_id ?? null) : null,
      cluster_api: r ? (cluster.clusterInfo?.api ?? null) : null,
      root_api: r ? (cluster.clusterInfo?.root ?? null) : null,
      mqtt_connected: r ? cluster.connected : false,
      subnet: r?.subnetV4.toString() ?? null,
      subnet_v6: r?.subnetV6.toString() ?? null,
      public_address: r?.hostIp ?? null,
      tunnel_port: this.config.tunnelPort,
      instances: (this.state?.instances ?? []).map((i) => ({
        service: i.job,
        instance: i.instance,
        pid: i.pid,
        ns_address: i.nsip,
        ns_address_v6: i.nsipv6,
      })),
      services: r
        ? table.jobNames().map((job) => ({
            job,
            instances: table.instancesOf(job).map((i) => ({
              instance: i.number,
              ns_address: i.nsip4 ? IpAddress.fromBytes(i.nsip4).toString() : null,
              local: i.local,
            })),
          }))
        : [],
      proxy: r ? this.parts.dataPlane.status() : null,
      dns: r?.dns ? this.dnsStatus(r.dns.servers, {}) : null,
    };
  }

  private dnsStatus(servers: string[], counters: Record<string, number>): NodeDnsStatus {
    return {
      servers,
      port: this.config.dns?.port ?? 53,
      upstreams: this.config.dns?.upstreams ?? [],
      counters,
    };
  }

  /** Starts the DNS server on the bridge's gateways (when configured). */
  private async startDns(
    subnetV4: Cidr,
    subnetV6: Cidr,
  ): Promise<{ server: NodeDns; servers: string[] } | undefined> {
    const { dns } = this.config;
    if (!dns || !this.parts.startDns) return undefined;
    const servers = [subnetV4.at(1).toString(), subnetV6.at(1).toString()];
    let server: NodeDns;
    try {
      server = await this.parts.startDns({
        listen: servers.map((host) => ({ host, port: dns.port })),
        allowedSources: [subnetV4.toString(), subnetV6.toString()],
        ask: (job) => this.parts.resolver.lookupJob(job),
        used: (jobs) => this.parts.resolver.touch(jobs),
        log: this.parts.log.child({ component: 'dns' }),
      });
    } catch (err) {
      // names are a convenience: the node forwards without them (its instances keep their own resolv.conf)
      this.parts.log.error({ err: errorMessage(err) }, 'DNS server not started; instances get no names');
      return undefined;
    }
    this.parts.log.info({ servers, port: dns.port, upstreams: dns.upstreams }, 'DNS server listening');
    return { server, servers };
  }

  /** Rebuilds the DNS zone when the services in the table changed. */
  private updateZone(): void {
    const dns = this.registered?.dns;
    const table = this.parts.table;
    if (!dns || table.servicesVersion === this.zoneVersion) return;
    this.zoneVersion = table.servicesVersion;
    dns.server.update(table.services(), table.servicesVersion);
  }

  /** status() with what only the host network can tell, read now (GET /status): forward_dropped. */
  async statusWithHost(): Promise<NodeStatus> {
    const status = this.status();
    const net = this.registered?.net;
    let forwardDropped: number | null = null;
    if (net?.forwardDrops) {
      forwardDropped = await net.forwardDrops().catch((err: unknown) => {
        this.parts.log.debug({ err }, 'could not read the forward boundary counter');
        return null;
      });
    }
    const dns = this.registered?.dns;
    if (dns) {
      const counters = await dns.server.counters().catch((err: unknown) => {
        this.parts.log.debug({ err }, 'could not read the DNS counters');
        return {};
      });
      status.dns = this.dnsStatus(dns.servers, counters);
    }
    return { ...status, forward_dropped: forwardDropped };
  }

  /** Stops the data plane and removes every device and rule this NetManager created. */
  async close(): Promise<void> {
    this.abort.abort();
    await this.registering?.catch(() => undefined);
    await this.queue.catch(() => undefined);
    for (const t of this.timers) clearInterval(t);
    const r = this.registered;
    this.registered = undefined;
    this.parts.dataPlane.close();
    if (r) {
      await r.dns?.server.close().catch((err: unknown) => {
        this.parts.log.warn({ err: errorMessage(err) }, 'closing the DNS server failed');
      });
      await r.instances.detachAll();
      await r.net.tearDown();
    }
    await this.parts.cluster.close();
    if (r) this.parts.log.info('NetManager stopped; its devices and rules are removed');
  }

  /** Jobs in use: with an instance here, or with open flows (their interest does not expire). */
  private jobsInUse(): string[] {
    const jobs = this.registered?.instances.jobs() ?? [];
    for (const s of this.parts.dataPlane.status().services) jobs.push(s.job);
    return jobs;
  }

  /** Runs fn every ms until close (a registration that ends after close starts none). */
  private every(ms: number, fn: () => void): void {
    if (this.abort.signal.aborted) return;
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  private requireRegistered(): Registered {
    if (!this.registered) throw new NotRegisteredError();
    return this.registered;
  }

  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }
}
