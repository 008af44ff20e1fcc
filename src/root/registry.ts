/**
 * @module root/registry
 * The root service manager's use cases: clusters, services (jobs) and their instances, worker subnetworks,
 * interests and the notification outbox. Each use case is one store transaction, so an address is allocated
 * together with the record that owns it, and a notification is queued together with the change it announces.
 *
 * Store layout:
 *   cluster/<id>                 ClusterRecord
 *   job/<id>                     JobRecord
 *   jobname/<name>               job id
 *   ip/<address>                 IpRecord: which job (and instance) owns a ServiceIP or instance IP
 *   worker/<cluster>/<worker>    WorkerRecord
 *   interest/<job name>/<cluster>  true: the cluster caches the job and wants its updates
 *   outbox/<cluster>/<seq>       Notification waiting for delivery, oldest first
 */
import { randomUUID } from 'node:crypto';
import { IpAddress } from '../addressing/ip.ts';
import type { AddressPlan } from '../addressing/plan.ts';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors.ts';
import { IP_TYPE } from '../protocol/mqtt.ts';
import { requireJobName } from '../protocol/names.ts';
import type {
  ClusterInfo,
  ClusterRegistration,
  DeployedInstance,
  DeploymentDescriptor,
  JobDocument,
  JobUpdateNotification,
  ServiceNetinfo,
  WorkerInfo,
} from '../protocol/root-api.ts';
import type { Json, Store, Tx } from '../store/store.ts';
import { RootAddresses } from './addresses.ts';

export interface ClusterRecord {
  id: string;
  address: string;
  port: number;
  status: 'ACTIVE' | 'ERROR';
  lastError?: string;
  registeredAt: string;
}

export interface AddressPair {
  v4: string;
  v6: string;
}

export interface InstanceRecord {
  number: number;
  clusterId: string;
  ip: AddressPair;
  namespaceIp?: string;
  namespaceIpV6?: string;
  hostIp?: string;
  hostPort?: number;
  workerId?: string;
}

export interface JobRecord {
  id: string;
  name: string;
  descriptor: { [key: string]: Json };
  rr: AddressPair;
  closest: AddressPair;
  /** By instance number. */
  instances: { [n: string]: InstanceRecord };
  createdAt: string;
}

interface IpRecord {
  job: string;
  role: 'RR' | 'Closest' | 'instance';
  instance?: number;
}

export interface WorkerRecord {
  clusterId: string;
  workerId: string;
  index: number;
  subnet: string;
  subnetV6: string;
  allocatedAt: string;
}

export type Notification = JobUpdateNotification;

/** Called after a transaction that queued notifications commits, with the clusters to deliver to. */
export type NotifyHook = (clusterIds: readonly string[]) => void;

const SEQ_DIGITS = 16;

export class Registry {
  readonly addresses: RootAddresses;
  private notifyHook: NotifyHook = () => {};

  constructor(
    private readonly store: Store,
    plan: AddressPlan,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.addresses = new RootAddresses(plan);
  }

  /** Sets who hears about queued notifications (the Notifier). */
  onNotify(hook: NotifyHook): void {
    this.notifyHook = hook;
  }

  // ---- clusters -------------------------------------------------------------------------------------------

  /** Registers or re-registers a cluster (address and port may change); it is ACTIVE afterwards. */
  registerCluster(reg: ClusterRegistration): ClusterRecord {
    return this.store.transact((tx) => {
      const old = tx.get<ClusterRecord>(`cluster/${reg.cluster_id}`);
      const rec: ClusterRecord = {
        id: reg.cluster_id,
        address: reg.cluster_address,
        port: Number(reg.cluster_port),
        status: 'ACTIVE',
        registeredAt: old?.registeredAt ?? this.now().toISOString(),
      };
      tx.put(`cluster/${rec.id}`, rec as unknown as Json);
      return rec;
    });
  }

  getCluster(id: string): ClusterRecord | undefined {
    return this.store.transact((tx) => tx.get<ClusterRecord>(`cluster/${id}`));
  }

  listClusters(): ClusterInfo[] {
    return this.store.transact((tx) =>
      tx.list<ClusterRecord>('cluster/').map(([, c]) => ({
        cluster_id: c.id,
        cluster_address: c.address,
        cluster_port: c.port,
        status: c.status,
        pending_notifications: tx.list(`outbox/${c.id}/`).length,
        ...(c.lastError ? { last_error: c.lastError } : {}),
      })),
    );
  }

