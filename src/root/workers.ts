/**
 * @module root/workers
 * Worker subnetworks: each worker (a node, by cluster and worker ID) gets an IPv4 and an IPv6 subnetwork
 * for its instances, the same pair again when it asks again. Every function runs inside the caller's store
 * transaction.
 */
import { randomUUID } from 'node:crypto';
import { NotFoundError } from '../errors.ts';
import type { WorkerInfo } from '../protocol/root-api.ts';
import type { Json, Tx } from '../store/store.ts';
import type { RootAddresses } from './addresses.ts';
import { mapPage, readPage, type Page, type PageRequest } from './pages.ts';
import { countWorker, requireWorkerRoom, type Quotas } from './quotas.ts';
import { requireCluster, type WorkerRecord } from './records.ts';

/**
 * The subnetworks of a worker. A known worker (cluster and worker ID given) gets the same subnetworks again,
 * so a restarting node keeps its addresses; an anonymous request (upstream's, no IDs) gets a fresh pair. A
 * new worker needs room in its cluster's quota.
 */
export function allocateSubnet(
  tx: Tx,
  addresses: RootAddresses,
  quotas: Quotas,
  now: () => Date,
  clusterId?: string,
  workerId?: string,
): WorkerRecord {
  if (clusterId !== undefined) requireCluster(tx, clusterId);
  const cluster = clusterId ?? '_';
  const worker = workerId ?? `anonymous-${randomUUID()}`;
  const key = `worker/${cluster}/${worker}`;
  const existing = tx.get<WorkerRecord>(key);
  if (existing) return existing;
  requireWorkerRoom(tx, quotas, cluster);
  const { index, subnet } = addresses.allocateWorker(tx, `worker ${worker} of cluster ${cluster}`);
  const rec: WorkerRecord = {
    clusterId: cluster,
    workerId: worker,
    index,
    subnet: subnet.v4.network.toString(),
    subnetV6: subnet.v6.network.toString(),
    allocatedAt: now().toISOString(),
  };
  countWorker(tx, cluster, 1);
  tx.put(key, rec as unknown as Json);
  return rec;
}

/** Releases a worker's subnetworks (the node left, or an operator removed it). */
export function releaseSubnet(
  tx: Tx,
  addresses: RootAddresses,
  clusterId: string,
  workerId: string,
): WorkerRecord {
  const key = `worker/${clusterId}/${workerId}`;
  const rec = tx.get<WorkerRecord>(key);
  if (!rec) throw new NotFoundError(`cluster ${clusterId} has no worker ${workerId}`);
  addresses.releaseWorker(tx, rec.index);
  countWorker(tx, clusterId, -1);
  tx.delete(key);
  return rec;
}

/** The workers of a cluster (of all clusters without one), with their subnetworks as CIDRs. */
export function listWorkers(tx: Tx, addresses: RootAddresses, clusterId?: string): WorkerInfo[] {
  return tx
    .list<WorkerRecord>(clusterId === undefined ? 'worker/' : `worker/${clusterId}/`)
    .map(([, w]) => workerInfo(addresses, w));
}

/**
 * A page of the workers of a cluster (of all clusters without one), ordered by cluster and worker ID; the
 * cursor is `cluster/worker` of the last one either way.
 */
export function listWorkersPage(
  tx: Tx,
  addresses: RootAddresses,
  page: PageRequest,
  clusterId?: string,
): Page<WorkerInfo> {
  const prefix = clusterId === undefined ? 'worker/' : `worker/${clusterId}/`;
  return mapPage(readPage<WorkerRecord>(tx, 'worker/', prefix, page), ([, w]) => workerInfo(addresses, w));
}

/** A worker as the API shows it: its subnetworks as CIDRs. */
export function workerInfo(addresses: RootAddresses, w: WorkerRecord): WorkerInfo {
  const { workerPrefixV4, workerPrefixV6 } = addresses.plan.config;
  return {
    cluster_id: w.clusterId,
    worker_id: w.workerId,
    subnet: `${w.subnet}/${workerPrefixV4}`,
    subnet_v6: `${w.subnetV6}/${workerPrefixV6}`,
  };
}
