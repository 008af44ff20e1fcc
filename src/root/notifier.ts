/**
 * @module root/notifier
 * Delivers the outbox: POST /api/net/job/update to each interested cluster, oldest notification first,
 * one at a time per cluster. A notification leaves the outbox only when the cluster answered 2xx, so a
 * cluster that was down (or a root that restarted) gets everything it missed. Failures back off
 * exponentially per cluster; a re-registration of the cluster retries at once.
 */
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { clusterPaths } from '../protocol/cluster-api.ts';
import { HttpTransport } from '../protocol/http-client.ts';
import { hostForUrl } from '../protocol/url.ts';
import type { Registry } from './registry.ts';

export interface NotifierOptions {
  /**
   * Per-attempt timeout (default 15 s; upstream's 2 s is shorter than what a cluster does before it answers,
   * a refresh from the root, on a slow link).
   */
  timeoutMs?: number;
  /** First retry delay; doubles up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * TLS to the clusters (a secure platform): the CA and the root's own key and chain, read at each delivery
   * (they are renewed); each cluster must present its own identity. Without it, plain http.
   */
  tls?: () => { ca: string; key: string; cert: string };
}

interface ClusterLane {
  running: boolean;
  /** A kick arrived while running: look again when the run ends (true: even if it ended in backoff). */
  again?: boolean;
  backoffMs: number;
  timer?: NodeJS.Timeout;
}

export class Notifier {
  private readonly lanes = new Map<string, ClusterLane>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private readonly timeoutMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly tls: NotifierOptions['tls'];

  constructor(
    private readonly registry: Registry,
    private readonly log: Logger,
    options: NotifierOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.minBackoffMs = options.minBackoffMs ?? 250;
    this.maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.tls = options.tls;
  }

  /** Delivers what is waiting from a previous run. */
  start(): void {
    for (const id of this.registry.clustersWithPendingNotifications()) this.kick(id, true);
  }

  /**
   * Starts delivery to a cluster. `now` cancels a pending backoff (the cluster re-registered); without it a
   * cluster that is failing is left to its retry timer.
   */
  kick(clusterId: string, now = false): void {
    if (this.abort.signal.aborted) return;
    let lane = this.lanes.get(clusterId);
    if (!lane) {
      lane = { running: false, backoffMs: this.minBackoffMs };
      this.lanes.set(clusterId, lane);
    }
    if (lane.running) {
      lane.again = (lane.again ?? false) || now;
      return;
    }
    if (lane.timer) {
      if (!now) return;
      clearTimeout(lane.timer);
      delete lane.timer;
      lane.backoffMs = this.minBackoffMs;
    }
    lane.running = true;
    const run = this.drain(clusterId, lane).finally(() => {
      lane.running = false;
      this.inflight.delete(run);
      const again = lane.again;
      delete lane.again;
      if (again !== undefined) this.kick(clusterId, again);
    });
    this.inflight.add(run);
  }

  /** Stops retrying; waits for deliveries in flight. */
  async close(): Promise<void> {
    this.abort.abort();
    for (const lane of this.lanes.values()) if (lane.timer) clearTimeout(lane.timer);
    await Promise.allSettled([...this.inflight]);
  }

  private async drain(clusterId: string, lane: ClusterLane): Promise<void> {
    try {
      await this.deliver(clusterId, lane);
    } catch (err) {
      // the store failed (disk full, locked): the notifications stay queued; try again after a backoff
      this.log.error({ cluster: clusterId, err: errorMessage(err) }, 'notification outbox failed');
      this.retryLater(clusterId, lane);
    }
  }

  private async deliver(clusterId: string, lane: ClusterLane): Promise<void> {
    for (;;) {
      if (this.abort.signal.aborted) return;
      const next = this.registry.nextNotification(clusterId);
      if (!next) return;
      const cluster = this.registry.getCluster(clusterId);
      if (!cluster) {
        this.registry.ackNotification(next.key);
        continue;
      }
      const base = `${this.tls ? 'https' : 'http'}://${hostForUrl(cluster.address)}:${cluster.port}`;
      const url = base + clusterPaths.jobUpdate;
      const tls = this.tls?.();
      const transport = new HttpTransport(
        base,
        tls ? { tls: { ...tls, expect: { kind: 'cluster', clusterId } } } : {},
      );
      try {
        const res = await transport.request('POST', clusterPaths.jobUpdate, {
          body: next.notification,
          timeoutMs: this.timeoutMs,
          signal: this.abort.signal,
        });
        if (res.status < 200 || res.status >= 300)
          throw new Error(`HTTP ${res.status} ${res.text.slice(0, 200)}`);
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const message = errorMessage(err);
        this.registry.setClusterStatus(clusterId, 'ERROR', `notification failed: ${message}`);
        this.log.warn(
          { cluster: clusterId, url, err: message, retryInMs: lane.backoffMs },
          'cluster notification failed',
        );
        this.retryLater(clusterId, lane);
        return;
      } finally {
        transport.close();
      }
      this.registry.ackNotification(next.key);
      this.registry.setClusterStatus(clusterId, 'ACTIVE');
      lane.backoffMs = this.minBackoffMs;
      this.log.debug({ cluster: clusterId, ...next.notification }, 'notified cluster');
    }
  }

  private retryLater(clusterId: string, lane: ClusterLane): void {
    const delay = lane.backoffMs;
    lane.backoffMs = Math.min(lane.backoffMs * 2, this.maxBackoffMs);
    lane.timer = setTimeout(() => {
      delete lane.timer;
      this.kick(clusterId, false);
    }, delay);
  }
}
