/**
 * @module root/interests
 * Resolution and interests: a cluster that resolves a job (by name, ServiceIP or instance IP) caches it, so
 * the resolution records the cluster's interest, and the job's updates are queued for it until the cluster
 * drops the interest. Every function runs inside the caller's store transaction.
 */
import type { IpAddress } from '../addressing/ip.ts';
import { NotFoundError } from '../errors.ts';
import type { Tx } from '../store/store.ts';
import { requireCluster, type IpRecord, type JobRecord } from './records.ts';

/** The job named `name`; registers the interest of clusterId when given. */
export function resolveByName(tx: Tx, name: string, clusterId?: string): JobRecord {
  const id = tx.get<string>(`jobname/${name}`);
  const job = id === undefined ? undefined : tx.get<JobRecord>(`job/${id}`);
  if (!job) throw new NotFoundError(`no service named ${name}`);
  addInterest(tx, job.name, clusterId);
  return job;
}

/** The job that owns a ServiceIP or instance IP; registers the interest of clusterId when given. */
export function resolveByIp(tx: Tx, ip: IpAddress, clusterId?: string): JobRecord {
  const rec = tx.get<IpRecord>(`ip/${ip.toString()}`);
  const job = rec ? tx.get<JobRecord>(`job/${rec.job}`) : undefined;
  if (!job) throw new NotFoundError(`no service or instance has address ${ip.toString()}`);
  addInterest(tx, job.name, clusterId);
  return job;
}

/** Drops the interest of a (registered) cluster in a job. */
export function removeInterest(tx: Tx, jobName: string, clusterId: string): void {
  requireCluster(tx, clusterId);
  tx.delete(`interest/${jobName}/${clusterId}`);
}

/** Drops every cluster's interest in a job (the job is gone). */
export function removeInterests(tx: Tx, jobName: string): void {
  for (const [key] of tx.list(`interest/${jobName}/`)) tx.delete(key);
}

/** Clusters interested in a job. */
export function interestedClusters(tx: Tx, jobName: string): string[] {
  const at = `interest/${jobName}/`.length;
  return tx.list(`interest/${jobName}/`).map(([k]) => k.slice(at));
}

function addInterest(tx: Tx, jobName: string, clusterId: string | undefined): void {
  if (clusterId === undefined) return;
  requireCluster(tx, clusterId);
  tx.put(`interest/${jobName}/${clusterId}`, true);
}
