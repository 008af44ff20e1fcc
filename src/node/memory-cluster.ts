/**
 * @module node/memory-cluster
 * An in-process cluster for tests: it hands out worker subnetworks, keeps services with their ServiceIPs and
 * instance IPs, takes the nodes' deployment reports, answers table queries in upstream's format and tells the
 * nodes that watch a job when its table changed, as the cluster service manager does over MQTT. Each node
 * talks to it through a `ClusterChannel` of its own (`channel()`), so several NetManagers can run in one
 * process (the model: wireguard-go's in-memory binds). Messages are delivered on a later turn of the event
 * loop, as a broker would.
 */
import type { AddressPlan } from '../addressing/plan.ts';
import { UnavailableError } from '../errors.ts';
import { IP_TYPE, type ServiceIpEntry, type TableInstance, type TableQueryResult } from '../protocol/mqtt.ts';
import type { ClusterChannel, DeploymentReport } from './cluster-channel.ts';

interface ServiceRecord {
  serviceIps: ServiceIpEntry[];
  /** Instance number -> its instance IPs, and where it runs once a node reported it. */
  instances: Map<number, { ip4: string; ip6: string; at?: DeploymentReport & { worker: string } }>;
}

export class MemoryCluster {
  private readonly services = new Map<string, ServiceRecord>();
  private readonly subnets = new Map<string, { v4: string; v6: string }>();
  private readonly channels = new Set<MemoryClusterChannel>();

  constructor(
    private readonly plan: AddressPlan,
    /** The cluster's ID (reported on every instance as cluster_id). */
    readonly id = 'c1',
  ) {}

  /** A new channel for one node (it takes part once connected). */
  channel(): MemoryClusterChannel {
    return new MemoryClusterChannel(this);
  }

  /** A channel that connected. */
  attach(c: MemoryClusterChannel): void {
    this.channels.add(c);
  }

  /** Creates a service with its ServiceIPs (as the root would allocate them). */
  createService(job: string, serviceIps: ServiceIpEntry[]): void {
    this.services.set(job, { serviceIps, instances: new Map() });
  }

  /** Schedules instance `number` of `job` with its instance IPs (the orchestrator's part). */
  scheduleInstance(job: string, number: number, ip4: string, ip6: string): void {
    this.service(job).instances.set(number, { ip4, ip6 });
  }

  /** The subnetworks of a worker (the same on every ask). */
  subnetOf(worker: string): { v4: string; v6: string } {
    let s = this.subnets.get(worker);
    if (!s) {
      const block = this.plan.workerSubnet(this.subnets.size);
      s = { v4: block.v4.network.toString(), v6: block.v6.network.toString() };
      this.subnets.set(worker, s);
    }
    return s;
  }

  /** The table-query answer for a job name or an address. */
  answer(by: { sname: string } | { sip: string }): TableQueryResult {
    const key = 'sname' in by ? by.sname : by.sip;
    const job = 'sname' in by ? (this.services.has(by.sname) ? by.sname : undefined) : this.jobOf(by.sip);
    const s = job === undefined ? undefined : this.services.get(job);
    if (job === undefined || !s) return { app_name: '', instance_list: [], query_key: key };
    const list: TableInstance[] = [];
    for (const [number, i] of s.instances) {
      if (!i.at) continue;
      list.push({
        instance_number: number,
        instance_ip: i.ip4,
        instance_ip_v6: i.ip6,
        namespace_ip: i.at.nsip,
        namespace_ip_v6: i.at.nsipv6,
        host_ip: i.at.hostIp,
        host_port: i.at.hostPort,
        ...(i.at.publicKey !== undefined ? { wg_public_key: i.at.publicKey } : {}),
        worker_id: i.at.worker,
        cluster_id: this.id,
        service_ip: [...s.serviceIps, { IpType: IP_TYPE.instance, Address: i.ip4, Address_v6: i.ip6 }],
      });
    }
    return { app_name: job, instance_list: list, query_key: key };
  }

  /** A node reported an instance deployed (or gone: `at` undefined); the job's watchers hear of it. */
  report(job: string, number: number, at: (DeploymentReport & { worker: string }) | undefined): void {
    const i = this.services.get(job)?.instances.get(number);
    if (!i) return; // never scheduled: upstream's cluster ignores it too
    if (at) i.at = at;
    else delete i.at;
    for (const c of this.channels) c.notify(job);
  }

  /** Drops a channel that closed. */
  detach(c: MemoryClusterChannel): void {
    this.channels.delete(c);
  }

  private service(job: string): ServiceRecord {
    const s = this.services.get(job);
    if (!s) throw new Error(`no service ${job}`);
    return s;
  }

  private jobOf(address: string): string | undefined {
    for (const [job, s] of this.services) {
      for (const e of s.serviceIps) if (e.Address === address || e.Address_v6 === address) return job;
      for (const i of s.instances.values()) if (i.ip4 === address || i.ip6 === address) return job;
    }
    return undefined;
  }
}

export class MemoryClusterChannel implements ClusterChannel {
  readonly clusterInfo = undefined;
  private worker: string | undefined;
  private readonly watched = new Set<string>();
  private readonly updateHandlers = new Set<(job: string) => void>();
  private open = false;

  constructor(private readonly cluster: MemoryCluster) {}

  get connected(): boolean {
    return this.open;
  }

  connect(workerId: string): void {
    if (this.open) throw new Error(`already connected as ${this.worker}`);
    this.worker = workerId;
    this.open = true;
    this.cluster.attach(this);
  }

  ready(): Promise<void> {
    return this.open ? later(undefined) : Promise.reject(new UnavailableError('not connected'));
  }

  requestSubnet(): Promise<{ v4: string; v6: string }> {
    return later(this.cluster.subnetOf(this.workerId()));
  }

  query(by: { sname: string } | { sip: string }): Promise<TableQueryResult | undefined> {
    return later(this.open ? this.cluster.answer(by) : undefined);
  }

  reportDeployed(r: DeploymentReport): void {
    const worker = this.workerId();
    setImmediate(() => this.cluster.report(r.job, r.instance, { ...r, worker }));
  }

  reportUndeployed(job: string, instance: number): void {
    setImmediate(() => this.cluster.report(job, instance, undefined));
  }

  watchJob(job: string): Promise<void> {
    this.watched.add(job);
    return later(undefined);
  }

  unwatchJob(job: string): Promise<void> {
    this.watched.delete(job);
    return later(undefined);
  }

  onClusterInfo(): void {
    // an in-memory cluster announces nothing: its nodes allow no plaintext peers
  }

  onReconnect(): void {
    // never disconnects
  }

  onJobUpdate(handler: (job: string) => void): void {
    this.updateHandlers.add(handler);
  }

  close(): Promise<void> {
    this.open = false;
    this.watched.clear();
    this.cluster.detach(this);
    return Promise.resolve();
  }

  /** The cluster says a job changed: watchers hear it on a later turn. */
  notify(job: string): void {
    if (!this.watched.has(job)) return;
    setImmediate(() => {
      for (const h of this.updateHandlers) h(job);
    });
  }

  private workerId(): string {
    if (!this.worker) throw new Error('the channel is not connected');
    return this.worker;
  }
}

function later<T>(value: T): Promise<T> {
  return new Promise((resolve) => setImmediate(() => resolve(value)));
}
