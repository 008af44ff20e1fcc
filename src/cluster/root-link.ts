/**
 * @module cluster/root-link
 * The cluster's link to the root: registration (at start, and again whenever the root restarted: its
 * boot_id changes or it was unreachable), and the outbox of deployment reports, delivered in order and kept
 * until the root accepted them, so a flaky link to the root loses no deployment.
 */
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { localAddressTowards } from '../protocol/local-address.ts';
import type { RootClient } from '../protocol/root-client.ts';
import type { ClusterCache } from './cache.ts';

export interface RootLinkOptions {
  root: RootClient;
  rootUrl: string;
  cache: ClusterCache;
  log: Logger;
  clusterId: string;
  /** The HTTP port the root calls back. */
  clusterPort: number;
  /** The address the root calls back; default: this host's address on the route to the root. */
  advertiseAddress?: string;
  /** Health check period (default 2 s). */
  intervalMs?: number;
  /** Called after every (re-)registration with the address the root was given. */
  onRegistered?: (address: string) => void;
}

export class RootLink {
  /** True after the last health check or request succeeded. */
  reachable = false;
  private registeredBootId: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private draining: Promise<void> | undefined;
  private tick: Promise<void> | undefined;
  private firstRegistration: { resolve: () => void; promise: Promise<void> };

  constructor(private readonly o: RootLinkOptions) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.firstRegistration = { resolve, promise };
  }

  /** Starts the health loop; resolves after the first successful registration or when `waitMs` passed. */
  async start(waitMs: number): Promise<void> {
    this.schedule(0);
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([
      this.firstRegistration.promise,
      new Promise<void>((r) => {
        timeout = setTimeout(r, waitMs);
      }),
    ]);
    clearTimeout(timeout);
  }

  /** Delivers queued deployment reports now. */
  kickStatus(): void {
    if (this.closed || this.draining) return;
    this.draining = this.drain().finally(() => (this.draining = undefined));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await Promise.allSettled([this.tick, this.draining]);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.tick = this.check().finally(() => this.schedule(this.o.intervalMs ?? 2000));
    }, ms);
  }

  private async check(): Promise<void> {
    try {
      const health = await this.o.root.health();
      if (health.boot_id !== this.registeredBootId) {
        const address = this.o.advertiseAddress ?? (await localAddressTowards(this.o.rootUrl));
        await this.o.root.registerCluster({
          cluster_id: this.o.clusterId,
          cluster_address: address,
          cluster_port: this.o.clusterPort,
        });
        this.o.log.info(
          { root: this.o.rootUrl, address, port: this.o.clusterPort },
          'registered with the root',
        );
        this.registeredBootId = health.boot_id;
        this.o.onRegistered?.(address);
        this.firstRegistration.resolve();
      }
      this.reachable = true;
      this.kickStatus();
    } catch (err) {
      if (this.reachable || this.registeredBootId === undefined) {
        this.o.log.warn({ root: this.o.rootUrl, err: errorMessage(err) }, 'root unreachable; retrying');
      }
      this.reachable = false;
      this.registeredBootId = undefined;
    }
  }

  private async drain(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      try {
        const next = this.o.cache.nextStatus();
        if (!next) return;
        try {
          const { job_name: name, job_id: known, instances } = next.status;
          const jobId = known ?? (await this.o.root.jobByName(name))._id;
          await this.o.root.deployStatus({ job_id: jobId, instances });
          this.o.cache.ackStatus(next.key);
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code === 'E_UNAVAILABLE') {
            this.reachable = false;
            return; // retried by the next health check
          }
          this.o.log.warn(
            { err: errorMessage(err), status: next.status },
            'root rejected a deployment report; dropped',
          );
          this.o.cache.ackStatus(next.key);
        }
      } catch (err) {
        // the store failed (disk full, locked): keep the process, try again at the next health check
        this.o.log.error({ err: errorMessage(err) }, 'deployment report outbox failed');
        return;
      }
    }
  }
}
