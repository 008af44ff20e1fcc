/**
 * @module dataplane/snapshot
 * Everything the data plane knows about the node and its services, as one immutable value: the node's
 * control side builds it from its service tables and hands it over whole; the proxy swaps it in between
 * batches (tailscale's packet filter, built by the control side and replaced behind one pointer). The data
 * path never calls back into the control plane for a piece of it and never sees half an update; what changed
 * is found by comparing the old snapshot with the new one.
 *
 * Lookups take raw network-order address bytes (4 or 16), so the data path builds no strings for IPv4.
 * Instance records are shared between snapshots while they do not change: the same object in two snapshots is
 * the same instance with the same details, so a refresh that changes nothing changes nothing for the flows.
 */
import type { Cidr } from '../addressing/cidr.ts';

/** One instance of a service, as the data plane routes to it. Immutable. */
export interface Instance {
  /** Job name app.appns.service.servicens. */
  readonly job: string;
  readonly number: number;
  /** Namespace addresses (the real ones behind the semantic ones), 4 and 16 bytes; null when absent. */
  readonly nsip4: Uint8Array | null;
  readonly nsip6: Uint8Array | null;
  /** The instance's own semantic addresses (what replies from it carry as source on the wire). */
  readonly instanceIp4: Uint8Array | null;
  readonly instanceIp6: Uint8Array | null;
  /** The node's tunnel endpoint (18 bytes: IPv6 or v4-mapped address + port). */
  readonly endpoint: Buffer;
  /** The WireGuard public key of that node (32 bytes); null for a node without one (an upstream NetManager). */
  readonly key: Uint8Array | null;
  /** True when it runs on this node (delivered through the TUN, not the tunnel). */
  readonly local: boolean;
  /** Cluster the instance belongs to (for Closest before any RTT is measured). */
  readonly cluster: string;
}

/** Policy of a semantic address (reference section 9: "RR", "Closest", everything else: the instance). */
export type AddressKind = 'rr' | 'closest' | 'instance';

/** A service's instances, shared by all its addresses. */
export interface Service {
  readonly job: string;
  /** Its instances, in a stable order (by number). */
  readonly instances: readonly Instance[];
}

/** What a semantic address stands for. */
export interface AddressTarget {
  readonly kind: AddressKind;
  readonly service: Service;
  /** For kind 'instance': the instance the address names. */
  readonly instance?: Instance;
}

/** One semantic address of a service, for the builder. */
export interface ServiceAddress {
  readonly kind: AddressKind;
  /** 4 or 16 network-order bytes. */
  readonly address: Uint8Array;
  /** For kind 'instance': one of the service's instances. */
  readonly instance?: Instance;
}

/** What a snapshot is built from. */
export interface SnapshotSpec {
  /** Increases with every snapshot a producer builds; the data plane shows the one it uses. */
  readonly generation: number;
  /** This node's namespace subnetworks (v4 /26, v6 /120): tunnelled packets must be addressed into them. */
  readonly localSubnets: readonly Cidr[];
  /** This node's cluster ID ('' while unknown). */
  readonly cluster: string;
  readonly services: ReadonlyArray<{
    readonly service: Service;
    readonly addresses: readonly ServiceAddress[];
  }>;
  /**
   * Addresses the control plane answered as unknown, with the generation of the snapshot that first carried
   * the answer (packets that waited for them since before that generation are dropped).
   */
  readonly unknown?: ReadonlyArray<{ readonly address: Uint8Array; readonly generation: number }>;
  /** Whether the tunnel may carry plaintext to and from peers without a key (the cluster's policy; default no). */
  readonly allowPlaintextPeers?: boolean;
}

/** A peer node of the tunnel: where its instances are reached, and its key. */
export interface Peer {
  /** 18-byte tunnel endpoint. */
  readonly endpoint: Buffer;
  /** 32-byte WireGuard public key; null: the peer speaks plaintext (an upstream NetManager). */
  readonly key: Uint8Array | null;
}

/** The services of a snapshot, indexed; shared by snapshots that differ only in their negative answers. */
class ServiceIndex {
  readonly services: readonly Service[];
  readonly byAddress = new Map<number | string, AddressTarget>();
  readonly byNamespace = new Map<number | string, Instance>();
  readonly byJob = new Map<string, Service>();
  private peerList: readonly Peer[] | undefined;
  /** Endpoints left out of peers() for conflicting keys. */
  peerConflicts = 0;

  constructor(services: SnapshotSpec['services']) {
    this.services = Object.freeze(services.map((s) => s.service));
    // later services win an address that two claim (the table lists the newest answer last)
    for (const { service, addresses } of services) {
      this.byJob.set(service.job, service);
      for (const a of addresses) {
        const target: AddressTarget =
          a.kind === 'instance' && a.instance
            ? { kind: a.kind, service, instance: a.instance }
            : { kind: a.kind, service };
        this.byAddress.set(addressKey(a.address, 0, a.address.length), target);
      }
      for (const inst of service.instances) {
        if (!inst.local) continue;
        for (const ns of [inst.nsip4, inst.nsip6])
          if (ns) this.byNamespace.set(addressKey(ns, 0, ns.length), inst);
      }
    }
  }