  /** Records the outcome of a delivery attempt to a cluster. */
  setClusterStatus(id: string, status: 'ACTIVE' | 'ERROR', lastError?: string): void {
    this.store.transact((tx) => {
      const c = tx.get<ClusterRecord>(`cluster/${id}`);
      if (!c || (c.status === status && c.lastError === lastError)) return;
      const next: ClusterRecord = { ...c, status };
      if (lastError) next.lastError = lastError;
      else delete next.lastError;
      tx.put(`cluster/${id}`, next as unknown as Json);
    });
  }

  // ---- services ---------------------------------------------------------------------------------------------

  /**
   * Creates the job and allocates its ServiceIPs (RR and Closest, both families), honouring user-chosen
   * addresses. Deploying the same _id with the same name again is a no-op that returns the job.
   */
  deployService(id: string, descriptor: DeploymentDescriptor): JobRecord {
    const name = jobNameOf(descriptor);
    return this.store.transact((tx) => {
      const existing = tx.get<JobRecord>(`job/${id}`);
      if (existing) {
        if (existing.name === name) return existing;
        throw new ConflictError(`job ${id} exists with name ${existing.name}, not ${name}`);
      }
      const holder = tx.get<string>(`jobname/${name}`);
      if (holder !== undefined) throw new ConflictError(`service ${name} already exists (job ${holder})`);
      const owner = `job ${name}`;
      const rr = {
        v4: this.addresses.allocateV4(tx, `${owner} (RR)`, descriptor.RR_ip, 'RR_ip'),
        v6: this.addresses.allocateV6(tx, 'rr', `${owner} (RR)`, descriptor.RR_ip_v6, 'RR_ip_v6'),
      };
      const closest = {
        v4: this.addresses.allocateV4(tx, `${owner} (Closest)`, descriptor.closest_ip, 'closest_ip'),
        v6: this.addresses.allocateV6(
          tx,
          'closest',
          `${owner} (Closest)`,
          descriptor.closest_ip_v6,
          'closest_ip_v6',
        ),
      };
      const job: JobRecord = {
        id,
        name,
        descriptor: descriptor,
        rr,
        closest,
        instances: {},
        createdAt: this.now().toISOString(),
      };
      tx.put(`job/${id}`, job as unknown as Json);
      tx.put(`jobname/${name}`, id);
      for (const a of [rr.v4, rr.v6]) tx.put(`ip/${a}`, { job: id, role: 'RR' });
      for (const a of [closest.v4, closest.v6]) tx.put(`ip/${a}`, { job: id, role: 'Closest' });
      return job;
    });
  }

  /**
   * Removes a job and releases its ServiceIPs. With instances left it fails with ConflictError unless
   * `force`, which undeploys them first (and notifies).
   */
  removeService(id: string, force = false): void {
    const notified = this.store.transact((tx) => {
      const job = this.requireJob(tx, id);
      const count = Object.keys(job.instances).length;
      if (count > 0 && !force) {
        throw new ConflictError(`service ${job.name} still has ${count} instance(s); undeploy them first`);
      }
      const clusters = new Set<string>();
      for (const inst of Object.values(job.instances)) this.dropInstance(tx, job, inst);
      for (const c of this.enqueue(tx, job.name, -1, 'UNDEPLOYMENT')) clusters.add(c);
      for (const a of [job.rr.v4, job.rr.v6, job.closest.v4, job.closest.v6]) {
        this.addresses.release(tx, a);
        tx.delete(`ip/${a}`);
      }
      for (const [key] of tx.list(`interest/${job.name}/`)) tx.delete(key);
      tx.delete(`jobname/${job.name}`);
      tx.delete(`job/${id}`);
      return [...clusters];
    });
    this.notifyHook(notified);
  }

  getJob(id: string): JobRecord | undefined {
    return this.store.transact((tx) => tx.get<JobRecord>(`job/${id}`));
  }

  getJobByName(name: string): JobRecord | undefined {
    return this.store.transact((tx) => {
      const id = tx.get<string>(`jobname/${name}`);
      return id === undefined ? undefined : tx.get<JobRecord>(`job/${id}`);
    });
  }

