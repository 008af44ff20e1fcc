/**
 * @module platform/latency
 * Link latency between the platform's nodes: the spec (sites, intra-/inter-site and per-site-pair one-way
 * delays), its command-line grammar, the per-direction delay matrix it means, and the two ways to apply it.
 *
 * Every delay is ONE-WAY and applies to each direction of a link: a round trip between two sites 40 ms apart
 * takes 80 ms. Only node-to-node traffic is delayed; the control namespace (root, clusters) is at 0 ms from
 * everyone.
 *
 * Backends:
 * - `netem`: tc on each node's `eth0` (inside the node namespace): an HTB root whose default class is
 *   undelayed, one class with a netem leaf per distinct delay, and u32 filters on the destination underlay
 *   address. Kernel speed; needs the sch_netem qdisc.
 * - `router`: the kernels this project runs on (CI included) are built without sch_netem (and without
 *   sch_fq/etf, so no BPF timestamp pacing either), so there is no way to hold a packet in the kernel. The
 *   switch namespace then routes each delayed (source, destination) pair through a TUN device, where a small
 *   process (`delay-router.ts`) holds every packet for its pair's delay. Pairs at 0 ms never leave the
 *   kernel, so undelayed traffic keeps kernel speed.
 *
 * Grammar of `parseLatencyArg` (items separated by ';', whitespace ignored, DELAY is a number with an
 * optional unit ms (default), s or us):
 *   DELAY,DELAY            intra-site and inter-site delay (e.g. "2ms,40ms")
 *   intra=DELAY            delay between nodes of the same site
 *   inter=DELAY            delay between nodes of different sites (default for every site pair)
 *   SITE=NODE,NODE...      the nodes (n1, n2, ...) of a site
 *   SITE:SITE=DELAY        delay between two particular sites (both directions), overriding inter
 * Example: "site-a=n1,n2;site-b=n3;intra=2ms;inter=40ms". A node in no site is a site of its own.
 */
import { type CommandRunner } from '../node/net/runner.ts';
import { InvalidInputError, errorMessage } from '../errors.ts';

/** One-way delay between two particular sites, both directions. */
export interface SitePairDelay {
  /** One site. */
  a: string;
  /** The other site. */
  b: string;
  /** One-way delay in milliseconds. */
  ms: number;
}

/** Link latency of a platform: one-way delays in milliseconds (default 0). */
export interface LatencySpec {
  /** Between two nodes of the same site. */
  intraSiteMs?: number;
  /** Between nodes of different sites (unless `pairs` names their two sites). */
  interSiteMs?: number;
  /** Per site pair, overriding interSiteMs. */
  pairs?: SitePairDelay[];
}

/** Site name -> names of its nodes ("n1", ...). */
export type SiteMap = Record<string, string[]>;

/** A delay between two underlay addresses, one direction. */
export interface PairDelay {
  /** Source underlay IPv4 address. */
  src: string;
  /** Destination underlay IPv4 address. */
  dst: string;
  /** One-way delay in milliseconds (> 0). */
  ms: number;
}

/** How a platform applies latency. */
export type LatencyBackend = 'netem' | 'router';

const SITE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$/;
const MAX_DELAY_MS = 60_000;

/** Parses "40ms", "1.5s", "500us" or "40" (ms) into milliseconds; InvalidInputError when malformed. */
export function parseDelay(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|us)?$/.exec(text.trim());
  if (!m) throw new InvalidInputError(`bad delay ${JSON.stringify(text)}: expected e.g. 40ms, 1.5s, 500us`);
  const n = Number(m[1]);
  const ms = m[2] === 's' ? n * 1000 : m[2] === 'us' ? n / 1000 : n;
  checkDelay(ms, text);
  return ms;
}

function checkDelay(ms: number, what: string): void {
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DELAY_MS) {
    throw new InvalidInputError(`delay ${what} out of range 0-${MAX_DELAY_MS} ms`);
  }
}

