/**
 * @module root/registry
 * The root service manager's use cases: clusters, services (jobs) and their instances, worker subnetworks,
 * interests and the notification outbox. Each use case is one store transaction, so an address is allocated
 * together with the record that owns it, and a notification is queued together with the change it announces;
 * the notifier hears of queued notifications after the commit.
 *
 * The Registry opens the transactions; what happens inside one is in a module per concern: clusters.ts,
 * services.ts (jobs and ServiceIPs), instances.ts, interests.ts (resolution), outbox.ts, workers.ts
 * (subnetworks). The store layout is in records.ts, the wire views of a job in job-document.ts.
 */
import { IpAddress } from '../addressing/ip.ts';
import type { AddressPlan } from '../addressing/plan.ts';
import { InvalidInputError } from '../errors.ts';
import type {
  ClusterInfo,
  ClusterRegistration,
  DeployedInstance,
  DeploymentDescriptor,
  JobDocument,
  RootStatus,
  ServiceNetinfo,
  WorkerInfo,
} from '../protocol/root-api.ts';
import type { Store } from '../store/store.ts';
import { RootAddresses } from './addresses.ts';
import { getCluster, listClusters, listClustersPage, registerCluster, setClusterStatus } from './clusters.ts';
import { deployInstance, removeInstance, updateDeployStatus } from './instances.ts';
import { interestedClusters, removeInterest, resolveByIp, resolveByName } from './interests.ts';
import { toDocument, toNetinfo } from './job-document.ts';
import { ackNotification, clustersWithPendingNotifications, nextNotification } from './outbox.ts';
import type { Page, PageRequest } from './pages.ts';
import { resolveQuotas, serviceCount, type Quotas } from './quotas.ts';
import type { ClusterRecord, InstanceRecord, JobRecord, Notification, WorkerRecord } from './records.ts';
import {
  deployService,
  getJob,
  getJobByName,
  jobNameOf,
  listJobs,
  listJobsPage,
  removeService,
} from './services.ts';
import { allocateSubnet, listWorkers, listWorkersPage, releaseSubnet } from './workers.ts';

export type { Page, PageRequest } from './pages.ts';
export type { Quotas } from './quotas.ts';
export type {
  AddressPair,
  ClusterRecord,
  InstanceRecord,
  JobRecord,
  Notification,
  WorkerRecord,
} from './records.ts';

/** Called after a transaction that queued notifications commits, with the clusters to deliver to. */
export type NotifyHook = (clusterIds: readonly string[]) => void;

export interface RegistryOptions {
  /** The clock of records' timestamps. */
  now?: () => Date;
  /** Quotas; the defaults (quotas.ts) for what is not given. */
  quotas?: Partial<Quotas>;
}

export class Registry {
  readonly addresses: RootAddresses;
  readonly quotas: Quotas;
  private readonly now: () => Date;
  private notifyHook: NotifyHook = () => {};

  constructor(
    private readonly store: Store,
    plan: AddressPlan,
    options: RegistryOptions = {},
  ) {
    this.addresses = new RootAddresses(plan);
    this.quotas = resolveQuotas(options.quotas);
    this.now = options.now ?? (() => new Date());
  }

  /** Sets who hears about queued notifications (the Notifier). */
  onNotify(hook: NotifyHook): void {
    this.notifyHook = hook;
  }

  // ---- clusters -------------------------------------------------------------------------------------------

  /** Registers or re-registers a cluster (address and port may change); it is ACTIVE afterwards. */
  registerCluster(reg: ClusterRegistration): ClusterRecord {
    return this.store.transact((tx) => registerCluster(tx, reg, this.now));
  }

  getCluster(id: string): ClusterRecord | undefined {
    return this.store.transact((tx) => getCluster(tx, id));
  }

  /** Every cluster (reads them all; the API pages). */
  listClusters(): ClusterInfo[] {
    return this.store.transact((tx) => listClusters(tx));
  }

