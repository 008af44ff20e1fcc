/**
 * @module platform/platform
 * The local platform: one machine plays a whole oaknet deployment. Network namespaces stand in for worker
 * nodes on an underlay, and the real processes run in them: `oaknet root` and one `oaknet cluster` per
 * cluster in a control namespace, one `oaknet node` (NetManager) per node namespace. `oaknet up/status/down`,
 * the end-to-end tests and the benchmarks stand on this.
 *
 * Topology (every name derives from a short platform id, so platforms coexist; the host namespace gets
 * nothing but the loopback forwarders):
 *
 *   <id>-n1 [eth0 198.18.X.11/24] ──veth── [<id>-n1]                 ┐
 *   <id>-n2 [eth0 198.18.X.12/24] ──veth── [<id>-n2]   <id>-sw       │ the underlay
 *   <id>-ctl [eth0 198.18.X.1/24] ──veth── [<id>-ctl]  (router, proxy ARP) ┘
 *
 * The switch namespace ROUTES between its veths (a /32 route per member, proxy ARP so the members still see
 * one flat /24) instead of bridging them: a bridged frame never passes IP routing, and routing is where the
 * userspace latency backend has to pick up the delayed pairs on kernels without sch_netem (`latency.ts`).
 * The only visible difference from a bridge is one TTL decrement.
 *
 * Root and clusters listen inside the control namespace; socat forwarders in the host namespace make each
 * HTTP port reachable at http://127.0.0.1:<host port>. Every process is detached and recorded with its start
 * time in `<stateDir>/platform.json`, and carries OAKNET_PLATFORM=<id> in its environment, so teardown works
 * from the state alone, after a crash or a `kill -9` of any part, and leftovers can be found.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { errorMessage, InvalidInputError, NotFoundError, SystemError } from '../errors.ts';
import { ExecRunner, type CommandRunner } from '../node/net/runner.ts';
import { NodeClient } from '../protocol/node-client.ts';
import type { NodeStatus } from '../protocol/node-api.ts';
import { isAlive, processesInNetns, processesWithMarker } from '../system/proc.ts';
import { applyDelayRules, readAppliedGeneration, writeDelayConfig } from './delay-router.ts';
import {
  applyNetem,
  checkLatency,
  pairDelays,
  probeNetem,
  siteOfNodes,
  type LatencyBackend,
  type LatencySpec,
  type SiteMap,
} from './latency.ts';
import { addVeth, createNetns, deleteNetns, ipIn, listNetns, sysctlIn } from './netns.ts';
import {
  httpGet,
  httpOk,
  spawnDetached,
  stopProcesses,
  tailFile,
  waitFor,
  type ProcessRecord,
} from './processes.ts';
import {
  readState,
  removePlatformData,
  removeState,
  STATE_VERSION,
  writeState,
  type LatencyState,
  type NodeState,
  type PlatformState,
  type WorkloadState,
} from './state.ts';

/** The repository whose bin/oaknet.mjs the platform runs. */
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** Most worker nodes of one platform. */
export const MAX_NODES = 200;
/** Most clusters of one platform (cluster ports are 1011N and 1000N). */
export const MAX_CLUSTERS = 9;
/** HTTP port of the root inside the control namespace. */
export const ROOT_PORT = 10010;
/** Name of the environment variable that marks every process of a platform. */
export const PLATFORM_ENV = 'OAKNET_PLATFORM';

const ID = /^[a-z][a-z0-9]{0,5}$/;

/** What to build. */
export interface PlatformSpec {
  /** Directory for the state file, logs, sockets and stores (created if needed). */
  stateDir: string;
  /** Number of worker nodes, named n1..nN. */
  nodes: number;
  /** Number of clusters (default 1); node i joins cluster ((i - 1) mod clusters) + 1. */
  clusters?: number;
  /** Sites: name -> nodes ("n1", ...). A node in no site is a site of its own. */
  sites?: SiteMap;
  /** Link latency between nodes (default none). */
  latency?: LatencySpec;
  /** Platform id: 1-6 of [a-z0-9], starting with a letter (default random). */
  id?: string;
  /** How latency is applied (default auto: netem when the kernel has it, else the delay router). */
  latencyBackend?: 'auto' | LatencyBackend;
  /** --log-level of the oaknet processes (default info). */
  logLevel?: string;
  /** Deadline of each readiness wait in ms (default 30000). */
  readyTimeoutMs?: number;
  /** Progress: called when a step starts (done false) and ends (done true). */
  onStep?: (step: string, done: boolean) => void;
}

