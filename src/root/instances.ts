/**
 * @module root/instances
 * Instances of a job: scheduling one on a cluster allocates its instance IPs (IPv4 and IPv6), the cluster's
 * deployment report records where it runs, and a removal releases its addresses; each change queues a
 * notification for the interested clusters. Every function runs inside the caller's store transaction and
 * returns the clusters to notify where it queued anything.
 */
import { IpAddress } from '../addressing/ip.ts';
import { ForbiddenError, InvalidInputError, NotFoundError } from '../errors.ts';
import type { DeployedInstance } from '../protocol/root-api.ts';
import type { Json, Tx } from '../store/store.ts';
import type { RootAddresses } from './addresses.ts';
import { enqueue } from './outbox.ts';
import { requireInstanceRoom, type Quotas } from './quotas.ts';
import { requireJob, type InstanceRecord, type JobRecord } from './records.ts';

/**
 * Schedules instance n of job id on a cluster and allocates its instance IPs, within the instances quota.
 * Scheduling an existing instance again keeps its addresses (and moves it to the named cluster).
 */
export function deployInstance(
  tx: Tx,
  addresses: RootAddresses,
  quotas: Quotas,
  id: string,
  n: number,
  clusterId: string,
): InstanceRecord {
  const job = requireJob(tx, id);
  const existing = job.instances[n];
  if (existing) {
    existing.clusterId = clusterId;
    tx.put(`job/${id}`, job as unknown as Json);
    return existing;
  }
  requireInstanceRoom(job, quotas, n);
  const owner = `job ${job.name} instance ${n}`;
  const inst: InstanceRecord = {
    number: n,
    clusterId,
    ip: {
      v4: addresses.allocateV4(tx, owner),
      v6: addresses.allocateV6(tx, 'instance', owner),
    },
  };
  job.instances[n] = inst;
  tx.put(`job/${id}`, job as unknown as Json);
  for (const a of [inst.ip.v4, inst.ip.v6]) tx.put(`ip/${a}`, { job: id, role: 'instance', instance: n });
  return inst;
}

/** Removes instance n (-1: all instances) of job id and releases its addresses. */
export function removeInstance(tx: Tx, addresses: RootAddresses, id: string, n: number): string[] {
  const job = requireJob(tx, id);
  const victims = n === -1 ? Object.values(job.instances) : [job.instances[n]];
  const clusters = new Set<string>();
  for (const inst of victims) {
    if (!inst) throw new NotFoundError(`job ${job.name} has no instance ${n}`);
    dropInstance(tx, addresses, job, inst);
    for (const c of enqueue(tx, job.name, inst.number, 'UNDEPLOYMENT')) clusters.add(c);
  }
  tx.put(`job/${id}`, job as unknown as Json);
  return [...clusters];
}

/**
 * Records where instances run (reported by the cluster after a node deployed them). A `reporter` (the
 * cluster the call provably comes from) may report only instances scheduled on it, on its own workers.
 */
export function updateDeployStatus(
  tx: Tx,
  jobId: string,
  instances: readonly DeployedInstance[],
  reporter?: string,
): string[] {
  const job = requireJob(tx, jobId);
  const clusters = new Set<string>();
  for (const d of instances) {
    const inst = job.instances[d.instance_number];
    if (!inst) throw new NotFoundError(`job ${job.name} has no scheduled instance ${d.instance_number}`);
    if (reporter !== undefined) {
      if (inst.clusterId !== reporter)
        throw new ForbiddenError(
          `cluster ${reporter} may not report instance ${d.instance_number} of ${job.name}: it is scheduled on cluster ${inst.clusterId}`,
        );
      if (d.worker_id === undefined || !tx.get(`worker/${reporter}/${d.worker_id}`))
        throw new ForbiddenError(
          `cluster ${reporter} has no worker ${d.worker_id ?? '(none named)'}: instances run on its own workers`,
        );
    }
    inst.namespaceIp = canonical(d.namespace_ip, 'namespace_ip');
    if (d.namespace_ip_v6 && d.namespace_ip_v6 !== '<nil>') {
      inst.namespaceIpV6 = canonical(d.namespace_ip_v6, 'namespace_ip_v6');
    }
    inst.hostIp = canonical(d.host_ip, 'host_ip');
    inst.hostPort = Number(d.host_port);
    if (d.wg_public_key !== undefined) inst.wgPublicKey = d.wg_public_key;
    else delete inst.wgPublicKey;
    if (d.worker_id) inst.workerId = d.worker_id;
    for (const c of enqueue(tx, job.name, inst.number, 'DEPLOYMENT')) clusters.add(c);
  }
  tx.put(`job/${jobId}`, job as unknown as Json);
  return [...clusters];
}

/** Removes an instance from the job record and frees its addresses (the caller stores the job). */
export function dropInstance(tx: Tx, addresses: RootAddresses, job: JobRecord, inst: InstanceRecord): void {
  for (const a of [inst.ip.v4, inst.ip.v6]) {
    addresses.release(tx, a);
    tx.delete(`ip/${a}`);
  }
  delete job.instances[inst.number];
}

function canonical(text: string, what: string): string {
  const ip = IpAddress.tryParse(text);
  if (!ip) throw new InvalidInputError(`${what} ${JSON.stringify(text)} is not an IP address`);
  return ip.toString();
}
