/**
 * @module node/net/firewall
 * The NodeEnvironment's nftables side: the one table (nft-script.ts builds its text), the warning about
 * other tables' drop policies, and port mappings as elements of its DNAT maps.
 */
import { IpAddress } from '../../addressing/ip.ts';
import { ConflictError } from '../../errors.ts';
import type { Attachment, AttachPlan } from './attachment.ts';
import type { EnvironmentContext } from './environment-config.ts';
import {
  addElementsScript,
  BOUNDARY_COUNTER,
  type CounterValue,
  deleteElementsScript,
  elementsFor,
  type MapElement,
  parseCounter,
  parseMapElements,
  tableScript,
} from './nft-script.ts';
import type { PortMapping } from './port-mappings.ts';
import { CommandFailedError, isAlreadyGone, isRecord, nft, nftJson } from './runner.ts';

/** (Re)creates the table atomically: a leftover of an earlier run is replaced. */
export async function createTable(ctx: EnvironmentContext): Promise<void> {
  await nft(ctx.runner, tableScript({ ...ctx.config, table: ctx.config.nftTable }));
}

/** Reads the boundary's counter, zeros when the table is absent (`nft -j list counter inet <table> bridge_in_dropped`). */
export async function readBoundaryDrops(ctx: EnvironmentContext): Promise<CounterValue> {
  let listing: unknown[];
  try {
    listing = await nftJson(ctx.runner, ['list', 'counter', 'inet', ctx.config.nftTable, BOUNDARY_COUNTER]);
  } catch (err) {
    if (isAlreadyGone(err)) return { packets: 0, bytes: 0 };
    throw err;
  }
  return parseCounter(listing, BOUNDARY_COUNTER) ?? { packets: 0, bytes: 0 };
}

/** Logs a warning for forward base chains with policy drop in other tables (they still drop our traffic). */
export async function warnAboutForeignForwardDrops(ctx: EnvironmentContext): Promise<void> {
  const { config, logger } = ctx;
  try {
    const chains = (await nftJson(ctx.runner, ['list', 'chains']))
      .map((item) => (isRecord(item) ? item['chain'] : undefined))
      .filter(isRecord)
      .filter(
        (c) =>
          c['hook'] === 'forward' &&
          c['policy'] === 'drop' &&
          !(c['family'] === 'inet' && c['table'] === config.nftTable),
      )
      .map((c) => `${String(c['family'])} ${String(c['table'])} ${String(c['name'])}`);
    if (chains.length > 0) {
      logger.warn(
        { chains, bridge: config.bridge, tun: config.tun },
        'forward chains with policy drop in other tables will drop instance traffic unless they accept the bridge and the TUN',
      );
    }
  } catch (err) {
    logger.debug({ err }, 'could not list nft chains for the forward-policy check');
  }
}

/** Adds the plan's mappings (both families when it has nsipv6); ConflictError when a host port is taken. */
export async function addMappings(ctx: EnvironmentContext, plan: AttachPlan): Promise<void> {
  const elements = elementsOf(plan.mappings, plan.nsip, plan.nsipv6);
  if (elements.length === 0) return;
  try {
    await nft(ctx.runner, addElementsScript(ctx.config.nftTable, elements));
  } catch (err) {
    if (err instanceof CommandFailedError && /File exists/.test(err.stderr)) {
      throw new ConflictError(
        `cannot map ports ${describeMappings(plan.mappings)} for ${plan.id}: a host port is already mapped to another instance`,
      );
    }
    throw err;
  }
}

/** Removes the attachment's mappings that still lead to it; a host port reused by now is left alone. */
export async function removeMappings(ctx: EnvironmentContext, a: Attachment): Promise<void> {
  let listing: unknown[];
  try {
    listing = await nftJson(ctx.runner, ['list', 'table', 'inet', ctx.config.nftTable]);
  } catch (err) {
    if (isAlreadyGone(err)) return; // no table: no mappings
    throw err;
  }
  const present = parseMapElements(listing);
  const wanted = elementsOf(
    a.portMappings,
    IpAddress.parse(a.nsip),
    a.nsipv6 === undefined ? undefined : IpAddress.parse(a.nsipv6),
  );
  const toDelete: MapElement[] = [];
  for (const w of wanted) {
    const p = present.find(
      (e) => e.family === w.family && e.protocol === w.protocol && e.hostPort === w.hostPort,
    );
    if (!p) continue;
    if (p.port === w.port && IpAddress.tryParse(p.address)?.equals(IpAddress.parse(w.address)))
      toDelete.push(w);
    else ctx.logger.warn({ id: a.id, mapping: w, now: p }, 'host port now leads elsewhere; left alone');
  }
  if (toDelete.length > 0) await nft(ctx.runner, deleteElementsScript(ctx.config.nftTable, toDelete));
}

function elementsOf(
  mappings: readonly PortMapping[],
  nsip: IpAddress,
  nsipv6: IpAddress | undefined,
): MapElement[] {
  return [...elementsFor(mappings, nsip), ...(nsipv6 ? elementsFor(mappings, nsipv6) : [])];
}

function describeMappings(mappings: readonly PortMapping[]): string {
  return mappings.map((m) => `${m.protocol}/${m.hostPort}`).join(', ');
}
