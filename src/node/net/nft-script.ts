/**
 * @module node/net/nft-script
 * The nftables text the NodeEnvironment applies, as pure functions (so the exact rules are unit-tested and
 * readable in one place). Everything lives in ONE table `inet <name>`, which replaces upstream's scattered
 * iptables/ip6tables rules (some never removed, one naming the wrong device `tun0`): deleting the table
 * removes every rule we ever added, and recreating it is one atomic transaction.
 *
 * Port mappings are elements of two concatenated maps, `pm4` and `pm6`
 * (`inet_proto . inet_service : ipv4_addr|ipv6_addr . inet_service`), looked up by one DNAT rule per family
 * and hook. Adding or removing a mapping is an element change, not a rule change, so nothing is deleted by
 * handle and the rule set does not grow with the number of instances. Verified on nft 1.0.6 / this kernel:
 * from the node itself (output hook), from another host (prerouting), IPv4 and IPv6, TCP and UDP, and
 * hairpin (an instance reaching its own mapping through the node's address).
 *
 * The forward boundary (issue 12): nothing is forwarded into the bridge (towards the instances) unless it comes
 * from the proxy's TUN, from the bridge itself (instances between themselves: hairpin, or bridged traffic when
 * br_netfilter is loaded), belongs to a connection the kernel already let through (ct established/related:
 * replies of connections the instances opened, through masquerade or the TUN), or is a published port mapping
 * (ct status dnat). The rest is dropped and counted in the named counter `bridge_in_dropped`
 * (`nft list counter inet <table> bridge_in_dropped`). Packets the node itself sends to an instance take the
 * output hook, not forward, so they are not affected. One rule set for IPv4 and IPv6 (family inet).
 *
 * The node's DNS server (issue 13) listens on the bridge's gateway addresses for the instances only. A host
 * accepts packets for any of its addresses on any interface, so the input hook drops DNS to the gateways that
 * did not come from the bridge (or the node itself, lo), counted in `dns_refused`: the server is no resolver
 * for the underlay.
 *
 * Scripts are native nft syntax for `nft -f -`: nft 1.0.6 crashes on JSON input with concatenated maps.
 * nft identifiers cannot be quoted, so the table name must not be an nft keyword (e.g. `fwd`); `oaknet` is fine.
 */
import type { Cidr } from '../../addressing/cidr.ts';
import type { IpAddress, IpFamily } from '../../addressing/ip.ts';
import { isRecord } from './runner.ts';
import type { PortMapping, PortProtocol } from './port-mappings.ts';

/** What the table's rules depend on. */
export interface NftTableSpec {
  /** Table name (family inet). */
  table: string;
  /** The instances' bridge. */
  bridge: string;
  /** The proxy's TUN (may not exist yet: rules match it by name). */
  tun: string;
  /** The node's IPv4 instance subnet (masqueraded towards the outside). */
  subnetV4: Cidr;
  /** The node's IPv6 instance subnet. */
  subnetV6: Cidr;
}

/** The named counter of packets dropped at the forward boundary into the bridge. */
export const BOUNDARY_COUNTER = 'bridge_in_dropped';
/** The named counter of DNS packets to the gateways from outside the bridge. */
export const DNS_GUARD_COUNTER = 'dns_refused';

/** Name of the port-mapping map of a family. */
export function mapName(family: IpFamily): string {
  return family === 4 ? 'pm4' : 'pm6';
}

/**
 * One transaction that removes any table of that name (a leftover of a crashed run) and creates it afresh:
 * the forward boundary into the bridge (module comment) with its counter, forward accept for traffic leaving
 * the bridge and the TUN, masquerade of the subnets towards every other interface,
 * hairpin masquerade, and the port-mapping maps with their DNAT rules.
 */
export function tableScript(spec: NftTableSpec): string {
  const { table, bridge, tun } = spec;
  const v4 = spec.subnetV4.toString();
  const v6 = spec.subnetV6.toString();
  const ours = `{ "${bridge}", "${tun}" }`;
  const inside = `{ "lo", "${bridge}" }`;
  const gw4 = spec.subnetV4.at(1).toString();
  const gw6 = spec.subnetV6.at(1).toString();
  return `${deleteTableScript(table)}table inet ${table} {
  map pm4 {
    type inet_proto . inet_service : ipv4_addr . inet_service;
  }
  map pm6 {
    type inet_proto . inet_service : ipv6_addr . inet_service;
  }
  counter ${BOUNDARY_COUNTER} {
  }
  counter ${DNS_GUARD_COUNTER} {
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname != ${inside} ip daddr ${gw4} meta l4proto { tcp, udp } th dport 53 counter name ${DNS_GUARD_COUNTER} drop
    iifname != ${inside} ip6 daddr ${gw6} meta l4proto { tcp, udp } th dport 53 counter name ${DNS_GUARD_COUNTER} drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname "${bridge}" jump into_bridge
    iifname ${ours} accept
    oifname "${tun}" accept
  }
  chain into_bridge {
    iifname ${ours} accept
    ct state established,related accept
    ct status dnat accept
    counter name ${BOUNDARY_COUNTER} drop
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pm4
    meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @pm6
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @pm4
    ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @pm6
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${v4} oifname != ${ours} masquerade
    ip6 saddr ${v6} oifname != ${ours} masquerade
    oifname "${bridge}" ct status dnat ip saddr ${v4} masquerade
    oifname "${bridge}" ct status dnat ip6 saddr ${v6} masquerade
  }
}
`;
}

