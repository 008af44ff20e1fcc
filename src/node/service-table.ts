/**
 * @module node/service-table
 * The node's service table: what the cluster answered to its table queries, indexed the way ProxyTUN asks:
 * by semantic address (ServiceIP or instance IP, as raw bytes) and, for the instances on this node, by
 * namespace address. A job's entries are replaced as a whole on every answer (upstream's refresh semantics);
 * instances that disappear are marked dead and reported, so the proxy can move or reset their flows.
 *
 * Entries come from the wire and are validated one by one: an invalid instance (no namespace address, bad
 * address, wrong types) is skipped and counted, never a reason to drop the whole answer.
 */
import { IpAddress } from '../addressing/ip.ts';
import type {
  AddressKind,
  AddressTarget,
  Directory,
  DirectoryEvents,
  ServiceInstance,
  ServiceTargets,
} from '../dataplane/proxy/directory.ts';
import { addressKey } from '../dataplane/proxy/directory.ts';
import { endpoint } from '../dataplane/tunnel/tunnel.ts';
import { parsers, type TableInstance } from '../protocol/mqtt.ts';
import { isJobName } from '../protocol/names.ts';

/** How this node recognises its own instances in answers. */
export interface NodeIdentity {
  workerId: string;
  /** host_ip / host_port this node announces. */
  hostIp: string;
  hostPort: number;
}

interface JobEntry {
  job: string;
  targets: ServiceTargets;
  /** Address keys this job owns in the index. */
  keys: Array<number | string>;
  localKeys: Array<number | string>;
}

export class ServiceTable implements Pick<Directory, 'target' | 'localByNamespace'> {
  private readonly jobs = new Map<string, JobEntry>();
  private readonly byAddress = new Map<number | string, AddressTarget>();
  private readonly localByNs = new Map<number | string, ServiceInstance>();
  /** Instances skipped because they were invalid. */
  invalidEntries = 0;
  /** This node's cluster ID, as the cluster reports it on this node's own instances ('' until one is seen). */
  ownCluster = '';
  private events: DirectoryEvents | undefined;

  constructor(private readonly self: NodeIdentity) {}

  /** Who hears about changes (the proxy). */
  setEvents(events: DirectoryEvents): void {
    this.events = events;
  }

  target(buf: Uint8Array, offset: number, length: number): AddressTarget | undefined {
    return this.byAddress.get(addressKey(buf, offset, length));
  }

  localByNamespace(buf: Uint8Array, offset: number, length: number): ServiceInstance | undefined {
    return this.localByNs.get(addressKey(buf, offset, length));
  }

  /** The target of an address given as text (control path). */
  targetOf(address: string): AddressTarget | undefined {
    const ip = IpAddress.tryParse(address);
    if (!ip) return undefined;
    const b = ip.toBytes();
    return this.target(b, 0, b.length);
  }

  has(job: string): boolean {
    return this.jobs.has(job);
  }

  jobNames(): string[] {
    return [...this.jobs.keys()];
  }

  instancesOf(job: string): readonly ServiceInstance[] {
    return this.jobs.get(job)?.targets.instances ?? [];
  }

  /**
   * Replaces the job's entries with the instances of a table-query answer (raw `instance_list` items).
   * Returns the addresses that became known.
   */
  apply(job: string, rawInstances: readonly unknown[]): string[] {
    if (!isJobName(job)) return [];
    const instances: ServiceInstance[] = [];
    const addresses: Array<{ kind: AddressKind; bytes: Uint8Array; instance?: ServiceInstance }> = [];
    const seen = new Set<string>();
    const old = this.jobs.get(job);
    const oldByKey = new Map((old?.targets.instances ?? []).map((i) => [instanceKey(i), i]));
    for (const raw of rawInstances) {
      if (!parsers.tableInstance.check(raw)) {
        this.invalidEntries++;
        continue;
      }
      const inst = this.toInstance(job, raw);
      if (!inst) {
        this.invalidEntries++;
        continue;
      }
      // keep the same record when nothing changed, so flows and round-robin state stay attached
      const previous = oldByKey.get(instanceKey(inst));
      const chosen = previous && sameInstance(previous, inst) ? previous : inst;
      instances.push(chosen);
      for (const s of raw.service_ip) {
        const kind = kindOf(s.IpType);
        for (const text of [s.Address, s.Address_v6]) {
          const ip = text ? IpAddress.tryParse(text) : undefined;
          if (!ip) continue;
          const k = `${kind}/${ip.toString()}`;
          if (kind === 'instance' || !seen.has(k)) {
            seen.add(k);
            addresses.push({
              kind,
              bytes: ip.toBytes(),
              ...(kind === 'instance' ? { instance: chosen } : {}),
            });
          }
        }
      }
    }
    instances.sort((a, b) => a.number - b.number);
    const gone = (old?.targets.instances ?? []).filter((i) => !instances.includes(i));
    const before = new Map<number | string, ServiceInstance>();
    for (const k of old?.localKeys ?? []) {
      const inst = this.localByNs.get(k);
      if (inst) before.set(k, inst);
    }
    this.unindex(old);
    const targets: ServiceTargets = { job, instances };
    const entry: JobEntry = { job, targets, keys: [], localKeys: [] };
    const known: string[] = [];
    for (const a of addresses) {
      const key = addressKey(a.bytes, 0, a.bytes.length);
      entry.keys.push(key);
      this.byAddress.set(key, {
        kind: a.kind,
        service: targets,
        ...(a.instance ? { instance: a.instance } : {}),
      });
      known.push(IpAddress.fromBytes(a.bytes).toString());
    }
    const localChanged: string[] = [];
    for (const inst of instances) {
      if (!inst.local) continue;
      if (inst.cluster) this.ownCluster = inst.cluster;
      for (const ns of [inst.nsip4, inst.nsip6]) {
        if (!ns) continue;
        const key = addressKey(ns, 0, ns.length);
        entry.localKeys.push(key);
        if ((this.localByNs.get(key) ?? before.get(key)) !== inst)
          localChanged.push(IpAddress.fromBytes(ns).toString());
        this.localByNs.set(key, inst);
      }
    }
    this.jobs.set(job, entry);
    for (const i of gone) i.alive = false;
    if (gone.length) this.events?.instancesGone(gone);
    for (const a of localChanged) this.events?.localChanged(a);
    return known;
  }

