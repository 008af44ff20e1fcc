/**
 * @module node/resolver
 * The node's side of a cache miss: the data plane's AddressLookup port. It fills the service table by table
 * queries to the cluster and keeps it fresh on `updates_available`, with upstream's interest lifecycle: a
 * job the node queried is watched until it has been out of use for `interestTtlMs` (upstream: 10 s), where in
 * use means an instance on this node or open flows to it; then the node publishes interest/remove,
 * unsubscribes and forgets the job. Questions never block the data path: they are asked in the background
 * and answered by the table's next snapshot.
 */
import type { Logger } from 'pino';
import type { IpAddress } from '../addressing/ip.ts';
import type { AddressLookup } from '../dataplane/dataplane.ts';
import { isJobName } from '../protocol/names.ts';
import type { ClusterChannel } from './cluster-channel.ts';
import type { ServiceTable } from './service-table.ts';

export interface NodeResolverOptions {
  table: ServiceTable;
  cluster: ClusterChannel;
  log: Logger;
  interestTtlMs?: number;
  now?: () => number;
}

export class NodeResolver implements AddressLookup {
  private readonly lastUse = new Map<string, number>();
  private readonly refreshing = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly ttl: number;
  private readonly now: () => number;

  constructor(private readonly o: NodeResolverOptions) {
    this.ttl = o.interestTtlMs ?? 10_000;
    this.now = o.now ?? Date.now;
    o.cluster.onJobUpdate((job) => void this.refresh(job));
    // updates published while the link was down are lost: ask again about everything watched
    o.cluster.onReconnect(() => {
      for (const job of this.lastUse.keys()) void this.refresh(job);
    });
  }

  ask(address: IpAddress): void {
    void this.resolveAddress(address);
  }

  /** Fetches a job's table by name and applies it (after a deploy, on updates_available). */
  refresh(job: string): Promise<void> {
    if (!isJobName(job)) return Promise.resolve();
    const running = this.refreshing.get(job);
    if (running) {
      this.again.add(job); // an update arrived during the query: ask once more after it
      return running;
    }
    const p = (async () => {
      do {
        this.again.delete(job);
        const answer = await this.o.cluster.query({ sname: job });
        if (!answer) {
          this.o.log.warn({ job }, 'table query by name got no answer; keeping what the table has');
          continue;
        }
        if (answer.app_name && answer.app_name !== job) {
          this.o.log.warn({ job, answered: answer.app_name }, 'answer for another job; ignored');
          continue;
        }
        this.o.table.apply(job, answer.instance_list);
        await this.watch(job);
      } while (this.again.has(job));
    })().finally(() => this.refreshing.delete(job));
    this.refreshing.set(job, p);
    return p;
  }

  /**
   * The node's DNS server asks about a job whose names it does not know: its table is fetched by name and
   * applied (and watched, as any job queried), 'known' once it has instances; 'unknown' when the cluster
   * says it has none (a job the table did not hold is then not kept: a scan of made-up names leaves no
   * interests behind); 'unreachable' without an answer (the cluster or its link is down).
   */
  async lookupJob(job: string): Promise<'known' | 'unknown' | 'unreachable'> {
    if (!isJobName(job)) return 'unknown';
    const answer = await this.o.cluster.query({ sname: job });
    if (!answer) return 'unreachable';
    if (answer.app_name && answer.app_name !== job) return 'unreachable';
    if (answer.instance_list.length === 0 && !this.o.table.jobNames().includes(job)) return 'unknown';
    this.o.table.apply(job, answer.instance_list);
    await this.watch(job);
    return this.o.table.instancesOf(job).length ? 'known' : 'unknown';
  }

  /** Jobs the DNS server answered names of (lower-cased): their interests count as used now. */
  touch(jobs: readonly string[]): void {
    if (jobs.length === 0) return;
    const names = new Set(jobs);
    const now = this.now();
    for (const job of this.lastUse.keys()) if (names.has(job.toLowerCase())) this.lastUse.set(job, now);
  }

  /** Watches a job's updates from now on (its interest counts as used now). */
  async watch(job: string): Promise<void> {
    if (!this.lastUse.has(job)) this.lastUse.set(job, this.now());
    await this.o.cluster
      .watchJob(job)
      .catch((err: unknown) => this.o.log.warn({ job, err }, 'subscribe failed'));
  }

  private async resolveAddress(address: IpAddress): Promise<void> {
    const answer = await this.o.cluster.query({ sip: address.toString() });
    const job = answer?.app_name;
    if (answer && job && isJobName(job)) this.o.table.apply(job, answer.instance_list);
    // a question without an answer ends like one answered "unknown": the packets waiting for it are dropped
    if (!this.o.table.knows(address)) this.o.table.markUnknown(address);
    if (answer && job && isJobName(job)) await this.watch(job);
  }

  /**
   * Forgets the jobs out of use for the interest TTL (the NetManager calls it every second). `inUse`: the jobs
   * in use now (an instance on this node, open flows to it), whose interest does not expire.
   */
  async expireInterests(inUse: Iterable<string>): Promise<void> {
    const now = this.now();
    for (const job of inUse) if (this.lastUse.has(job)) this.lastUse.set(job, now);
    for (const [job, at] of this.lastUse) {
      if (now - at < this.ttl) continue;
      this.lastUse.delete(job);
      this.o.table.remove(job);
      await this.o.cluster.unwatchJob(job);
      this.o.log.debug({ job }, 'interest expired');
    }
  }
}
