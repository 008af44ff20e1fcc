/**
 * @module platform/platform
 * The local platform: one machine plays a whole oaknet deployment. Network namespaces stand in for worker
 * nodes on an underlay, and the real processes run in them: `oaknet root` and one `oaknet cluster` per
 * cluster in a control namespace, one `oaknet node` (NetManager) per node namespace. `oaknet up/status/down`,
 * the end-to-end tests and the benchmarks stand on this.
 *
 * Every name derives from a short platform id, so platforms coexist; the host namespace gets nothing but the
 * loopback forwarders. Every process is detached and recorded with its start time in
 * `<stateDir>/platform.json`, and carries OAKNET_PLATFORM=<id> in its environment, so teardown works from
 * the state alone, after a crash or a `kill -9` of any part, and leftovers can be found.
 *
 * This module holds the Platform façade and its creation; the steps live beside it: plan.ts (names,
 * addresses, ports), underlay.ts (namespaces and the switch), latency-control.ts (link latency), roles.ts
 * (root, clusters, NetManagers, each waited for until ready) with forwarders.ts (their host ports), every
 * process started and recorded by launcher.ts. On a running platform: status.ts, workloads.ts, and
 * teardown.ts to take it down.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { join, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { errorMessage, InvalidInputError, NotFoundError } from '../errors.ts';
import { ExecRunner, type CommandRunner } from '../node/net/runner.ts';
import { makePrivateDir } from '../store/private-files.ts';
import { NodeClient } from '../protocol/node-client.ts';
import { isAlive } from '../system/proc.ts';
import { pairDelays, type LatencyBackend, type LatencySpec, type SiteMap } from './latency.ts';
import { setLatency } from './latency-control.ts';
import { Launcher } from './launcher.ts';
import { listNetns } from './netns.ts';
import { PLATFORM_ENV, planPlatform, type PlatformSpec } from './plan.ts';
import type { ClusterClient } from '../protocol/cluster-client.ts';
import type { RootClient } from '../protocol/root-client.ts';
import type { Role } from '../security/tokens.ts';
import { platformClusterClient, platformRootClient, scheme } from './credentials.ts';
import { rootUnderlayUrl, startCluster, startNode, startRoot } from './roles.ts';
import {
  readState,
  removePlatformData,
  writeState,
  type NodeState,
  type PlatformState,
  type WorkloadState,
} from './state.ts';
import { platformStatus, type PlatformStatus } from './status.ts';
import { destroyPlatform, type DestroyReport } from './teardown.ts';
import { buildUnderlay } from './underlay.ts';
import { checkWorkloadName, startWorkload, type WorkloadSpec } from './workloads.ts';

// PLATFORM_ENV is also importable from here, where cli/node-command.ts takes it along with loadPlatform
export { PLATFORM_ENV };

/**
 * Builds and starts a platform: namespaces and underlay, latency, root, clusters with host forwarders, and a
 * NetManager per node; resolves once every NetManager is registered. On failure it removes what it made.
 */
export async function createPlatform(spec: PlatformSpec, log: Logger): Promise<Platform> {
  const state = planPlatform(spec);
  const runner = new ExecRunner({ timeoutMs: 30_000 });
  const existing = readState(state.stateDir);
  if (existing) {
    const live =
      existing.processes.some((p) => isAlive(p)) ||
      (await listNetns(runner)).some((ns) => existing.namespaces.includes(ns));
    if (live) {
      throw new InvalidInputError(
        `a platform (${existing.id}) already runs from ${state.stateDir}; destroy it first`,
      );
    }
    await destroyPlatform(state.stateDir, log);
  }
  const taken = (await listNetns(runner)).filter((ns) => state.namespaces.includes(ns));
  if (taken.length > 0) {
    throw new InvalidInputError(`namespaces of platform id ${state.id} already exist: ${taken.join(', ')}`);
  }
  // a new platform starts from empty stores (data an older version's `down` left behind included)
  const stale = removePlatformData(state.stateDir);
  if (stale.length > 0) log.info({ removed: stale }, 'removed data of an earlier platform');
  // the state dir, logs/ and the nodes' dirs are created 0700 (directories that exist are left as they are)
  makePrivateDir(join(state.stateDir, 'logs'));
  for (const n of state.nodes) makePrivateDir(n.stateDir);
  writeState(state);
  const started = Date.now();
  const platform = new Platform(state, log, runner);
  try {
    await platform.build(spec);
  } catch (err) {
    log.error({ err: errorMessage(err), id: state.id }, 'platform creation failed; removing what was made');
    try {
      await destroyPlatform(state.stateDir, log);
    } catch (cleanupErr) {
      log.error({ err: errorMessage(cleanupErr) }, 'rollback failed');
    }
    throw err;
  }
  log.info({ id: state.id, ms: Date.now() - started, nodes: state.nodes.length }, 'platform ready');
  return platform;
}

