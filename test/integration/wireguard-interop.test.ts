/**
 * Interoperability of oaknet's WireGuard (handshake.ts, cookie.ts, transport-js.ts) with Debian's
 * wireguard-go, the reference userspace implementation: both handshake directions and transport data both
 * ways, with real packets through wireguard-go's TUN and the kernel's ICMP in a namespace of our own.
 *
 *   namespace oaknet-wgi-<pid>:  lo 127.0.0.1
 *     wireguard-go (wgi<pid>, 10.99.0.1/24, UDP 51820)  <-- UDP on lo -->  wireguard-interop.peer.ts (10.99.0.2)
 *
 * (b) `ping 10.99.0.2` in the namespace makes wireguard-go initiate; the TS peer responds, opens the echo
 *     request and answers it: ping exits 0 only if wireguard-go accepted the TS side's transport message.
 * (a) the TS peer initiates, wireguard-go responds, the TS peer sends a keepalive, then an echo request to
 *     10.99.0.1, and the kernel's echo reply comes back through wireguard-go under the new session.
 * (c) the TS peer acts as a responder under load: wireguard-go's first initiation (after the peer was removed
 *     and added again, so it has no session) gets a cookie reply (XChaCha20-Poly1305, cookie.ts); its retry
 *     after REKEY_TIMEOUT carries a MAC2 that the TS CookieChecker verifies, and only then is it answered.
 * (d) with a preshared key set on both sides (`wg genpsk`), the TS peer's handshake and an echo still work.
 * Needs root, /usr/bin/wireguard-go and /usr/bin/wg (Debian's wireguard-go and wireguard-tools); fails when
 * they are missing. Everything it starts it stops by PID; the namespace goes by name, also after a failure.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { KeyPair } from '../../src/dataplane/wireguard/keys.ts';

const execFileAsync = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const NS = `oaknet-wgi-${process.pid}`;
// the UAPI socket lives in /var/run/wireguard, shared by every namespace: the interface name must be unique too
const IFACE = `wgi${process.pid}`;
const WG_PORT = 51820;
const WIREGUARD_GO = '/usr/bin/wireguard-go';
const WG = '/usr/bin/wg';
const SOCKET = `/var/run/wireguard/${IFACE}.sock`;

async function run(file: string, args: readonly string[]): Promise<string> {
  return (await execFileAsync(file, args, { timeout: 15_000 })).stdout;
}

async function inNs(file: string, args: readonly string[]): Promise<string> {
  return run('ip', ['netns', 'exec', NS, file, ...args]);
}

/** Polls `probe` until it resolves true, failing after `ms`. */
async function until(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Lines of JSON from the peer process, each awaited by its event name. */
class PeerEvents {
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

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  return () => text.slice(-4000);
}

describe('WireGuard interoperability with Debian wireguard-go', () => {
  let wgGo: ChildProcess | undefined;
  let peer: ChildProcess | undefined;
  let events: PeerEvents | undefined;
  /** The peer's events; each scenario fails (not skips) when setup did not get that far. */
  const peerEvents = (): PeerEvents => {
    if (!events) throw new Error('setup failed: no TS peer is running');
    return events;
  };
  let wgGoLog: () => string = () => '';
  let peerLog: () => string = () => '';
  let peerPublic = '';
  let peerPort = 0;
  let tmp = '';
  const started = Math.floor(Date.now() / 1000);

  after(async () => {
    peer?.stdin?.end();
    await stop(peer);
    await stop(wgGo);
    await run('ip', ['netns', 'del', NS]).catch(() => undefined);
    fs.rmSync(SOCKET, { force: true });
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  // setup is a test of its own, so that a missing wireguard-go or wg is a failure (a failed hook would only cancel)
  it('runs wireguard-go in a namespace of its own and the TS peer beside it, each knowing the other', async () => {
    assert.ok(fs.existsSync(WIREGUARD_GO), `${WIREGUARD_GO} is missing: apt-get install wireguard-go`);
    assert.ok(fs.existsSync(WG), `${WG} is missing: apt-get install wireguard-tools`);
    assert.equal(process.getuid?.(), 0, 'this test needs root (network namespaces, a TUN device)');

    await run('ip', ['netns', 'add', NS]);
    await inNs('ip', ['link', 'set', 'lo', 'up']);
    wgGo = spawn('ip', ['netns', 'exec', NS, 'env', 'WG_PROCESS_FOREGROUND=1', WIREGUARD_GO, '-f', IFACE], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const goOut = collect(wgGo);
    let goStdout = '';
    wgGo.stdout?.on('data', (d: Buffer) => (goStdout += d.toString()));
    wgGoLog = () => `${goStdout.slice(-2000)}\n${goOut()}`;
    await until('wireguard-go to open its UAPI socket', 10_000, async () => {
      if (wgGo?.exitCode !== null) throw new Error(`wireguard-go exited: ${wgGoLog()}`);
      return inNs(WG, ['show', IFACE]).then(
        () => true,
        () => false,
      );
    });

    tmp = fs.mkdtempSync(join(os.tmpdir(), 'oaknet-wgi-'));
    const privateKey = (await run(WG, ['genkey'])).trim();
    fs.writeFileSync(join(tmp, 'private.key'), privateKey + '\n', { mode: 0o600 });
    const goPublic = (
      await new Promise<string>((resolve, reject) => {
        const p = execFile(WG, ['pubkey'], (err, stdout) =>
          err ? reject(new Error(err.message)) : resolve(stdout),
        );
        p.stdin?.end(privateKey + '\n');
      })
    ).trim();
    assert.equal(
      KeyPair.fromText(privateKey).publicText(),
      goPublic,
      'keys.ts derives what wg pubkey derives',
    );
    await inNs(WG, ['set', IFACE, 'private-key', join(tmp, 'private.key'), 'listen-port', String(WG_PORT)]);
    await inNs('ip', ['address', 'add', '10.99.0.1/24', 'dev', IFACE]);
    await inNs('ip', ['link', 'set', IFACE, 'up']);

    peer = spawn(
      'ip',
      ['netns', 'exec', NS, process.execPath, '--import', 'tsx', join(HERE, 'wireguard-interop.peer.ts')],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, WG_PEER_PUBLIC: goPublic, WG_PEER_PORT: String(WG_PORT) },
      },
    );
    peerLog = collect(peer);
    events = new PeerEvents(peer);
    const ready = await events.next('ready', 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\npeer stderr: ${peerLog()}`);
    });
    peerPublic = String(ready.publicKey);
    peerPort = Number(ready.port);
    await inNs(WG, [
      'set',
      IFACE,
      'peer',
      peerPublic,
      'endpoint',
      `127.0.0.1:${Number(ready.port)}`,
      'allowed-ips',
      '10.99.0.2/32',
    ]);
    const peers = await inNs(WG, ['show', IFACE, 'peers']);
    assert.equal(peers.trim(), peerPublic, 'wg parsed the TS side public key (keys.ts text form)');
  });

  it('(b) wireguard-go initiates, TS responds, and ICMP flows both ways over the session', async () => {
    const events = peerEvents();
    const from = events.all.length;
    const ping = inNs('ping', ['-c', '1', '-W', '5', '10.99.0.2']);
    const responded = await events.next('responded', 10_000, from);
    const request = await events.next('echo-request', 10_000, from);
    await assert.doesNotReject(
      ping,
      `ping failed: the TS echo reply was refused; wireguard-go: ${wgGoLog()}`,
    );
    assert.equal(request.slot, 0, 'opened with the session TS made as the responder');
    assert.equal(request.src, '10.99.0.1');
    assert.equal(request.dst, '10.99.0.2');
    assert.equal(request.checksumsValid, true);
    assert.equal(typeof responded.remoteIndex, 'number');
    assert.deepEqual(
      events.all.filter((e) => e.event === 'error'),
      [],
      `peer: ${peerLog()}`,
    );
  });

  it('(a) TS initiates, wireguard-go responds, TS sends a keepalive, then an echo request that the kernel answers', async () => {
    const events = peerEvents();
    const from = events.all.length;
    peer?.stdin?.write('initiate\n');
    const complete = await events.next('handshake-complete', 10_000, from);
    assert.equal(complete.keepaliveSent, true);
    const reply = await events.next('echo-reply', 10_000, from).catch((err: Error) => {
      throw new Error(`${err.message}\nwireguard-go: ${wgGoLog()}`);
    });
    assert.equal(
      reply.slot,
      1,
      'the reply came under the session TS initiated (wireguard-go took the keepalive)',
    );
    assert.equal(reply.src, '10.99.0.1');
    assert.equal(reply.dst, '10.99.0.2');
    assert.equal(reply.matches, true, 'the echo reply carries our id and payload');
    assert.equal(reply.checksumsValid, true);
    assert.deepEqual(
      events.all.filter((e) => e.event === 'error'),
      [],
      `peer: ${peerLog()}`,
    );
  });

  it('(c) under load, TS answers with a cookie reply and wireguard-go retries with a valid MAC2', async () => {
    const events = peerEvents();
    await inNs(WG, ['set', IFACE, 'peer', peerPublic, 'remove']);
    await inNs(WG, [
      'set',
      IFACE,
      'peer',
      peerPublic,
      'endpoint',
      `127.0.0.1:${peerPort}`,
      'allowed-ips',
      '10.99.0.2/32',
    ]);
    const from = events.all.length;
    peer?.stdin?.write('under-load\n');
    await events.next('under-load', 5_000, from);
    // wireguard-go retries an unanswered initiation after REKEY_TIMEOUT (5 s + up to 333 ms of jitter)
    const ping = inNs('ping', ['-c', '1', '-W', '15', '10.99.0.2']);
    const cookie = await events.next('cookie-sent', 10_000, from);
    const responded = await events.next('responded', 15_000, from);
    assert.equal(responded.mac2Valid, true, 'the retried initiation carries the MAC2 of our cookie');
    // (wireguard-go's retry is a new initiation with a new sender index: the cookie binds the source, not it)
    assert.equal(typeof cookie.senderIndex, 'number');
    await events.next('echo-request', 10_000, from);
    await assert.doesNotReject(ping, `ping failed; wireguard-go: ${wgGoLog()}`);
    assert.deepEqual(
      events.all.filter((e) => e.event === 'error'),
      [],
      `peer: ${peerLog()}`,
    );
  });

  it('(d) with a preshared key on both sides, TS initiates and the echo comes back', async () => {
    const events = peerEvents();
    const psk = (await run(WG, ['genpsk'])).trim();
    fs.writeFileSync(join(tmp, 'psk'), psk + '\n', { mode: 0o600 });
    await inNs(WG, ['set', IFACE, 'peer', peerPublic, 'preshared-key', join(tmp, 'psk')]);
    const from = events.all.length;
    peer?.stdin?.write(`initiate ${psk}\n`);
    const initiated = await events.next('initiated', 5_000, from);
    assert.equal(initiated.psk, true);
    await events.next('handshake-complete', 10_000, from);
    const reply = await events.next('echo-reply', 10_000, from);
    assert.equal(reply.slot, 1);
    assert.equal(reply.matches, true);
    assert.deepEqual(
      events.all.filter((e) => e.event === 'error'),
      [],
      `peer: ${peerLog()}`,
    );
  });

  it('wg show reports the handshakes and the traffic', async () => {
    const latest = await inNs(WG, ['show', IFACE, 'latest-handshakes']);
    const [key, when] = latest.trim().split('\t');
    assert.equal(key, peerPublic);
    assert.ok(Number(when) >= started - 1, `latest handshake at ${when}, test started at ${started}`);
    const [, rx, tx] = (await inNs(WG, ['show', IFACE, 'transfer'])).trim().split('\t');
    assert.ok(Number(rx) > 0 && Number(tx) > 0, `transfer rx ${rx} tx ${tx}`);
  });
});