  /** A page of clusters in ID order; the cursor is a cluster ID. */
  clustersPage(page: PageRequest): Page<ClusterInfo> {
    return this.store.transact((tx) => listClustersPage(tx, page));
  }

  /** Records the outcome of a delivery attempt to a cluster. */
  setClusterStatus(id: string, status: 'ACTIVE' | 'ERROR', lastError?: string): void {
    this.store.transact((tx) => setClusterStatus(tx, id, status, lastError));
  }

  // ---- services ---------------------------------------------------------------------------------------------

  /**
   * Creates the job and allocates its ServiceIPs (RR and Closest, both families), honouring user-chosen
   * addresses; QuotaExceededError beyond the services quota. Deploying the same _id with the same name
   * again is a no-op that returns the job.
   */
  deployService(id: string, descriptor: DeploymentDescriptor): JobRecord {
    const name = jobNameOf(descriptor);
    return this.store.transact((tx) =>
      deployService(tx, this.addresses, this.quotas, id, descriptor, name, this.now),
    );
  }

  /**
   * Removes a job and releases its ServiceIPs. With instances left it fails with ConflictError unless
   * `force`, which undeploys them first (and notifies).
   */
  removeService(id: string, force = false): void {
    this.notifyHook(this.store.transact((tx) => removeService(tx, this.addresses, id, force)));
  }

  getJob(id: string): JobRecord | undefined {
    return this.store.transact((tx) => getJob(tx, id));
  }

  getJobByName(name: string): JobRecord | undefined {
    return this.store.transact((tx) => getJobByName(tx, name));
  }

  /** Every job (reads them all: for tests and tools; the API pages). */
  listJobs(): JobRecord[] {
    return this.store.transact((tx) => listJobs(tx));
  }

  /** A page of jobs in ID order, read from the cursor on; the cursor is a job ID. */
  /** Writes to the registry's store so far (Store.writes): what was read is current while it stays. */
  get writes(): number {
    return this.store.writes;
  }

  jobsPage(page: PageRequest): Page<JobRecord> {
    return this.store.transact((tx) => listJobsPage(tx, page));
  }

  /** How many services exist. */
  serviceCount(): number {
    return this.store.transact((tx) => serviceCount(tx));
  }

  // ---- instances ------------------------------------------------------------------------------------------

  /**
   * Schedules instance n of job id on a cluster and allocates its instance IPs; QuotaExceededError beyond
   * the instances quota. Scheduling an existing instance again keeps its addresses (and moves it to the
   * named cluster).
   */
  deployInstance(id: string, n: number, clusterId: string): InstanceRecord {
    return this.store.transact((tx) => deployInstance(tx, this.addresses, this.quotas, id, n, clusterId));
  }

  /** Removes instance n (-1: all instances) of job id, releases its addresses and notifies. */
  removeInstance(id: string, n: number): void {
    this.notifyHook(this.store.transact((tx) => removeInstance(tx, this.addresses, id, n)));
  }

  /** Records where instances run (reported by the cluster after a node deployed them) and notifies. */
  /** Records deployment reports; `reporter` (a cluster by certificate) may report only its own instances. */
  updateDeployStatus(jobId: string, instances: readonly DeployedInstance[], reporter?: string): void {
    this.notifyHook(this.store.transact((tx) => updateDeployStatus(tx, jobId, instances, reporter)));
  }

  // ---- resolution and interests --------------------------------------------------------------------------

  /** The job named `name`; registers the interest of clusterId when given. */
  resolveByName(name: string, clusterId?: string): JobRecord {
    return this.store.transact((tx) => resolveByName(tx, name, clusterId));
  }

  /** The job that owns a ServiceIP or instance IP; registers the interest of clusterId when given. */
  resolveByIp(address: string, clusterId?: string): JobRecord {
    const ip = IpAddress.tryParse(address);
    if (!ip) throw new InvalidInputError(`not an IP address: ${JSON.stringify(address)}`);
    return this.store.transact((tx) => resolveByIp(tx, ip, clusterId));
  }