/** Opens the platform whose state is in `stateDir`; NotFoundError when there is none. */
export function loadPlatform(stateDir: string, log: Logger = pino({ level: 'silent' })): Platform {
  const state = readState(resolve(stateDir));
  if (!state) throw new NotFoundError(`no platform state in ${stateDir}`);
  return new Platform(state, log, new ExecRunner({ timeoutMs: 30_000 }));
}

/** A running (or crashed) local platform, described by its state file. */
export class Platform {
  private readonly launcher: Launcher;
  private wantedBackend: 'auto' | LatencyBackend = 'auto';

  /** @internal use createPlatform or loadPlatform. */
  constructor(
    private readonly st: PlatformState,
    private readonly log: Logger,
    private readonly runner: CommandRunner,
  ) {
    this.launcher = new Launcher(st, log);
  }

  /** Platform id. */
  get id(): string {
    return this.st.id;
  }

  /** State directory. */
  get stateDir(): string {
    return this.st.stateDir;
  }

  /** The state as last written (do not modify). */
  get state(): Readonly<PlatformState> {
    return this.st;
  }

  /** Root URL reachable from the host (through its forwarder). */
  get rootUrl(): string {
    return `${scheme(this.st)}://127.0.0.1:${this.st.root.hostPort}`;
  }

  /** True unless the platform was made with `insecure` (plain http, no authentication). */
  get secure(): boolean {
    return !this.st.insecure;
  }

  /** A client of the root with the platform's token of `role` (and its CA). */
  rootClient(role: Role = 'read-only', timeoutMs = 5000): RootClient {
    return platformRootClient(this.st, role, timeoutMs);
  }

  /** A client of cluster `name` (default c1) with the platform's token of `role`. */
  clusterClient(name = 'c1', role: Role = 'read-only'): ClusterClient {
    const c = this.st.clusters.find((x) => x.name === name);
    if (!c) throw new NotFoundError(`no cluster ${name} in platform ${this.id}`);
    return platformClusterClient(this.st, c, role);
  }

  /** Root URL as seen from the node and control namespaces. */
  get rootUnderlayUrl(): string {
    return rootUnderlayUrl(this.st);
  }

  /** URL of cluster `name` (default c1) reachable from the host. */
  clusterUrl(name = 'c1'): string {
    const c = this.st.clusters.find((x) => x.name === name);
    if (!c) throw new NotFoundError(`no cluster ${name} in platform ${this.id}`);
    return `${scheme(this.st)}://127.0.0.1:${c.hostPort}`;
  }

  /** The node called `name` ("n1", its worker ID or its namespace); NotFoundError if none. */
  node(name: string): NodeState {
    const n = this.st.nodes.find((x) => x.name === name || x.workerId === name || x.netns === name);
    if (!n) throw new NotFoundError(`no node ${name} in platform ${this.id}`);
    return n;
  }

  /** A client of the NetManager API of node `name`. */
  nodeClient(name: string, timeoutMs = 5000): NodeClient {
    return new NodeClient(this.node(name).socket, timeoutMs);
  }

  /**
   * Spawns `argv` inside node `name`'s network namespace (in the host's mount namespace), marked as the
   * platform's; the caller owns the child.
   */
  exec(name: string, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const ns = this.node(name).netns;
    if (argv.length === 0) throw new InvalidInputError('exec: empty command');
    // nsenter switches only the network namespace: unlike `ip netns exec` it keeps the host's mount
    // namespace, so what the command does with named namespaces (`ip netns add`, as `oaknet run` does) is
    // visible outside it
    return spawn('nsenter', [`--net=/run/netns/${ns}`, '--', ...argv], {
      ...opts,
      // OAKNET_STATE_DIR: oaknet commands inside find this platform (its root, its tokens)
      env: { OAKNET_STATE_DIR: this.st.stateDir, ...(opts.env ?? process.env), [PLATFORM_ENV]: this.id },
    });
  }

  /** Liveness of every process, health of root and clusters, and each node with its NetManager status. */
  status(): Promise<PlatformStatus> {
    return platformStatus(this.st, this.runner);
  }

  /** Changes the link latency at runtime (and the sites, when given); delays take effect when it resolves. */
  setLatency(latency: LatencySpec, sites?: SiteMap): Promise<void> {
    return setLatency(this.launcher, this.runner, latency, sites, this.wantedBackend);
  }

