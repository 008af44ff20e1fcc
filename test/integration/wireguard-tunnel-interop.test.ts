/**
 * Interoperability of oaknet's REAL tunnel stack with Debian's wireguard-go: the native UdpTunnel (sendmmsg with
 * UDP GSO, sealing inside the native send with NativeTransportSessions, recvmmsg with UDP GRO) wrapped in a
 * WgTunnel (peers from `setPeers`, handshakes, timers, batches opened by the native opener), not the hand-written
 * peer of `wireguard-interop.test.ts`. No TUN on the oaknet side: its child process builds inner IP packets and
 * hands them to `wg.send`, and reads what `onBatch` delivers.
 *
 *   namespace oaknet-wgt-<pid>:  lo 127.0.0.1
 *     wireguard-go (wgt<pid>, 10.99.0.1/24, UDP 51820)  <-- UDP on lo -->  wireguard-tunnel-interop.peer.ts
 *                                                                           (WgTunnel, 10.99.0.2; a UDP sink on
 *                                                                           10.99.0.1 to count the burst)
 *
 * (a) oaknet initiates: an echo request through wg.send waits in WgTunnel for the handshake it starts; the
 *     kernel's echo reply comes back through wireguard-go and is delivered by onBatch.
 * (b) wireguard-go initiates (its peer removed and added again, so it has no session): `ping -c 3 10.99.0.2`;
 *     WgTunnel responds, onBatch delivers the echo requests, the child answers them through wg.send, and ping
 *     exits 0 only if wireguard-go accepted the replies.
 * (c) 200 UDP packets of 1,300 bytes in one wg.send batch (one sealed GSO run per 64 KiB) reach a socket on
 *     10.99.0.1 through wireguard-go's TUN.
 * Needs root, /usr/bin/wireguard-go, /usr/bin/wg and python3 (it enlarges wireguard-go's socket buffer, see
 * RCVBUF_PY); fails (not skips) when they are missing. Everything it
 * starts it stops by PID; the namespace goes by name, also after a failure.
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
const NS = `oaknet-wgt-${process.pid}`;
// the UAPI socket lives in /var/run/wireguard, shared by every namespace: the interface name must be unique too
const IFACE = `wgt${process.pid}`;
const WG_PORT = 51820;
const SINK_PORT = 40001;
const WIREGUARD_GO = '/usr/bin/wireguard-go';
const WG = '/usr/bin/wg';
const SOCKET = `/var/run/wireguard/${IFACE}.sock`;
const BURST_PACKETS = 200;
/** wireguard-go >= 0.0.20230223 sets its sockets' buffers to 7 MiB itself (SO_RCVBUFFORCE); see RCVBUF_PY. */
const WG_GO_RCVBUF = 7 << 20;
/**
 * Gives the sockets of process argv[1] bound to UDP port argv[2] a receive buffer of argv[3] bytes: it takes a
 * copy of each socket (pidfd_getfd) and sets SO_RCVBUFFORCE on it. Debian bookworm's wireguard-go (0.0.20220316)
 * leaves its socket at the 208 KiB default, which 200 datagrams of 1,348 bytes arriving in one burst overflow
 * (the kernel drops the rest, counted as UDP RcvbufErrors); later versions set 7 MiB themselves. Run in the
 * namespace (its /proc/net/udp).
 */
const RCVBUF_PY = `
import ctypes, os, socket, sys
pid, port, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
inodes = set()
for table in ('/proc/net/udp', '/proc/net/udp6'):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(':')[1], 16) == port:
            inodes.add(f[9])
pidfd = libc.syscall(434, pid, 0)  # pidfd_open
if pidfd < 0:
    sys.exit('pidfd_open: ' + os.strerror(ctypes.get_errno()))
done = 0
for fd in os.listdir('/proc/%d/fd' % pid):
    try:
        target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
    except OSError:
        continue
    if target.startswith('socket:[') and target[8:-1] in inodes:
        mine = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
        if mine < 0:
            sys.exit('pidfd_getfd: ' + os.strerror(ctypes.get_errno()))
        s = socket.socket(fileno=mine)
        s.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
        print(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        s.close()
        done += 1
sys.exit(0 if done else 'no socket on UDP port %d' % port)
`;

