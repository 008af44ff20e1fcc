/**
 * @module platform/plan
 * What a platform will be, computed from its spec before anything is made: the platform id, and every name,
 * address and port that derives from it (namespaces `<id>-sw|ctl|nN`, the underlay /24, worker and cluster
 * IDs, the processes' marker), so platforms with different ids coexist on one machine.
 */
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidInputError } from '../errors.ts';
import { checkLatency, siteOfNodes, type LatencyBackend, type LatencySpec, type SiteMap } from './latency.ts';
import { STATE_VERSION, type NodeState, type PlatformState } from './state.ts';

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
  /** No TLS and no authentication (default: secure, the platform makes its CA and tokens). */
  insecure?: boolean;
  /** The root's limits where they differ from its defaults (`oaknet root --max-services`, ...). */
  rootLimits?: RootLimits;
}

/** Limits of the root that a platform may raise or lower (each one's default is `oaknet root`'s). */
export interface RootLimits {
  /** --max-services */
  maxServices?: number;
  /** --allocation-rate-limit: requests per caller per 10 s to each allocating route (0: none of its own) */
  allocationRateLimit?: number;
}

/** The `oaknet root` flags of `limits`. */
export function rootLimitFlags(limits: RootLimits | undefined): string[] {
  const flags: string[] = [];
  if (limits?.maxServices !== undefined) flags.push('--max-services', String(limits.maxServices));
  if (limits?.allocationRateLimit !== undefined)
    flags.push('--allocation-rate-limit', String(limits.allocationRateLimit));
  return flags;
}

/** The environment marker ("OAKNET_PLATFORM=<id>") every process of platform `id` carries. */
export function platformMarker(id: string): string {
  return `${PLATFORM_ENV}=${id}`;
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
  const { maxServices, allocationRateLimit } = spec.rootLimits ?? {};
  if (maxServices !== undefined && (!Number.isInteger(maxServices) || maxServices < 1))
    throw new InvalidInputError(`rootLimits.maxServices must be a positive integer, got ${maxServices}`);
  if (
    allocationRateLimit !== undefined &&
    (!Number.isInteger(allocationRateLimit) || allocationRateLimit < 0)
  )
    throw new InvalidInputError(
      `rootLimits.allocationRateLimit must be a non-negative integer, got ${allocationRateLimit}`,
    );
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
    root: { port: ROOT_PORT, hostPort: 0, ...(spec.rootLimits ? { limits: { ...spec.rootLimits } } : {}) },
    clusters: Array.from({ length: clusters }, (_, i) => ({
      name: `c${i + 1}`,
      clusterId: `${id}-c${i + 1}`,
      port: 10111 + i,
      mqttPort: 10001 + i,
      hostPort: 0,
    })),
    nodes,
    processes: [],
    ...(spec.insecure ? { insecure: true } : {}),
  };
}