/** What startWorkload runs. */
export interface WorkloadSpec {
  /** Name within the platform: 1-20 of [a-z0-9-]. */
  name: string;
  node: string;
  service: string;
  instance: number;
  /** The command and its arguments. */
  command: string[];
  /** Wait until this line appears in the workload's log (besides the deployment line). */
  readyLine?: string;
}

/** Liveness of one recorded process. */
export interface ProcessStatus {
  /** Its name ("root", "c1", "n1", "fwd-root", "delay-router", ...). */
  name: string;
  /** Recorded PID. */
  pid: number;
  /** True while the recorded PID is alive and is still the same process (start time). */
  running: boolean;
  /** Its log file. */
  log: string;
}

/** Status of one worker node. */
export interface NodeReport {
  /** Node name. */
  name: string;
  /** Its namespace. */
  netns: string;
  /** Its underlay address. */
  ip: string;
  /** Its site. */
  site: string;
  /** Its cluster's name. */
  cluster: string;
  /** Its worker ID. */
  workerId: string;
  /** True when its namespace exists and its NetManager process runs. */
  up: boolean;
  /** The NetManager's GET /status, when it answered. */
  netmanager?: NodeStatus;
  /** Why the NetManager did not answer. */
  error?: string;
}

/** What Platform.status reports. */
export interface PlatformStatus {
  /** Platform id. */
  id: string;
  /** Creation phase from the state file. */
  phase: PlatformState['phase'];
  /** Root on the host: URL and whether GET /api/net/health answered. */
  root: { url: string; healthy: boolean };
  /** Clusters on the host: URL and whether GET /api/net/health answered. */
  clusters: { name: string; clusterId: string; url: string; healthy: boolean }[];
  /** Every recorded process. */
  processes: ProcessStatus[];
  /** Every node. */
  nodes: NodeReport[];
  /** Latency in force. */
  latency?: LatencyState;
}

/** What destroyPlatform did. */
export interface DestroyReport {
  /** Platform id, undefined when there was no state (nothing to do). */
  id: string | undefined;
  /** Names of processes that were running and were stopped. */
  stopped: string[];
  /** Of those, the ones that needed SIGKILL. */
  killed: string[];
  /** Namespaces removed. */
  namespaces: string[];
  /** PIDs of unrecorded processes found inside the namespaces (not signalled; they lose their namespace's name). */
  strangers: number[];
}

/** What a platform may have left behind. */
export interface Leftovers {
  /** Named namespaces `<id>-*`. */
  namespaces: string[];
  /** Interfaces `<id>-*` in the host namespace. */
  links: string[];
  /** Live processes marked OAKNET_PLATFORM=<id>. */
  processes: number[];
  /** Of the given host ports, those that still accept connections. */
  ports: number[];
}

/** A random platform id ("p" and 4 base-36 characters). */
export function randomPlatformId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return 'p' + [...randomBytes(4)].map((b) => alphabet[b % 36]).join('');
}