/** The namespace's UDP RcvbufErrors counter (datagrams the kernel dropped at a full socket buffer). */
async function rcvbufErrors(): Promise<number> {
  const lines = (await inNs('cat', ['/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const at = names.indexOf('RcvbufErrors');
  assert.ok(at > 0, 'the namespace has a UDP RcvbufErrors counter');
  return Number(values[at]);
}
const BURST_BYTES = 1300;

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

/** `wg show IFACE <what>` for the one peer: the fields after its key. */
async function wgShow(what: string, peer: string): Promise<string[]> {
  const line = (await inNs(WG, ['show', IFACE, what]))
    .trim()
    .split('\n')
    .find((l) => l.startsWith(peer + '\t'));
  assert.ok(line, `wg show ${what} lists the oaknet peer`);
  return line.split('\t').slice(1);
}

interface PeerStatus {
  node: string;
  public_key: string | null;
  state: string;
  handshakes: number;
  bytes_in: number;
  bytes_out: number;
  waiting_packets: number;
  drops: Record<string, number>;
}

describe("WireGuard interoperability of oaknet's tunnel stack (UdpTunnel + WgTunnel) with wireguard-go", () => {
  let wgGo: ChildProcess | undefined;
  let peer: ChildProcess | undefined;
  let events: PeerEvents | undefined;
  const peerEvents = (): PeerEvents => {
    if (!events) throw new Error('setup failed: the oaknet tunnel is not running');
    return events;
  };
  let wgGoLog: () => string = () => '';
  let peerLog: () => string = () => '';
  let peerPublic = '';
  let peerPort = 0;
  let tmp = '';
  const started = Math.floor(Date.now() / 1000);

  const noErrors = (): void =>
    assert.deepEqual(
      peerEvents().all.filter((e) => e.event === 'error'),
      [],
      `oaknet child: ${peerLog()}`,
    );

  const status = async (): Promise<{ peer: PeerStatus; all: Record<string, unknown> }> => {
    const events = peerEvents();
    const from = events.all.length;
    peer?.stdin?.write('status\n');
    const e = await events.next('status', 5_000, from);
    const s = e.status as { peers: PeerStatus[] };
    assert.equal(s.peers.length, 1, 'WgTunnel has exactly the one peer');
    return { peer: s.peers[0]!, all: e };
  };

  after(async () => {
    peer?.stdin?.end();
    await stop(peer);
    await stop(wgGo);
    await run('ip', ['netns', 'del', NS]).catch(() => undefined);
    fs.rmSync(SOCKET, { force: true });
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  // setup is a test of its own, so that a missing wireguard-go or wg is a failure (a failed hook would only cancel)
  it('runs wireguard-go in a namespace and oaknet UdpTunnel + WgTunnel beside it, each knowing the other', async () => {
    assert.ok(fs.existsSync(WIREGUARD_GO), `${WIREGUARD_GO} is missing: apt-get install wireguard-go`);
    assert.ok(fs.existsSync(WG), `${WG} is missing: apt-get install wireguard-tools`);
    assert.equal(process.getuid?.(), 0, 'this test needs root (network namespaces, a TUN device)');

    await run('ip', ['netns', 'add', NS]);
    await inNs('ip', ['link', 'set', 'lo', 'up']);
    wgGo = spawn('ip', ['netns', 'exec', NS, 'env', 'WG_PROCESS_FOREGROUND=1', WIREGUARD_GO, '-f', IFACE], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const goErr = collect(wgGo);
    let goStdout = '';
    wgGo.stdout?.on('data', (d: Buffer) => (goStdout += d.toString()));
    wgGoLog = () => `${goStdout.slice(-2000)}\n${goErr()}`;
    await until('wireguard-go to open its UAPI socket', 10_000, async () => {
      if (wgGo?.exitCode !== null) throw new Error(`wireguard-go exited: ${wgGoLog()}`);
      return inNs(WG, ['show', IFACE]).then(
        () => true,
        () => false,
      );
    });

    tmp = fs.mkdtempSync(join(os.tmpdir(), 'oaknet-wgt-'));
    const privateKey = (await run(WG, ['genkey'])).trim();
    fs.writeFileSync(join(tmp, 'private.key'), privateKey + '\n', { mode: 0o600 });
    const goPublic = KeyPair.fromText(privateKey).publicText();
    await inNs(WG, ['set', IFACE, 'private-key', join(tmp, 'private.key'), 'listen-port', String(WG_PORT)]);
    assert.equal((await inNs(WG, ['show', IFACE, 'public-key'])).trim(), goPublic);
    assert.ok(wgGo.pid !== undefined);
    const buffers = await inNs('python3', [
      '-c',
      RCVBUF_PY,
      String(wgGo.pid),
      String(WG_PORT),
      String(WG_GO_RCVBUF),
    ]);
    for (const size of buffers.trim().split('\n'))
      assert.ok(Number(size) >= WG_GO_RCVBUF, `wireguard-go's receive buffer: ${size}`);
    await inNs('ip', ['address', 'add', '10.99.0.1/24', 'dev', IFACE]);
    await inNs('ip', ['link', 'set', IFACE, 'up']);

    peer = spawn(
      'ip',
      [
        'netns',
        'exec',
        NS,
        process.execPath,
        '--import',
        'tsx',
        join(HERE, 'wireguard-tunnel-interop.peer.ts'),
      ],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: {
          ...process.env,
          WG_PEER_PUBLIC: goPublic,
          WG_PEER_PORT: String(WG_PORT),
          WG_SINK_PORT: String(SINK_PORT),
        },
      },
    );
    peerLog = collect(peer);
    events = new PeerEvents(peer);
    const ready = await events.next('ready', 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\noaknet child stderr: ${peerLog()}`);
    });
    peerPublic = String(ready.publicKey);
    peerPort = Number(ready.port);
    assert.ok(peerPort > 0);
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
    assert.equal((await inNs(WG, ['show', IFACE, 'peers'])).trim(), peerPublic);
    const { peer: before } = await status();
    assert.equal(before.node, `127.0.0.1:${WG_PORT}`);
    assert.equal(before.public_key, goPublic);
    assert.equal(before.state, 'idle', 'no handshake before the first packet');
  });

  it('(a) oaknet initiates: its echo request waits for the handshake, and the reply comes back through onBatch', async () => {
    const events = peerEvents();
    const from = events.all.length;
    peer?.stdin?.write('ping\n');
    const sent = await events.next('sent', 5_000, from);
    // no session yet: WgTunnel holds the packet (neither sent nor failed) and initiates
    assert.deepEqual({ sent: sent.sent, failed: sent.failed }, { sent: 0, failed: 0 });
    const reply = await events.next('echo-reply', 10_000, from).catch((err: Error) => {
      throw new Error(`${err.message}\nwireguard-go: ${wgGoLog()}\noaknet child: ${peerLog()}`);
    });
    assert.equal(reply.src, '10.99.0.1');
    assert.equal(reply.dst, '10.99.0.2');
    assert.equal(reply.matches, true, 'the echo reply carries our id and payload');
    assert.equal(reply.checksumsValid, true);
    assert.equal(reply.source, `127.0.0.1:${WG_PORT}`, 'onBatch names the datagram source: wireguard-go');
    const { peer: s } = await status();
    assert.equal(s.state, 'established');
    assert.equal(s.handshakes, 1, 'one handshake, the one oaknet initiated');
    assert.equal(s.waiting_packets, 0, 'the held echo request went out after the handshake');
    assert.ok(s.bytes_in > 0 && s.bytes_out > 0, `bytes in ${s.bytes_in} out ${s.bytes_out}`);
    const [when] = await wgShow('latest-handshakes', peerPublic);
    assert.ok(Number(when) >= started - 1, `wireguard-go's latest handshake at ${when}`);
    noErrors();
  });

  it('(b) wireguard-go initiates: `ping` reaches onBatch and the replies oaknet sends through wg.send reach ping', async () => {
    const events = peerEvents();
    // forget wireguard-go's session, so that its next packet to oaknet starts a handshake of its own
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
    assert.equal((await wgShow('latest-handshakes', peerPublic))[0], '0', 'wireguard-go has no session');
    const from = events.all.length;
    const ping = await inNs('ping', ['-c', '3', '-W', '1', '10.99.0.2']).catch((err: Error) => {
      throw new Error(`ping failed: ${err.message}\nwireguard-go: ${wgGoLog()}\noaknet child: ${peerLog()}`);
    });
    assert.match(ping, /3 packets transmitted, 3 received/, ping);
    const requests = events.all.slice(from).filter((e) => e.event === 'echo-request');
    assert.deepEqual(
      requests.map((r) => r.seq),
      [1, 2, 3],
    );
    for (const r of requests) {
      assert.equal(r.src, '10.99.0.1');
      assert.equal(r.dst, '10.99.0.2');
      assert.equal(r.checksumsValid, true);
      assert.equal(r.source, `127.0.0.1:${WG_PORT}`, 'onBatch names the datagram source: wireguard-go');
      assert.deepEqual(r.replySent, { sent: 1, failed: 0 }, 'each reply went out sealed at once');
    }
    const { peer: s } = await status();
    assert.equal(s.state, 'established');
    assert.equal(s.handshakes, 2, 'a second handshake: the one wireguard-go initiated and oaknet answered');
    assert.ok(Number((await wgShow('latest-handshakes', peerPublic))[0]) >= started - 1);
    noErrors();
  });

  it('(c) a batch of 200 sealed 1,300-byte UDP packets (GSO runs) reaches a socket behind wireguard-go', async () => {
    const events = peerEvents();
    const [rxBefore] = await wgShow('transfer', peerPublic);
    const overflowBefore = await rcvbufErrors();
    const from = events.all.length;
    peer?.stdin?.write(`burst ${BURST_PACKETS} ${BURST_BYTES}\n`);
    const sent = await events.next('burst-sent', 5_000, from);
    assert.equal(sent.failed, 0, `burst: ${JSON.stringify(sent)}`);
    assert.equal(sent.sent, BURST_PACKETS, `burst: ${JSON.stringify(sent)}`);
    assert.equal(sent.sealDropped, 0);
    if (sent.gso === true) assert.ok(Number(sent.gsoMessages) > 0, 'the sealed datagrams went as GSO runs');
    const received = await events.next('burst-received', 10_000, from);
    assert.equal(received.bad, 0);
    // every datagram is accounted for: it reached the sink, or the kernel dropped it at a full socket buffer
    const overflowed = (await rcvbufErrors()) - overflowBefore;
    assert.ok(
      Number(received.count) + overflowed >= BURST_PACKETS,
      `${String(received.count)} arrived and ${overflowed} overflowed a socket buffer, of ${BURST_PACKETS}`,
    );
    assert.ok(
      Number(received.count) >= BURST_PACKETS * 0.95,
      `${String(received.count)} of ${BURST_PACKETS} arrived (${overflowed} overflowed a socket buffer); sent ${JSON.stringify(sent)}`,
    );
    const [rxAfter] = await wgShow('transfer', peerPublic);
    assert.ok(
      Number(rxAfter) - Number(rxBefore) >= Number(received.count) * BURST_BYTES,
      `wireguard-go received ${Number(rxAfter) - Number(rxBefore)} bytes for the burst`,
    );
    noErrors();
  });

  it('wg show and WgTunnel.status() report the handshakes and the traffic', async () => {
    const [when] = await wgShow('latest-handshakes', peerPublic);
    assert.ok(Number(when) >= started - 1, `latest handshake at ${when}, test started at ${started}`);
    const [rx, tx] = await wgShow('transfer', peerPublic);
    assert.ok(
      Number(rx) > BURST_PACKETS * BURST_BYTES * 0.95 && Number(tx) > 0,
      `transfer rx ${rx} tx ${tx}`,
    );
    const { peer: s, all } = await status();
    assert.equal(s.state, 'established');
    assert.ok(s.handshakes >= 2);
    assert.ok(s.bytes_out > BURST_PACKETS * BURST_BYTES * 0.95, `bytes out ${s.bytes_out}`);
    assert.ok(s.bytes_in > 0, `bytes in ${s.bytes_in}`);
    assert.deepEqual(s.drops, {}, `status: ${JSON.stringify(all)}`);
    noErrors();
  });
});