  /** Stops everything and removes the namespaces and the state file (destroyPlatform); idempotent. */
  destroy(): Promise<DestroyReport> {
    return destroyPlatform(this.st.stateDir, this.log);
  }

  /**
   * Starts a workload (`oaknet run` inside the node's network namespace, recorded as `w-<name>`) and waits
   * until it is deployed. `destroy` stops workloads first, while root and nodes still run.
   */
  async startWorkload(w: WorkloadSpec, timeoutMs = 30_000): Promise<WorkloadState> {
    checkWorkloadName(w.name);
    return startWorkload(this.launcher, this.node(w.node), w, timeoutMs);
  }

  /** The workloads started on this platform. */
  get workloads(): readonly WorkloadState[] {
    return this.st.workloads ?? [];
  }

  /**
   * Restarts one of the platform's services: 'root', a cluster (c1, ...) or a node's NetManager (n1, ...).
   * The root and clusters keep their stores and host ports; a NetManager keeps its worker ID, subnetwork and
   * instances.
   */
  async restart(name: string, timeoutMs = 30_000): Promise<void> {
    if (name === 'root') {
      await this.launcher.stopRecorded('root');
      return startRoot(this.launcher, this.runner, 'info', timeoutMs);
    }
    const cluster = this.st.clusters.find((c) => c.name === name || c.clusterId === name);
    if (cluster) {
      await this.launcher.stopRecorded(cluster.name);
      return startCluster(this.launcher, this.runner, cluster, 'info', timeoutMs);
    }
    return this.restartNode(name, timeoutMs);
  }

  /**
   * Stops node `name`'s NetManager (SIGTERM: it removes its devices and rules) and starts it again with the
   * same worker ID and state directory, as an operator restarting the service would.
   */
  async restartNode(name: string, timeoutMs = 30_000): Promise<void> {
    const n = this.node(name);
    await this.launcher.stopRecorded(n.name);
    await startNode(this.launcher, n, 'info', timeoutMs);
  }

  /**
   * Switches the tunnel between WireGuard (the default) and plaintext (NetManagers with --plaintext-tunnel,
   * clusters with --allow-plaintext-peers): restarts the clusters, then the NetManagers, which keep their
   * subnetworks and instances. For the bench's same-run comparison.
   */
  async setPlaintextTunnel(plaintext: boolean, timeoutMs = 30_000): Promise<void> {
    if ((this.st.plaintextTunnel === true) === plaintext) return;
    if (plaintext) this.st.plaintextTunnel = true;
    else delete this.st.plaintextTunnel;
    this.launcher.save();
    for (const c of this.st.clusters) await this.restart(c.name, timeoutMs);
    await Promise.all(this.st.nodes.map((n) => this.restartNode(n.name, timeoutMs)));
  }

  /** @internal the steps of createPlatform after planning. */
  async build(spec: PlatformSpec): Promise<void> {
    this.wantedBackend = spec.latencyBackend ?? 'auto';
    const t0 = Date.now();
    const step = async (name: string, fn: () => Promise<unknown>) => {
      spec.onStep?.(name, false);
      await fn();
      spec.onStep?.(name, true);
    };
    await step(`underlay: ${this.st.nodes.length} node namespaces on ${this.st.subnet}`, () =>
      buildUnderlay(this.runner, this.st),
    );
    this.log.debug({ ms: Date.now() - t0 }, 'underlay built');
    const latencyGiven =
      spec.latency !== undefined && pairDelays(this.st.nodes, spec.sites, spec.latency).length > 0;
    if (latencyGiven && spec.latency) {
      const latency = spec.latency;
      await step('link latency between sites', () => this.setLatency(latency, spec.sites));
    }
    const timeoutMs = spec.readyTimeoutMs ?? 30_000;
    const logLevel = spec.logLevel ?? 'info';
    await step('root service manager', () => startRoot(this.launcher, this.runner, logLevel, timeoutMs));
    this.log.debug({ ms: Date.now() - t0 }, 'root ready');
    await step(`${this.st.clusters.length} cluster service manager(s) with MQTT brokers`, () =>
      Promise.all(
        this.st.clusters.map((c) => startCluster(this.launcher, this.runner, c, logLevel, timeoutMs)),
      ),
    );
    this.log.debug({ ms: Date.now() - t0 }, 'clusters ready');
    await step(`${this.st.nodes.length} NetManagers: bridge, TUN, ProxyTUN, registration`, () =>
      Promise.all(this.st.nodes.map((n) => startNode(this.launcher, n, logLevel, timeoutMs))),
    );
    this.st.phase = 'ready';
    this.launcher.save();
  }
}
