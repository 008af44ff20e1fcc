/**
 * @module root/quotas
 * Limits on what callers can make the root hold, so no identity can take a whole address pool: services
 * (each holds two IPv4 ServiceIPs), instances per service, worker subnetworks per cluster. A caller at a
 * quota gets QuotaExceededError (HTTP 403, E_QUOTA); what exists already is never touched, and asking again
 * for something that exists (a known worker's subnetworks, a deployed service) still answers. Every check
 * runs inside the caller's store transaction, so two requests can never both take the last place.
 */
import type { AddressPlan } from '../addressing/plan.ts';
import { InvalidInputError, QuotaExceededError } from '../errors.ts';
import type { Tx } from '../store/store.ts';
import type { JobRecord } from './records.ts';

export interface Quotas {
  /** Services (jobs) the root holds at most. */
  maxServices: number;
  /** Instances one service has at most. */
  maxInstancesPerService: number;
  /**
   * Worker subnetworks one cluster holds at most. Requests without ?cluster_id= (upstream's) all count as
   * one cluster, `_`.
   */
  maxWorkersPerCluster: number;
}

/**
 * The defaults, for the default AddressPlan:
 * - services: 20,000. IPv4 ServiceIPs and instance IPs share one pool (10.30.0.0/16, 65,534 addresses) and
 *   a service takes two of them (RR and Closest), so creations alone can take at most 40,000: a creation
 *   flood leaves at least 25,534 addresses for instances, and the pool is never emptied by creations. (The
 *   IPv6 blocks hold millions; IPv4 is the limit.)
 * - instances per service: 1,000, so one service cannot take the instance IPs of all the others.
 * - worker subnetworks per cluster: 1,024 of the 15,360 /26s: a large edge cluster fits, and one cluster
 *   (or the anonymous requests together) takes at most a fifteenth of the space.
 */
export const DEFAULT_QUOTAS: Quotas = {
  maxServices: 20_000,
  maxInstancesPerService: 1_000,
  maxWorkersPerCluster: 1_024,
};

/** The flag that sets each quota, for messages. */
const FLAG: Record<keyof Quotas, string> = {
  maxServices: '--max-services',
  maxInstancesPerService: '--max-instances-per-service',
  maxWorkersPerCluster: '--max-workers-per-cluster',
};

/** The defaults with what the operator set; every quota must be a positive integer. */
export function resolveQuotas(given: Partial<Quotas> = {}): Quotas {
  const q = { ...DEFAULT_QUOTAS, ...given };
  for (const key of Object.keys(FLAG) as Array<keyof Quotas>) {
    if (!Number.isSafeInteger(q[key]) || q[key] < 1)
      throw new InvalidInputError(`${FLAG[key]} must be a positive integer, not ${String(q[key])}`);
  }
  return q;
}

/** What an operator should know about quotas that do not protect the plan's pools (logged at start). */
export function quotaWarnings(q: Quotas, plan: AddressPlan): string[] {
  const capacity = plan.serviceV4.capacity;
  return 2 * q.maxServices >= capacity
    ? [
        `${FLAG.maxServices} ${q.maxServices} lets creations take every one of the ${capacity} IPv4 ServiceIPs ` +
          `(two per service): instances could find none left`,
      ]
    : [];
}

/**
 * The numbers the quotas compare are kept in the store, each changed in the transaction that adds or removes
 * what it counts: counting at each creation would read every record under the prefix (an SQLite count walks
 * its range), which made 30,000 service creations take 25 s instead of 2 s, and slowed worker allocations
 * in a large cluster by a third. A store without the key (written before it existed) is counted once.
 */
function kept(tx: Tx, key: string, prefix: string): number {
  return tx.get<number>(key) ?? tx.count(prefix);
}

/** How many services exist. */
export function serviceCount(tx: Tx): number {
  return kept(tx, 'count/services', 'jobname/');
}

/** Counts a service in (+1) or out (-1); called before its `jobname/` key is written or deleted. */
export function countService(tx: Tx, delta: 1 | -1): void {
  tx.put('count/services', serviceCount(tx) + delta);
}

/** How many worker subnetworks a cluster (`_`: the anonymous requests) holds. */
export function workerCount(tx: Tx, cluster: string): number {
  return kept(tx, `count/workers/${cluster}`, `worker/${cluster}/`);
}

/** Counts a worker of a cluster in (+1) or out (-1); called before its `worker/` key is written or deleted. */
export function countWorker(tx: Tx, cluster: string, delta: 1 | -1): void {
  const n = workerCount(tx, cluster) + delta;
  if (n === 0) tx.delete(`count/workers/${cluster}`);
  else tx.put(`count/workers/${cluster}`, n);
}

/** Throws unless one more service fits. */
export function requireServiceRoom(tx: Tx, q: Quotas, name: string): void {
  const n = serviceCount(tx);
  if (n >= q.maxServices) {
    throw new QuotaExceededError(
      'max-services',
      `cannot create service ${name}: the root holds ${n} services, its quota (${FLAG.maxServices} ` +
        `${q.maxServices}); delete some first`,
    );
  }
}

/** Throws unless the job can have one more instance. */
export function requireInstanceRoom(job: JobRecord, q: Quotas, n: number): void {
  const count = Object.keys(job.instances).length;
  if (count >= q.maxInstancesPerService) {
    throw new QuotaExceededError(
      'max-instances-per-service',
      `cannot schedule instance ${n} of ${job.name}: it has ${count} instances, the quota ` +
        `(${FLAG.maxInstancesPerService} ${q.maxInstancesPerService}); undeploy some first`,
    );
  }
}

/** Throws unless the cluster (`_`: the anonymous requests) can hold one more worker subnetwork. */
export function requireWorkerRoom(tx: Tx, q: Quotas, cluster: string): void {
  const n = workerCount(tx, cluster);
  if (n >= q.maxWorkersPerCluster) {
    const who = cluster === '_' ? 'requests without ?cluster_id= together hold' : `cluster ${cluster} holds`;
    throw new QuotaExceededError(
      'max-workers-per-cluster',
      `no new worker subnetwork: ${who} ${n}, the quota (${FLAG.maxWorkersPerCluster} ` +
        `${q.maxWorkersPerCluster}); release those of nodes that left (oaknet worker remove)`,
    );
  }
}
