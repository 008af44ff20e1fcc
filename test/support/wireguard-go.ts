/**
 * @module test/support/wireguard-go
 * Debian's wireguard-go (the reference userspace WireGuard) in a network namespace of a test's own, for the
 * interop tests: namespace `oaknet-<tag>-<pid>` with lo up, wireguard-go on TUN `<tag><pid>` (its UAPI socket,
 * /var/run/wireguard/<iface>.sock, is shared by every namespace, so the interface name must be unique too),
 * set up with `wg set` and `ip`, ready once `wg show` gets an answer on that socket. The test's peer (a
 * TypeScript file that prints one JSON event a line and reads commands a line) runs in the same namespace.
 * `stop()` ends every process by its PID and removes the namespace, the socket and the key files by name,
 * also after a start that failed half-way. The bench reuses `wireguardGoArgv` and `waitWireguardGo`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ExecRunner } from '../../src/node/net/runner.ts';
import { checkIfName, createNetns, deleteNetns, ipIn, netnsExecArgv } from '../../src/platform/netns.ts';
import { inNetns } from './workloads.ts';

export const WIREGUARD_GO = '/usr/bin/wireguard-go';
export const WG = '/usr/bin/wg';
/** Where wireguard-go puts the UAPI socket of each interface (one directory for every namespace). */
export const WG_SOCKET_DIR = '/var/run/wireguard';

/** The argv that runs wireguard-go in the foreground on TUN `iface` in namespace `netns` (its PID is the child's). */
export function wireguardGoArgv(netns: string, iface: string): string[] {
  checkIfName(iface);
  return netnsExecArgv(netns, ['env', 'WG_PROCESS_FOREGROUND=1', WIREGUARD_GO, '-f', iface]);
}

/**
 * Resolves once wireguard-go answers on the UAPI socket of `iface` (`wg show IFACE` in `netns` succeeds; the
 * TUN exists before the socket does, so `ip` and `wg set` work from then on). Rejects at once when
 * `exited()` says the process ended, and after `timeoutMs`.
 */
