/**
 * @module node/net/netns-harness
 * Tools of the NodeEnvironment integration test (environment.netns.ts), which runs as root inside a
 * throwaway namespace: commands here and in other namespaces, processes started inside them (tracked, so
 * stopStarted can kill them by PID), HTTP/UDP probes, and readings of links, addresses, routes, nft tables
 * and sysctls. Waits are conditions with deadlines.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { ExecRunner, ipJson, isRecord, nftJson } from './runner.ts';

/** The runner of the test's commands (and of the NodeEnvironment under test). */
export const runner = new ExecRunner({ timeoutMs: 20_000 });

const processes: ChildProcessWithoutNullStreams[] = [];

export async function sh(cmd: string, args: string[]): Promise<string> {
  return (await runner.run(cmd, args)).stdout;
}

/** Runs a command inside a named namespace. */
export function inNs(ns: string, cmd: string, args: string[]): Promise<string> {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args]);
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Starts `cmd` inside `ns` (ip execs it, so the PID is the command's) and tracks it for clean-up. */
export function startInNs(ns: string, cmd: string, args: string[]): ChildProcessWithoutNullStreams {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args]);
  processes.push(child);
  child.on('error', () => {});
  return child;
}

/** A process that holds `ns` and whose PID is inside it (ip netns exec has switched namespace and exec'd). */
export async function startHolder(ns: string): Promise<number> {
  const child = startInNs(ns, 'sleep', ['600']);
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start the holder');
  const nsInode = (await stat(`/run/netns/${ns}`)).ino;
  await waitFor(`holder ${pid} to enter ${ns}`, async () =>
    (await stat(`/proc/${pid}/ns/net`)).ino === nsInode ? true : undefined,
  );
  return pid;
}

/** Starts a node script inside `ns` and waits for it to print "ready". */
export async function startServer(ns: string, script: string): Promise<void> {
  const child = startInNs(ns, process.execPath, ['-e', script]);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(`server in ${ns} to be ready`, () =>
    Promise.resolve(out.includes('ready') ? true : undefined),
  );
}

/** GET over a fresh connection (no keep-alive pool: a pooled connection would outlive a removed mapping). */
export function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
  });
}

/** The error code of a GET that fails (e.g. ECONNREFUSED), or undefined when it succeeds. */
export async function connectError(url: string): Promise<string | undefined> {
  try {
    await httpGet(url);
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/**
 * Makes `n` HTTP GETs to `url` at once from inside `ns` (a node process there), each over its own connection
 * and given up after `timeoutMs`; returns how many got an HTTP answer (any status).
 */
export async function httpAnswers(ns: string, url: string, n: number, timeoutMs: number): Promise<number> {
  const script = `
const http = require('node:http');
const [url, n, ms] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const one = () => new Promise((resolve) => {
  const req = http.get(url, { agent: false, timeout: ms }, (res) => { res.resume(); res.on('end', () => resolve(1)); });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', () => resolve(0));
});
Promise.all(Array.from({ length: n }, one)).then((r) => console.log(r.reduce((a, b) => a + b, 0)));
`;
  return Number((await inNs(ns, process.execPath, ['-e', script, url, String(n), String(timeoutMs)])).trim());
}

export async function udpEcho(host: string, port: number, payload: string): Promise<string> {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no UDP answer from ${host}:${port}`)), 5000);
      socket.on('message', (msg) => {
        clearTimeout(timer);
        resolve(msg.toString());
      });
      socket.on('error', reject);
      socket.send(payload, port, host);
    });
  } finally {
    socket.close();
  }
}

export async function linkNames(ns?: string): Promise<string[]> {
  const links = ns
    ? (JSON.parse(await inNs(ns, 'ip', ['-j', 'link', 'show'])) as unknown[])
    : await ipJson(runner, ['link', 'show']);
  return links.filter(isRecord).map((l) => String(l['ifname']));
}

export async function addressesOf(dev: string, ns?: string): Promise<string[]> {
  const args = ['-j', 'addr', 'show', 'dev', dev];
  const list = ns ? (JSON.parse(await inNs(ns, 'ip', args)) as unknown[]) : await ipJson(runner, args);
  const first = list.find(isRecord);
  const infos = first && Array.isArray(first['addr_info']) ? (first['addr_info'] as unknown[]) : [];
  return infos.filter(isRecord).map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
}

/** The MAC address of `dev` (in namespace `ns`, or here). */
export async function linkMac(dev: string, ns?: string): Promise<string> {
  const args = ['-j', 'link', 'show', 'dev', dev];
  const list = ns ? (JSON.parse(await inNs(ns, 'ip', args)) as unknown[]) : await ipJson(runner, args);
  return String(list.find(isRecord)?.['address']);
}

/** The MAC that namespace `ns` holds for neighbour `ip`, if it has an entry. */
export async function neighbourMac(ns: string, ip: string): Promise<string | undefined> {
  const list = JSON.parse(await inNs(ns, 'ip', ['-j', 'neigh', 'show', ip])) as unknown[];
  const lladdr = list.find(isRecord)?.['lladdr'];
  return typeof lladdr === 'string' ? lladdr : undefined;
}

export async function routeDev(dst: string): Promise<string> {
  const list = await ipJson(runner, ['route', 'get', dst]);
  const first = list.find(isRecord);
  return String(first?.['dev']);
}

export async function nftTables(): Promise<string[]> {
  return (await nftJson(runner, ['list', 'tables']))
    .map((i) => (isRecord(i) ? i['table'] : undefined))
    .filter(isRecord)
    .map((t) => `${String(t['family'])} ${String(t['name'])}`);
}

export async function mapElementCount(table: string): Promise<number> {
  const listing = await nftJson(runner, ['list', 'table', 'inet', table]);
  let count = 0;
  for (const item of listing) {
    const map = isRecord(item) ? item['map'] : undefined;
    if (isRecord(map) && Array.isArray(map['elem'])) count += map['elem'].length;
  }
  return count;
}

export async function sysctl(key: string): Promise<string> {
  return (await readFile(`/proc/sys/${key}`, 'utf8')).trim();
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

/** Kills (SIGKILL, by PID) every process startInNs started that is still running. */
export function stopStarted(): void {
  for (const p of processes) {
    if (p.pid !== undefined && p.exitCode === null) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
