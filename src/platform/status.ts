/**
 * @module platform/status
 * What a platform looks like now: each recorded process alive or not (PID and start time), root and
 * clusters healthy or not (through their host forwarders), each node's namespace and NetManager, as the
 * NetManager's own GET /status says.
 */
import { errorMessage } from '../errors.ts';
import type { CommandRunner } from '../node/net/runner.ts';
import type { NodeStatus } from '../protocol/node-api.ts';
import { NodeClient } from '../protocol/node-client.ts';
import { isAlive } from '../system/proc.ts';
import { listNetns } from './netns.ts';
import { platformTls, scheme } from './credentials.ts';
import { httpOk } from './processes.ts';
import type { LatencyState, PlatformState } from './state.ts';

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

/** Liveness of every process, health of root and clusters, and each node with its NetManager status. */
export async function platformStatus(st: PlatformState, runner: CommandRunner): Promise<PlatformStatus> {
  const rootUrl = `${scheme(st)}://127.0.0.1:${st.root.hostPort}`;
  const procs = new Map(st.processes.map((p) => [p.name, p]));
  const namespaces = new Set(await listNetns(runner));
  const [rootHealthy, clusters, nodes] = await Promise.all([
    httpOk(`${rootUrl}/api/net/health`, 2000, platformTls(st, { kind: 'root' })),
    Promise.all(
      st.clusters.map(async (c) => ({
        name: c.name,
        clusterId: c.clusterId,
        url: `${scheme(st)}://127.0.0.1:${c.hostPort}`,
        healthy: await httpOk(
          `${scheme(st)}://127.0.0.1:${c.hostPort}/api/net/health`,
          2000,
          platformTls(st, { kind: 'cluster', clusterId: c.clusterId }),
        ),
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
    root: { url: rootUrl, healthy: rootHealthy },
    clusters,
    processes: st.processes.map((p) => ({ name: p.name, pid: p.pid, running: isAlive(p), log: p.log })),
    nodes,
    ...(st.latency ? { latency: st.latency } : {}),
  };
}
