/**
 * @module platform/latency-control
 * Link latency on a running platform: the backend is chosen once (netem when the kernel has it, else the
 * delay router; `latency.ts`), recorded in the state file with the spec and sites, and every change is
 * applied in full: netem qdiscs on each node's eth0, or a new generation of the delay router's config (the
 * router started in the switch namespace, or told with SIGHUP) plus the switch's routing rules for the
 * delayed pairs.
 */
import { join } from 'node:path';
import { SystemError } from '../errors.ts';
import { makePrivateDir } from '../store/private-files.ts';
import type { CommandRunner } from '../node/net/runner.ts';
import { isAlive } from '../system/proc.ts';
import { applyDelayRules, readAppliedGeneration, writeDelayConfig } from './delay-router.ts';
import {
  applyNetem,
  checkLatency,
  pairDelays,
  probeNetem,
  siteOfNodes,
  type LatencyBackend,
  type LatencySpec,
  type PairDelay,
  type SiteMap,
} from './latency.ts';
import type { Launcher } from './launcher.ts';
import type { LatencyState, NodeState } from './state.ts';

/**
 * Sets the link latency (and the sites, when given; else the ones in force) and applies it; delays take
 * effect when it resolves. `wanted` chooses the backend when none was chosen before.
 */
export async function setLatency(
  l: Launcher,
  runner: CommandRunner,
  latency: LatencySpec,
  sites: SiteMap | undefined,
  wanted: 'auto' | LatencyBackend,
): Promise<void> {
  const st = l.st;
  checkLatency(latency);
  const siteMap = sites ?? st.latency?.sites ?? sitesOf(st.nodes);
  const delays = pairDelays(st.nodes, siteMap, latency);
  const siteOf = siteOfNodes(
    st.nodes.map((n) => n.name),
    siteMap,
    latency,
  );
  for (const n of st.nodes) n.site = siteOf.get(n.name) ?? n.name;
  const previous = st.latency;
  const { backend, reason } = previous
    ? { backend: previous.backend, reason: previous.netemUnavailable }
    : await chooseBackend(l, runner, wanted);
  const latencyState: LatencyState = {
    spec: latency,
    sites: siteMap,
    backend,
    generation: (previous?.generation ?? 0) + 1,
    ...(reason !== undefined ? { netemUnavailable: reason } : {}),
  };
  st.latency = latencyState;
  l.save();
  if (backend === 'netem') {
    await Promise.all(
      st.nodes.map((n) =>
        applyNetem(
          runner,
          n.netns,
          'eth0',
          delays.filter((d) => d.src === n.ip),
        ),
      ),
    );
  } else {
    await applyRouter(l, runner, latencyState.generation, delays);
  }
  l.log.info({ id: st.id, backend, pairs: delays.length, latency }, 'latency applied');
}

async function chooseBackend(
  l: Launcher,
  runner: CommandRunner,
  wanted: 'auto' | LatencyBackend,
): Promise<{ backend: LatencyBackend; reason?: string }> {
  if (wanted === 'router') return { backend: 'router' };
  const probe = await probeNetem(runner, l.st.ctlNs);
  if (probe.ok) return { backend: 'netem' };
  if (wanted === 'netem') throw new SystemError(`tc netem does not work here: ${probe.reason}`);
  l.log.warn({ reason: probe.reason }, 'tc netem unavailable (no sch_netem qdisc?); using the delay router');
  return { backend: 'router', reason: probe.reason };
}

/** Hands generation `generation` of the delays to the delay router (started if it does not run). */
async function applyRouter(
  l: Launcher,
  runner: CommandRunner,
  generation: number,
  delays: PairDelay[],
): Promise<void> {
  const st = l.st;
  const dir = join(st.stateDir, 'delay');
  makePrivateDir(dir);
  const config = join(dir, 'config.json');
  const applied = join(dir, 'applied.json');
  const tun = `${st.id}-dly`;
  writeDelayConfig(config, { generation, delays });
  let rec = st.processes.find((p) => p.name === 'delay-router');
  if (rec && isAlive(rec)) {
    process.kill(rec.pid, 'SIGHUP');
  } else {
    rec = await l.spawn('delay-router', [
      'ip',
      'netns',
      'exec',
      st.switchNs,
      process.execPath,
      '--import',
      'tsx',
      join(st.repo, 'src', 'platform', 'delay-router.main.ts'),
      '--tun',
      tun,
      '--config',
      config,
      '--applied',
      applied,
    ]);
  }
  await l.waitReady(rec, 'delay router applies the delays', () =>
    readAppliedGeneration(applied) === generation ? true : undefined,
  );
  await applyDelayRules(runner, st.switchNs, tun, delays);
}

/** The named sites of `nodes` (a node whose site is its own name is in none). */
function sitesOf(nodes: readonly NodeState[]): SiteMap {
  const sites: SiteMap = {};
  for (const n of nodes) if (n.site !== n.name) (sites[n.site] ??= []).push(n.name);
  return sites;
}