/** Parses the command-line grammar in this module's header into a latency spec and (when named) sites. */
export function parseLatencyArg(text: string): { latency: LatencySpec; sites?: SiteMap } {
  const latency: LatencySpec = {};
  const sites: SiteMap = {};
  const pairs: SitePairDelay[] = [];
  const items = text
    .replace(/\s+/g, '')
    .split(';')
    .filter((i) => i !== '');
  if (items.length === 0) throw new InvalidInputError('empty latency spec');
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq < 0) {
      const parts = item.split(',');
      if (parts.length !== 2) {
        throw new InvalidInputError(
          `bad latency item ${JSON.stringify(item)}: expected INTRA,INTER (e.g. 2ms,40ms)`,
        );
      }
      latency.intraSiteMs = parseDelay(parts[0] ?? '');
      latency.interSiteMs = parseDelay(parts[1] ?? '');
      continue;
    }
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (key === 'intra') latency.intraSiteMs = parseDelay(value);
    else if (key === 'inter') latency.interSiteMs = parseDelay(value);
    else if (key.includes(':')) {
      const [a, b, extra] = key.split(':');
      if (
        a === undefined ||
        b === undefined ||
        extra !== undefined ||
        !SITE_NAME.test(a) ||
        !SITE_NAME.test(b)
      ) {
        throw new InvalidInputError(`bad site pair ${JSON.stringify(key)}: expected SITE:SITE`);
      }
      pairs.push({ a, b, ms: parseDelay(value) });
    } else {
      if (!SITE_NAME.test(key)) throw new InvalidInputError(`bad site name ${JSON.stringify(key)}`);
      if (sites[key] !== undefined) throw new InvalidInputError(`site ${key} given twice`);
      const nodes = value.split(',').filter((n) => n !== '');
      if (nodes.length === 0) throw new InvalidInputError(`site ${key} has no nodes`);
      sites[key] = nodes;
    }
  }
  if (pairs.length > 0) latency.pairs = pairs;
  return Object.keys(sites).length > 0 ? { latency, sites } : { latency };
}

/** Checks the delays of a spec; InvalidInputError when one is negative, not finite or above 60 s. */
export function checkLatency(spec: LatencySpec): void {
  if (spec.intraSiteMs !== undefined) checkDelay(spec.intraSiteMs, 'intraSiteMs');
  if (spec.interSiteMs !== undefined) checkDelay(spec.interSiteMs, 'interSiteMs');
  for (const p of spec.pairs ?? []) {
    checkDelay(p.ms, `${p.a}:${p.b}`);
    if (!SITE_NAME.test(p.a) || !SITE_NAME.test(p.b))
      throw new InvalidInputError(`bad site pair ${p.a}:${p.b}`);
  }
}

/**
 * Site of every node: those named in `sites`, and each other node a site of its own (named like the node).
 * Without any site named but with an intra-site delay (`--latency 2ms,40ms`), the nodes form two sites, `a`
 * (the first half, rounded up) and `b`: an intra-site delay needs sites of more than one node.
 * InvalidInputError for an unknown node, a node in two sites, or a pair naming an unknown site.
 */
export function siteOfNodes(
  nodes: readonly string[],
  sites: SiteMap = {},
  latency: LatencySpec = {},
): Map<string, string> {
  const known = new Set(nodes);
  const result = new Map<string, string>();
  if (Object.keys(sites).length === 0 && latency.intraSiteMs !== undefined && !latency.pairs?.length) {
    const half = Math.ceil(nodes.length / 2);
    nodes.forEach((node, i) => result.set(node, i < half ? 'a' : 'b'));
    return result;
  }
  for (const [site, members] of Object.entries(sites)) {
    if (!SITE_NAME.test(site)) throw new InvalidInputError(`bad site name ${JSON.stringify(site)}`);
    for (const node of members) {
      if (!known.has(node))
        throw new InvalidInputError(`site ${site} names unknown node ${node} (nodes: ${nodes.join(', ')})`);
      const other = result.get(node);
      if (other !== undefined) throw new InvalidInputError(`node ${node} is in sites ${other} and ${site}`);
      result.set(node, site);
    }
  }
  for (const node of nodes) if (!result.has(node)) result.set(node, node);
  const siteNames = new Set(result.values());
  for (const p of latency.pairs ?? []) {
    for (const s of [p.a, p.b])
      if (!siteNames.has(s)) throw new InvalidInputError(`latency names unknown site ${s}`);
  }
  return result;
}

