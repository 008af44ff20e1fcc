/**
 * @module platform/workloads
 * Workloads on a platform: `oaknet run` inside a node's network namespace (the host's mount namespace, so
 * its named namespace `<id>-<name>` is usable from the host), detached and recorded like the platform's own
 * processes as `w-<name>`, deployed as an orchestrator would. Teardown stops workloads first, while root and
 * nodes still run, so each withdraws its instance.
 */
import { tokenFile } from './credentials.ts';
import { join } from 'node:path';
import { InvalidInputError } from '../errors.ts';
import type { Launcher } from './launcher.ts';
import { tailFile } from './processes.ts';
import type { NodeState, WorkloadState } from './state.ts';

/** What startWorkload runs. */
export interface WorkloadSpec {
  /** Name within the platform: 1-20 of [a-z0-9-]. */
  name: string;
  node: string;
  service: string;
  instance: number;
  /** The command and its arguments. */
  command: string[];
  /** Wait until this line appears in the workload's log (besides the deployment line). */
  readyLine?: string;
}

/** InvalidInputError unless `name` is a workload name (1-20 of [a-z0-9-], not starting with '-'). */
export function checkWorkloadName(name: string): void {
  if (!/^[a-z0-9][a-z0-9-]{0,19}$/.test(name))
    throw new InvalidInputError(`bad workload name ${JSON.stringify(name)}`);
}

/** Starts workload `w` on `node` and waits until it is deployed (and its readyLine, if any, logged). */
export async function startWorkload(
  l: Launcher,
  node: NodeState,
  w: WorkloadSpec,
  timeoutMs: number,
): Promise<WorkloadState> {
  const st = l.st;
  const state: WorkloadState = {
    name: w.name,
    node: w.node,
    service: w.service,
    instance: w.instance,
    netns: `${st.id}-${w.name}`,
    command: [...w.command],
  };
  const rec = await l.spawn(`w-${w.name}`, [
    'nsenter',
    `--net=/run/netns/${node.netns}`,
    '--',
    process.execPath,
    join(st.repo, 'bin', 'oaknet.mjs'),
    'run',
    '--service',
    w.service,
    '--instance',
    String(w.instance),
    '--node-socket',
    node.socket,
    '--netns',
    state.netns,
    ...(st.insecure ? [] : ['--token-file', tokenFile(st, 'orchestrator')]),
    '--',
    ...w.command,
  ]);
  (st.workloads ??= []).push(state);
  l.save();
  await l.waitReady(
    rec,
    `${w.service} instance ${w.instance} deployed`,
    async () => {
      const log = await tailFile(rec.log);
      return log.includes(`(netns ${state.netns})`) && (!w.readyLine || log.includes(w.readyLine))
        ? true
        : undefined;
    },
    timeoutMs,
  );
  return state;
}
