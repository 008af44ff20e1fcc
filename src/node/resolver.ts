/**
 * @module node/resolver
 * The node's Directory for ProxyTUN: the service table, filled by table queries to the cluster, kept fresh by
 * `updates_available`, with upstream's interest lifecycle: a job the node queried is watched until it has seen
 * no traffic for `interestTtlMs` (upstream: 10 s) and has no instance on this node; then the node publishes
 * interest/remove, unsubscribes and forgets the job. Questions never block the data path: they are asked in
 * the background and answered through DirectoryEvents.
 */
import type { Logger } from 'pino';
import type {
  AddressTarget,
  Directory,
  DirectoryEvents,
  ServiceInstance,
} from '../dataplane/proxy/directory.ts';
import { isJobName } from '../protocol/names.ts';
import type { ClusterLink } from './cluster-link.ts';
import type { ServiceTable } from './service-table.ts';

export interface NodeResolverOptions {
  table: ServiceTable;
  link: ClusterLink;
  log: Logger;
  /** Jobs with an instance on this node (their interest never expires). */
  localJobs: () => ReadonlySet<string>;
  interestTtlMs?: number;
  now?: () => number;
}

export class NodeResolver implements Directory {
  private events: DirectoryEvents | undefined;
  private readonly lastUse = new Map<string, number>();
  private readonly refreshing = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly ttl: number;
  private readonly now: () => number;

  constructor(private readonly o: NodeResolverOptions) {
    this.ttl = o.interestTtlMs ?? 10_000;
    this.now = o.now ?? Date.now;
    o.link.onJobUpdate((job) => void this.refresh(job));
    // updates published while the link was down are lost: ask again about everything watched
    o.link.onReconnect(() => {
      for (const job of this.lastUse.keys()) void this.refresh(job);
    });
  }

  setEvents(events: DirectoryEvents): void {
    this.events = events;
    this.o.table.setEvents(events);
  }

  start(): void {
    this.timer = setInterval(() => void this.expireInterests(), 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  target(buf: Uint8Array, offset: number, length: number): AddressTarget | undefined {
    return this.o.table.target(buf, offset, length);
  }

  localByNamespace(buf: Uint8Array, offset: number, length: number): ServiceInstance | undefined {
    return this.o.table.localByNamespace(buf, offset, length);
  }

  touch(job: string): void {
    this.lastUse.set(job, this.now());
  }

  /** Jobs this node watches, with the time of their last use. */
  interests(): Array<{ job: string; lastUseMsAgo: number }> {
    const now = this.now();
    return [...this.lastUse].map(([job, at]) => ({ job, lastUseMsAgo: now - at }));
  }

  request(address: string): void {
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
        const answer = await this.o.link.query({ sname: job });
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

  private async resolveAddress(address: string): Promise<void> {
    const answer = await this.o.link.query({ sip: address });
    const job = answer?.app_name;
    if (!answer || !job || !isJobName(job)) {
      this.events?.resolved(address, false);
      return;
    }
    this.o.table.apply(job, answer.instance_list);
    // answer first: the packets waiting for it must not wait for the subscription too
    this.events?.resolved(address, this.o.table.targetOf(address) !== undefined);
    await this.watch(job);
  }

  private async watch(job: string): Promise<void> {
    if (!this.lastUse.has(job)) this.lastUse.set(job, this.now());
    await this.o.link
      .watchJob(job)
      .catch((err: unknown) => this.o.log.warn({ job, err }, 'subscribe failed'));
  }

  private async expireInterests(): Promise<void> {
    const now = this.now();
    const local = this.o.localJobs();
    for (const [job, at] of this.lastUse) {
      if (local.has(job)) {
        this.lastUse.set(job, now);
        continue;
      }
      if (now - at < this.ttl) continue;
      this.lastUse.delete(job);
      this.o.table.remove(job);
      await this.o.link.unwatchJob(job);
      this.o.log.debug({ job }, 'interest expired');
    }
  }
}