  listJobs(): JobRecord[] {
    return this.store.transact((tx) => tx.list<JobRecord>('job/').map(([, j]) => j));
  }

  // ---- instances ------------------------------------------------------------------------------------------

  /**
   * Schedules instance n of job id on a cluster and allocates its instance IPs. Scheduling an existing
   * instance again keeps its addresses (and moves it to the named cluster).
   */
  deployInstance(id: string, n: number, clusterId: string): InstanceRecord {
    return this.store.transact((tx) => {
      const job = this.requireJob(tx, id);
      const existing = job.instances[n];
      if (existing) {
        existing.clusterId = clusterId;
        tx.put(`job/${id}`, job as unknown as Json);
        return existing;
      }
      const owner = `job ${job.name} instance ${n}`;
      const inst: InstanceRecord = {
        number: n,
        clusterId,
        ip: {
          v4: this.addresses.allocateV4(tx, owner),
          v6: this.addresses.allocateV6(tx, 'instance', owner),
        },
      };
      job.instances[n] = inst;
      tx.put(`job/${id}`, job as unknown as Json);
      for (const a of [inst.ip.v4, inst.ip.v6]) tx.put(`ip/${a}`, { job: id, role: 'instance', instance: n });
      return inst;
    });
  }

  /** Removes instance n (-1: all instances) of job id, releases its addresses and notifies. */
  removeInstance(id: string, n: number): void {
    const notified = this.store.transact((tx) => {
      const job = this.requireJob(tx, id);
      const victims = n === -1 ? Object.values(job.instances) : [job.instances[n]];
      const clusters = new Set<string>();
      for (const inst of victims) {
        if (!inst) throw new NotFoundError(`job ${job.name} has no instance ${n}`);
        this.dropInstance(tx, job, inst);
        for (const c of this.enqueue(tx, job.name, inst.number, 'UNDEPLOYMENT')) clusters.add(c);
      }
      tx.put(`job/${id}`, job as unknown as Json);
      return [...clusters];
    });
    this.notifyHook(notified);
  }

  /** Records where instances run (reported by the cluster after a node deployed them) and notifies. */
  updateDeployStatus(jobId: string, instances: readonly DeployedInstance[]): void {
    const notified = this.store.transact((tx) => {
      const job = this.requireJob(tx, jobId);
      const clusters = new Set<string>();
      for (const d of instances) {
        const inst = job.instances[d.instance_number];
        if (!inst) throw new NotFoundError(`job ${job.name} has no scheduled instance ${d.instance_number}`);
        inst.namespaceIp = canonical(d.namespace_ip, 'namespace_ip');
        if (d.namespace_ip_v6 && d.namespace_ip_v6 !== '<nil>') {
          inst.namespaceIpV6 = canonical(d.namespace_ip_v6, 'namespace_ip_v6');
        }
        inst.hostIp = canonical(d.host_ip, 'host_ip');
        inst.hostPort = Number(d.host_port);
        if (d.worker_id) inst.workerId = d.worker_id;
        for (const c of this.enqueue(tx, job.name, inst.number, 'DEPLOYMENT')) clusters.add(c);
      }
      tx.put(`job/${jobId}`, job as unknown as Json);
      return [...clusters];
    });
    this.notifyHook(notified);
  }

  // ---- resolution and interests --------------------------------------------------------------------------

  /** The job named `name`; registers the interest of clusterId when given. */
  resolveByName(name: string, clusterId?: string): JobRecord {
    return this.store.transact((tx) => {
      const id = tx.get<string>(`jobname/${name}`);
      const job = id === undefined ? undefined : tx.get<JobRecord>(`job/${id}`);
      if (!job) throw new NotFoundError(`no service named ${name}`);
      this.addInterest(tx, job.name, clusterId);
      return job;
    });
  }

  /** The job that owns a ServiceIP or instance IP; registers the interest of clusterId when given. */
  resolveByIp(address: string, clusterId?: string): JobRecord {
    const ip = IpAddress.tryParse(address);
    if (!ip) throw new InvalidInputError(`not an IP address: ${JSON.stringify(address)}`);
    return this.store.transact((tx) => {
      const rec = tx.get<IpRecord>(`ip/${ip.toString()}`);
      const job = rec ? tx.get<JobRecord>(`job/${rec.job}`) : undefined;
      if (!job) throw new NotFoundError(`no service or instance has address ${ip.toString()}`);
      this.addInterest(tx, job.name, clusterId);
      return job;
    });
  }

