/**
 * Runs `oaknet <command>` as a real child process (as a user would), and waits for it to answer HTTP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpTransport } from '../../src/protocol/http-client.ts';

export const OAKNET_BIN = fileURLToPath(new URL('../../bin/oaknet.mjs', import.meta.url));

export interface OaknetProcess {
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code or signal name once the process ended. */
  exited: Promise<number | string>;
  /** SIGTERM (or the given signal) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export function runOaknet(args: string[], env: NodeJS.ProcessEnv = {}): OaknetProcess {
  const child = spawn(process.execPath, [OAKNET_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  return {
    child,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Resolves when GET url answers 200, rejects after timeoutMs (or when the process died). */
export async function waitHttpOk(url: string, proc: OaknetProcess, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let died = false;
  void proc.exited.then(() => (died = true));
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not up yet
    }
    if (died) throw new Error(`process exited before ${url} answered:\n${proc.output()}`);
    if (Date.now() > deadline)
      throw new Error(`${url} did not answer within ${timeoutMs} ms:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * `oaknet root` on 127.0.0.1:port with its store in dir, ready to answer: secure (https; its CA and admin
 * token in dir/pki) unless `insecure`, with any other `flags`.
 */
export async function startRootProcess(
  dir: string,
  port: number,
  opts: { insecure?: boolean; flags?: readonly string[] } = {},
): Promise<{ proc: OaknetProcess; url: string; ca?: string; adminToken?: string }> {
  const proc = runOaknet([
    'root',
    '--port',
    String(port),
    '--host',
    '127.0.0.1',
    '--store',
    join(dir, 'root.db'),
    '--log-level',
    'warn',
    ...(opts.insecure ? ['--insecure'] : []),
    ...(opts.flags ?? []),
  ]);
  if (opts.insecure) {
    const url = `http://127.0.0.1:${port}`;
    await waitHttpOk(`${url}/api/net/health`, proc);
    return { proc, url };
  }
  const url = `https://127.0.0.1:${port}`;
  const tokenFile = join(dir, 'pki', 'admin.token');
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (existsSync(tokenFile)) {
      const ca = readFileSync(join(dir, 'pki', 'ca.crt'), 'utf8');
      const t = new HttpTransport(url, { tls: { ca, expect: { kind: 'root' } } });
      const res = await t.request('GET', '/api/net/health').catch(() => undefined);
      t.close();
      if (res?.status === 200) return { proc, url, ca, adminToken: readFileSync(tokenFile, 'utf8').trim() };
    }
    if (proc.child.exitCode !== null) throw new Error(`oaknet root exited:\n${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`oaknet root did not come up in 20 s:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
