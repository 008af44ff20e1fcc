/**
 * @module system/proc
 * What Linux's /proc says about a process: its state, process group and start time (`/proc/PID/stat`), its
 * environment, its network namespace, and the processes that exist. A PID alone can be reused after the
 * process exits; PID and start time together name one process for the whole boot, and the boot ID tells
 * boots apart. For the platform (supervision, teardown) and the NetManager (instance processes).
 * Everything here only reads; an absent process is an undefined or false answer, never an exception.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';

/** What `/proc/PID/stat` says about a process. */
export interface ProcStat {
  /** State letter (R, S, D, Z, X, ...). */
  state: string;
  /** Process group ID. */
  pgrp: number;
  /** Start time in clock ticks after boot. */
  startTime: number;
}

/** A process as the kernel knows it, stable across PID reuse (within one boot). */
export interface ProcessIdentity {
  /** Process ID. */
  pid: number;
  /** Start time in clock ticks after boot (`/proc/PID/stat` field 22). */
  startTime: number;
}

/** Reads `/proc/PID/stat`; undefined when there is no such process. */
export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const pgrp = Number(rest[2]);
  const startTime = Number(rest[19]);
  if (state === undefined || !Number.isFinite(pgrp) || !Number.isFinite(startTime)) return undefined;
  return { state, pgrp, startTime };
}

/** True while the identified process exists, is the same process (start time) and is not a zombie. */
export function isAlive(id: ProcessIdentity): boolean {
  const stat = readProcStat(id.pid);
  return stat !== undefined && stat.startTime === id.startTime && stat.state !== 'Z' && stat.state !== 'X';
}

/** This boot's ID (`/proc/sys/kernel/random/boot_id`), read once: start times compare only within a boot. */
export const bootId: () => string = (() => {
  let id: string | undefined;
  return () => (id ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
})();

/** Inode of process `pid`'s network namespace (`/proc/PID/ns/net`); undefined when there is no such process. */
export function netnsInode(pid: number): number | undefined {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino;
  } catch {
    return undefined;
  }
}

/** True if process `pid` has `marker` ("KEY=value") in its environment. */
export function hasEnvMarker(pid: number, marker: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(marker);
  } catch {
    return false;
  }
}

/** The PIDs in /proc now (zombies included). */
export function listPids(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number);
}

/** Live processes carrying environment `marker`: what a platform left running, whoever recorded it. */
export function processesWithMarker(marker: string): number[] {
  return listPids().filter((pid) => {
    const stat = readProcStat(pid);
    return stat !== undefined && stat.state !== 'Z' && hasEnvMarker(pid, marker);
  });
}

/** Live processes whose network namespace is the named one (`/run/netns/NAME`); [] when it does not exist. */
export function processesInNetns(name: string): number[] {
  let ns: { dev: number; ino: number };
  try {
    ns = statSync(`/run/netns/${name}`);
  } catch {
    return [];
  }
  return listPids().filter((pid) => {
    try {
      const s = statSync(`/proc/${pid}/ns/net`);
      return s.ino === ns.ino && s.dev === ns.dev && readProcStat(pid)?.state !== 'Z';
    } catch {
      return false;
    }
  });
}