  /** Drops the interest of a cluster in a job (the cluster no longer caches it). */
  removeInterest(jobName: string, clusterId: string): void {
    this.store.transact((tx) => removeInterest(tx, jobName, clusterId));
  }

  /** Clusters interested in a job. */
  interestedClusters(jobName: string): string[] {
    return this.store.transact((tx) => interestedClusters(tx, jobName));
  }

  // ---- worker subnetworks ---------------------------------------------------------------------------------

  /**
   * The subnetworks of a worker. A known worker (cluster and worker ID given) gets the same subnetworks again,
   * so a restarting node keeps its addresses; an anonymous request (upstream's, no IDs) gets a fresh pair.
   * A new worker beyond its cluster's quota gets QuotaExceededError.
   */
  allocateSubnet(clusterId?: string, workerId?: string): WorkerRecord {
    return this.store.transact((tx) =>
      allocateSubnet(tx, this.addresses, this.quotas, this.now, clusterId, workerId),
    );
  }

  /** Releases a worker's subnetworks (the node left, or an operator removed it). */
  releaseSubnet(clusterId: string, workerId: string): WorkerRecord {
    return this.store.transact((tx) => releaseSubnet(tx, this.addresses, clusterId, workerId));
  }

  /** Every worker, of one cluster or all (reads them all; the API pages). */
  listWorkers(clusterId?: string): WorkerInfo[] {
    return this.store.transact((tx) => listWorkers(tx, this.addresses, clusterId));
  }

  /** A page of the workers of one cluster or all; the cursor is `cluster/worker`. */
  workersPage(page: PageRequest, clusterId?: string): Page<WorkerInfo> {
    return this.store.transact((tx) => listWorkersPage(tx, this.addresses, page, clusterId));
  }

  /** How close the root is to its quotas and pools (GET /api/net/status, with the rate limits' count). */
  status(): Omit<RootStatus, 'rate_limited'> {
    return this.store.transact((tx) => ({
      services: serviceCount(tx),
      quotas: {
        max_services: this.quotas.maxServices,
        max_instances_per_service: this.quotas.maxInstancesPerService,
        max_workers_per_cluster: this.quotas.maxWorkersPerCluster,
      },
      pools: this.addresses.usage(tx),
    }));
  }

  /** Addresses that the next allocations would hand out (upstream's available-ip), without reserving. */
  availableIps(
    n: number,
    family?: 4 | 6,
  ): Array<{ IpType: string; Address: string | null; Address_v6: string | null }> {
    return this.store.transact((tx) => [
      ...(family === 6
        ? []
        : this.addresses
            .peekAvailable(tx, 4, n)
            .map((a) => ({ IpType: 'IPv4', Address: a, Address_v6: null }))),
      ...(family === 4
        ? []
        : this.addresses
            .peekAvailable(tx, 6, n)
            .map((a) => ({ IpType: 'IPv6', Address: null, Address_v6: a }))),
    ]);
  }

  // ---- outbox --------------------------------------------------------------------------------------------

  /** The oldest notification waiting for a cluster, with its key for ack. */
  nextNotification(clusterId: string): { key: string; notification: Notification } | undefined {
    return this.store.transact((tx) => nextNotification(tx, clusterId));
  }

  /** Removes a delivered notification. */
  ackNotification(key: string): void {
    this.store.transact((tx) => ackNotification(tx, key));
  }

  /** Clusters with notifications waiting (for the notifier at start-up). */
  clustersWithPendingNotifications(): string[] {
    return this.store.transact((tx) => clustersWithPendingNotifications(tx));
  }

  // ---- wire views ----------------------------------------------------------------------------------------

  /** Upstream's job document: descriptor fields, then identity, ServiceIPs and instances. */
  static toDocument(job: JobRecord): JobDocument {
    return toDocument(job);
  }

  /** Upstream's public netinfo view. */
  static toNetinfo(job: JobRecord): ServiceNetinfo {
    return toNetinfo(job);
  }
}
