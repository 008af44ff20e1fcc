/**
 * Workloads on a local platform for end-to-end tests: `oaknet run` inside a node's namespace, as a user runs
 * it, and commands inside the workload's own namespace.
 */
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Platform } from '../../src/platform/platform.ts';
import { OAKNET_BIN } from './oaknet-process.ts';

const exec = promisify(execFile);
export const FIXTURES = fileURLToPath(new URL('../e2e/fixtures/', import.meta.url));

export interface Workload {
  service: string;
  instance: number;
  node: string;
  netns: string;
  child: ChildProcess;
  output(): string;
  /** SIGTERM (oaknet run withdraws, drains, stops the command, undeploys) and wait for the exit. */
  stop(): Promise<number | null>;
}

/** Starts `oaknet run` on a node; resolves when the instance is deployed (and `readyLine` printed, if given). */
export async function runWorkload(
  platform: Platform,
  node: string,
  spec: { service: string; instance: number; netns: string; command: string[]; readyLine?: string },
  timeoutMs = 30_000,
): Promise<Workload> {
  const child = platform.exec(
    node,
    [
      process.execPath,
      OAKNET_BIN,
      'run',
      '--service',
      spec.service,
      '--instance',
      String(spec.instance),
      '--node-socket',
      platform.node(node).socket,
      '--netns',
      spec.netns,
      '--',
      ...spec.command,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${spec.service}.${spec.instance} not ready in ${timeoutMs} ms:\n${out}`)),
      timeoutMs,
    );
    const check = () => {
      const deployed = out.includes(`(netns ${spec.netns})`);
      if (deployed && (!spec.readyLine || out.includes(spec.readyLine))) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      check();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
      check();
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(
        new Error(`oaknet run exited (${code}) before ${spec.service}.${spec.instance} was ready:\n${out}`),
      );
    });
  });
  return {
    ...spec,
    node,
    child,
    output: () => out,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Runs a command inside a workload's namespace; resolves with its stdout (rejects on a non-zero exit). */
export async function inNetns(netns: string, argv: string[], timeoutMs = 60_000): Promise<string> {
  const { stdout } = await exec('ip', ['netns', 'exec', netns, ...argv], {
    timeout: timeoutMs,
    maxBuffer: 1 << 24,
  });
  return stdout;
}