  /** Drops the interest of a cluster in a job (the cluster no longer caches it). */
  removeInterest(jobName: string, clusterId: string): void {
    this.store.transact((tx) => {
      this.requireCluster(tx, clusterId);
      tx.delete(`interest/${jobName}/${clusterId}`);
    });
  }

  /** Clusters interested in a job. */
  interestedClusters(jobName: string): string[] {
    return this.store.transact((tx) => this.interested(tx, jobName));
  }

  // ---- worker subnetworks ---------------------------------------------------------------------------------

  /**
   * The subnetworks of a worker. A known worker (cluster and worker ID given) gets the same subnetworks again,
   * so a restarting node keeps its addresses; an anonymous request (upstream's, no IDs) gets a fresh pair.
   */
  allocateSubnet(clusterId?: string, workerId?: string): WorkerRecord {
    return this.store.transact((tx) => {
      if (clusterId !== undefined) this.requireCluster(tx, clusterId);
      const cluster = clusterId ?? '_';
      const worker = workerId ?? `anonymous-${randomUUID()}`;
      const key = `worker/${cluster}/${worker}`;
      const existing = tx.get<WorkerRecord>(key);
      if (existing) return existing;
      const { index, subnet } = this.addresses.allocateWorker(tx, `worker ${worker} of cluster ${cluster}`);
      const rec: WorkerRecord = {
        clusterId: cluster,
        workerId: worker,
        index,
        subnet: subnet.v4.network.toString(),
        subnetV6: subnet.v6.network.toString(),
        allocatedAt: this.now().toISOString(),
      };
      tx.put(key, rec as unknown as Json);
      return rec;
    });
  }

  /** Releases a worker's subnetworks (the node left, or an operator removed it). */
  releaseSubnet(clusterId: string, workerId: string): WorkerRecord {
    return this.store.transact((tx) => {
      const key = `worker/${clusterId}/${workerId}`;
      const rec = tx.get<WorkerRecord>(key);
      if (!rec) throw new NotFoundError(`cluster ${clusterId} has no worker ${workerId}`);
      this.addresses.releaseWorker(tx, rec.index);
      tx.delete(key);
      return rec;
    });
  }

  listWorkers(clusterId?: string): WorkerInfo[] {
    return this.store.transact((tx) =>
      tx.list<WorkerRecord>(clusterId === undefined ? 'worker/' : `worker/${clusterId}/`).map(([, w]) => ({
        cluster_id: w.clusterId,
        worker_id: w.workerId,
        subnet: `${w.subnet}/${this.addresses.plan.config.workerPrefixV4}`,
        subnet_v6: `${w.subnetV6}/${this.addresses.plan.config.workerPrefixV6}`,
      })),
    );
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
    return this.store.transact((tx) => {
      const [first] = tx.list<Notification>(`outbox/${clusterId}/`, 1);
      return first ? { key: first[0], notification: first[1] } : undefined;
    });
  }

  /** Removes a delivered notification. */
  ackNotification(key: string): void {
    this.store.transact((tx) => tx.delete(key));
  }

  /** Clusters with notifications waiting (for the notifier at start-up). */
  clustersWithPendingNotifications(): string[] {
    return this.store.transact((tx) =>
      tx
        .list<ClusterRecord>('cluster/')
        .map(([, c]) => c.id)
        .filter((id) => tx.list(`outbox/${id}/`, 1).length > 0),
    );
  }

  // ---- wire views ----------------------------------------------------------------------------------------

  /** Upstream's job document: descriptor fields, then identity, ServiceIPs and instances. */
  static toDocument(job: JobRecord): JobDocument {
    return {
      ...job.descriptor,
      _id: job.id,
      system_job_id: job.id,
      job_name: job.name,
      service_ip_list: [
        { IpType: IP_TYPE.roundRobin, Address: job.rr.v4, Address_v6: job.rr.v6 },
        { IpType: IP_TYPE.closest, Address: job.closest.v4, Address_v6: job.closest.v6 },
      ],
      instance_list: Object.values(job.instances)
        .sort((a, b) => a.number - b.number)
        .map((i) => ({
          instance_number: i.number,
          instance_ip: i.ip.v4,
          instance_ip_v6: i.ip.v6,
          cluster_id: i.clusterId,
          ...(i.namespaceIp !== undefined ? { namespace_ip: i.namespaceIp } : {}),
          ...(i.namespaceIpV6 !== undefined ? { namespace_ip_v6: i.namespaceIpV6 } : {}),
          ...(i.hostIp !== undefined ? { host_ip: i.hostIp } : {}),
          ...(i.hostPort !== undefined ? { host_port: i.hostPort } : {}),
          ...(i.workerId !== undefined ? { worker_id: i.workerId } : {}),
        })),
    };
  }

