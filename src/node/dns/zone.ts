/**
 * @module node/dns/zone
 * The node's DNS names (issue 13), derived from the service tables: pure functions, no I/O. A job
 * `app.appns.service.servicens` has
 *   service.servicens.app.appns.oakestra              its RR_IP (the default name)
 *   service.servicens.app.appns.rr.oakestra           its RR_IP
 *   service.servicens.app.appns.closest.oakestra      its Closest_IP
 *   <n>.instance.service.servicens.app.appns.oakestra instance n's instance IP
 * with A and AAAA records from the dual-stack addresses, and PTR records for every address the tables hold:
 * ServiceIPs and instance IPs name their names above, namespace addresses their instance's name. Names are
 * lower case (DNS is case-insensitive; job-name parts are letters and digits). The zone is a plain value
 * (structured-clone safe), so a server in a worker thread can index it.
 */
import { IpAddress } from '../../addressing/ip.ts';
import type { Instance, ServiceAddress } from '../../dataplane/snapshot.ts';
import { isJobName } from '../../protocol/names.ts';

/** The zone every name lives in. */
export const ZONE = 'oakestra';
/** TTLs (s): ServiceIPs are stable; instance names change as instances come and go; negative answers. */
export const SERVICE_TTL = 30;
export const INSTANCE_TTL = 5;
export const NEGATIVE_TTL = 1;

/** A job as the service table holds it. */
export interface ZoneService {
  job: string;
  instances: readonly Instance[];
  addresses: readonly ServiceAddress[];
}

export interface ZoneRecord {
  a: string[];
  aaaa: string[];
  ttl: number;
  /** The (lower-cased) job the name belongs to. */
  job: string;
}

/** What a server answers from: names, the jobs they come from, and reverse names. */
export interface ZoneData {
  generation: number;
  /** Lower-cased job names the tables hold (with or without instances). */
  jobs: string[];
  /** Fully qualified name (lower case, no trailing dot) -> its records. */
  names: Array<[name: string, record: ZoneRecord]>;
  /** Address (canonical text) -> name, with the PTR's TTL. */
  ptr: Array<[address: string, name: string, ttl: number]>;
}

/** The labels of a job's service names: service.servicens.app.appns (lower case). */
function serviceLabels(job: string): string {
  const [app, appns, service, servicens] = job.toLowerCase().split('.');
  return `${service}.${servicens}.${app}.${appns}`;
}

/** The default name of a job (its RR_IP). */
export function serviceName(job: string): string {
  return `${serviceLabels(job)}.${ZONE}`;
}

/** The name of instance n of a job. */
export function instanceName(job: string, n: number): string {
  return `${n}.instance.${serviceLabels(job)}.${ZONE}`;
}

/**
 * The search list for an instance of `job`: its own service namespace first (a sibling service `web` in it
 * is `web`), then its application (`web.<servicens>`).
 */
export function searchDomains(job: string): string[] {
  const [app, appns, , servicens] = job.toLowerCase().split('.');
  return [`${servicens}.${app}.${appns}.${ZONE}`, `${app}.${appns}.${ZONE}`];
}

/**
 * The job a name under oakestra. belongs to (lower-cased), or undefined when the name has none of the shapes
 * above. `name` has no trailing dot; case does not matter.
 */
export function jobOfName(name: string): string | undefined {
  const labels = name.toLowerCase().split('.');
  if (labels.pop() !== ZONE) return undefined;
  let parts: string[];
  if (labels.length === 4) parts = labels;
  else if (labels.length === 5 && (labels[4] === 'rr' || labels[4] === 'closest')) parts = labels.slice(0, 4);
  else if (labels.length === 6 && labels[1] === 'instance' && /^(0|[1-9]\d{0,8})$/.test(labels[0]!))
    parts = labels.slice(2);
  else return undefined;
  const [service, servicens, app, appns] = parts;
  const job = `${app}.${appns}.${service}.${servicens}`;
  return isJobName(job) ? job : undefined;
}

/** The zone of the tables' services; `generation` names it (e.g. the table's servicesVersion). */
export function buildZone(services: readonly ZoneService[], generation: number): ZoneData {
  const names = new Map<string, ZoneRecord>();
  const ptr = new Map<string, [string, number]>();
  const jobs: string[] = [];
  const text = (b: Uint8Array | null) => (b ? IpAddress.fromBytes(b).toString() : undefined);
  const add = (name: string, job: string, ttl: number, address: string | undefined) => {
    if (address === undefined) return;
    let rec = names.get(name);
    if (!rec) names.set(name, (rec = { a: [], aaaa: [], ttl, job }));
    const list = address.includes(':') ? rec.aaaa : rec.a;
    if (!list.includes(address)) list.push(address);
  };
  for (const s of services) {
    const job = s.job.toLowerCase();
    jobs.push(job);
    // a job without instances has no names: nothing answers at its addresses
    if (s.instances.length === 0) continue;
    const base = serviceName(job);
    for (const a of s.addresses) {
      const address = text(a.address);
      if (address === undefined) continue;
      if (a.kind === 'rr') {
        add(base, job, SERVICE_TTL, address);
        add(`${serviceLabels(job)}.rr.${ZONE}`, job, SERVICE_TTL, address);
        ptr.set(address, [`${serviceLabels(job)}.rr.${ZONE}`, SERVICE_TTL]);
      } else if (a.kind === 'closest') {
        add(`${serviceLabels(job)}.closest.${ZONE}`, job, SERVICE_TTL, address);
        ptr.set(address, [`${serviceLabels(job)}.closest.${ZONE}`, SERVICE_TTL]);
      }
    }
    for (const i of s.instances) {
      const name = instanceName(job, i.number);
      for (const address of [text(i.instanceIp4), text(i.instanceIp6)]) {
        add(name, job, INSTANCE_TTL, address);
        if (address !== undefined) ptr.set(address, [name, INSTANCE_TTL]);
      }
      for (const address of [text(i.nsip4), text(i.nsip6)])
        if (address !== undefined) ptr.set(address, [name, INSTANCE_TTL]);
    }
  }
  return {
    generation,
    jobs,
    names: [...names],
    ptr: [...ptr].map(([address, [name, ttl]]) => [address, name, ttl]),
  };
}