/** The underlay /24 of platform `id`: one of the 512 /24s of 198.18.0.0/15, chosen by a hash of the id. */
export function underlayPrefix(id: string): string {
  let h = 0x811c9dc5; // FNV-1a
  for (const c of Buffer.from(id)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  const index = h % 512;
  return `198.${18 + (index >> 8)}.${index & 255}`;
}

/** Computes the full state of a new platform from its spec (names, addresses, ports); no side effects. */
export function planPlatform(spec: PlatformSpec): PlatformState {
  const id = spec.id ?? randomPlatformId();
  if (!ID.test(id))
    throw new InvalidInputError(`bad platform id ${JSON.stringify(id)}: 1-6 of [a-z0-9], a letter first`);
  if (!Number.isInteger(spec.nodes) || spec.nodes < 1 || spec.nodes > MAX_NODES) {
    throw new InvalidInputError(`nodes must be 1-${MAX_NODES}, got ${spec.nodes}`);
  }
  const clusters = spec.clusters ?? 1;
  if (!Number.isInteger(clusters) || clusters < 1 || clusters > MAX_CLUSTERS) {
    throw new InvalidInputError(`clusters must be 1-${MAX_CLUSTERS}, got ${clusters}`);
  }
  if (spec.latency) checkLatency(spec.latency);
  const stateDir = resolve(spec.stateDir);
  const prefix = underlayPrefix(id);
  const ctlIp = `${prefix}.1`;
  const nodeNames = Array.from({ length: spec.nodes }, (_, i) => `n${i + 1}`);
  const siteOf = siteOfNodes(nodeNames, spec.sites, spec.latency);
  const switchNs = `${id}-sw`;
  const ctlNs = `${id}-ctl`;
  const nodes: NodeState[] = nodeNames.map((name, i) => ({
    name,
    netns: `${id}-${name}`,
    ip: `${prefix}.${11 + i}`,
    site: siteOf.get(name) ?? name,
    workerId: `${id}-${name}`,
    cluster: `c${(i % clusters) + 1}`,
    socket: join(stateDir, name, 'netmanager.sock'),
    stateDir: join(stateDir, name, 'state'),
  }));
  return {
    version: STATE_VERSION,
    id,
    stateDir,
    repo: REPO_ROOT,
    phase: 'creating',
    createdAt: new Date().toISOString(),
    subnet: `${prefix}.0/24`,
    switchNs,
    ctlNs,
    ctlIp,
    namespaces: [switchNs, ctlNs, ...nodes.map((n) => n.netns)],
    links: [ctlNs, ...nodes.map((n) => n.netns)].map((ns) => ({
      ns: switchNs,
      name: ns,
      peerNs: ns,
      peerName: 'eth0',
    })),
    root: { port: ROOT_PORT, hostPort: 0 },
    clusters: Array.from({ length: clusters }, (_, i) => ({
      name: `c${i + 1}`,
      clusterId: `${id}-c${i + 1}`,
      port: 10111 + i,
      mqttPort: 10001 + i,
      hostPort: 0,
    })),
    nodes,
    processes: [],
  };
}

function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

function marker(id: string): string {
  return `${PLATFORM_ENV}=${id}`;
}

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
  mkdirSync(join(state.stateDir, 'logs'), { recursive: true });
  for (const n of state.nodes) mkdirSync(n.stateDir, { recursive: true });
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
export function loadPlatform(stateDir: string, log: Logger = silentLogger()): Platform {
  const state = readState(resolve(stateDir));
  if (!state) throw new NotFoundError(`no platform state in ${stateDir}`);
  return new Platform(state, log, new ExecRunner({ timeoutMs: 30_000 }));
}

/**
 * Tears the platform of `stateDir` down from its state file alone: stops the recorded processes (nodes first,
 * SIGTERM then SIGKILL), removes the namespaces (recorded ones and any `<id>-sw|ctl|nN`), then the state file.
 * Idempotent: without a state file it does nothing.
 */
export async function destroyPlatform(
  stateDir: string,
  log: Logger = silentLogger(),
): Promise<DestroyReport> {
  const dir = resolve(stateDir);
  const state = readState(dir);
  const report: DestroyReport = { id: state?.id, stopped: [], killed: [], namespaces: [], strangers: [] };
  if (!state) return report;
  const runner = new ExecRunner({ timeoutMs: 30_000 });
  const mark = marker(state.id);
  const nodeNames = new Set(state.nodes.map((n) => n.name));
  const clusterNames = new Set(state.clusters.map((c) => c.name));
  const tiers = [
    // workloads first: oaknet run withdraws its instance at the root and undeploys it from its node
    state.processes.filter((p) => p.name.startsWith('w-')),
    state.processes.filter((p) => nodeNames.has(p.name) || p.name === 'delay-router'),
    state.processes.filter((p) => clusterNames.has(p.name)),
    state.processes.filter(
      (p) =>
        !p.name.startsWith('w-') &&
        !nodeNames.has(p.name) &&
        p.name !== 'delay-router' &&
        !clusterNames.has(p.name),
    ),
  ];
  for (const tier of tiers) {
    report.stopped.push(...tier.filter((p) => isAlive(p)).map((p) => p.name));
    report.killed.push(...(await stopProcesses(tier, { marker: mark, graceMs: 8000 }, log)));
  }
  // the platform's own namespaces, and workload namespaces a killed `oaknet run` could not remove
  const pattern = new RegExp(`^${state.id}-[a-z0-9-]+$`);
  const workloadNs = (state.workloads ?? []).map((w) => w.netns);
  const names = new Set([
    ...workloadNs,
    ...state.namespaces,
    ...(await listNetns(runner)).filter((ns) => pattern.test(ns)),
  ]);
  // what a killed (or still running, unrecorded) `oaknet run` left in a namespace of the platform (the
  // command and its holder, and `oaknet run --node` itself) carries the platform's marker: ours by
  // construction, so it goes too
  for (const ns of names) {
    for (const pid of processesInNetns(ns).filter((pid) => processesWithMarker(mark).includes(pid))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const ns of names) {
    const inside = processesInNetns(ns);
    if (inside.length > 0) {
      report.strangers.push(...inside);
      log.warn({ netns: ns, pids: inside }, 'unrecorded processes still in the namespace; not signalled');
    }
    if (await deleteNetns(runner, ns)) report.namespaces.push(ns);
  }
  removeState(dir);
  removePlatformData(dir);
  log.info({ ...report }, 'platform destroyed');
  return report;
}

/** What `id` may have left: namespaces, host interfaces, marked processes, listening host ports. */
export async function findLeftovers(id: string, opts: { ports?: number[] } = {}): Promise<Leftovers> {
  const runner = new ExecRunner();
  const namespaces = (await listNetns(runner)).filter((ns) => ns.startsWith(`${id}-`));
  const { stdout } = await runner.run('ip', ['-j', 'link', 'show']);
  const links = (JSON.parse(stdout || '[]') as { ifname?: string }[])
    .map((l) => l.ifname ?? '')
    .filter((n) => n.startsWith(`${id}-`));
  const ports: number[] = [];
  for (const port of opts.ports ?? []) if (await acceptsConnections(port)) ports.push(port);
  return { namespaces, links, processes: processesWithMarker(marker(id)), ports };
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      done(false);
    });
    socket.once('error', () => done(false));
  });
}

