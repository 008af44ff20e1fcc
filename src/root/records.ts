/**
 * @module root/records
 * What the root service manager keeps in its store: the key layout, one record type per key, and the
 * lookups the use cases share.
 *
 * Store layout:
 *   cluster/<id>                 ClusterRecord
 *   job/<id>                     JobRecord
 *   jobname/<name>               job id
 *   ip/<address>                 IpRecord: which job (and instance) owns a ServiceIP or instance IP
 *   worker/<cluster>/<worker>    WorkerRecord
 *   interest/<job name>/<cluster>  true: the cluster caches the job and wants its updates
 *   outbox/<cluster>/<seq>       Notification waiting for delivery, oldest first
 *   outboxseq                    the last outbox sequence number
 *   count/services               the number of jobs (quotas.ts)
 *   count/workers/<cluster>      the number of the cluster's workers (quotas.ts)
 */
import type { JobUpdateNotification } from '../protocol/root-api.ts';
import { NotFoundError } from '../errors.ts';
import type { Json, Tx } from '../store/store.ts';

export interface ClusterRecord {
  id: string;
  address: string;
  port: number;
  status: 'ACTIVE' | 'ERROR';
  lastError?: string;
  registeredAt: string;
}

export interface AddressPair {
  v4: string;
  v6: string;
}

export interface InstanceRecord {
  number: number;
  clusterId: string;
  ip: AddressPair;
  namespaceIp?: string;
  namespaceIpV6?: string;
  hostIp?: string;
  hostPort?: number;
  /** The WireGuard public key of the node it runs on (base64); absent for upstream NetManagers. */
  wgPublicKey?: string;
  workerId?: string;
}

export interface JobRecord {
  id: string;
  name: string;
  descriptor: { [key: string]: Json };
  rr: AddressPair;
  closest: AddressPair;
  /** By instance number. */
  instances: { [n: string]: InstanceRecord };
  createdAt: string;
}

export interface IpRecord {
  job: string;
  role: 'RR' | 'Closest' | 'instance';
  instance?: number;
}

export interface WorkerRecord {
  clusterId: string;
  workerId: string;
  index: number;
  subnet: string;
  subnetV6: string;
  allocatedAt: string;
}

export type Notification = JobUpdateNotification;

/** The registered cluster `id`; NotFoundError if there is none. */
export function requireCluster(tx: Tx, id: string): ClusterRecord {
  const c = tx.get<ClusterRecord>(`cluster/${id}`);
  if (!c) throw new NotFoundError(`cluster ${id} is not registered`);
  return c;
}

/** The job with id `id`; NotFoundError if there is none. */
export function requireJob(tx: Tx, id: string): JobRecord {
  const job = tx.get<JobRecord>(`job/${id}`);
  if (!job) throw new NotFoundError(`no job with id ${id}`);
  return job;
}