/** One-way delay from a node of site `from` to a node of site `to`. */
export function siteDelay(latency: LatencySpec, from: string, to: string): number {
  if (from === to) return latency.intraSiteMs ?? 0;
  const pair = latency.pairs?.find((p) => (p.a === from && p.b === to) || (p.a === to && p.b === from));
  return pair?.ms ?? latency.interSiteMs ?? 0;
}

/** Every directed node pair with a non-zero delay, by underlay address. */
export function pairDelays(
  nodes: readonly { name: string; ip: string }[],
  sites: SiteMap | undefined,
  latency: LatencySpec,
): PairDelay[] {
  checkLatency(latency);
  const siteOf = siteOfNodes(
    nodes.map((n) => n.name),
    sites,
    latency,
  );
  const out: PairDelay[] = [];
  for (const a of nodes) {
    for (const b of nodes) {
      if (a === b) continue;
      const ms = siteDelay(latency, siteOf.get(a.name) ?? a.name, siteOf.get(b.name) ?? b.name);
      if (ms > 0) out.push({ src: a.ip, dst: b.ip, ms });
    }
  }
  return out;
}

/** Formats milliseconds for tc ("40ms", "0.5ms"). */
function tcTime(ms: number): string {
  return `${Number(ms.toFixed(3))}ms`;
}

/**
 * The `tc -batch` lines that delay traffic leaving `dev` by destination (see the header). Expects no root
 * qdisc on `dev` (delete it first). No delays: no lines (the device keeps its default qdisc).
 */
export function netemScript(dev: string, delays: readonly { dst: string; ms: number }[]): string[] {
  if (delays.length === 0) return [];
  const lines = [
    `qdisc add dev ${dev} root handle 1: htb default 1`,
    `class add dev ${dev} parent 1: classid 1:1 htb rate 100gbit quantum 60000`,
  ];
  const classOf = new Map<number, number>();
  for (const { ms } of delays) {
    if (classOf.has(ms)) continue;
    const minor = classOf.size + 2;
    classOf.set(ms, minor);
    lines.push(
      `class add dev ${dev} parent 1: classid 1:${minor.toString(16)} htb rate 100gbit quantum 60000`,
      `qdisc add dev ${dev} parent 1:${minor.toString(16)} handle ${minor.toString(16)}: netem delay ${tcTime(ms)} limit 100000`,
    );
  }
  for (const { dst, ms } of delays) {
    const minor = classOf.get(ms) ?? 1;
    lines.push(
      `filter add dev ${dev} parent 1: protocol ip prio 1 u32 match ip dst ${dst}/32 flowid 1:${minor.toString(16)}`,
    );
  }
  return lines;
}

/** Replaces the latency qdiscs on `dev` in namespace `ns` with `netemScript(dev, delays)`. */
export async function applyNetem(
  runner: CommandRunner,
  ns: string,
  dev: string,
  delays: readonly { dst: string; ms: number }[],
): Promise<void> {
  try {
    await runner.run('tc', ['-n', ns, 'qdisc', 'del', 'dev', dev, 'root']);
  } catch {
    // no root qdisc of ours yet
  }
  const lines = netemScript(dev, delays);
  if (lines.length > 0) await runner.run('tc', ['-n', ns, '-batch', '-'], lines.join('\n') + '\n');
}

/** Whether tc and sch_netem work, tried on `lo` of namespace `ns`; when not, the reason tc gave. */
export async function probeNetem(
  runner: CommandRunner,
  ns: string,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    await runner.run('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms']);
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  }
  await runner.run('tc', ['-n', ns, 'qdisc', 'del', 'dev', 'lo', 'root']);
  return { ok: true };
}
