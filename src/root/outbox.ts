/**
 * @module root/outbox
 * The notification outbox: per cluster, the job updates waiting for delivery, oldest first. A notification
 * is queued in the transaction of the change it announces, and leaves only when the notifier acks it.
 * Every function runs inside the caller's store transaction.
 */
import type { Tx } from '../store/store.ts';
import { interestedClusters } from './interests.ts';
import type { ClusterRecord, Notification } from './records.ts';

const SEQ_DIGITS = 16;

/**
 * Queues a notification for every cluster interested in the job; a queued notification for the same job
 * and instance (any instance, for -1) is replaced, since the newest state is what counts. Returns the
 * clusters.
 */
export function enqueue(tx: Tx, jobName: string, instance: number, type: Notification['type']): string[] {
  const clusters = interestedClusters(tx, jobName);
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

/** The oldest notification waiting for a cluster, with its key for ack. */
export function nextNotification(
  tx: Tx,
  clusterId: string,
): { key: string; notification: Notification } | undefined {
  const [first] = tx.list<Notification>(`outbox/${clusterId}/`, 1);
  return first ? { key: first[0], notification: first[1] } : undefined;
}

/** Removes a delivered notification. */
export function ackNotification(tx: Tx, key: string): void {
  tx.delete(key);
}

/** How many notifications wait for a cluster. */
export function pendingCount(tx: Tx, clusterId: string): number {
  return tx.count(`outbox/${clusterId}/`);
}

/** Clusters with notifications waiting. */
export function clustersWithPendingNotifications(tx: Tx): string[] {
  return tx
    .list<ClusterRecord>('cluster/')
    .map(([, c]) => c.id)
    .filter((id) => tx.list(`outbox/${id}/`, 1).length > 0);
}