/** Removes the table if it exists and does nothing otherwise (add-then-delete in one transaction). */
export function deleteTableScript(table: string): string {
  return `table inet ${table} {}\ndelete table inet ${table}\n`;
}

/** A port-mapping element: a (protocol, host port) key leading to an address and port. */
export interface MapElement {
  /** The map's family: 4 for pm4, 6 for pm6. */
  family: IpFamily;
  protocol: PortProtocol;
  hostPort: number;
  /** Destination address (canonical text). */
  address: string;
  /** Destination port. */
  port: number;
}

/** The elements of `mappings` towards `address` (its family chooses the map). */
export function elementsFor(mappings: readonly PortMapping[], address: IpAddress): MapElement[] {
  return mappings.map((m) => ({
    family: address.family,
    protocol: m.protocol,
    hostPort: m.hostPort,
    address: address.toString(),
    port: m.containerPort,
  }));
}

function byFamily(elements: readonly MapElement[]): [IpFamily, MapElement[]][] {
  return ([4, 6] as const)
    .map((f): [IpFamily, MapElement[]] => [f, elements.filter((e) => e.family === f)])
    .filter(([, list]) => list.length > 0);
}

/** Adds the elements (one transaction; a key already mapped elsewhere makes nft fail with "File exists"). */
export function addElementsScript(table: string, elements: readonly MapElement[]): string {
  return byFamily(elements)
    .map(
      ([family, list]) =>
        `add element inet ${table} ${mapName(family)} { ${list
          .map((e) => `${e.protocol} . ${e.hostPort} : ${e.address} . ${e.port}`)
          .join(', ')} }\n`,
    )
    .join('');
}

/** Deletes the elements' keys (one transaction; fails if any key is absent). */
export function deleteElementsScript(table: string, elements: readonly MapElement[]): string {
  return byFamily(elements)
    .map(
      ([family, list]) =>
        `delete element inet ${table} ${mapName(family)} { ${list
          .map((e) => `${e.protocol} . ${e.hostPort}`)
          .join(', ')} }\n`,
    )
    .join('');
}

/** The elements of pm4 and pm6 in the output of `nft -j list table inet <table>` (other objects ignored). */
export function parseMapElements(nftables: readonly unknown[]): MapElement[] {
  const out: MapElement[] = [];
  for (const item of nftables) {
    const map = isRecord(item) ? item['map'] : undefined;
    if (!isRecord(map)) continue;
    const family = map['name'] === 'pm4' ? 4 : map['name'] === 'pm6' ? 6 : undefined;
    const elems = map['elem'];
    if (family === undefined || !Array.isArray(elems)) continue;
    for (const elem of elems) {
      const parsed = parseElement(family, elem);
      if (parsed) out.push(parsed);
    }
  }
  return out;
}

function parseElement(family: IpFamily, elem: unknown): MapElement | undefined {
  // Plain elements print as [key, value]; elements with options as {"elem": {"val": key, ...}} (not used here).
  if (!Array.isArray(elem) || elem.length !== 2) return undefined;
  const key = concat(elem[0]);
  const value = concat(elem[1]);
  if (!key || !value) return undefined;
  const [proto, hostPort] = key;
  const [address, port] = value;
  const protocol =
    proto === 'tcp' || proto === 6 ? 'tcp' : proto === 'udp' || proto === 17 ? 'udp' : undefined;
  if (!protocol || typeof address !== 'string') return undefined;
  const hp = Number(hostPort);
  const p = Number(port);
  if (!Number.isInteger(hp) || !Number.isInteger(p)) return undefined;
  return { family, protocol, hostPort: hp, address, port: p };
}

function concat(value: unknown): [unknown, unknown] | undefined {
  const list = isRecord(value) ? value['concat'] : undefined;
  return Array.isArray(list) && list.length === 2 ? [list[0], list[1]] : undefined;
}

/** A named counter's figures. */
export interface CounterValue {
  packets: number;
  bytes: number;
}

/** The named counter's figures in an `nft -j` listing; undefined when it is not there. */
export function parseCounter(listing: readonly unknown[], name: string): CounterValue | undefined {
  for (const item of listing) {
    const c = isRecord(item) ? item['counter'] : undefined;
    if (!isRecord(c) || c['name'] !== name) continue;
    const packets = Number(c['packets']);
    const bytes = Number(c['bytes']);
    if (Number.isInteger(packets) && Number.isInteger(bytes)) return { packets, bytes };
  }
  return undefined;
}
