/**
 * What a benchmark made, undone in every path: each step that creates something registers how to undo it
 * (a process by its PID, a namespace by its name); `runCleanups` undoes everything still registered, newest
 * first, once. The bench calls it in `finally`; `installSignalCleanup` calls it on SIGINT/SIGTERM before
 * exiting, since Node would otherwise exit at once and skip every `finally`.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';
import type { Platform } from '../src/platform/platform.ts';
import { runWorkload, type Workload } from '../test/support/workloads.ts';

const exec = promisify(execFile);

interface Step {
  what: string;
  undo: () => unknown;
}

const steps: Step[] = [];
let interrupted = false;

/** Registers an undo step; the returned function runs it now (and unregisters it). */
export function onCleanup(what: string, undo: () => unknown): () => Promise<void> {
  const step: Step = { what, undo };
  steps.push(step);
  return async () => {
    const i = steps.indexOf(step);
    if (i < 0) return;
    steps.splice(i, 1);
    await runStep(step);
  };
}

async function runStep(step: Step): Promise<void> {
  try {
    await step.undo();
  } catch (err) {
    process.stderr.write(
      `bench cleanup: ${step.what}: ${err instanceof Error ? err.message : String(err)}\n`,
    );
  }
}

/** Undoes everything still registered, newest first. */
export async function runCleanups(): Promise<void> {
  while (steps.length > 0) await runStep(steps.pop()!);
}

/** True once SIGINT/SIGTERM arrived: long loops stop early. */
export function wasInterrupted(): boolean {
  return interrupted;
}

/** On SIGINT/SIGTERM: undo everything, then exit 130 (a second signal exits at once). */
export function installSignalCleanup(): void {
  const handler = (signal: NodeJS.Signals) => {
    if (interrupted) {
      process.stderr.write(`bench: ${signal} again; exiting without finishing the cleanup\n`);
      process.exit(130);
    }
    interrupted = true;
    process.stderr.write(`\nbench: ${signal}; removing what the bench made...\n`);
    void runCleanups().finally(() => process.exit(130));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

/** A child process we own, stopped by its PID (Node reaped it, so the PID cannot belong to someone else). */
export interface OwnedProcess {
  child: ChildProcess;
  name: string;
  output(): string;
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after graceMs; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Spawns argv (output kept, not printed) and registers its stop as a cleanup step. */
export function spawnOwned(name: string, argv: readonly string[], opts: SpawnOptions = {}): OwnedProcess {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('spawnOwned: empty argv');
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    child.once('error', (err) => {
      out += `spawn error: ${err.message}\n`;
      resolve('error');
    });
  });
  const stop = async (graceMs = 3000) => {
    if (alive(child) && child.pid !== undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => alive(child) && child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
  };
  const unregister = onCleanup(`stop ${name} (pid ${child.pid ?? '?'})`, () => stop());
  return {
    child,
    name,
    output: () => out,
    exited,
    stop: async (graceMs?: number) => {
      await stop(graceMs);
      await unregister();
    },
  };
}

/** Runs a command to completion: stdout, or an error with its stderr (bounded by timeoutMs). */
export async function run(argv: readonly string[], timeoutMs = 60_000, input?: string): Promise<string> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('run: empty argv');
  if (input !== undefined) {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.once('error', reject);
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(out);
        else reject(new Error(`${argv.join(' ')}: exit ${code}: ${err.trim()}`));
      });
      child.stdin.end(input);
    });
  }
  try {
    const { stdout } = await exec(cmd, args, { timeout: timeoutMs, maxBuffer: 1 << 26 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${argv.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

/** Resolves once p printed `text`; rejects when it exits first or after timeoutMs. */
export async function waitOutput(p: OwnedProcess, text: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!p.output().includes(text)) {
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw new Error(`${p.name} exited: ${p.output().trim().slice(-300)}`);
    if (Date.now() > deadline) throw new Error(`${p.name}: no "${text}" within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Rejects naming the first of `tools` that is not installed (sbin directories included, for dnsmasq). */
export async function requireTools(tools: readonly string[]): Promise<void> {
  for (const tool of tools)
    await run(['sh', '-c', `PATH=$PATH:/usr/sbin:/sbin command -v ${tool}`]).catch(() => {
      throw new Error(`${tool} is not installed (scripts/ensure-deps.mjs installs it)`);
    });
}

/** A workload started as a user runs it (test/support/workloads.ts), stopped by the cleanup. */
export async function ownedWorkload(
  platform: Platform,
  node: string,
  spec: Parameters<typeof runWorkload>[2],
  timeoutMs = 60_000,
): Promise<Workload> {
  const w = await runWorkload(platform, node, spec, timeoutMs);
  onCleanup(`stop workload ${spec.service}.${spec.instance}`, () => w.stop());
  return w;
}