  /** The remote nodes the instances run on, one per endpoint (made once, on first use). */
  peers(): readonly Peer[] {
    if (this.peerList) return this.peerList;
    // One key per endpoint and one endpoint per key, or the peer is left out: two keys at one endpoint (or one
    // key at two) means a record lies about another node (or a rotation is half-way: its next report settles
    // it), and guessing would hand one node's traffic to the other. An endpoint seen with a key is never
    // taken for a plaintext one.
    const byEndpoint = new Map<string, { endpoint: Buffer; key: Uint8Array | null; conflict: boolean }>();
    const endpointsOfKey = new Map<string, Set<string>>();
    for (const service of this.services)
      for (const inst of service.instances) {
        if (inst.local) continue;
        const k = inst.endpoint.toString('latin1');
        const seen = byEndpoint.get(k);
        if (!seen) byEndpoint.set(k, { endpoint: inst.endpoint, key: inst.key, conflict: false });
        else if (seen.key === null) seen.key = inst.key;
        else if (inst.key !== null && Buffer.compare(seen.key, inst.key) !== 0) seen.conflict = true;
        if (inst.key !== null) {
          const kt = Buffer.from(inst.key).toString('latin1');
          let set = endpointsOfKey.get(kt);
          if (!set) endpointsOfKey.set(kt, (set = new Set()));
          set.add(k);
        }
      }
    for (const set of endpointsOfKey.values())
      if (set.size > 1) for (const k of set) byEndpoint.get(k)!.conflict = true;
    const peers: Peer[] = [];
    let conflicts = 0;
    for (const p of byEndpoint.values()) {
      if (p.conflict) conflicts++;
      else peers.push({ endpoint: p.endpoint, key: p.key });
    }
    this.peerConflicts = conflicts;
    return (this.peerList = Object.freeze(peers));
  }
}

export class ServiceSnapshot {
  /** The snapshot before the node knows anything: no subnetworks, no services. */
  static readonly EMPTY = new ServiceSnapshot({ generation: 0, localSubnets: [], cluster: '', services: [] });

  readonly generation: number;
  /** As given (the producer passes the same array while the subnetworks do not change). */
  readonly localSubnets: readonly Cidr[];
  readonly cluster: string;
  readonly allowPlaintextPeers: boolean;
  private readonly index: ServiceIndex;
  private readonly unknownSince = new Map<number | string, number>();

  /** Builds the snapshot; with `sameServicesAs`, its services (and their indexes) are taken from that one instead. */
  constructor(spec: SnapshotSpec, sameServicesAs?: ServiceSnapshot) {
    this.generation = spec.generation;
    this.localSubnets = spec.localSubnets;
    this.cluster = spec.cluster;
    this.allowPlaintextPeers = spec.allowPlaintextPeers === true;
    this.index = sameServicesAs?.index ?? new ServiceIndex(spec.services);
    for (const u of spec.unknown ?? []) {
      const key = addressKey(u.address, 0, u.address.length);
      if (!this.index.byAddress.has(key)) this.unknownSince.set(key, u.generation);
    }
  }

  /** Every service, in the producer's order. */
  get services(): readonly Service[] {
    return this.index.services;
  }

  /** The peer nodes of the tunnel (every remote endpoint an instance runs behind, with its key). */
  peers(): readonly Peer[] {
    return this.index.peers();
  }

  /** Endpoints peers() leaves out because their records disagree about keys. */
  get peerConflicts(): number {
    this.index.peers();
    return this.index.peerConflicts;
  }

  /** The target of the semantic address at buf[offset, offset + length) (4 or 16 bytes); undefined if unknown. */
  target(buf: Uint8Array, offset: number, length: number): AddressTarget | undefined {
    return this.index.byAddress.get(addressKey(buf, offset, length));
  }

  /** The local instance whose namespace address is at buf[offset, offset + length); undefined if none. */
  localByNamespace(buf: Uint8Array, offset: number, length: number): Instance | undefined {
    return this.index.byNamespace.get(addressKey(buf, offset, length));
  }

  /** The instance `number` of `job` in this snapshot. */
  instance(job: string, number: number): Instance | undefined {
    return this.index.byJob.get(job)?.instances.find((i) => i.number === number);
  }

  /** True when this exact record is one of the snapshot's instances (unchanged since it was made). */
  has(inst: Instance): boolean {
    return this.index.byJob.get(inst.job)?.instances.includes(inst) ?? false;
  }

  /**
   * The generation in which the control plane answered that the address at `key` (see addressKey) is unknown;
   * undefined when it has no such answer.
   */
  unknownSinceGeneration(key: number | string): number | undefined {
    return this.unknownSince.get(key);
  }

  /** The target under an address key (see addressKey). */
  targetByKey(key: number | string): AddressTarget | undefined {
    return this.index.byAddress.get(key);
  }

  /** The local instance under a namespace address key (see addressKey). */
  localByKey(key: number | string): Instance | undefined {
    return this.index.byNamespace.get(key);
  }
}

/**
 * A Map key for 4 or 16 address bytes: a number for IPv4 (no allocation), a 16-character binary string for
 * IPv6 (not text: one char per byte).
 */
export function addressKey(buf: Uint8Array, offset: number, length: number): number | string {
  if (length === 4)
    return (
      ((buf[offset]! << 24) | (buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!) >>> 0
    );
  let s = '';
  for (let i = 0; i < length; i++) s += String.fromCharCode(buf[offset + i]!);
  return s;
}

/** The instance's namespace address in the family of `length` (4 or 16 bytes), or null. */
export function namespaceAddress(i: Instance, length: number): Uint8Array | null {
  return length === 4 ? i.nsip4 : i.nsip6;
}

/** The instance's own semantic address in the family of `length` (4 or 16 bytes), or null. */
export function instanceAddress(i: Instance, length: number): Uint8Array | null {
  return length === 4 ? i.instanceIp4 : i.instanceIp6;
}