export async function waitWireguardGo(
  netns: string,
  iface: string,
  exited: () => boolean,
  log: () => string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited()) throw new Error(`wireguard-go (${iface} in ${netns}) exited: ${log()}`);
    const ok = await inNetns(netns, [WG, 'show', iface], 5_000).then(
      () => true,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(
        `wireguard-go did not open its UAPI socket for ${iface} within ${timeoutMs} ms: ${log()}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** `wg pubkey` of a private key in wg's text form. */
export function wgPubkey(privateKey: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const p = execFile(WG, ['pubkey'], (err, stdout) =>
      err ? reject(new Error(err.message)) : resolve(stdout),
    );
    p.stdin?.end(privateKey + '\n');
  }).then((s) => s.trim());
}

/** Lines of JSON from a peer process, each awaited by its event name (a line that is not JSON: event "stdout"). */
export class PeerEvents {
  private readonly seen: Record<string, unknown>[] = [];
  private readonly waiters: { event: string; resolve: (e: Record<string, unknown>) => void }[] = [];

  constructor(child: ChildProcess) {
    if (!child.stdout) throw new Error('the peer has no stdout');
    createInterface({ input: child.stdout }).on('line', (line) => {
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        e = { event: 'stdout', line };
      }
      this.seen.push(e);
      for (const w of this.waiters.filter((x) => x.event === e.event)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(e);
      }
    });
  }

  /** Every event so far (for failure messages). */
  get all(): readonly Record<string, unknown>[] {
    return this.seen;
  }

  /** The first event named `event` after `from` events (already seen or still to come); rejects after `ms`. */
  next(event: string, ms: number, from = 0): Promise<Record<string, unknown>> {
    const found = this.seen.slice(from).find((e) => e.event === event);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(`no "${event}" from the peer within ${ms} ms; it said ${JSON.stringify(this.seen)}`),
        );
      }, ms);
      this.waiters.push({
        event,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }
}

/** A test's peer process in the namespace, after it printed its "ready" event. */
export interface Peer {
  child: ChildProcess;
  events: PeerEvents;
  /** The last 4,000 characters of its stderr. */
  log: () => string;
  /** The public key (wg text form) and UDP port its "ready" event named. */
  publicKey: string;
  port: number;
  /** Writes one command line to its stdin. */
  send: (line: string) => void;
}

/** SIGTERM, SIGKILL after 3 s; resolves once the child exited (at once when it never ran or already exited). */
async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

/** Keeps the child's stderr (and stdout when `withStdout`); the returned function gives the tails. */
function keepOutput(child: ChildProcess, withStdout = false): () => string {
  let err = '';
  let out = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  if (withStdout) child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  return () => (withStdout ? `${out.slice(-2000)}\n${err.slice(-4000)}` : err.slice(-4000));
}

const inUse = new Set<string>();

/**
 * wireguard-go in a namespace of its own. Construct it (names only), register `stop()` in `after`, then
 * `start()`: whatever `start` got to make, `stop` removes.
 */
export class WireguardGoNetns {
  /** The namespace, `oaknet-<tag>-<pid>`. */
  readonly netns: string;
  /** The TUN, `<tag><pid>`. */
  readonly iface: string;
  /** wireguard-go's UAPI socket. */
  readonly socket: string;
  private readonly runner = new ExecRunner();
  private child: ChildProcess | undefined;
  private goLog: () => string = () => '';
  private readonly peers: ChildProcess[] = [];
  private dir: string | undefined;

  /** `tag`: a few lowercase letters naming the test (wgi, wgt): pid-unique names for every test file at once. */
  constructor(tag: string) {
    this.netns = `oaknet-${tag}-${process.pid}`;
    this.iface = `${tag}${process.pid}`;
    checkIfName(this.iface);
    if (inUse.has(this.netns)) throw new Error(`a WireguardGoNetns named ${this.netns} exists already`);
    inUse.add(this.netns);
    this.socket = join(WG_SOCKET_DIR, `${this.iface}.sock`);
  }

  /**
   * Fails (an assertion, so that the setup test fails rather than skips) without root, wireguard-go or wg;
   * then creates the namespace (lo up) and runs wireguard-go in it until it answers on its UAPI socket.
   */
  async start(): Promise<void> {
    assert.ok(fs.existsSync(WIREGUARD_GO), `${WIREGUARD_GO} is missing: apt-get install wireguard-go`);
    assert.ok(fs.existsSync(WG), `${WG} is missing: apt-get install wireguard-tools`);
    assert.equal(process.getuid?.(), 0, 'this test needs root (network namespaces, a TUN device)');
    this.dir = fs.mkdtempSync(join(os.tmpdir(), `${this.netns}-`));
    await createNetns(this.runner, this.netns);
    const [cmd, ...args] = wireguardGoArgv(this.netns, this.iface);
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.goLog = keepOutput(child, true);
    await waitWireguardGo(
      this.netns,
      this.iface,
      () => child.exitCode !== null || child.signalCode !== null,
      this.goLog,
    );
  }

  /** wireguard-go's PID (`ip netns exec` and `env` exec it). */
  get pid(): number {
    const pid = this.child?.pid;
    if (pid === undefined) throw new Error('wireguard-go is not running');
    return pid;
  }

  /** What wireguard-go printed (tails of stdout and stderr), for failure messages. */
  log(): string {
    return this.goLog();
  }

  /** Runs argv in the namespace; its stdout (rejects on a non-zero exit or after timeoutMs). */
  exec(argv: readonly string[], timeoutMs = 15_000): Promise<string> {
    return inNetns(this.netns, [...argv], timeoutMs);
  }

  /** `wg ARGS` in the namespace. */
  wg(args: readonly string[]): Promise<string> {
    return this.exec([WG, ...args]);
  }

  /** `wg show IFACE what` for one peer: the fields after its key (an assertion fails when it is not listed). */
  async show(what: string, peer: string): Promise<string[]> {
    const line = (await this.wg(['show', this.iface, what]))
      .trim()
      .split('\n')
      .find((l) => l.startsWith(peer + '\t'));
    assert.ok(line, `wg show ${what} lists the peer`);
    return line.split('\t').slice(1);
  }

  /** A file (mode 0600) holding `text` and a newline, removed by stop(): for `wg set ... private-key|preshared-key`. */
  writeSecret(name: string, text: string): string {
    if (!this.dir) throw new Error('start() first');
    const file = join(this.dir, name);
    fs.writeFileSync(file, text + '\n', { mode: 0o600 });
    return file;
  }

  /** A fresh private key (`wg genkey`) set with `listen-port`; its text form. */
  async setPrivateKey(listenPort: number): Promise<string> {
    const privateKey = (await this.wg(['genkey'])).trim();
    const file = this.writeSecret('private.key', privateKey);
    await this.wg(['set', this.iface, 'private-key', file, 'listen-port', String(listenPort)]);
    return privateKey;
  }

  /** Gives the TUN the address `cidr` and sets it up. */
  async up(cidr: string): Promise<void> {
    await ipIn(this.runner, this.netns, [
      `address add ${cidr} dev ${this.iface}`,
      `link set ${this.iface} up`,
    ]);
  }

  /** Adds (or updates) a peer: its public key, endpoint host:port and allowed IPs. */
  async setPeer(publicKey: string, endpoint: string, allowedIps: string): Promise<void> {
    await this.wg(['set', this.iface, 'peer', publicKey, 'endpoint', endpoint, 'allowed-ips', allowedIps]);
  }

  async removePeer(publicKey: string): Promise<void> {
    await this.wg(['set', this.iface, 'peer', publicKey, 'remove']);
  }

  /**
   * Runs TypeScript `file` with `node --import tsx` in the namespace (env added to this process's) and
   * resolves once it printed its "ready" event (with `publicKey` and `port`); rejects when it exits first or
   * is not ready in 20 s. stop() ends it.
   */
  async startPeer(file: string, env: NodeJS.ProcessEnv, label = 'peer'): Promise<Peer> {
    const opts: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } };
    const [cmd, ...args] = netnsExecArgv(this.netns, [process.execPath, '--import', 'tsx', file]);
    const child = spawn(cmd!, args, opts);
    this.peers.push(child);
    const log = keepOutput(child);
    const events = new PeerEvents(child);
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) =>
        reject(new Error(`the ${label} exited (${code ?? signal}) before it was ready`)),
      ),
    );
    const ready = await Promise.race([events.next('ready', 20_000), exited]).catch((err: Error) => {
      throw new Error(`${err.message}\n${label} stderr: ${log()}`);
    });
    return {
      child,
      events,
      log,
      publicKey: String(ready.publicKey),
      port: Number(ready.port),
      send: (line) => void child.stdin?.write(line + '\n'),
    };
  }

  /** Ends the peers (stdin closed, then by PID) and wireguard-go (by PID); removes namespace, socket, keys by name. */
  async stop(): Promise<void> {
    for (const peer of this.peers.splice(0)) {
      peer.stdin?.end();
      await stopChild(peer);
    }
    await stopChild(this.child);
    this.child = undefined;
    try {
      await deleteNetns(this.runner, this.netns);
    } finally {
      fs.rmSync(this.socket, { force: true });
      if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
      this.dir = undefined;
    }
  }
}
