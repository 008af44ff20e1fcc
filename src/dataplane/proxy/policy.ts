/**
 * @module dataplane/proxy/policy
 * Balancing policies: which instance a new flow to a semantic address goes to. One explicit map from the
 * address's kind to its policy; each policy sees the service's live instances and per-service state.
 *
 * - round robin (RR_IP): the next live instance after the one the previous new flow got: true round robin,
 *   per new flow (upstream's "RR" was a seeded random choice).
 * - closest (Closest_IP): the instance nearest to this node. Until round-trip measurements exist it prefers a
 *   local instance, then one in this node's cluster, then round robin over the rest.
 * - instance (instance IP): exactly the named instance, if it is alive.
 */
import type { AddressKind, AddressTarget, ServiceInstance } from './directory.ts';

export interface PolicyContext {
  /** The cluster of this node. */
  readonly cluster: string;
}

export interface Policy {
  /** The instance for a new flow to target, or undefined when no live instance fits. */
  choose(target: AddressTarget, ctx: PolicyContext): ServiceInstance | undefined;
}

/** Round-robin cursors per job; they survive table refreshes because they are keyed by job name. */
export class RoundRobin implements Policy {
  private readonly cursors = new Map<string, number>();

  choose(target: AddressTarget): ServiceInstance | undefined {
    return this.next(target.service.job, target.service.instances);
  }

  /** The next of `candidates` for job (shared with other policies that fall back to round robin). */
  next(job: string, candidates: readonly ServiceInstance[]): ServiceInstance | undefined {
    if (candidates.length === 0) return undefined;
    const cursor = this.cursors.get(job) ?? 0;
    this.cursors.set(job, cursor + 1);
    return candidates[cursor % candidates.length];
  }
}

export class Closest implements Policy {
  constructor(private readonly rr: RoundRobin) {}

  choose(target: AddressTarget, ctx: PolicyContext): ServiceInstance | undefined {
    const all = target.service.instances;
    const local = all.filter((i) => i.local);
    if (local.length) return this.rr.next(`${target.service.job}#closest-local`, local);
    const sameCluster = all.filter((i) => i.cluster === ctx.cluster);
    if (sameCluster.length) return this.rr.next(`${target.service.job}#closest-cluster`, sameCluster);
    return this.rr.next(`${target.service.job}#closest`, all);
  }
}

export class InstancePolicy implements Policy {
  choose(target: AddressTarget): ServiceInstance | undefined {
    return target.instance?.alive ? target.instance : undefined;
  }
}

/** The one map from address kind to policy. */
export function createPolicies(): Record<AddressKind, Policy> {
  const rr = new RoundRobin();
  return { rr, closest: new Closest(rr), instance: new InstancePolicy() };
}
