/**
 * @module node/agent
 * The NetManager of one worker node. Registration (as upstream: on POST /register, or at start with a
 * node ID) connects to the cluster over MQTT, gets the node's subnetworks (from its state file after a
 * restart, else from the cluster), builds the host network (bridge, TUN, routes, rules) and starts ProxyTUN.
 * Deploy wires an instance's network namespace, reports it to the cluster and waits until the instance's own
 * table entry arrived, so the instance can talk through the overlay as soon as the deploy call returned.
 *
 * Every device and rule it creates is named after the node's configuration and removed on close.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import { Cidr } from '../addressing/cidr.ts';
import { IpAddress } from '../addressing/ip.ts';
import { FIRST_NAMESPACE_SLOT, type AddressPlan } from '../addressing/plan.ts';
import { ProxyTun } from '../dataplane/proxy/proxy.ts';
import type { Tun } from '../dataplane/tun/tun.ts';
import type { Tunnel } from '../dataplane/tunnel/tunnel.ts';
import {
  AddressSpaceExhaustedError,
  ConflictError,
  errorMessage,
  InvalidInputError,
  NotRegisteredError,
} from '../errors.ts';
import { localAddressTowards } from '../protocol/local-address.ts';
import { requireId, requireJobName } from '../protocol/names.ts';
import type { NodeStatus } from '../protocol/node-api.ts';
import { ClusterLink } from './cluster-link.ts';
import type { Attachment, HostNetwork, HostNetworkConfig } from './host-network.ts';
import { parsePortMappings } from './net/port-mappings.ts';
import { NodeResolver } from './resolver.ts';
import { ServiceTable } from './service-table.ts';
import { StateFile, type InstanceState, type NodeState } from './state.ts';

export interface NetManagerOptions {
  /** Broker host (and port) of the cluster; /register's cluster_address replaces the host. */
  clusterHost: string;
  clusterMqttPort: number;
  /** Address other nodes send tunnel packets to (default: this host's address towards the broker). */
  publicAddress?: string;
  /** UDP tunnel port (announced as host_port). */
  tunnelPort: number;
  stateDir: string;
  plan: AddressPlan;
  log: Logger;
  /** Names and MTU of what it creates. */
  names: { bridge: string; tun: string; nftTable: string };
  mtu: number;
  /** Builders of the host-facing parts (real ones in production, fakes in tests). */
  hostNetwork: (config: HostNetworkConfig) => HostNetwork;
  openTun: (name: string, mtu: number) => Promise<Tun>;
  openTunnel: (port: number) => Tunnel;
  /** How long deploy waits for the instance's own table entry (ms, default 3000). */
  ownEntryTimeoutMs?: number;
}

export interface DeployRequest {
  pid: number;
  serviceName: string;
  instanceNumber: number;
  portMappings?: string;
}

interface Running {
  workerId: string;
  link: ClusterLink;
  table: ServiceTable;
  resolver: NodeResolver;
  net: HostNetwork;
  tun: Tun;
  tunnel: Tunnel;
  proxy: ProxyTun;
  subnetV4: Cidr;
  subnetV6: Cidr;
  hostIp: string;
  clusterUrl: string;
}

export class NetManager {
  private running: Running | undefined;
  private registering: Promise<void> | undefined;
  private state: NodeState | undefined;
  private readonly stateFile: StateFile;
  /** Deploys and undeploys run one at a time (they share the slot allocator and the state file). */
  private queue: Promise<unknown> = Promise.resolve();
  /** Aborts a registration that waits (for a subnetwork) when the NetManager stops. */
  private readonly abort = new AbortController();
  private selfCheck: NodeJS.Timeout | undefined;

  constructor(private readonly o: NetManagerOptions) {
    if (!Number.isInteger(o.tunnelPort) || o.tunnelPort < 1 || o.tunnelPort > 65535) {
      throw new InvalidInputError(`the tunnel port must be 1-65535, got ${o.tunnelPort}`);
    }
    this.stateFile = new StateFile(o.stateDir);
  }