  /** Upstream's public netinfo view. */
  static toNetinfo(job: JobRecord): ServiceNetinfo {
    const [app, appNs, svc, svcNs] = job.name.split('.') as [string, string, string, string];
    const doc = Registry.toDocument(job);
    return {
      system_job_id: job.id,
      app_name: app,
      app_ns: appNs,
      service_name: svc,
      service_ns: svcNs,
      job_name: job.name,
      service_ip_list: doc.service_ip_list,
      instance_list: doc.instance_list.map((i) => ({
        cluster_id: i.cluster_id,
        instance_number: i.instance_number,
        instance_ip: i.instance_ip,
        instance_ip_v6: i.instance_ip_v6,
      })),
    };
  }

  // ---- helpers (caller holds the transaction) -------------------------------------------------------------

  private requireJob(tx: Tx, id: string): JobRecord {
    const job = tx.get<JobRecord>(`job/${id}`);
    if (!job) throw new NotFoundError(`no job with id ${id}`);
    return job;
  }

  private requireCluster(tx: Tx, id: string): ClusterRecord {
    const c = tx.get<ClusterRecord>(`cluster/${id}`);
    if (!c) throw new NotFoundError(`cluster ${id} is not registered`);
    return c;
  }

  private addInterest(tx: Tx, jobName: string, clusterId: string | undefined): void {
    if (clusterId === undefined) return;
    this.requireCluster(tx, clusterId);
    tx.put(`interest/${jobName}/${clusterId}`, true);
  }

  private interested(tx: Tx, jobName: string): string[] {
    const at = `interest/${jobName}/`.length;
    return tx.list(`interest/${jobName}/`).map(([k]) => k.slice(at));
  }

  /** Removes an instance from the job record and frees its addresses (the caller stores the job). */
  private dropInstance(tx: Tx, job: JobRecord, inst: InstanceRecord): void {
    for (const a of [inst.ip.v4, inst.ip.v6]) {
      this.addresses.release(tx, a);
      tx.delete(`ip/${a}`);
    }
    delete job.instances[inst.number];
  }

  /**
   * Queues a notification for every interested cluster; a queued notification for the same job and
   * instance is replaced (the newest state is what counts). Returns the clusters.
   */
  private enqueue(tx: Tx, jobName: string, instance: number, type: Notification['type']): string[] {
    const clusters = this.interested(tx, jobName);
    for (const c of clusters) {
      for (const [key, n] of tx.list<Notification>(`outbox/${c}/`)) {
        if (n.job_name === jobName && (n.instance_number === instance || instance === -1)) tx.delete(key);
      }
      const seq = (tx.get<number>('outboxseq') ?? 0) + 1;
      tx.put('outboxseq', seq);
      const note: Notification = { job_name: jobName, instance_number: instance, type };
      tx.put(`outbox/${c}/${seq.toString().padStart(SEQ_DIGITS, '0')}`, note);
    }
    return clusters;
  }
}

/** The job name a deployment descriptor describes (upstream: app_name.app_ns.service_name.service_ns). */
export function jobNameOf(d: DeploymentDescriptor): string {
  const service = d.service_name ?? d.microservice_name;
  const serviceNs = d.service_ns ?? d.microservice_namespace;
  if (service === undefined || serviceNs === undefined) {
    throw new InvalidInputError(
      'deployment_descriptor needs service_name and service_ns (or microservice_name and microservice_namespace)',
    );
  }
  return requireJobName(`${d.app_name}.${d.app_ns}.${service}.${serviceNs}`);
}

function canonical(text: string, what: string): string {
  const ip = IpAddress.tryParse(text);
  if (!ip) throw new InvalidInputError(`${what} ${JSON.stringify(text)} is not an IP address`);
  return ip.toString();
}
