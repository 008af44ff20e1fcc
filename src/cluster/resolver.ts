/**
 * @module cluster/resolver
 * Resolves service tables for nodes: the cluster's cache first, else the root (which then registers this
 * cluster's interest and will notify it of changes). Concurrent misses for the same key share one root
 * request, and a key the root does not know is remembered briefly so a node that keeps sending to an
 * unknown address cannot flood the root (upstream oakestra-net #28).
 */
import type { Logger } from 'pino';
import { IpAddress } from '../addressing/ip.ts';
import { NotFoundError } from '../errors.ts';
import { IP_TYPE, type TableInstance, type TableQueryResult } from '../protocol/mqtt.ts';
import { isWgPublicKey } from '../protocol/names.ts';
import type { JobDocument } from '../protocol/root-api.ts';
import type { RootClient } from '../protocol/root-client.ts';
import type { ClusterCache } from './cache.ts';

/** Root requests one cluster makes at once (more wait their turn). */
const MAX_ROOT_REQUESTS = 16;
/** Unknown names and addresses remembered at most. */
const MAX_UNKNOWN = 10_000;

export interface ResolverOptions {
  /** How long an unknown name or address is answered "unknown" without asking the root again (ms). */
  negativeTtlMs?: number;
  now?: () => number;
}

export class Resolver {
  private readonly inflight = new Map<string, Promise<JobDocument | undefined>>();
  private readonly refreshing = new Map<string, Promise<JobDocument | undefined>>();
  private readonly refreshAgain = new Set<string>();
  private active = 0;
  private readonly slots: Array<() => void> = [];
  private readonly unknown = new Map<string, number>();
  private readonly negativeTtlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly cache: ClusterCache,
    private readonly root: RootClient,
    private readonly log: Logger,
    options: ResolverOptions = {},
  ) {
    this.negativeTtlMs = options.negativeTtlMs ?? 1000;
    this.now = options.now ?? Date.now;
  }

  /** The job by name: cache, else root. Undefined when the root does not know it. */
  async byName(name: string): Promise<JobDocument | undefined> {
    return this.cache.job(name) ?? this.fetch(`name:${name}`, () => this.root.jobByName(name));
  }

  /** The job owning a ServiceIP or instance IP: cache, else root. */
  async byIp(address: string): Promise<JobDocument | undefined> {
    const ip = IpAddress.tryParse(address);
    if (!ip) return undefined;
    const canonical = ip.toString();
    return this.cache.jobByIp(canonical) ?? this.fetch(`ip:${canonical}`, () => this.root.jobByIp(canonical));
  }

  /**
   * Fetches the job from the root even when cached; removes it from the cache if the root forgot it. One
   * refresh per job at a time: a refresh asked for while one runs runs once more after it, so an older answer
   * can never land after a newer one.
   */
  refresh(name: string): Promise<JobDocument | undefined> {
    const running = this.refreshing.get(name);
    if (running) {
      this.refreshAgain.add(name);
      return running;
    }
    const p = (async () => {
      let doc: JobDocument | undefined;
      do {
        this.refreshAgain.delete(name);
        doc = await this.refreshOnce(name);
      } while (this.refreshAgain.has(name));
      return doc;
    })().finally(() => this.refreshing.delete(name));
    this.refreshing.set(name, p);
    return p;
  }

  private async refreshOnce(name: string): Promise<JobDocument | undefined> {
    this.unknown.delete(`name:${name}`);
    try {
      const doc = await this.limit(() => this.root.jobByName(name));
      this.cache.putJob(doc);
      return doc;
    } catch (err) {
      if (err instanceof NotFoundError) {
        this.cache.removeJob(name);
        return undefined;
      }
      throw err;
    }
  }

  /** Runs a root request when fewer than MAX_ROOT_REQUESTS are under way (queued otherwise). */
  private async limit<T>(request: () => Promise<T>): Promise<T> {
    while (this.active >= MAX_ROOT_REQUESTS) await new Promise<void>((r) => this.slots.push(r));
    this.active++;
    try {
      return await request();
    } finally {
      this.active--;
      this.slots.shift()?.();
    }
  }

  /** Notes an unknown key, and drops expired notes once there are many (a scan must not grow it forever). */
  private rememberUnknown(key: string): void {
    const now = this.now();
    if (this.unknown.size >= MAX_UNKNOWN) {
      for (const [k, until] of this.unknown) if (until <= now) this.unknown.delete(k);
      if (this.unknown.size >= MAX_UNKNOWN) this.unknown.delete(this.unknown.keys().next().value!);
    }
    this.unknown.set(key, now + this.negativeTtlMs);
  }

  private fetch(key: string, get: () => Promise<JobDocument>): Promise<JobDocument | undefined> {
    const until = this.unknown.get(key);
    if (until !== undefined) {
      if (until > this.now()) return Promise.resolve(undefined);
      this.unknown.delete(key);
    }
    let p = this.inflight.get(key);
    if (!p) {
      p = this.limit(get)
        .then((doc) => {
          this.cache.putJob(doc);
          this.log.debug({ job: doc.job_name, key }, 'cached service table from root');
          return doc;
        })
        .catch((err: unknown) => {
          if (err instanceof NotFoundError) {
            this.rememberUnknown(key);
            return undefined;
          }
          throw err;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }
}

/**
 * The table-query answer for a node (upstream's format, reference section 5.2): every deployed instance with
 * the service's ServiceIPs plus its own instance IP. Instances not deployed yet (no namespace address) are
 * left out: a node could not route to them.
 */
export function toTableResult(doc: JobDocument | undefined, queryKey: string): TableQueryResult {
  if (!doc) return { app_name: '', instance_list: [], query_key: queryKey };
  const instances: TableInstance[] = [];
  for (const i of doc.instance_list) {
    if (i.namespace_ip === undefined || i.host_ip === undefined || i.host_port === undefined) continue;
    instances.push({
      instance_number: i.instance_number,
      instance_ip: i.instance_ip,
      instance_ip_v6: i.instance_ip_v6,
      namespace_ip: i.namespace_ip,
      ...(i.namespace_ip_v6 !== undefined ? { namespace_ip_v6: i.namespace_ip_v6 } : {}),
      host_ip: i.host_ip,
      host_port: i.host_port,
      ...(i.wg_public_key !== undefined && isWgPublicKey(i.wg_public_key)
        ? { wg_public_key: i.wg_public_key }
        : {}),
      ...(i.worker_id !== undefined ? { worker_id: i.worker_id } : {}),
      cluster_id: i.cluster_id,
      service_ip: [
        ...doc.service_ip_list.map((s) => ({
          IpType: s.IpType,
          Address: s.Address,
          Address_v6: s.Address_v6,
        })),
        { IpType: IP_TYPE.instance, Address: i.instance_ip, Address_v6: i.instance_ip_v6 },
      ],
    });
  }
  return { app_name: doc.job_name, instance_list: instances, query_key: queryKey };
}