  get workerId(): string | undefined {
    return this.running?.workerId ?? this.state?.workerId;
  }

  /**
   * Registers this node as worker `workerId` (upstream's POST /register). Registering again with the same ID
   * is a no-op; a different ID is an InvalidInputError (HTTP 400, as upstream answers it).
   */
  async register(workerId: string, clusterAddress?: string): Promise<void> {
    requireId(workerId, 'client_id');
    const current = this.running?.workerId ?? this.pendingWorker;
    if (current !== undefined) {
      if (current !== workerId)
        throw new InvalidInputError(`already registered as ${current}; restart to change the worker ID`);
      await this.registering;
      return;
    }
    this.pendingWorker = workerId;
    this.registering = this.start(workerId, clusterAddress || this.o.clusterHost).catch((err: unknown) => {
      this.pendingWorker = undefined;
      throw err;
    });
    await this.registering;
  }

  private pendingWorker: string | undefined;

  private async start(workerId: string, clusterHost: string): Promise<void> {
    const log = this.o.log;
    const stored = this.stateFile.load();
    if (stored && stored.workerId !== workerId) {
      throw new ConflictError(
        `the state dir ${this.o.stateDir} belongs to worker ${stored.workerId}, not ${workerId}`,
      );
    }
    const clusterUrl = `mqtt://${hostForUrl(clusterHost)}:${this.o.clusterMqttPort}`;
    const link = new ClusterLink({ url: clusterUrl, workerId, log: log.child({ component: 'mqtt' }) });
    // what was set up so far, undone in reverse when a later step fails
    const undo: Array<() => unknown> = [() => link.close()];
    try {
      let subnet: { v4: string; v6: string };
      if (stored) {
        // a restart: the node can forward at once; the cluster link comes up on its own
        subnet = { v4: stored.subnetV4, v6: stored.subnetV6 };
        log.info({ subnet }, 'subnetworks from the state file');
        link
          .ready(24 * 3600_000)
          .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'cluster link not ready'));
      } else {
        await link.ready();
        subnet = await link.requestSubnet(this.abort.signal);
        log.info({ subnet }, 'subnetworks from the cluster');
      }
      const subnetV4 = Cidr.of(IpAddress.parse(subnet.v4), this.o.plan.config.workerPrefixV4);
      const subnetV6 = Cidr.of(IpAddress.parse(subnet.v6), this.o.plan.config.workerPrefixV6);
      this.state = stored ?? {
        version: 1,
        workerId,
        subnetV4: subnet.v4,
        subnetV6: subnet.v6,
        nextSlot: FIRST_NAMESPACE_SLOT,
        freeSlots: [],
        instances: [],
      };
      await this.stateFile.save(this.state);
      const hostIp = this.o.publicAddress ?? (await localAddressTowards(clusterUrl));
      const net = this.o.hostNetwork({
        bridge: this.o.names.bridge,
        tun: this.o.names.tun,
        nftTable: this.o.names.nftTable,
        mtu: this.o.mtu,
        subnetV4,
        subnetV6,
        tunRoutes: [
          Cidr.parse(this.o.plan.config.workerRangeV4),
          Cidr.parse(this.o.plan.config.workerRangeV6),
        ],
      });
      undo.push(() => net.tearDown());
      await net.setUp();
      const tun = await this.o.openTun(this.o.names.tun, this.o.mtu);
      undo.push(() => tun.close());
      await net.addTunRoutes();
      const tunnel = this.o.openTunnel(this.o.tunnelPort);
      undo.push(() => tunnel.close());
      const table = new ServiceTable({ workerId, hostIp, hostPort: this.o.tunnelPort });
      const resolver = new NodeResolver({
        table,
        link,
        log: log.child({ component: 'resolver' }),
        localJobs: () => new Set(this.state?.instances.map((i) => i.job) ?? []),
      });
      const proxy = new ProxyTun(
        tun,
        tunnel,
        resolver,
        {
          localSubnets: [subnetV4, subnetV6],
          semanticRanges: [this.o.plan.serviceRangeV4, this.o.plan.serviceRangeV6],
          cluster: () => table.ownCluster,
        },
        log.child({ component: 'proxy' }),
      );
      resolver.setEvents(proxy);
      resolver.start();
      undo.push(() => resolver.stop());
      proxy.start();
      undo.push(() => proxy.stop());
      // after a reconnect the cluster may have lost what it knew (a restart): tell it again
      link.onReconnect(() => {
        for (const rec of this.state?.instances ?? []) if (this.running) this.announce(this.running, rec);
      });
      this.running = {
        workerId,
        link,
        table,
        resolver,
        net,
        tun,
        tunnel,
        proxy,
        subnetV4,
        subnetV6,
        hostIp,
        clusterUrl,
      };
      await this.restoreInstances();
      this.selfCheck = setInterval(() => this.checkOwnEntries(), SELF_CHECK_MS);
      this.selfCheck.unref();
      log.info(
        {
          workerId,
          subnetV4: subnetV4.toString(),
          subnetV6: subnetV6.toString(),
          hostIp,
          tunnelPort: this.o.tunnelPort,
        },
        'NetManager registered and running',
      );
    } catch (err) {
      this.running = undefined;
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

  /**
   * Every local instance must be in the table as this node's, with its namespace address; one that is not
   * (a report the cluster lost in a restart, a table wiped by an outage) is announced again and its job asked
   * for again. This is what heals the overlay after a flaky link.
   */
  private checkOwnEntries(): void {
    const r = this.running;
    if (!r || !r.link.connected) return;
    for (const rec of this.state?.instances ?? []) {
      const nsip = IpAddress.parse(rec.nsip).toBytes();
      if (r.table.localByNamespace(nsip, 0, nsip.length)) continue;
      this.o.log.info(
        { job: rec.job, instance: rec.instance },
        'own table entry missing; announcing the instance again',
      );
      this.announce(r, rec);
      void r.resolver.refresh(rec.job);
    }
  }

  /** Wires an instance into its network namespace (upstream's /container/deploy). */
  deploy(req: DeployRequest): Promise<{ serviceName: string; nsAddress: string; nsAddressv6: string }> {
    return this.serialised(async () => {
      const r = this.requireRunning();
      const job = requireJobName(req.serviceName);
      if (!Number.isInteger(req.pid) || req.pid <= 0)
        throw new InvalidInputError(`pid must be a process ID, got ${req.pid}`);
      const state = this.state!;
      const identity = processIdentity(req.pid);
      if (!identity) throw new InvalidInputError(`no process ${req.pid}`);
      if (identity.netns === processIdentity(process.pid)?.netns) {
        // wiring it would replace the node's own default route
        throw new InvalidInputError(
          `process ${req.pid} runs in the NetManager's own network namespace, not a container's`,
        );
      }
      const mappings = parsePortMappings(req.portMappings ?? '');
      const taken = mappings.find((m) => m.protocol === 'udp' && m.hostPort === this.o.tunnelPort);
      if (taken)
        throw new InvalidInputError(`port mapping ${taken.hostPort}/udp would take the node's tunnel port`);
      const existing = state.instances.find((i) => i.job === job && i.instance === req.instanceNumber);
      if (existing) {
        if (sameProcess(existing, identity)) {
          return { serviceName: job, nsAddress: existing.nsip, nsAddressv6: existing.nsipv6 };
        }
        if (isRunning(existing)) {
          throw new ConflictError(
            `instance ${req.instanceNumber} of ${job} is already deployed on this node (pid ${existing.pid})`,
          );
        }
        // its process died (a crashed container being started again): the new one takes its place
        await r.net.detach(existing.attachment).catch(() => undefined);
        state.instances.splice(state.instances.indexOf(existing), 1);
        state.freeSlots.push(existing.slot);
      }
      const slot = this.takeSlot(state);
      const nsip = r.subnetV4.at(slot);
      const nsipv6 = r.subnetV6.at(slot);
      let attachment: Attachment;
      try {
        attachment = await r.net.attach({
          pid: req.pid,
          id: `${slot}`,
          nsip,
          nsipv6,
          portMappings: req.portMappings ?? '',
        });
      } catch (err) {
        state.freeSlots.push(slot);
        throw err;
      }
      const record: InstanceState = {
        job,
        instance: req.instanceNumber,
        pid: req.pid,
        pidStart: identity.start,
        netns: identity.netns,
        slot,
        nsip: nsip.toString(),
        nsipv6: nsipv6.toString(),
        portMappings: req.portMappings ?? '',
        attachment,
        deployedAt: new Date().toISOString(),
      };
      state.instances.push(record);
      await this.stateFile.save(state);
      this.announce(r, record);
      await this.waitForOwnEntry(r, record);
      this.o.log.info(
        { job, instance: req.instanceNumber, nsip: record.nsip, pid: req.pid },
        'instance deployed',
      );
      return { serviceName: job, nsAddress: record.nsip, nsAddressv6: record.nsipv6 };
    });
  }

  /** Removes an instance's wiring (upstream's /container/undeploy); unknown instances are fine (200). */
  undeploy(serviceName: string, instanceNumber: number): Promise<void> {
    return this.serialised(async () => {
      const r = this.requireRunning();
      const state = this.state!;
      const i = state.instances.findIndex((x) => x.job === serviceName && x.instance === instanceNumber);
      if (i < 0) return;
      const rec = state.instances[i]!;
      await r.net.detach(rec.attachment);
      state.instances.splice(i, 1);
      state.freeSlots.push(rec.slot);
      await this.stateFile.save(state);
      r.link.reportUndeployed(rec.job, rec.instance);
      this.o.log.info({ job: rec.job, instance: rec.instance }, 'instance undeployed');
    });
  }

  status(): NodeStatus {
    const r = this.running;
    return {
      registered: r !== undefined,
      worker_id: this.workerId ?? null,
      cluster: r?.clusterUrl ?? null,
      cluster_id: r?.link.clusterInfo?.cluster_id ?? null,
      cluster_api: r?.link.clusterInfo?.api ?? null,
      root_api: r?.link.clusterInfo?.root ?? null,
      mqtt_connected: r?.link.connected ?? false,
      subnet: r?.subnetV4.toString() ?? null,
      subnet_v6: r?.subnetV6.toString() ?? null,
      public_address: r?.hostIp ?? null,
      tunnel_port: this.o.tunnelPort,
      instances: (this.state?.instances ?? []).map((i) => ({
        service: i.job,
        instance: i.instance,
        pid: i.pid,
        ns_address: i.nsip,
        ns_address_v6: i.nsipv6,
      })),
      services: r
        ? r.table.jobNames().map((job) => ({
            job,
            instances: r.table.instancesOf(job).map((i) => ({
              instance: i.number,
              ns_address: i.nsip4 ? IpAddress.fromBytes(i.nsip4).toString() : null,
              local: i.local,
            })),
          }))
        : [],
      proxy: r?.proxy.status() ?? null,
    };
  }

  /** Stops the proxy and removes every device and rule this NetManager created. */
  async close(): Promise<void> {
    this.abort.abort();
    clearInterval(this.selfCheck);
    await this.registering?.catch(() => undefined);
    await this.queue.catch(() => undefined);
    const r = this.running;
    this.running = undefined;
    if (!r) return;
    r.proxy.stop();
    r.resolver.stop();
    for (const inst of this.state?.instances ?? []) {
      await r.net
        .detach(inst.attachment)
        .catch((err: unknown) => this.o.log.warn({ err: errorMessage(err), job: inst.job }, 'detach failed'));
    }
    r.tunnel.close();
    r.tun.close();
    await r.net.tearDown();
    await r.link.close();
    this.o.log.info('NetManager stopped; its devices and rules are removed');
  }

  // ---- helpers ------------------------------------------------------------------------------------------

  private requireRunning(): Running {
    if (!this.running) throw new NotRegisteredError();
    return this.running;
  }

  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private takeSlot(state: NodeState): number {
    if (state.nextSlot <= this.o.plan.lastNamespaceSlot) return state.nextSlot++;
    const slot = state.freeSlots.shift();
    if (slot === undefined) {
      throw new AddressSpaceExhaustedError(
        `namespace addresses of ${state.subnetV4}`,
        this.o.plan.lastNamespaceSlot - FIRST_NAMESPACE_SLOT + 1,
      );
    }
    return slot;
  }

  private announce(r: Running, rec: InstanceState): void {
    r.link.reportDeployed({
      job: rec.job,
      instance: rec.instance,
      nsip: rec.nsip,
      nsipv6: rec.nsipv6,
      hostIp: r.hostIp,
      hostPort: this.o.tunnelPort,
    });
  }

  /** Waits (bounded) until the table lists the instance as local with its namespace address. */
  private async waitForOwnEntry(r: Running, rec: InstanceState): Promise<void> {
    const deadline = Date.now() + (this.o.ownEntryTimeoutMs ?? 3000);
    const nsip = IpAddress.parse(rec.nsip).toBytes();
    while (Date.now() < deadline) {
      await r.resolver.refresh(rec.job);
      if (r.table.localByNamespace(nsip, 0, 4)) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    this.o.log.warn(
      { job: rec.job, instance: rec.instance },
      'own table entry not there yet; its first packets will wait for it',
    );
  }

  /** After a restart: re-wires the instances whose processes still run, forgets the others. */
  private async restoreInstances(): Promise<void> {
    const r = this.running!;
    const state = this.state!;
    const keep: InstanceState[] = [];
    for (const rec of state.instances) {
      // the same process in the same namespace, not a PID reused after a reboot (which could be a host process)
      if (!isRunning(rec)) {
        state.freeSlots.push(rec.slot);
        this.o.log.info(
          { job: rec.job, instance: rec.instance },
          'instance process gone since the last run; forgotten',
        );
        continue;
      }
      try {
        await r.net.detach(rec.attachment).catch(() => undefined);
        rec.attachment = await r.net.attach({
          pid: rec.pid,
          id: `${rec.slot}`,
          nsip: IpAddress.parse(rec.nsip),
          nsipv6: IpAddress.parse(rec.nsipv6),
          portMappings: rec.portMappings,
        });
        keep.push(rec);
        this.announce(r, rec);
        void r.resolver.refresh(rec.job);
      } catch (err) {
        state.freeSlots.push(rec.slot);
        this.o.log.warn(
          { job: rec.job, err: errorMessage(err) },
          'could not re-wire an instance after restart',
        );
      }
    }
    state.instances = keep;
    await this.stateFile.save(state);
  }
}

/** How often the NetManager checks that its own instances are in its table (ms). */
const SELF_CHECK_MS = 10_000;

/** A process's start time (clock ticks after boot, /proc/<pid>/stat field 22) and network namespace. */
function processIdentity(pid: number): { start: string; netns: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = fields[19];
    if (start === undefined) return undefined;
    return { start: `${bootId()}/${start}`, netns: statSync(`/proc/${pid}/ns/net`).ino };
  } catch {
    return undefined;
  }
}

let boot: string | undefined;
function bootId(): string {
  boot ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return boot;
}

function sameProcess(rec: InstanceState, id: { start: string; netns: number }): boolean {
  return rec.pidStart === id.start && rec.netns === id.netns;
}

/** True while the instance's recorded process runs (same start time and namespace, in this boot). */
function isRunning(rec: InstanceState): boolean {
  const id = processIdentity(rec.pid);
  return id !== undefined && (rec.pidStart === undefined ? rec.netns === undefined : sameProcess(rec, id));
}

function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
