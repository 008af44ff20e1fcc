/**
 * @module dataplane/proxy/policy
 * Balancing policies: which instance a new flow to a semantic address goes to. One explicit map from the
 * address's kind to its policy; each policy sees the service's live instances and per-service state.
 *
 * - round robin (RR_IP): the next live instance after the one the previous new flow got: true round robin,
 *   per new flow (upstream's "RR" was a seeded random choice).
 * - closest (Closest_IP): an instance on this node if there is one, else the instance with the lowest measured
 *   round-trip time from this node. Instances within a tie band of the best (20% + 1 ms) share new flows round robin;
 *   the instances chosen last stay chosen while they are within a wider hysteresis band (50% + 2 ms) of the
 *   best, so near-equal instances do not flap. Before any measurement: one in this node's cluster, then
 *   round robin over all.
 * - instance (instance IP): exactly the named instance.
 *
 * `InstanceChooser` puts a policy in front of liveness: it offers a policy only the instances that have an
 * address of the packet's family and, when it can, only those on peers the probes did not find unreachable.
 */
import {
  type AddressKind,
  type AddressTarget,
  type Instance,
  instanceAddress,
  namespaceAddress,
} from '../snapshot.ts';
import type { Prober } from './prober.ts';

export interface PolicyContext {
  /** The cluster of this node. */
  readonly cluster: string;
  /** The round-trip time estimate (ms, the prober's minimum of its last samples) to the instance's node; undefined if unmeasured. */
  rtt(instance: Instance): number | undefined;
}

/** Instances this close to the best share its flows. */
const TIE_RATIO = 0.2;
const TIE_MS = 1;
/** The previous choice stays while it is this close to the best. */
const HYSTERESIS_RATIO = 0.5;
const HYSTERESIS_MS = 2;

export interface Policy {
  /** The instance for a new flow to target, or undefined when no live instance fits. */
  choose(target: AddressTarget, ctx: PolicyContext): Instance | undefined;
}

/** Round-robin cursors per job; they survive table refreshes because they are keyed by job name. */
export class RoundRobin implements Policy {
  private readonly cursors = new Map<string, number>();

  choose(target: AddressTarget): Instance | undefined {
    return this.next(target.service.job, target.service.instances);
  }

  /** The next of `candidates` for job (shared with other policies that fall back to round robin). */
  next(job: string, candidates: readonly Instance[]): Instance | undefined {
    if (candidates.length === 0) return undefined;
    const cursor = this.cursors.get(job) ?? 0;
    this.cursors.set(job, cursor + 1);
    return candidates[cursor % candidates.length];
  }
}

export class Closest implements Policy {
  /** Per job: the instances (by number) that got its flows last. */
  private readonly chosen = new Map<string, Set<number>>();

  constructor(private readonly rr: RoundRobin) {}

  choose(target: AddressTarget, ctx: PolicyContext): Instance | undefined {
    const job = target.service.job;
    const all = target.service.instances;
    // an instance on this node is closest by definition (no network at all)
    const local = all.filter((i) => i.local);
    if (local.length) return this.rr.next(`${job}#closest-local`, local);
    const measured: Array<[Instance, number]> = [];
    for (const i of all) {
      const rtt = ctx.rtt(i);
      if (rtt !== undefined) measured.push([i, rtt]);
    }
    if (measured.length === 0) {
      const sameCluster = all.filter((i) => i.cluster === ctx.cluster);
      if (sameCluster.length) return this.rr.next(`${job}#closest-cluster`, sameCluster);
      return this.rr.next(`${job}#closest`, all);
    }
    const best = Math.min(...measured.map(([, rtt]) => rtt));
    const previous = this.chosen.get(job);
    const keep = previous
      ? measured.filter(
          ([i, rtt]) => previous.has(i.number) && rtt <= best * (1 + HYSTERESIS_RATIO) + HYSTERESIS_MS,
        )
      : [];
    const band = keep.length ? keep : measured.filter(([, rtt]) => rtt <= best * (1 + TIE_RATIO) + TIE_MS);
    this.chosen.set(job, new Set(band.map(([i]) => i.number)));
    return this.rr.next(
      `${job}#closest`,
      band.map(([i]) => i),
    );
  }
}

export class InstancePolicy implements Policy {
  choose(target: AddressTarget): Instance | undefined {
    return target.instance;
  }
}

/** The one map from address kind to policy. */
export function createPolicies(): Record<AddressKind, Policy> {
  const rr = new RoundRobin();
  return { rr, closest: new Closest(rr), instance: new InstancePolicy() };
}

/**
 * A policy's choice among the instances that have an address of the packet's family, leaving out those on
 * peers the probes found unreachable (a node that went down before the control plane said so), unless that
 * leaves none. Every remote instance it offers a policy is probed from then on, so a node that goes down is
 * noticed.
 */
export class InstanceChooser {
  private readonly policies = createPolicies();
  private readonly ctx: { cluster: string; rtt(i: Instance): number | undefined };

  constructor(private readonly prober: Prober) {
    this.ctx = { cluster: '', rtt: (i) => prober.rtt(i.endpoint) };
  }

  /** The instance for a new flow of the address family `family` (4 or 16 address bytes) to target. */
  choose(target: AddressTarget, family: number, cluster: string): Instance | undefined {
    const prober = this.prober;
    const fits = (i: Instance) => namespaceAddress(i, family) !== null && instanceAddress(i, family) !== null;
    const up = (i: Instance) => {
      if (i.local) return true;
      prober.want(i.endpoint);
      return prober.reachable(i.endpoint);
    };
    const usable = (i: Instance) => fits(i) && up(i);
    let instances = target.service.instances;
    if (!instances.every(usable)) {
      const reachable = instances.filter(usable);
      instances = reachable.length > 0 ? reachable : instances.filter(fits);
    }
    const view: AddressTarget =
      instances === target.service.instances
        ? target
        : { ...target, service: { job: target.service.job, instances } };
    this.ctx.cluster = cluster;
    const chosen = this.policies[target.kind].choose(view, this.ctx);
    return chosen && fits(chosen) ? chosen : undefined;
  }
}
