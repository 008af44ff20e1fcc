/**
 * @module root/registry.fixtures
 * Support for the Registry tests: a registry over a memory store that records its notify calls, descriptors
 * and deployment reports, outbox draining, pool usage, and predicates for the errors the use cases throw.
 */
import { BlockList } from 'node:net';
import { AddressPlan } from '../addressing/plan.ts';
import {
  AddressInUseError,
  AddressOutOfRangeError,
  AddressSpaceExhaustedError,
  ConflictError,
  InvalidInputError,
  NotFoundError,
  QuotaExceededError,
} from '../errors.ts';
import type { DeployedInstance, DeploymentDescriptor } from '../protocol/root-api.ts';
import { MemoryStore } from '../store/memory.ts';
import { Registry, type JobRecord, type Notification, type Quotas } from './registry.ts';

export function setup(plan = new AddressPlan(), quotas: Partial<Quotas> = {}) {
  const store = new MemoryStore();
  const registry = new Registry(store, plan, { quotas });
  const notified: string[][] = [];
  registry.onNotify((clusters) => notified.push([...clusters]));
  return { store, registry, notified, plan };
}

/** A descriptor; extra may hold any other field, as upstream's descriptors do. */
export function svc(
  service: string,
  extra: Partial<DeploymentDescriptor> & Record<string, unknown> = {},
): DeploymentDescriptor {
  return { app_name: 'shop', app_ns: 'prod', service_name: service, service_ns: 'web', ...extra };
}

export function jobName(service: string): string {
  return `shop.prod.${service}.web`;
}

export function cluster(registry: Registry, id: string): void {
  registry.registerCluster({ cluster_id: id, cluster_address: '127.0.0.1', cluster_port: 10110 });
}

export function deployed(n: number, extra: Partial<DeployedInstance> = {}): DeployedInstance {
  return {
    instance_number: n,
    namespace_ip: `10.16.0.${2 + n}`,
    namespace_ip_v6: `fc00::${2 + n}`,
    host_ip: '192.168.1.10',
    host_port: '50103',
    ...extra,
  };
}

/** Every notification waiting for a cluster, oldest first, delivered (acked) as the notifier would. */
export function drain(registry: Registry, clusterId: string): Notification[] {
  const out: Notification[] = [];
  for (let next = registry.nextNotification(clusterId); next; next = registry.nextNotification(clusterId)) {
    out.push(next.notification);
    registry.ackNotification(next.key);
  }
  return out;
}

/** Allocation counts of every pool. */
export function usage(world: ReturnType<typeof setup>) {
  return world.store.transact((tx) => world.registry.addresses.usage(tx));
}

export function pending(registry: Registry, clusterId: string): number {
  return registry.listClusters().find((c) => c.cluster_id === clusterId)?.pending_notifications ?? -1;
}

export function inPrefix(prefix: string, address: string): boolean {
  const [net, len] = prefix.split('/') as [string, string];
  const type = net.includes(':') ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  list.addSubnet(net, Number(len), type);
  return (address.includes(':') ? 'ipv6' : 'ipv4') === type && list.check(address, type);
}

export function isCode(type: new (...args: never[]) => Error, code: string) {
  return (err: unknown): boolean => err instanceof type && (err as { code?: string }).code === code;
}
export const inUse = isCode(AddressInUseError, 'E_ADDRESS_IN_USE');
export const outOfRange = isCode(AddressOutOfRangeError, 'E_ADDRESS_OUT_OF_RANGE');
export const invalid = isCode(InvalidInputError, 'E_INVALID_INPUT');
export const notFound = isCode(NotFoundError, 'E_NOT_FOUND');
export const conflict = isCode(ConflictError, 'E_CONFLICT');
export function quota(name: string) {
  return (err: unknown): boolean =>
    err instanceof QuotaExceededError && err.code === 'E_QUOTA' && err.quota === name;
}
export function exhausted(pool: string) {
  return (err: unknown): boolean =>
    err instanceof AddressSpaceExhaustedError &&
    err.code === 'E_ADDRESS_SPACE_EXHAUSTED' &&
    err.pool === pool;
}

export function serviceAddresses(job: JobRecord): string[] {
  return [job.rr.v4, job.rr.v6, job.closest.v4, job.closest.v6];
}

export function allAddresses(job: JobRecord): string[] {
  return [...serviceAddresses(job), ...Object.values(job.instances).flatMap((i) => [i.ip.v4, i.ip.v6])];
}

/** A plan whose ServiceIP pools are tiny: 14 IPv4 addresses, 7 per IPv6 policy block. */
export function tinyPlan(): AddressPlan {
  return new AddressPlan({
    serviceRangeV4: '10.30.0.0/28',
    instanceRangeV6: 'fdff::/125',
    closestRangeV6: 'fdff:1000::/125',
    rrRangeV6: 'fdff:2000::/125',
  });
}