  /** Forgets a job (interest expired): its instances die. */
  remove(job: string): void {
    const old = this.jobs.get(job);
    if (!old) return;
    this.unindex(old);
    this.jobs.delete(job);
    for (const i of old.targets.instances) i.alive = false;
    if (old.targets.instances.length) this.events?.instancesGone(old.targets.instances);
  }

  private unindex(entry: JobEntry | undefined): void {
    if (!entry) return;
    for (const k of entry.keys)
      if (this.byAddress.get(k)?.service === entry.targets) this.byAddress.delete(k);
    for (const k of entry.localKeys) {
      const inst = this.localByNs.get(k);
      if (inst && entry.targets.instances.includes(inst)) this.localByNs.delete(k);
    }
  }

  private toInstance(job: string, t: TableInstance): ServiceInstance | undefined {
    const nsip = IpAddress.tryParse(t.namespace_ip);
    if (!nsip || nsip.family !== 4) return undefined;
    const nsip6 = t.namespace_ip_v6 ? IpAddress.tryParse(t.namespace_ip_v6) : undefined;
    const host = IpAddress.tryParse(t.host_ip);
    if (!host || t.host_port <= 0) return undefined;
    let ip4: Uint8Array | null = null;
    let ip6: Uint8Array | null = null;
    const own = t.service_ip.find((s) => kindOf(s.IpType) === 'instance');
    for (const text of [t.instance_ip, t.instance_ip_v6, own?.Address, own?.Address_v6]) {
      const ip = text ? IpAddress.tryParse(text) : undefined;
      if (ip?.family === 4) ip4 ??= ip.toBytes();
      if (ip?.family === 6) ip6 ??= ip.toBytes();
    }
    const local =
      (t.worker_id !== undefined && t.worker_id === this.self.workerId) ||
      (host.toString() === this.self.hostIp && t.host_port === this.self.hostPort);
    return {
      job,
      number: t.instance_number,
      nsip4: nsip.toBytes(),
      nsip6: nsip6?.family === 6 ? nsip6.toBytes() : null,
      instanceIp4: ip4,
      instanceIp6: ip6,
      endpoint: endpoint(host.toString(), t.host_port),
      local,
      cluster: t.cluster_id ?? '',
      alive: true,
    };
  }
}

/** Upstream's IpType mapping: "RR" round robin, "Closest" closest, anything else names the instance. */
export function kindOf(ipType: string): AddressKind {
  const t = ipType.toLowerCase();
  if (t === 'rr') return 'rr';
  if (t === 'closest') return 'closest';
  return 'instance';
}

function instanceKey(i: ServiceInstance): string {
  return `${i.number}`;
}

function sameInstance(a: ServiceInstance, b: ServiceInstance): boolean {
  const eq = (x: Uint8Array | null, y: Uint8Array | null) =>
    x === null || y === null ? x === y : Buffer.compare(x, y) === 0;
  return (
    a.local === b.local &&
    a.cluster === b.cluster &&
    eq(a.nsip4, b.nsip4) &&
    eq(a.nsip6, b.nsip6) &&
    eq(a.instanceIp4, b.instanceIp4) &&
    eq(a.instanceIp6, b.instanceIp6) &&
    Buffer.compare(a.endpoint, b.endpoint) === 0
  );
}
