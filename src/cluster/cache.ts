/**
 * @module cluster/cache
 * What a cluster service manager knows, in its store: the service tables it cached from the root (with an
 * index by ServiceIP and instance IP), which of its nodes are interested in which job, and its nodes'
 * subnetworks. The job cache is only as fresh as the root's notifications, so it is dropped at start-up
 * (the root re-sends what changed to clusters that ask again).
 *
 * Store layout:
 *   job/<name>              JobDocument as the root sent it, plus the cluster's own updates
 *   jobip/<address>         job name owning a ServiceIP or instance IP
 *   interest/<job>/<worker> true
 *   node/<worker>           NodeRecord
 *   statusq/<seq>           QueuedStatus waiting for the root
 */
import { IpAddress } from '../addressing/ip.ts';
import type { JobDocument, NetDeployStatus } from '../protocol/root-api.ts';
import type { Json, Store, Tx } from '../store/store.ts';

/** A deployment report for the root; the job ID is looked up at delivery when the root was down at receipt. */
export interface QueuedStatus {
  job_name: string;
  job_id?: string;
  instances: NetDeployStatus['instances'];
}

export interface NodeRecord {
  workerId: string;
  subnet: string;
  subnetV6: string;
}

const SEQ_DIGITS = 16;

export class ClusterCache {
  private readonly lastSeen = new Map<string, Date>();

  constructor(private readonly store: Store) {}

  /** Forgets every cached job (start-up). */
  dropJobs(): void {
    this.store.transact((tx) => {
      for (const prefix of ['job/', 'jobip/']) for (const [k] of tx.list(prefix)) tx.delete(k);
    });
  }

  job(name: string): JobDocument | undefined {
    return this.store.transact((tx) => tx.get<JobDocument>(`job/${name}`));
  }

  jobByIp(address: string): JobDocument | undefined {
    const ip = IpAddress.tryParse(address);
    if (!ip) return undefined;
    return this.store.transact((tx) => {
      const name = tx.get<string>(`jobip/${ip.toString()}`);
      return name === undefined ? undefined : tx.get<JobDocument>(`job/${name}`);
    });
  }

  jobs(): JobDocument[] {
    return this.store.transact((tx) => tx.list<JobDocument>('job/').map(([, j]) => j));
  }

  /** Stores (replaces) a job and re-indexes its addresses. */
  putJob(doc: JobDocument): void {
    this.store.transact((tx) => {
      this.unindex(tx, doc.job_name);
      tx.put(`job/${doc.job_name}`, doc);
      for (const a of addressesOf(doc)) tx.put(`jobip/${a}`, doc.job_name);
    });
  }

  /** Applies fn to the cached job (if cached) and stores the result; returns it. */
  updateJob(name: string, fn: (doc: JobDocument) => void): JobDocument | undefined {
    const doc = this.job(name);
    if (!doc) return undefined;
    fn(doc);
    this.putJob(doc);
    return doc;
  }

  removeJob(name: string): void {
    this.store.transact((tx) => {
      this.unindex(tx, name);
      tx.delete(`job/${name}`);
    });
  }

  /** Removes instance n (-1: all) from a cached job; returns whether the job is cached. */
  removeInstance(name: string, n: number): boolean {
    return (
      this.updateJob(name, (doc) => {
        doc.instance_list = n === -1 ? [] : doc.instance_list.filter((i) => i.instance_number !== n);
      }) !== undefined
    );
  }

  addInterest(job: string, worker: string): void {
    this.store.transact((tx) => {
      if (tx.get(`interest/${job}/${worker}`) === undefined) tx.put(`interest/${job}/${worker}`, true);
    });
  }

  /** Removes a node's interest; returns the nodes still interested. */
  removeInterest(job: string, worker: string): string[] {
    return this.store.transact((tx) => {
      tx.delete(`interest/${job}/${worker}`);
      return this.interested(tx, job);
    });
  }

  /** Jobs at least one node is interested in. */
  jobsWithInterest(): string[] {
    return this.store.transact((tx) => [...new Set(tx.list('interest/').map(([k]) => k.split('/')[1]!))]);
  }

  interestedNodes(job: string): string[] {
    return this.store.transact((tx) => this.interested(tx, job));
  }

  node(worker: string): NodeRecord | undefined {
    return this.store.transact((tx) => tx.get<NodeRecord>(`node/${worker}`));
  }

  nodes(): NodeRecord[] {
    return this.store.transact((tx) => tx.list<NodeRecord>('node/').map(([, n]) => n));
  }

  putNode(rec: NodeRecord): void {
    this.store.transact((tx) => tx.put(`node/${rec.workerId}`, rec as unknown as Json));
  }

  /** Notes that a node spoke (for status; kept in memory, not worth a disk write per message). */
  touchNode(worker: string, at: Date): void {
    this.lastSeen.set(worker, at);
  }

  /** When the node last spoke to this process, if it did. */
  lastSeenOf(worker: string): Date | undefined {
    return this.lastSeen.get(worker);
  }

  removeNode(worker: string): void {
    this.store.transact((tx) => {
      tx.delete(`node/${worker}`);
      for (const [k] of tx.list('interest/')) if (k.endsWith(`/${worker}`)) tx.delete(k);
    });
  }

  /** Queues a deployment report for the root (delivered by the status outbox). */
  queueStatus(status: QueuedStatus): void {
    this.store.transact((tx) => {
      const seq = (tx.get<number>('statusseq') ?? 0) + 1;
      tx.put('statusseq', seq);
      tx.put(`statusq/${seq.toString().padStart(SEQ_DIGITS, '0')}`, status as unknown as Json);
    });
  }

  nextStatus(): { key: string; status: QueuedStatus } | undefined {
    return this.store.transact((tx) => {
      const [first] = tx.list<QueuedStatus>('statusq/', 1);
      return first ? { key: first[0], status: first[1] } : undefined;
    });
  }

  pendingStatusCount(): number {
    return this.store.transact((tx) => tx.list('statusq/').length);
  }

  ackStatus(key: string): void {
    this.store.transact((tx) => tx.delete(key));
  }

  private interested(tx: Tx, job: string): string[] {
    const at = `interest/${job}/`.length;
    return tx.list(`interest/${job}/`).map(([k]) => k.slice(at));
  }

  private unindex(tx: Tx, name: string): void {
    const old = tx.get<JobDocument>(`job/${name}`);
    if (old) for (const a of addressesOf(old)) tx.delete(`jobip/${a}`);
  }
}

/** Every ServiceIP and instance IP of a job, canonical. */
function addressesOf(doc: JobDocument): string[] {
  const out: string[] = [];
  const add = (a: string | null | undefined) => {
    const ip = a ? IpAddress.tryParse(a) : undefined;
    if (ip) out.push(ip.toString());
  };
  for (const s of doc.service_ip_list) {
    add(s.Address);
    add(s.Address_v6);
  }
  for (const i of doc.instance_list) {
    add(i.instance_ip);
    add(i.instance_ip_v6);
  }
  return out;
}
