/**
 * @module node/process-inspector
 * Which process an instance is: the NetManager records an instance's process by its boot-qualified start
 * time and network namespace, so that a PID reused later (after a crash or a reboot) is never taken for the
 * instance. `procInspector` reads /proc (system/proc.ts); tests give processes of their own.
 */
import { bootId, netnsInode, readProcStat } from '../system/proc.ts';

/** What identifies a running process. */
export interface ProcessFacts {
  /** Boot ID and start time ("<boot id>/<clock ticks>"): unique for the process, across reboots. */
  start: string;
  /** Inode of its network namespace. */
  netns: number;
}

export interface ProcessInspector {
  /** The facts of process `pid`; undefined when there is none. */
  identity(pid: number): ProcessFacts | undefined;
}

/** The processes of this machine, from /proc. */
export const procInspector: ProcessInspector = {
  identity(pid) {
    const stat = readProcStat(pid);
    const netns = netnsInode(pid);
    if (!stat || netns === undefined) return undefined;
    return { start: `${bootId()}/${stat.startTime}`, netns };
  },
};
