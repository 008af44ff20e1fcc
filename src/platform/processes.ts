/**
 * @module platform/processes
 * Supervision of the platform's long-lived processes without a supervisor process: each one is spawned
 * detached (its own session and process group, stdio appended to a log file), so it outlives whoever
 * created it, and is known afterwards only by what was recorded: PID plus the kernel's start time of that
 * PID (`system/proc.ts`). A PID alone can be reused after a crash; PID and start time together name one
 * process, so teardown never signals a stranger.
 *
 * Nothing here kills by name or pattern. Stopping signals the recorded process and the members of its
 * process group (forks such as socat's per-connection children), each member checked to carry the
 * platform's environment marker and to be younger than the recorded leader.
 *
 * Readiness is always a condition with a deadline (`waitFor`), polled: an HTTP health endpoint, a file, a
 * socket answer. The polling interval is not synchronisation; the condition is.
 */
import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { get, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { errorMessage, SystemError } from '../errors.ts';
import { tlsOptions, type ClientTls } from '../protocol/http-client.ts';
import { openPrivateSync, type ModeLog } from '../store/private-files.ts';
import { hasEnvMarker, isAlive, listPids, readProcStat, type ProcessIdentity } from '../system/proc.ts';

/** A process the platform started, as kept in the state file. */
export interface ProcessRecord extends ProcessIdentity {
  /** Unique name within the platform ("root", "c1", "n2", "fwd-root", ...). */
  name: string;
  /** The command line it was started with. */
  argv: string[];
  /** File its stdout and stderr are appended to. */
  log: string;
}

/**
 * The processes to signal for `rec`: the recorded leader if it is still the same process, plus live members
 * of its process group that carry `marker` and started no earlier than the leader (they are its forks).
 */
export function recordedProcesses(rec: ProcessIdentity, marker: string): number[] {
  const pids = isAlive(rec) ? [rec.pid] : [];
  for (const pid of listPids()) {
    if (pid === rec.pid) continue;
    const stat = readProcStat(pid);
    if (
      stat !== undefined &&
      stat.pgrp === rec.pid &&
      stat.state !== 'Z' &&
      stat.startTime >= rec.startTime &&
      hasEnvMarker(pid, marker)
    ) {
      pids.push(pid);
    }
  }
  return pids;
}

/** How to start a detached process. */
export interface SpawnDetachedOptions {
  /** Name of the process within the platform. */
  name: string;
  /** Command and arguments (argv[0] is looked up in PATH). */
  argv: string[];
  /** Log file (created 0600 if needed, else made 0600) that receives stdout and stderr, appended. */
  log: string;
  /** Where a tightened log file mode is reported (default: a process warning). */
  modeLog?: ModeLog;
  /** Extra environment variables (on top of this process's, minus the test runner's). */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
}

/** Starts a process in its own session (it survives our exit) and returns its record; SystemError if it cannot start. */
export async function spawnDetached(opts: SpawnDetachedOptions): Promise<ProcessRecord> {
  const [cmd, ...args] = opts.argv;
  if (cmd === undefined) throw new Error('spawnDetached: empty argv');
  const fd = openPrivateSync(opts.log, 'a', opts.modeLog);
  try {
    writeSync(fd, `--- ${new Date().toISOString()} starting ${opts.argv.join(' ')}\n`);
    const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
    delete env['NODE_TEST_CONTEXT']; // a child node must not think it is a test runner's child
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], env, cwd: opts.cwd });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) =>
        reject(new SystemError(`cannot start ${opts.name} (${cmd}): ${errorMessage(err)}`, { cause: err })),
      );
    });
    child.unref();
    const pid = child.pid;
    const stat = pid === undefined ? undefined : readProcStat(pid);
    if (pid === undefined || stat === undefined) {
      throw new SystemError(`${opts.name} exited at once; see ${opts.log}`);
    }
    return { name: opts.name, pid, startTime: stat.startTime, argv: [...opts.argv], log: opts.log };
  } finally {
    closeSync(fd);
  }
}

/** Options of waitFor. */
export interface WaitOptions {
  /** Give up after this many milliseconds. */
  timeoutMs: number;
  /** Time between two probes (default 100 ms). */
  intervalMs?: number;
  /** Checked after each failed probe: a message ends the wait at once (e.g. "process died"). */
  failIf?: () => string | undefined;
  /** A probe that has not settled after this long counts as failed (default 5000 ms). */
  probeTimeoutMs?: number;
}

