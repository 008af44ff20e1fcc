/**
 * @module node/cluster-channel
 * What the NetManager needs from its cluster (reference section 2.2): its subnetworks, table queries, job
 * updates, and where it reports its instances. `ClusterLink` (cluster-link.ts) speaks it over MQTT as upstream
 * does; `MemoryCluster` (memory-cluster.ts) is an in-process stand-in for tests.
 */
import type { ClusterInfoMessage, TableQueryResult } from '../protocol/mqtt.ts';

/** A deployed instance as the node reports it. */
export interface DeploymentReport {
  job: string;
  instance: number;
  nsip: string;
  nsipv6: string;
  hostIp: string;
  hostPort: number;
  /** The node's WireGuard public key (base64), announced with its routing facts; absent: plaintext node. */
  publicKey?: string;
}

export interface ClusterChannel {
  /**
   * Gets what connecting as `workerId` needs (a secure channel: the node's certificate, enrolling with its
   * token the first time); before connect. Rejects naming the problem.
   */
  prepare?(workerId: string, token?: string): Promise<void>;
  /** Connects as worker `workerId` to the cluster at `url` (mqtt://host:port) and keeps reconnecting; a second
   * connect before close() is a caller bug (it throws). */
  connect(workerId: string, url: string): void;
  /** Resolves once connected and subscribed to this worker's answers; UnavailableError after timeoutMs. */
  ready(timeoutMs?: number): Promise<void>;
  /** Whether the channel is up now. */
  readonly connected: boolean;
  /** What the cluster announced about itself (oaknet clusters only). */
  readonly clusterInfo: ClusterInfoMessage | undefined;
  /** The worker's subnetworks (network addresses); asks until the cluster answers; `signal` aborts. */
  requestSubnet(signal?: AbortSignal): Promise<{ v4: string; v6: string }>;
  /** A table query by job name or address: the answer (an empty list when nothing matches), undefined when none came. */
  query(by: { sname: string } | { sip: string }): Promise<TableQueryResult | undefined>;
  /** Reports an instance deployed on this node. */
  reportDeployed(report: DeploymentReport): void;
  /** Reports an instance that left this node. */
  reportUndeployed(job: string, instance: number): void;
  /** Subscribes to a job's update notifications. */
  watchJob(job: string): Promise<void>;
  /** Unsubscribes and tells the cluster the node's interest is gone. */
  unwatchJob(job: string): Promise<void>;
  /** Calls handler with what the cluster announces about itself, whenever it announces it. */
  onClusterInfo(handler: (info: ClusterInfoMessage) => void): void;
  /** Calls handler after every reconnect (not the first connect): what was published meanwhile is lost. */
  onReconnect(handler: () => void): void;
  /** Calls handler(job) for every update notification of a watched job. */
  onJobUpdate(handler: (job: string) => void): void;
  /** Disconnects; pending questions get empty answers; connect() may follow. */
  close(): Promise<void>;
}
