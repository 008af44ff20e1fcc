/**
 * @module dataplane/proxy/directory
 * What ProxyTUN needs to know about services, as the node's control plane maintains it: which instances a
 * semantic address (ServiceIP or instance IP) stands for, which local instance owns a namespace address, and a
 * way to ask about an unknown address without waiting for the answer. Addresses are raw network-order bytes,
 * so the data path looks them up without building strings for IPv4.
 */

/** One instance of a service, as the proxy routes to it. Records are replaced, never mutated, except `alive`. */
export interface ServiceInstance {
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
  /** True when it runs on this node (delivered through the TUN, not the tunnel). */
  readonly local: boolean;
  /** Cluster the instance belongs to (for Closest's tie-breaking). */
  readonly cluster: string;
  /** False once the instance left the table: flows to it are re-resolved or reset. */
  alive: boolean;
}

/** Policy of a semantic address (reference section 9: "RR", "Closest", everything else: the instance). */
export type AddressKind = 'rr' | 'closest' | 'instance';

/** A service's live instances, shared by all its addresses. */
export interface ServiceTargets {
  readonly job: string;
  /** Live instances (alive === true), in a stable order. */
  readonly instances: readonly ServiceInstance[];
}

/** What a semantic address stands for. */
export interface AddressTarget {
  readonly kind: AddressKind;
  readonly service: ServiceTargets;
  /** For kind 'instance': the instance the address names. */
  readonly instance?: ServiceInstance;
}

export interface Directory {
  /** The target of the semantic address at buf[offset..offset+length) (4 or 16 bytes); undefined if not known. */
  target(buf: Uint8Array, offset: number, length: number): AddressTarget | undefined;
  /** The local instance whose namespace address is at buf[offset..offset+length); undefined if none (yet). */
  localByNamespace(buf: Uint8Array, offset: number, length: number): ServiceInstance | undefined;
  /** Asks the control plane about an unknown semantic address (text); answers arrive as DirectoryEvents. */
  request(address: string): void;
  /** Notes traffic to a job (keeps the node's interest in it alive). */
  touch(job: string): void;
}

/** What the directory tells the proxy. */
export interface DirectoryEvents {
  /** An address asked about is now known (ok) or unknown to the control plane (not ok). */
  resolved(address: string, ok: boolean): void;
  /** A local namespace address got (or changed) its instance; packets held for it may go. */
  localChanged(address: string): void;
  /** Instances left the table (alive is false now): their flows must be re-resolved or reset. */
  instancesGone(instances: readonly ServiceInstance[]): void;
}

/** A Map key for 4 or 16 address bytes: a number for IPv4 (no allocation), a latin1 string for IPv6. */
export function addressKey(buf: Uint8Array, offset: number, length: number): number | string {
  if (length === 4)
    return (
      ((buf[offset]! << 24) | (buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!) >>> 0
    );
  let s = '';
  for (let i = 0; i < length; i++) s += String.fromCharCode(buf[offset + i]!);
  return s;
}
