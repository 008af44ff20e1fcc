/**
 * @module node/service-table
 * The node's service table: what the cluster answered to its table queries, per job, and the node's own
 * facts (its subnetworks, which instances are its own). It is the control side of the data-plane boundary:
 * every change makes a new immutable ServiceSnapshot (dataplane/snapshot.ts) with the next generation, and
 * listeners hear about it once per burst of changes (in a microtask: however many answers one callback applied).
 *
 * A job's entries are replaced as a whole on every answer (upstream's refresh semantics). Instance records
 * are kept when nothing about them changed, so the data plane sees the same record and has nothing to do.
 * Entries come from the wire and are validated one by one: an invalid instance (no namespace address, bad
 * address, wrong types) is skipped and logged, never a reason to drop the whole answer.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../addressing/cidr.ts';
import { IpAddress } from '../addressing/ip.ts';
import {
  type AddressKind,
  type Instance,
  type Service,
  type ServiceAddress,
  ServiceSnapshot,
} from '../dataplane/snapshot.ts';
import { endpoint } from '../dataplane/tunnel/tunnel.ts';
import { parsers, type TableInstance } from '../protocol/mqtt.ts';
import { isJobName } from '../protocol/names.ts';

/** Who this node is: how it recognises its own instances in answers. */
export interface NodeIdentity {
  workerId: string;
  /** host_ip / host_port this node announces. */
  hostIp: string;
  hostPort: number;
  /** Its namespace subnetworks (v4 /26, v6 /120). */
  subnets: readonly Cidr[];
  /** Its cluster ID when known; else taken from the cluster_id of its own instances in answers. */
  cluster?: string;
}

/** An instance as the table keeps it: the data plane's record plus the worker the cluster reported it on. */
type TableRecord = Instance & { readonly workerId: string | undefined };

interface JobEntry {
  service: Service;
  /** The service's instances (the same array as service.instances). */
  records: readonly TableRecord[];
  addresses: ServiceAddress[];
}

const NO_SUBNETS: readonly Cidr[] = Object.freeze([]);

/** How long a negative answer ("no such address") is kept in snapshots (ms). */
const UNKNOWN_KEEP_MS = 10_000;

export class ServiceTable {
  private readonly jobs = new Map<string, JobEntry>();
  private identity: NodeIdentity | undefined;
  private unknown: Array<{ address: Uint8Array; generation: number; at: number }> = [];
  private generation = 0;
  private plaintextPeers = false;
  private current = ServiceSnapshot.EMPTY;
  /** Something changed since `current`; `servicesChanged`: more than the negative answers. */
  private dirty = false;
  private servicesChanged = false;
  /** The last cluster ID seen on this node's own instances. */
  private seenCluster = '';
  private notifying = false;
  private version = 0;
  private readonly listeners = new Set<(snapshot: ServiceSnapshot) => void>();

