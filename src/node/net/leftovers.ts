/**
 * @module node/net/leftovers
 * Finding and removing, by name, what a NodeEnvironment made: the bridge with every link on it, the nft
 * table and the routes via the TUN. Used by tear-down, by set-up (leftovers of a crashed run) and by the
 * roll-back of a failed set-up.
 */
import type { EnvironmentContext } from './environment-config.ts';
import { deleteTableScript } from './nft-script.ts';
import { CommandFailedError, ipBatch, ipJson, isRecord, nft } from './runner.ts';

/** The bridge and the links enslaved to it (enslaved first), and whether the TUN exists. One spawn. */
export async function inspectLinks(
  ctx: EnvironmentContext,
): Promise<{ leftovers: string[]; tunExists: boolean }> {
  const links = await ipJson(ctx.runner, ['link', 'show']);
  const { bridge, tun } = ctx.config;
  const names = links.filter(isRecord);
  const enslaved = names.filter((l) => l['master'] === bridge).map((l) => String(l['ifname']));
  const hasBridge = names.some((l) => l['ifname'] === bridge);
  return {
    leftovers: [...enslaved, ...(hasBridge ? [bridge] : [])],
    tunExists: names.some((l) => l['ifname'] === tun),
  };
}

/** Removes the bridge, every link on it, the nft table and the TUN routes. Idempotent. */
export async function tearDownAll(ctx: EnvironmentContext): Promise<void> {
  const { config, runner } = ctx;
  const { leftovers, tunExists } = await inspectLinks(ctx);
  await ipBatch(
    runner,
    leftovers.map((name) => `link del dev ${name}`),
  );
  await nft(runner, deleteTableScript(config.nftTable));
  if (tunExists && config.tunRoutes.length > 0) {
    try {
      await ipBatch(
        runner,
        config.tunRoutes.map((r) => `route del ${r.toString()} dev ${config.tun}`),
        undefined,
        { force: true },
      );
    } catch (err) {
      // -force runs every line; only "No such process" (route not there) lines are acceptable.
      if (!(err instanceof CommandFailedError && onlyMissing(err.stderr))) throw err;
    }
  }
  ctx.logger.info({ bridge: config.bridge, removed: leftovers }, 'node network torn down');
}

/** True when every error line of an `ip -force -batch` run says the route was not there. */
function onlyMissing(stderr: string): boolean {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^Command failed -:\d+$/.test(l))
    .every((l) => /No such process|Cannot find device/.test(l));
}
