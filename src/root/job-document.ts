/**
 * @module root/job-document
 * The wire views of a job record: upstream's job document (what clusters cache and the API returns) and
 * its public netinfo view.
 */
import { IP_TYPE } from '../protocol/mqtt.ts';
import type { JobDocument, ServiceNetinfo } from '../protocol/root-api.ts';
import type { JobRecord } from './records.ts';

/** Upstream's job document: descriptor fields, then identity, ServiceIPs and instances. */
export function toDocument(job: JobRecord): JobDocument {
  return {
    ...job.descriptor,
    _id: job.id,
    system_job_id: job.id,
    job_name: job.name,
    service_ip_list: [
      { IpType: IP_TYPE.roundRobin, Address: job.rr.v4, Address_v6: job.rr.v6 },
      { IpType: IP_TYPE.closest, Address: job.closest.v4, Address_v6: job.closest.v6 },
    ],
    instance_list: Object.values(job.instances)
      .sort((a, b) => a.number - b.number)
      .map((i) => ({
        instance_number: i.number,
        instance_ip: i.ip.v4,
        instance_ip_v6: i.ip.v6,
        cluster_id: i.clusterId,
        ...(i.namespaceIp !== undefined ? { namespace_ip: i.namespaceIp } : {}),
        ...(i.namespaceIpV6 !== undefined ? { namespace_ip_v6: i.namespaceIpV6 } : {}),
        ...(i.hostIp !== undefined ? { host_ip: i.hostIp } : {}),
        ...(i.hostPort !== undefined ? { host_port: i.hostPort } : {}),
        ...(i.wgPublicKey !== undefined ? { wg_public_key: i.wgPublicKey } : {}),
        ...(i.workerId !== undefined ? { worker_id: i.workerId } : {}),
      })),
  };
}

/** Upstream's public netinfo view. */
export function toNetinfo(job: JobRecord): ServiceNetinfo {
  const [app, appNs, svc, svcNs] = job.name.split('.') as [string, string, string, string];
  const doc = toDocument(job);
  return {
    system_job_id: job.id,
    app_name: app,
    app_ns: appNs,
    service_name: svc,
    service_ns: svcNs,
    job_name: job.name,
    service_ip_list: doc.service_ip_list,
    instance_list: doc.instance_list.map((i) => ({
      cluster_id: i.cluster_id,
      instance_number: i.instance_number,
      instance_ip: i.instance_ip,
      instance_ip_v6: i.instance_ip_v6,
    })),
  };
}