function freeHostPort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** A running (or crashed) local platform, described by its state file. */
export class Platform {
  /** @internal use createPlatform or loadPlatform. */
  constructor(
    private st: PlatformState,
    private readonly log: Logger,
    private readonly runner: CommandRunner,
  ) {}

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
    return `http://127.0.0.1:${this.st.root.hostPort}`;
  }

  /** Root URL as seen from the node and control namespaces. */
  get rootUnderlayUrl(): string {
    return `http://${this.st.ctlIp}:${this.st.root.port}`;
  }

  /** URL of cluster `name` (default c1) reachable from the host. */
  clusterUrl(name = 'c1'): string {
    const c = this.st.clusters.find((x) => x.name === name);
    if (!c) throw new NotFoundError(`no cluster ${name} in platform ${this.id}`);
    return `http://127.0.0.1:${c.hostPort}`;
  }

  /** The node called `name` ("n1", or its worker ID); NotFoundError if none. */
  node(name: string): NodeState {
    const n = this.st.nodes.find((x) => x.name === name || x.workerId === name || x.netns === name);
    if (!n) throw new NotFoundError(`no node ${name} in platform ${this.id}`);
    return n;
  }

  /** A client of the NetManager API of node `name`. */
  nodeClient(name: string, timeoutMs = 5000): NodeClient {
    return new NodeClient(this.node(name).socket, timeoutMs);
  }

  /** Spawns `argv` inside the namespace of node `name` (marked as the platform's); the caller owns the child. */
  /** Spawns argv inside node `name`'s network namespace (in the host's mount namespace). */
  exec(name: string, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const ns = this.node(name).netns;
    if (argv.length === 0) throw new InvalidInputError('exec: empty command');
    // nsenter switches only the network namespace: unlike `ip netns exec` it keeps the host's mount
    // namespace, so what the command does with named namespaces (`ip netns add`, as `oaknet run` does) is
    // visible outside it
    return spawn('nsenter', [`--net=/run/netns/${ns}`, '--', ...argv], {
      ...opts,
      env: { ...(opts.env ?? process.env), [PLATFORM_ENV]: this.id },
    });
  }

  /** Liveness of every process, health of root and clusters, and each node with its NetManager status. */
  async status(): Promise<PlatformStatus> {
    const st = this.st;
    const procs = new Map(st.processes.map((p) => [p.name, p]));
    const namespaces = new Set(await listNetns(this.runner));
    const [rootHealthy, clusters, nodes] = await Promise.all([
      httpOk(`${this.rootUrl}/api/net/health`),
      Promise.all(
        st.clusters.map(async (c) => ({
          name: c.name,
          clusterId: c.clusterId,
          url: `http://127.0.0.1:${c.hostPort}`,
          healthy: await httpOk(`http://127.0.0.1:${c.hostPort}/api/net/health`),
        })),
      ),
      Promise.all(
        st.nodes.map(async (n): Promise<NodeReport> => {
          const proc = procs.get(n.name);
          const report: NodeReport = {
            name: n.name,
            netns: n.netns,
            ip: n.ip,
            site: n.site,
            cluster: n.cluster,
            workerId: n.workerId,
            up: namespaces.has(n.netns) && proc !== undefined && isAlive(proc),
          };
          try {
            report.netmanager = await new NodeClient(n.socket, 2000).status();
          } catch (err) {
            report.error = errorMessage(err);
          }
          return report;
        }),
      ),
    ]);
    return {
      id: st.id,
      phase: st.phase,
      root: { url: this.rootUrl, healthy: rootHealthy },
      clusters,
      processes: st.processes.map((p) => ({ name: p.name, pid: p.pid, running: isAlive(p), log: p.log })),
      nodes,
      ...(st.latency ? { latency: st.latency } : {}),
    };
  }

  /** Changes the link latency at runtime (and the sites, when given); delays take effect when it resolves. */
  async setLatency(latency: LatencySpec, sites?: SiteMap): Promise<void> {
    checkLatency(latency);
    const siteMap = sites ?? this.st.latency?.sites ?? sitesOf(this.st.nodes);
    const delays = pairDelays(this.st.nodes, siteMap, latency);
    const siteOf = siteOfNodes(
      this.st.nodes.map((n) => n.name),
      siteMap,
      latency,
    );
    for (const n of this.st.nodes) n.site = siteOf.get(n.name) ?? n.name;
    const previous = this.st.latency;
    const { backend, reason } = previous
      ? { backend: previous.backend, reason: previous.netemUnavailable }
      : await this.chooseBackend(this.wantedBackend);
    const latencyState: LatencyState = {
      spec: latency,
      sites: siteMap,
      backend,
      generation: (previous?.generation ?? 0) + 1,
      ...(reason !== undefined ? { netemUnavailable: reason } : {}),
    };
    this.st.latency = latencyState;
    this.save();
    if (backend === 'netem') {
      await Promise.all(
        this.st.nodes.map((n) =>
          applyNetem(
            this.runner,
            n.netns,
            'eth0',
            delays.filter((d) => d.src === n.ip),
          ),
        ),
      );
    } else {
      await this.applyRouter(latencyState.generation, delays);
    }
    this.log.info({ id: this.id, backend, pairs: delays.length, latency }, 'latency applied');
  }

  /** Stops everything and removes the namespaces and the state file (destroyPlatform); idempotent. */
  destroy(): Promise<DestroyReport> {
    return destroyPlatform(this.st.stateDir, this.log);
  }

  private wantedBackend: 'auto' | LatencyBackend = 'auto';

  /** @internal the steps of createPlatform after planning. */
  /**
   * Starts a workload: `oaknet run` inside the node's network namespace (host mount namespace, so its named
   * namespace `<id>-<name>` is usable from the host), detached and recorded like the platform's processes,
   * and waits until it is deployed. `destroy` stops workloads first, while root and nodes still run.
   */
  async startWorkload(w: WorkloadSpec, timeoutMs = 30_000): Promise<WorkloadState> {
    if (!/^[a-z0-9][a-z0-9-]{0,19}$/.test(w.name))
      throw new InvalidInputError(`bad workload name ${JSON.stringify(w.name)}`);
    const node = this.node(w.node);
    const state: WorkloadState = {
      name: w.name,
      node: w.node,
      service: w.service,
      instance: w.instance,
      netns: `${this.st.id}-${w.name}`,
      command: [...w.command],
    };
    const rec = await this.spawnRecorded(`w-${w.name}`, [
      'nsenter',
      `--net=/run/netns/${node.netns}`,
      '--',
      process.execPath,
      join(this.st.repo, 'bin', 'oaknet.mjs'),
      'run',
      '--service',
      w.service,
      '--instance',
      String(w.instance),
      '--node-socket',
      node.socket,
      '--netns',
      state.netns,
      '--',
      ...w.command,
    ]);
    (this.st.workloads ??= []).push(state);
    writeState(this.st);
    await this.waitReady(
      rec,
      `${w.service} instance ${w.instance} deployed`,
      async () => {
        const log = await tailFile(rec.log);
        return log.includes(`(netns ${state.netns})`) && (!w.readyLine || log.includes(w.readyLine))
          ? true
          : undefined;
      },
      timeoutMs,
    );
    return state;
  }

  /**
   * Restarts one of the platform's services: 'root', a cluster (c1, ...) or a node's NetManager (n1, ...).
   * The root and clusters keep their stores and host ports; a NetManager keeps its worker ID, subnetwork and
   * instances.
   */
  async restart(name: string, timeoutMs = 30_000): Promise<void> {
    if (name === 'root') {
      await this.stopRecorded('root');
      return this.startRoot('info', timeoutMs);
    }
    const cluster = this.st.clusters.find((c) => c.name === name || c.clusterId === name);
    if (cluster) {
      await this.stopRecorded(cluster.name);
      return this.startCluster(cluster, 'info', timeoutMs);
    }
    return this.restartNode(name, timeoutMs);
  }

  /**
   * Stops node `name`'s NetManager (SIGTERM: it removes its devices and rules) and starts it again with the
   * same worker ID and state directory, as an operator restarting the service would.
   */
  async restartNode(name: string, timeoutMs = 30_000): Promise<void> {
    const n = this.node(name);
    await this.stopRecorded(n.name);
    await this.startNode(n, 'info', timeoutMs);
  }

  /** Stops the recorded process `name` (SIGTERM, SIGKILL after 8 s), if there is one. */
  private async stopRecorded(name: string): Promise<void> {
    const rec = this.st.processes.find((p) => p.name === name);
    if (rec) await stopProcesses([rec], { marker: marker(this.st.id), graceMs: 8000 }, this.log);
  }

  /** The workloads started on this platform. */
  get workloads(): readonly WorkloadState[] {
    return this.st.workloads ?? [];
  }

  async build(spec: PlatformSpec): Promise<void> {
    this.wantedBackend = spec.latencyBackend ?? 'auto';
    const t0 = Date.now();
    const step = async (name: string, fn: () => Promise<unknown>) => {
      spec.onStep?.(name, false);
      await fn();
      spec.onStep?.(name, true);
    };
    await step(`underlay: ${this.st.nodes.length} node namespaces on ${this.st.subnet}`, () =>
      this.buildUnderlay(),
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
    await step('root service manager', () => this.startRoot(logLevel, timeoutMs));
    this.log.debug({ ms: Date.now() - t0 }, 'root ready');
    await step(`${this.st.clusters.length} cluster service manager(s) with MQTT brokers`, () =>
      Promise.all(this.st.clusters.map((c) => this.startCluster(c, logLevel, timeoutMs))),
    );
    this.log.debug({ ms: Date.now() - t0 }, 'clusters ready');
    await step(`${this.st.nodes.length} NetManagers: bridge, TUN, ProxyTUN, registration`, () =>
      Promise.all(this.st.nodes.map((n) => this.startNode(n, logLevel, timeoutMs))),
    );
    this.st.phase = 'ready';
    this.save();
  }

  private save(): void {
    writeState(this.st);
  }

  private record(rec: ProcessRecord): void {
    this.st.processes = [...this.st.processes.filter((p) => p.name !== rec.name), rec];
    this.save();
  }

  private async buildUnderlay(): Promise<void> {
    const st = this.st;
    await Promise.all(st.namespaces.map((ns) => createNetns(this.runner, ns)));
    await sysctlIn(this.runner, st.switchNs, {
      'net.ipv4.ip_forward': '1',
      'net.ipv4.conf.all.rp_filter': '0',
      'net.ipv4.conf.default.rp_filter': '0',
      'net.ipv4.conf.default.proxy_arp': '1',
    });
    const members = [
      { netns: st.ctlNs, ip: st.ctlIp },
      ...st.nodes.map((n) => ({ netns: n.netns, ip: n.ip })),
    ];
    for (const link of st.links) await addVeth(this.runner, link);
    // proxy ARP answers are delayed by up to 0.8 s by default (proxy_delay, in jiffies): the first packet
    // between two nodes would wait that long
    await sysctlIn(
      this.runner,
      st.switchNs,
      Object.fromEntries(members.map((m) => [`net.ipv4.neigh.${m.netns}.proxy_delay`, '0'])),
    );
    await ipIn(
      this.runner,
      st.switchNs,
      members.flatMap((m) => [`link set ${m.netns} up`, `route add ${m.ip}/32 dev ${m.netns}`]),
    );
    await Promise.all(
      members.map((m) => ipIn(this.runner, m.netns, [`addr add ${m.ip}/24 dev eth0`, 'link set eth0 up'])),
    );
  }

  private async chooseBackend(
    wanted: 'auto' | LatencyBackend,
  ): Promise<{ backend: LatencyBackend; reason?: string }> {
    if (wanted === 'router') return { backend: 'router' };
    const probe = await probeNetem(this.runner, this.st.ctlNs);
    if (probe.ok) return { backend: 'netem' };
    if (wanted === 'netem') throw new SystemError(`tc netem does not work here: ${probe.reason}`);
    this.log.warn(
      { reason: probe.reason },
      'tc netem unavailable (no sch_netem qdisc?); using the delay router',
    );
    return { backend: 'router', reason: probe.reason };
  }

  private async applyRouter(generation: number, delays: ReturnType<typeof pairDelays>): Promise<void> {
    const st = this.st;
    const dir = join(st.stateDir, 'delay');
    mkdirSync(dir, { recursive: true });
    const config = join(dir, 'config.json');
    const applied = join(dir, 'applied.json');
    const tun = `${st.id}-dly`;
    writeDelayConfig(config, { generation, delays });
    let rec = st.processes.find((p) => p.name === 'delay-router');
    if (rec && isAlive(rec)) {
      process.kill(rec.pid, 'SIGHUP');
    } else {
      rec = await spawnDetached({
        name: 'delay-router',
        argv: [
          'ip',
          'netns',
          'exec',
          st.switchNs,
          process.execPath,
          '--import',
          'tsx',
          join(st.repo, 'src', 'platform', 'delay-router.main.ts'),
          '--tun',
          tun,
          '--config',
          config,
          '--applied',
          applied,
        ],
        log: this.logPath('delay-router'),
        env: { [PLATFORM_ENV]: st.id },
        cwd: st.repo,
      });
      this.record(rec);
    }
    await this.waitReady(rec, 'delay router applies the delays', () =>
      readAppliedGeneration(applied) === generation ? true : undefined,
    );
    await applyDelayRules(this.runner, st.switchNs, tun, delays);
  }

  private logPath(name: string): string {
    return join(this.st.stateDir, 'logs', `${name}.log`);
  }

  private oaknetArgv(ns: string, args: string[]): string[] {
    return ['ip', 'netns', 'exec', ns, process.execPath, join(this.st.repo, 'bin', 'oaknet.mjs'), ...args];
  }

  private async spawnRecorded(name: string, argv: string[]): Promise<ProcessRecord> {
    const rec = await spawnDetached({
      name,
      argv,
      log: this.logPath(name),
      env: { [PLATFORM_ENV]: this.st.id },
      cwd: this.st.repo,
    });
    this.record(rec);
    return rec;
  }

  /** Waits for `probe` while `rec` lives; on failure the error carries the tail of its log. */
  private async waitReady<T>(
    rec: ProcessRecord,
    what: string,
    probe: () => Promise<T | undefined> | T | undefined,
    timeoutMs = 30_000,
  ): Promise<T> {
    try {
      return await waitFor(`${rec.name}: ${what}`, probe, {
        timeoutMs,
        failIf: () => (isAlive(rec) ? undefined : 'the process exited'),
      });
    } catch (err) {
      const tail = await tailFile(rec.log);
      throw new SystemError(`${errorMessage(err)}; log ${rec.log} ends with:\n${tail}`, { cause: err });
    }
  }

  /** Starts a host forwarder 127.0.0.1:<free port> -> <ctl ip>:<port>; returns the record and host port. */
  /** The host forwarder `name` to port `port`: the running one (a restarted service keeps its host port), else a new one. */
  private async forwarder(
    name: string,
    port: number,
    hostPort: number | undefined,
  ): Promise<{ hostPort: number }> {
    const running = this.st.processes.find((p) => p.name === name);
    if (running && hostPort && isAlive(running)) return { hostPort };
    return this.startForwarder(name, port);
  }

  private async startForwarder(
    name: string,
    port: number,
  ): Promise<{ rec: ProcessRecord; hostPort: number }> {
    const st = this.st;
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const hostPort = await freeHostPort();
      const rec = await this.spawnRecorded(name, [
        'socat',
        `TCP-LISTEN:${hostPort},bind=127.0.0.1,reuseaddr,fork`,
        `EXEC:ip netns exec ${st.ctlNs} socat STDIO TCP\\:${st.ctlIp}\\:${port}`,
      ]);
      try {
        await this.waitReady(
          rec,
          `listen on 127.0.0.1:${hostPort}`,
          async () => ((await this.listenerPid(hostPort)) === rec.pid ? true : undefined),
          5000,
        );
        return { rec, hostPort };
      } catch (err) {
        lastError = err; // most likely the port was taken meanwhile: try another one
        await stopProcesses([rec], { marker: marker(st.id), graceMs: 1000 }, this.log);
      }
    }
    throw lastError;
  }

  /** PID of the process listening on 127.0.0.1:port (from `ss -ltnp`), if any. */
  private async listenerPid(port: number): Promise<number | undefined> {
    const { stdout } = await this.runner.run('ss', ['-Hltnp', `sport = :${port}`]);
    const m = /pid=(\d+)/.exec(stdout);
    return m ? Number(m[1]) : undefined;
  }

  private async startRoot(logLevel: string, timeoutMs: number): Promise<void> {
    const st = this.st;
    const rec = await this.spawnRecorded(
      'root',
      this.oaknetArgv(st.ctlNs, [
        'root',
        '--port',
        String(st.root.port),
        '--store',
        join(st.stateDir, 'root.db'),
        '--log-level',
        logLevel,
      ]),
    );
    const fwd = await this.forwarder('fwd-root', st.root.port, st.root.hostPort);
    st.root.hostPort = fwd.hostPort;
    this.save();
    await this.waitReady(
      rec,
      `GET /api/net/health via 127.0.0.1:${fwd.hostPort}`,
      async () => ((await httpOk(`${this.rootUrl}/api/net/health`)) ? true : undefined),
      timeoutMs,
    );
  }

  private async startCluster(
    c: PlatformState['clusters'][number],
    logLevel: string,
    timeoutMs: number,
  ): Promise<void> {
    const st = this.st;
    const rec = await this.spawnRecorded(
      c.name,
      this.oaknetArgv(st.ctlNs, [
        'cluster',
        '--root',
        this.rootUnderlayUrl,
        '--cluster-id',
        c.clusterId,
        '--advertise-address',
        st.ctlIp,
        '--mqtt-port',
        String(c.mqttPort),
        '--port',
        String(c.port),
        '--store',
        join(st.stateDir, `${c.name}.db`),
        '--log-level',
        logLevel,
      ]),
    );
    const fwd = await this.forwarder(`fwd-${c.name}`, c.port, c.hostPort);
    c.hostPort = fwd.hostPort;
    this.save();
    const url = `http://127.0.0.1:${c.hostPort}`;
    await this.waitReady(
      rec,
      `GET /api/net/health and /api/net/status via 127.0.0.1:${c.hostPort}`,
      async () => {
        if (!(await httpOk(`${url}/api/net/health`))) return undefined;
        const res = await httpGet(`${url}/api/net/status`);
        const body = JSON.parse(res.body) as { cluster_id?: unknown };
        return res.status === 200 && body.cluster_id === c.clusterId ? true : undefined;
      },
      timeoutMs,
    );
  }

  private async startNode(n: NodeState, logLevel: string, timeoutMs: number): Promise<void> {
    const st = this.st;
    const cluster = st.clusters.find((c) => c.name === n.cluster);
    if (!cluster) throw new Error(`node ${n.name}: no cluster ${n.cluster}`);
    const rec = await this.spawnRecorded(
      n.name,
      this.oaknetArgv(n.netns, [
        'node',
        '--cluster',
        `${st.ctlIp}:${cluster.mqttPort}`,
        '--node-id',
        n.workerId,
        '--api-socket',
        n.socket,
        '--state-dir',
        n.stateDir,
        '--public-address',
        n.ip,
        '--log-level',
        logLevel,
      ]),
    );
    const client = new NodeClient(n.socket, 2000);
    await this.waitReady(
      rec,
      `GET /status on ${n.socket} says registered`,
      async () => {
        const s = await client.status();
        return s.registered && s.subnet !== null ? s : undefined;
      },
      timeoutMs,
    );
  }
}

function sitesOf(nodes: readonly NodeState[]): SiteMap {
  const sites: SiteMap = {};
  for (const n of nodes) if (n.site !== n.name) (sites[n.site] ??= []).push(n.name);
  return sites;
}