/**
 * Runs `probe`, rejecting if it has not settled within `ms`. The timer is a normal (ref'd) one, so a probe
 * whose I/O silently vanished cannot let the event loop run empty while someone awaits it.
 */
function withDeadline<T>(probe: () => Promise<T> | T, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`probe did not settle within ${ms} ms`)), ms);
    Promise.resolve()
      .then(probe)
      .then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
  });
}

/** Probes until `probe` returns a value (not undefined); SystemError on deadline or when failIf says so. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  opts: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const probeMs = opts.probeTimeoutMs ?? 5000;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await withDeadline(probe, Math.max(1, Math.min(probeMs, deadline - Date.now())));
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    const failure = opts.failIf?.();
    if (failure !== undefined) throw new SystemError(`${what}: ${failure}`);
    if (Date.now() >= deadline) {
      const last = lastError === undefined ? '' : ` (last error: ${errorMessage(lastError)})`;
      throw new SystemError(`${what}: not within ${opts.timeoutMs} ms${last}`);
    }
    await delay(opts.intervalMs ?? 100);
  }
}

/**
 * GET `url` with node:http, one fresh connection (no keep-alive pool: a forwarder that accepts and then
 * drops connections must not leave a pooled request hanging), bounded by `timeoutMs`.
 */
export function httpGet(
  url: string,
  timeoutMs = 2000,
  tls?: ClientTls,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const onResponse = (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    };
    const req = url.startsWith('https:')
      ? httpsGet(url, { agent: false, timeout: timeoutMs, ...(tls ? tlsOptions(tls) : {}) }, onResponse)
      : get(url, { agent: false, timeout: timeoutMs }, onResponse);
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** True if GET `url` answers 2xx within `timeoutMs`. */
export async function httpOk(url: string, timeoutMs = 2000, tls?: ClientTls): Promise<boolean> {
  try {
    const { status } = await httpGet(url, timeoutMs, tls);
    return status >= 200 && status < 300;
  } catch {
    return false;
  }
}

/** The last `maxBytes` of a file ('' if unreadable), for error messages. */
export async function tailFile(path: string, maxBytes = 3000): Promise<string> {
  try {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const start = Math.max(0, size - maxBytes);
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      return buf.toString('utf8');
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}

/** Options of stopProcesses. */
export interface StopOptions {
  /** Environment marker ("KEY=value") that group members must carry to be signalled. */
  marker: string;
  /** Time to exit after SIGTERM before SIGKILL (default 8000 ms). */
  graceMs?: number;
  /** Time to vanish after SIGKILL (default 3000 ms). */
  killMs?: number;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone meanwhile
  }
}

function stillThere(pids: Map<number, number>): number[] {
  return [...pids].filter(([pid, start]) => isAlive({ pid, startTime: start })).map(([pid]) => pid);
}

/**
 * Stops the recorded processes (and their group members): SIGTERM, wait up to graceMs, SIGKILL, wait.
 * Returns the names of records that needed SIGKILL; SystemError if something survived SIGKILL.
 */
export async function stopProcesses(
  records: readonly ProcessRecord[],
  opts: StopOptions,
  log: Logger,
): Promise<string[]> {
  const targets = new Map<number, number>(); // pid -> start time
  const owner = new Map<number, string>();
  for (const rec of records) {
    for (const pid of recordedProcesses(rec, opts.marker)) {
      const stat = readProcStat(pid);
      if (stat === undefined) continue;
      targets.set(pid, stat.startTime);
      owner.set(pid, rec.name);
    }
  }
  if (targets.size === 0) return [];
  for (const pid of targets.keys()) signal(pid, 'SIGTERM');
  log.debug({ pids: [...targets.keys()] }, 'sent SIGTERM');
  const graceMs = opts.graceMs ?? 8000;
  let left = await waitGone(targets, graceMs);
  if (left.length === 0) return [];
  const killed = [...new Set(left.map((pid) => owner.get(pid) ?? String(pid)))];
  log.warn({ processes: killed, graceMs }, 'processes did not stop on SIGTERM; sending SIGKILL');
  for (const pid of left) signal(pid, 'SIGKILL');
  left = await waitGone(targets, opts.killMs ?? 3000);
  if (left.length > 0) throw new SystemError(`processes survived SIGKILL: ${left.join(', ')}`);
  return killed;
}

async function waitGone(targets: Map<number, number>, timeoutMs: number): Promise<number[]> {
  try {
    await waitFor('exit', () => (stillThere(targets).length === 0 ? true : undefined), {
      timeoutMs,
      intervalMs: 50,
    });
    return [];
  } catch {
    return stillThere(targets);
  }
}
