/**
 * @module root/services
 * Services (jobs): a deployment creates the job with its ServiceIPs (RR and Closest, IPv4 and IPv6, user-
 * chosen ones honoured) in the transaction that records it; a removal releases them. Every function runs
 * inside the caller's store transaction.
 */
import { ConflictError, InvalidInputError } from '../errors.ts';
import { requireJobName } from '../protocol/names.ts';
import type { DeploymentDescriptor } from '../protocol/root-api.ts';
import type { Json, Tx } from '../store/store.ts';
import type { RootAddresses } from './addresses.ts';
import { dropInstance } from './instances.ts';
import { removeInterests } from './interests.ts';
import { enqueue } from './outbox.ts';
import { readPage, mapPage, type Page, type PageRequest } from './pages.ts';
import { countService, requireServiceRoom, type Quotas } from './quotas.ts';
import { requireJob, type JobRecord } from './records.ts';

/**
 * Creates the job and allocates its ServiceIPs, honouring user-chosen addresses, within the services quota.
 * Deploying the same _id with the same name again is a no-op that returns the job.
 */
export function deployService(
  tx: Tx,
  addresses: RootAddresses,
  quotas: Quotas,
  id: string,
  descriptor: DeploymentDescriptor,
  name: string,
  now: () => Date,
): JobRecord {
  const existing = tx.get<JobRecord>(`job/${id}`);
  if (existing) {
    if (existing.name === name) return existing;
    throw new ConflictError(`job ${id} exists with name ${existing.name}, not ${name}`);
  }
  const holder = tx.get<string>(`jobname/${name}`);
  if (holder !== undefined) throw new ConflictError(`service ${name} already exists (job ${holder})`);
  requireServiceRoom(tx, quotas, name);
  const owner = `job ${name}`;
  const rr = {
    v4: addresses.allocateV4(tx, `${owner} (RR)`, descriptor.RR_ip, 'RR_ip'),
    v6: addresses.allocateV6(tx, 'rr', `${owner} (RR)`, descriptor.RR_ip_v6, 'RR_ip_v6'),
  };
  const closest = {
    v4: addresses.allocateV4(tx, `${owner} (Closest)`, descriptor.closest_ip, 'closest_ip'),
    v6: addresses.allocateV6(tx, 'closest', `${owner} (Closest)`, descriptor.closest_ip_v6, 'closest_ip_v6'),
  };
  const job: JobRecord = {
    id,
    name,
    descriptor: descriptor,
    rr,
    closest,
    instances: {},
    createdAt: now().toISOString(),
  };
  tx.put(`job/${id}`, job as unknown as Json);
  countService(tx, 1);
  tx.put(`jobname/${name}`, id);
  for (const a of [rr.v4, rr.v6]) tx.put(`ip/${a}`, { job: id, role: 'RR' });
  for (const a of [closest.v4, closest.v6]) tx.put(`ip/${a}`, { job: id, role: 'Closest' });
  return job;
}

/**
 * Removes a job and releases its ServiceIPs. With instances left it fails with ConflictError unless
 * `force`, which undeploys them first (and queues the notifications). Returns the clusters to notify.
 */
export function removeService(tx: Tx, addresses: RootAddresses, id: string, force: boolean): string[] {
  const job = requireJob(tx, id);
  const count = Object.keys(job.instances).length;
  if (count > 0 && !force) {
    throw new ConflictError(`service ${job.name} still has ${count} instance(s); undeploy them first`);
  }
  const clusters = new Set<string>();
  for (const inst of Object.values(job.instances)) dropInstance(tx, addresses, job, inst);
  for (const c of enqueue(tx, job.name, -1, 'UNDEPLOYMENT')) clusters.add(c);
  for (const a of [job.rr.v4, job.rr.v6, job.closest.v4, job.closest.v6]) {
    addresses.release(tx, a);
    tx.delete(`ip/${a}`);
  }
  removeInterests(tx, job.name);
  countService(tx, -1);
  tx.delete(`jobname/${job.name}`);
  tx.delete(`job/${id}`);
  return [...clusters];
}

export function getJob(tx: Tx, id: string): JobRecord | undefined {
  return tx.get<JobRecord>(`job/${id}`);
}

export function getJobByName(tx: Tx, name: string): JobRecord | undefined {
  const id = tx.get<string>(`jobname/${name}`);
  return id === undefined ? undefined : getJob(tx, id);
}

/** Every job, in ID order (reads them all: for tests and tools; the API pages). */
export function listJobs(tx: Tx): JobRecord[] {
  return tx.list<JobRecord>('job/').map(([, j]) => j);
}

/** A page of jobs in ID order; the cursor is the last job ID. */
export function listJobsPage(tx: Tx, page: PageRequest): Page<JobRecord> {
  return mapPage(readPage<JobRecord>(tx, 'job/', 'job/', page), ([, j]) => j);
}

/** The job name a deployment descriptor describes (upstream: app_name.app_ns.service_name.service_ns). */
export function jobNameOf(d: DeploymentDescriptor): string {
  const service = d.service_name ?? d.microservice_name;
  const serviceNs = d.service_ns ?? d.microservice_namespace;
  if (service === undefined || serviceNs === undefined) {
    throw new InvalidInputError(
      'deployment_descriptor needs service_name and service_ns (or microservice_name and microservice_namespace)',
    );
  }
  return requireJobName(`${d.app_name}.${d.app_ns}.${service}.${serviceNs}`);
}
