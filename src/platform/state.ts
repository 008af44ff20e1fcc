/**
 * @module platform/state
 * `<stateDir>/platform.json`: everything needed to inspect a platform or tear it down after a crash, by
 * another process that knows only the state directory. The creator writes it before each step (names of
 * namespaces and links first, a process right after it started), always atomically (temp file, fsync,
 * rename), so a reader sees the previous or the next version, never half of one. The file is the owner's
 * alone (0600): only who made the platform (root, for `sudo oaknet up`) reads it.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidInputError } from '../errors.ts';
import { writePrivateFileSync } from '../store/private-files.ts';
import type { LatencyBackend, LatencySpec, SiteMap } from './latency.ts';
import type { RootLimits } from './plan.ts';
import type { VethSpec } from './netns.ts';
import type { ProcessRecord } from './processes.ts';

/** Version of the state file format. */
export const STATE_VERSION = 1;

/** A cluster service manager of the platform. */
export interface ClusterState {
  /** Cluster name within the platform ("c1", ...). */
  name: string;
  /** Cluster ID given to `oaknet cluster --cluster-id` ("<id>-c1"). */
  clusterId: string;
  /** HTTP port inside the control namespace. */
  port: number;
  /** Embedded MQTT broker port inside the control namespace. */
  mqttPort: number;
  /** Host loopback port forwarded to `port` (0 until the forwarder runs). */
  hostPort: number;
}

/** A worker node of the platform. */
export interface NodeState {
  /** Node name within the platform ("n1", ...). */
  name: string;
  /** Its network namespace. */
  netns: string;
  /** Underlay address of its eth0. */
  ip: string;
  /** Site it belongs to (its own name when in no named site). */
  site: string;
  /** Worker ID it registers with ("<id>-n1"). */
  workerId: string;
  /** Name of its cluster ("c1"). */
  cluster: string;
  /** Unix socket of its NetManager API. */
  socket: string;
  /** Its NetManager's state directory. */
  stateDir: string;
}

/** Latency in force and how it is applied. */
export interface LatencyState {
  /** The spec last applied. */
  spec: LatencySpec;
  /** Sites by name. */
  sites: SiteMap;
  /** Backend chosen at creation (`router` when the kernel has no sch_netem). */
  backend: LatencyBackend;
  /** Why netem was not used, when it was not. */
  netemUnavailable?: string;
  /** Generation of the router config last applied (router backend). */
  generation: number;
}

/** The whole state of one platform. */
export interface PlatformState {
  /** Format version (STATE_VERSION). */
  version: number;
  /** Short platform id; every name derives from it. */
  id: string;
  /** The state directory (absolute). */
  stateDir: string;
  /** Repository whose bin/oaknet.mjs runs the processes. */
  repo: string;
  /** "creating" until every process is ready, then "ready". */
  phase: 'creating' | 'ready';
  /** ISO time of creation. */
  createdAt: string;
  /** The underlay /24. */
  subnet: string;
  /** Switch namespace. */
  switchNs: string;
  /** Control namespace (root and clusters). */
  ctlNs: string;
  /** Underlay address of the control namespace. */
  ctlIp: string;
  /** Every namespace of the platform (switch, control, nodes). */
  namespaces: string[];
  /** Every veth pair. */
  links: VethSpec[];
  /**
   * True when the platform runs without TLS and authentication (`oaknet up --insecure`). Otherwise the CA
   * and tokens are in `<stateDir>/pki` (root's: ca.crt, admin.token) and `<stateDir>/tokens` (0600).
   */
  insecure?: boolean;
  /**
   * True when the NetManagers run without WireGuard (`--plaintext-tunnel`) and the clusters allow plaintext
   * peers; the bench's plaintext reference. Otherwise the tunnel is encrypted.
   */
  plaintextTunnel?: boolean;
  /**
   * Root service manager: HTTP port in the control namespace, its host forwarder port, and its limits where
   * they are not the defaults (kept for restarts).
   */
  root: { port: number; hostPort: number; limits?: RootLimits };
  /** Cluster service managers. */
  clusters: ClusterState[];
  /** Worker nodes. */
  nodes: NodeState[];
  /** Every process started (oaknet roles, forwarders, delay router). */
  processes: ProcessRecord[];
  /** Latency in force, if any was ever set. */
  latency?: LatencyState;
  /** Workloads started on the platform (`oaknet run` processes, recorded as processes `w-<name>`). */
  workloads?: WorkloadState[];
}

/** A workload: one instance of a service, run with `oaknet run` inside a node. */
export interface WorkloadState {
  /** Name within the platform ("demo-web-0"); its process is "w-<name>", its namespace "<id>-<name>". */
  name: string;
  node: string;
  service: string;
  instance: number;
  netns: string;
  command: string[];
}

/** Path of the state file of `stateDir`. */
export function statePath(stateDir: string): string {
  return join(stateDir, 'platform.json');
}

/**
 * Writes the state atomically (0600 temp file, fsync, rename). Synchronous, so a record lands right after its
 * action.
 */
export function writeState(state: PlatformState): void {
  writePrivateFileSync(statePath(state.stateDir), JSON.stringify(state, null, 2) + '\n', { fsync: true });
}

/** Reads the state of `stateDir`: undefined when there is none; InvalidInputError when it is not a platform state. */
export function readState(stateDir: string): PlatformState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath(stateDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let parsed: Partial<PlatformState>;
  try {
    parsed = JSON.parse(text) as Partial<PlatformState>;
  } catch (cause) {
    throw new InvalidInputError(`${statePath(stateDir)} is not JSON`, { cause });
  }
  if (
    parsed.version !== STATE_VERSION ||
    typeof parsed.id !== 'string' ||
    !Array.isArray(parsed.namespaces)
  ) {
    throw new InvalidInputError(`${statePath(stateDir)} is not a platform state (version ${STATE_VERSION})`);
  }
  return {
    ...parsed,
    processes: Array.isArray(parsed.processes) ? parsed.processes : [],
    links: Array.isArray(parsed.links) ? parsed.links : [],
    nodes: Array.isArray(parsed.nodes) ? parsed.nodes : [],
    clusters: Array.isArray(parsed.clusters) ? parsed.clusters : [],
  } as PlatformState;
}

/** Removes the state file (and a leftover temp file of this process); no error when absent. */
export function removeState(stateDir: string): void {
  rmSync(statePath(stateDir), { force: true });
  rmSync(`${statePath(stateDir)}.tmp-${process.pid}`, { force: true });
}

/**
 * The names a platform's data takes in its state dir: root.db, c<N>.db (with SQLite's -wal/-shm), n<N>/,
 * delay/, and its identities: pki/ (the CA), c<N>-pki/, tokens/.
 */
const PLATFORM_DATA =
  /^(?:root\.db|c\d+\.db)(?:-wal|-shm|-journal)?$|^n\d+$|^delay$|^pki$|^c\d+-pki$|^tokens$/;

/**
 * Removes the data a platform left in its state dir: the root's and clusters' stores and the nodes' state
 * (worker IDs, subnetworks), by those names only; the logs stay. A platform that is gone must not hand its
 * data to the next one (a NetManager refuses a state dir of another worker, and a root would keep the old
 * allocations). Returns the names removed.
 */
export function removePlatformData(stateDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(stateDir);
  } catch {
    return [];
  }
  const removed = names.filter((n) => PLATFORM_DATA.test(n));
  for (const n of removed) rmSync(join(stateDir, n), { recursive: true, force: true });
  return removed;
}