  constructor(
    private readonly log?: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Sets who the node is (at registration); instances are re-classified as local or remote. */
  setIdentity(identity: NodeIdentity): void {
    this.identity = { ...identity, subnets: Object.freeze([...identity.subnets]) };
    for (const [job, entry] of this.jobs) {
      const next = this.reclassify(entry);
      this.jobs.set(job, next);
      for (const i of next.records) if (i.local && i.cluster) this.seenCluster = i.cluster;
    }
    this.changed(true);
  }

  /** The cluster's policy for peers without a WireGuard key (carried by every snapshot). */
  setPlaintextPeers(allowed: boolean): void {
    if (allowed === this.plaintextPeers) return;
    this.plaintextPeers = allowed;
    this.changed(false);
  }

  /** Calls `listener` with the newest snapshot after changes (once per burst, from a microtask). */
  onChange(listener: (snapshot: ServiceSnapshot) => void): void {
    this.listeners.add(listener);
  }

  /** The snapshot of the table as it is now. */
  snapshot(): ServiceSnapshot {
    if (this.dirty) {
      const cutoff = this.now() - UNKNOWN_KEEP_MS;
      this.unknown = this.unknown.filter((u) => u.at >= cutoff);
      this.current = new ServiceSnapshot(
        {
          generation: ++this.generation,
          localSubnets: this.identity?.subnets ?? NO_SUBNETS,
          cluster: this.ownCluster(),
          services: [...this.jobs.values()],
          unknown: this.unknown,
          allowPlaintextPeers: this.plaintextPeers,
        },
        // only negative answers came (a scan of unknown addresses): the services and their indexes stay
        this.servicesChanged ? undefined : this.current,
      );
      this.dirty = false;
      this.servicesChanged = false;
    }
    return this.current;
  }

  /** Bumped whenever the services change (not for negative answers alone): whoever derives from them rebuilds. */
  get servicesVersion(): number {
    return this.version;
  }

  /** Every job with its instances and semantic addresses, oldest answer first (the DNS zone is built from it). */
  services(): Array<{ job: string; instances: readonly Instance[]; addresses: readonly ServiceAddress[] }> {
    return [...this.jobs.values()].map((e) => ({
      job: e.service.job,
      instances: e.service.instances,
      addresses: e.addresses,
    }));
  }

  jobNames(): string[] {
    return [...this.jobs.keys()];
  }

  instancesOf(job: string): readonly Instance[] {
    return this.jobs.get(job)?.service.instances ?? [];
  }

  /** Replaces the job's entries with the instances of a table-query answer (raw `instance_list` items). */
  apply(job: string, rawInstances: readonly unknown[]): void {
    if (!isJobName(job)) return;
    const old = this.jobs.get(job)?.records ?? [];
    const instances: TableRecord[] = [];
    const raws: TableInstance[] = [];
    let invalid = 0;
    for (const raw of rawInstances) {
      if (!parsers.tableInstance.check(raw)) {
        invalid++;
        continue;
      }
      const inst = this.toInstance(job, raw);
      if (!inst) {
        invalid++;
        continue;
      }
      // keep the same record when nothing changed: for the data plane nothing happened to it
      const previous = old.find((i) => i.number === inst.number);
      instances.push(previous && sameInstance(previous, inst) ? previous : inst);
      raws.push(raw);
    }
    if (invalid) this.log?.warn({ job, invalid }, 'table answer had invalid instances; they are skipped');
    const order = instances.map((_, k) => k).sort((a, b) => instances[a]!.number - instances[b]!.number);
    const records = Object.freeze(order.map((k) => instances[k]!));
    const service: Service = Object.freeze({ job, instances: records });
    const addresses: ServiceAddress[] = [];
    const seen = new Set<string>();
    for (const k of order) {
      const inst = instances[k]!;
      for (const s of raws[k]!.service_ip) {
        const kind = kindOf(s.IpType);
        for (const text of [s.Address, s.Address_v6]) {
          const ip = text ? IpAddress.tryParse(text) : undefined;
          if (!ip) continue;
          const key = `${kind}/${ip.toString()}`;
          if (kind !== 'instance' && seen.has(key)) continue;
          seen.add(key);
          addresses.push(
            kind === 'instance'
              ? { kind, address: ip.toBytes(), instance: inst }
              : { kind, address: ip.toBytes() },
          );
        }
      }
    }
    // the newest answer goes last: it wins an address another job still claims
    this.jobs.delete(job);
    this.jobs.set(job, { service, records, addresses });
    for (const i of records) if (i.local && i.cluster) this.seenCluster = i.cluster;
    this.changed(true);
  }

  /** True when the table has a target for the semantic address. */
  knows(address: IpAddress): boolean {
    const b = address.toBytes();
    return this.snapshot().target(b, 0, b.length) !== undefined;
  }

  /** Forgets a job (interest expired): its instances leave the snapshot. */
  remove(job: string): void {
    if (this.jobs.delete(job)) this.changed(true);
  }

  /** Records that the control plane knows no service at `address` (a negative answer to a question). */
  markUnknown(address: IpAddress): void {
    this.unknown.push({ address: address.toBytes(), generation: this.generation + 1, at: this.now() });
    this.changed(false);
  }

  /** This node's cluster ID: as given, else as the cluster reported it on this node's own instances ('' until then). */
  ownCluster(): string {
    return this.identity?.cluster || this.seenCluster;
  }

  /** True when the table lists the local instance with namespace address `nsip`. */
  hasLocal(nsip: IpAddress): boolean {
    const b = nsip.toBytes();
    return this.snapshot().localByNamespace(b, 0, b.length) !== undefined;
  }

  /**
   * Resolves true once the table lists a local instance at `nsip` (at once if it does), false after
   * timeoutMs or when `signal` aborts.
   */
  whenLocal(nsip: IpAddress, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.hasLocal(nsip)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        signal?.removeEventListener('abort', abort);
        resolve(ok);
      };
      const check = () => {
        if (this.hasLocal(nsip)) done(true);
      };
      const abort = () => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.listeners.add(check);
      signal?.addEventListener('abort', abort);
    });
  }

  private changed(services: boolean): void {
    this.dirty = true;
    if (services) {
      this.servicesChanged = true;
      this.version++;
    }
    if (this.notifying) return;
    this.notifying = true;
    queueMicrotask(() => {
      this.notifying = false;
      const snapshot = this.snapshot();
      for (const l of [...this.listeners]) l(snapshot);
    });
  }

  private reclassify(entry: JobEntry): JobEntry {
    const map = new Map<Instance, TableRecord>();
    const records = Object.freeze(
      entry.records.map((i) => {
        const local = this.isLocal(i.endpoint, i.workerId);
        const next = local === i.local ? i : Object.freeze({ ...i, local });
        map.set(i, next);
        return next;
      }),
    );
    const service: Service = Object.freeze({ job: entry.service.job, instances: records });
    const addresses = entry.addresses.map((a) => (a.instance ? { ...a, instance: map.get(a.instance)! } : a));
    return { service, records, addresses };
  }

  private isLocal(end: Buffer, workerId: string | undefined): boolean {
    const self = this.identity;
    if (!self) return false;
    return (
      (workerId !== undefined && workerId === self.workerId) ||
      end.equals(endpoint(self.hostIp, self.hostPort))
    );
  }

  private toInstance(job: string, t: TableInstance): TableRecord | undefined {
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
    const end = endpoint(host.toString(), t.host_port);
    const key = t.wg_public_key !== undefined ? Buffer.from(t.wg_public_key, 'base64') : null;
    return Object.freeze({
      job,
      number: t.instance_number,
      nsip4: nsip.toBytes(),
      nsip6: nsip6?.family === 6 ? nsip6.toBytes() : null,
      instanceIp4: ip4,
      instanceIp6: ip6,
      endpoint: end,
      key: key?.length === 32 ? new Uint8Array(key) : null,
      local: this.isLocal(end, t.worker_id),
      cluster: t.cluster_id ?? '',
      workerId: t.worker_id,
    });
  }
}

/** Upstream's IpType mapping: "RR" round robin, "Closest" closest, anything else names the instance. */
export function kindOf(ipType: string): AddressKind {
  const t = ipType.toLowerCase();
  if (t === 'rr') return 'rr';
  if (t === 'closest') return 'closest';
  return 'instance';
}

function sameInstance(a: Instance, b: Instance): boolean {
  const eq = (x: Uint8Array | null, y: Uint8Array | null) =>
    x === null || y === null ? x === y : Buffer.compare(x, y) === 0;
  return (
    a.local === b.local &&
    a.cluster === b.cluster &&
    eq(a.nsip4, b.nsip4) &&
    eq(a.nsip6, b.nsip6) &&
    eq(a.instanceIp4, b.instanceIp4) &&
    eq(a.instanceIp6, b.instanceIp6) &&
    eq(a.key, b.key) &&
    Buffer.compare(a.endpoint, b.endpoint) === 0
  );
}
