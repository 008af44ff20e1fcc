/**
 * @module platform/teardown
 * Taking a platform down from its state file alone, after a clean run or a crash or a `kill -9` of any part:
 * recorded processes stop in dependency order (each checked by PID and start time), the namespaces go,
 * then the state. `findLeftovers` says what a platform id may still have on the machine.
 */
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { ExecRunner } from '../node/net/runner.ts';
import { isAlive, processesInNetns, processesWithMarker } from '../system/proc.ts';
import { deleteNetns, listNetns } from './netns.ts';
import { platformMarker } from './plan.ts';
import { stopProcesses } from './processes.ts';
import { readState, removePlatformData, removeState } from './state.ts';

/** What destroyPlatform did. */
export interface DestroyReport {
  /** Platform id, undefined when there was no state (nothing to do). */
  id: string | undefined;
  /** Names of processes that were running and were stopped. */
  stopped: string[];
  /** Of those, the ones that needed SIGKILL. */
  killed: string[];
  /** Namespaces removed. */
  namespaces: string[];
  /** PIDs of unrecorded processes found inside the namespaces (not signalled; they lose their namespace's name). */
  strangers: number[];
}

/** What a platform may have left behind. */
export interface Leftovers {
  /** Named namespaces `<id>-*`. */
  namespaces: string[];
  /** Interfaces `<id>-*` in the host namespace. */
  links: string[];
  /** Live processes marked OAKNET_PLATFORM=<id>. */
  processes: number[];
  /** Of the given host ports, those that still accept connections. */
  ports: number[];
}

/**
 * Tears the platform of `stateDir` down from its state file alone: stops the recorded processes (workloads,
 * then nodes, then clusters, then the rest; SIGTERM then SIGKILL), removes the namespaces (recorded ones and
 * any `<id>-*`), then the state file. Idempotent: without a state file it does nothing.
 */
export async function destroyPlatform(
  stateDir: string,
  log: Logger = pino({ level: 'silent' }),
): Promise<DestroyReport> {
  const dir = resolve(stateDir);
  const state = readState(dir);
  const report: DestroyReport = { id: state?.id, stopped: [], killed: [], namespaces: [], strangers: [] };
  if (!state) return report;
  const runner = new ExecRunner({ timeoutMs: 30_000 });
  const mark = platformMarker(state.id);
  const nodeNames = new Set(state.nodes.map((n) => n.name));
  const clusterNames = new Set(state.clusters.map((c) => c.name));
  const tiers = [
    // workloads first: oaknet run withdraws its instance at the root and undeploys it from its node
    state.processes.filter((p) => p.name.startsWith('w-')),
    state.processes.filter((p) => nodeNames.has(p.name) || p.name === 'delay-router'),
    state.processes.filter((p) => clusterNames.has(p.name)),
    state.processes.filter(
      (p) =>
        !p.name.startsWith('w-') &&
        !nodeNames.has(p.name) &&
        p.name !== 'delay-router' &&
        !clusterNames.has(p.name),
    ),
  ];
  for (const tier of tiers) {
    report.stopped.push(...tier.filter((p) => isAlive(p)).map((p) => p.name));
    report.killed.push(...(await stopProcesses(tier, { marker: mark, graceMs: 8000 }, log)));
  }
  // the platform's own namespaces, and workload namespaces a killed `oaknet run` could not remove
  const pattern = new RegExp(`^${state.id}-[a-z0-9-]+$`);
  const workloadNs = (state.workloads ?? []).map((w) => w.netns);
  const names = new Set([
    ...workloadNs,
    ...state.namespaces,
    ...(await listNetns(runner)).filter((ns) => pattern.test(ns)),
  ]);
  // what a killed (or still running, unrecorded) `oaknet run` left in a namespace of the platform (the
  // command and its holder, and `oaknet run --node` itself) carries the platform's marker: ours by
  // construction, so it goes too
  for (const ns of names) {
    for (const pid of processesInNetns(ns).filter((pid) => processesWithMarker(mark).includes(pid))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const ns of names) {
    const inside = processesInNetns(ns);
    if (inside.length > 0) {
      report.strangers.push(...inside);
      log.warn({ netns: ns, pids: inside }, 'unrecorded processes still in the namespace; not signalled');
    }
    if (await deleteNetns(runner, ns)) report.namespaces.push(ns);
  }
  removeState(dir);
  removePlatformData(dir);
  log.info({ ...report }, 'platform destroyed');
  return report;
}

/** What `id` may have left: namespaces, host interfaces, marked processes, listening host ports. */
export async function findLeftovers(id: string, opts: { ports?: number[] } = {}): Promise<Leftovers> {
  const runner = new ExecRunner();
  const namespaces = (await listNetns(runner)).filter((ns) => ns.startsWith(`${id}-`));
  const { stdout } = await runner.run('ip', ['-j', 'link', 'show']);
  const links = (JSON.parse(stdout || '[]') as { ifname?: string }[])
    .map((l) => l.ifname ?? '')
    .filter((n) => n.startsWith(`${id}-`));
  const ports: number[] = [];
  for (const port of opts.ports ?? []) if (await acceptsConnections(port)) ports.push(port);
  return { namespaces, links, processes: processesWithMarker(platformMarker(id)), ports };
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      done(false);
    });
    socket.once('error', () => done(false));
  });
}
