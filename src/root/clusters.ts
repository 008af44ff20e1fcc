/**
 * @module root/clusters
 * The clusters the root knows: registration (address and port may change on re-registration) and the
 * outcome of the last delivery to each. Every function runs inside the caller's store transaction.
 */
import type { ClusterInfo, ClusterRegistration } from '../protocol/root-api.ts';
import type { Json, Tx } from '../store/store.ts';
import { pendingCount } from './outbox.ts';
import { mapPage, readPage, type Page, type PageRequest } from './pages.ts';
import type { ClusterRecord } from './records.ts';

/** Registers or re-registers a cluster; it is ACTIVE afterwards. */
export function registerCluster(tx: Tx, reg: ClusterRegistration, now: () => Date): ClusterRecord {
  const old = tx.get<ClusterRecord>(`cluster/${reg.cluster_id}`);
  const rec: ClusterRecord = {
    id: reg.cluster_id,
    address: reg.cluster_address,
    port: Number(reg.cluster_port),
    status: 'ACTIVE',
    registeredAt: old?.registeredAt ?? now().toISOString(),
  };
  tx.put(`cluster/${rec.id}`, rec as unknown as Json);
  return rec;
}

export function getCluster(tx: Tx, id: string): ClusterRecord | undefined {
  return tx.get<ClusterRecord>(`cluster/${id}`);
}

/** Every cluster, with the number of notifications waiting for it. */
export function listClusters(tx: Tx): ClusterInfo[] {
  return tx.list<ClusterRecord>('cluster/').map(([, c]) => clusterInfo(tx, c));
}

/** A page of clusters in ID order; the cursor is the last cluster ID. */
export function listClustersPage(tx: Tx, page: PageRequest): Page<ClusterInfo> {
  return mapPage(readPage<ClusterRecord>(tx, 'cluster/', 'cluster/', page), ([, c]) => clusterInfo(tx, c));
}

function clusterInfo(tx: Tx, c: ClusterRecord): ClusterInfo {
  return {
    cluster_id: c.id,
    cluster_address: c.address,
    cluster_port: c.port,
    status: c.status,
    pending_notifications: pendingCount(tx, c.id),
    ...(c.lastError ? { last_error: c.lastError } : {}),
  };
}

/** Records the outcome of a delivery attempt to a cluster (an unknown cluster is left alone). */
export function setClusterStatus(tx: Tx, id: string, status: 'ACTIVE' | 'ERROR', lastError?: string): void {
  const c = getCluster(tx, id);
  if (!c || (c.status === status && c.lastError === lastError)) return;
  const next: ClusterRecord = { ...c, status };
  if (lastError) next.lastError = lastError;
  else delete next.lastError;
  tx.put(`cluster/${id}`, next as unknown as Json);
}
