/**
 * @module platform/launcher
 * How the platform starts its processes: each one is spawned detached with the platform's marker in its
 * environment and its output in `<stateDir>/logs/<name>.log`, and recorded in the state file right after it
 * started (so `down` finds it after a crash of the creator), then waited for with a readiness probe whose
 * failure carries the tail of its log.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage, SystemError } from '../errors.ts';
import { isAlive } from '../system/proc.ts';
import { PLATFORM_ENV, platformMarker } from './plan.ts';
import { spawnDetached, stopProcesses, tailFile, waitFor, type ProcessRecord } from './processes.ts';
import { writeState, type PlatformState } from './state.ts';

/** Starts, records, waits for and stops the processes of one platform; writes its state file. */
export class Launcher {
  constructor(
    /** The platform's state, shared with its Platform (this writes it). */
    readonly st: PlatformState,
    readonly log: Logger,
  ) {}

  /** Writes the state file. */
  save(): void {
    writeState(this.st);
  }

  /** The log file of process `name`. */
  logPath(name: string): string {
    return join(this.st.stateDir, 'logs', `${name}.log`);
  }

  /** argv that runs `oaknet <args>` inside namespace `ns`. */
  oaknetArgv(ns: string, args: string[]): string[] {
    return ['ip', 'netns', 'exec', ns, process.execPath, join(this.st.repo, 'bin', 'oaknet.mjs'), ...args];
  }

  /** Spawns `argv` detached as process `name` (replacing an earlier record of that name) and records it. */
  async spawn(name: string, argv: string[]): Promise<ProcessRecord> {
    const rec = await spawnDetached({
      name,
      argv,
      log: this.logPath(name),
      modeLog: this.log,
      env: { [PLATFORM_ENV]: this.st.id },
      cwd: this.st.repo,
    });
    this.st.processes = [...this.st.processes.filter((p) => p.name !== rec.name), rec];
    this.save();
    return rec;
  }

  /** Waits for `probe` while `rec` lives; on failure the error carries the tail of its log. */
  async waitReady<T>(
    rec: ProcessRecord,
    what: string,
    probe: () => Promise<T | undefined> | T | undefined,
    timeoutMs = 30_000,
  ): Promise<T> {
    try {
      return await waitFor(`${rec.name}: ${what}`, probe, {
        timeoutMs,
        failIf: () => (isAlive(rec) ? undefined : 'the process exited'),
      });
    } catch (err) {
      const tail = await tailFile(rec.log);
      throw new SystemError(`${errorMessage(err)}; log ${rec.log} ends with:\n${tail}`, { cause: err });
    }
  }

  /** Stops `rec` and its group (SIGTERM, SIGKILL after graceMs). */
  async stop(rec: ProcessRecord, graceMs: number): Promise<void> {
    await stopProcesses([rec], { marker: platformMarker(this.st.id), graceMs }, this.log);
  }

  /** Stops the recorded process `name` (SIGTERM, SIGKILL after 8 s), if there is one. */
  async stopRecorded(name: string): Promise<void> {
    const rec = this.st.processes.find((p) => p.name === name);
    if (rec) await this.stop(rec, 8000);
  }
}
