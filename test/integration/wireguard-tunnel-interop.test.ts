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
 * RCVBUF_PY); fails (not skips) when they are missing. The namespace, wireguard-go and the child are
 * test/support/wireguard-go.ts's: everything it starts it stops by PID; the namespace goes by name, also after
 * a failure.
 */
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { KeyPair } from '../../src/dataplane/wireguard/keys.ts';
import { type Peer, WireguardGoNetns } from '../support/wireguard-go.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const WG_PORT = 51820;
const SINK_PORT = 40001;
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
async function rcvbufErrors(wg: WireguardGoNetns): Promise<number> {
  const lines = (await wg.exec(['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const at = names.indexOf('RcvbufErrors');
  assert.ok(at > 0, 'the namespace has a UDP RcvbufErrors counter');
  return Number(values[at]);
}
const BURST_BYTES = 1300;

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
  const wg = new WireguardGoNetns('wgt');
  const IFACE = wg.iface;
  let peer: Peer | undefined;
  const thePeer = (): Peer => {
    if (!peer) throw new Error('setup failed: the oaknet tunnel is not running');
    return peer;
  };
  const peerLog = (): string => peer?.log() ?? '';
  const started = Math.floor(Date.now() / 1000);

  const noErrors = (): void =>
    assert.deepEqual(
      thePeer().events.all.filter((e) => e.event === 'error'),
      [],
      `oaknet child: ${peerLog()}`,
    );

  const status = async (): Promise<{ peer: PeerStatus; all: Record<string, unknown> }> => {
    const { events, send } = thePeer();
    const from = events.all.length;
    send('status');
    const e = await events.next('status', 5_000, from);
    const s = e.status as { peers: PeerStatus[] };
    assert.equal(s.peers.length, 1, 'WgTunnel has exactly the one peer');
    return { peer: s.peers[0]!, all: e };
  };

  after(() => wg.stop());

  // setup is a test of its own, so that a missing wireguard-go or wg is a failure (a failed hook would only cancel)
  it('runs wireguard-go in a namespace and oaknet UdpTunnel + WgTunnel beside it, each knowing the other', async () => {
    await wg.start();
    const privateKey = await wg.setPrivateKey(WG_PORT);
    const goPublic = KeyPair.fromText(privateKey).publicText();
    assert.equal((await wg.wg(['show', IFACE, 'public-key'])).trim(), goPublic);
    const buffers = await wg.exec([
      'python3',
      '-c',
      RCVBUF_PY,
      String(wg.pid),
      String(WG_PORT),
      String(WG_GO_RCVBUF),
    ]);
    for (const size of buffers.trim().split('\n'))
      assert.ok(Number(size) >= WG_GO_RCVBUF, `wireguard-go's receive buffer: ${size}`);
    await wg.up('10.99.0.1/24');

    peer = await wg.startPeer(
      join(HERE, 'wireguard-tunnel-interop.peer.ts'),
      { WG_PEER_PUBLIC: goPublic, WG_PEER_PORT: String(WG_PORT), WG_SINK_PORT: String(SINK_PORT) },
      'oaknet child',
    );
    assert.ok(peer.port > 0);
    await wg.setPeer(peer.publicKey, `127.0.0.1:${peer.port}`, '10.99.0.2/32');
    assert.equal((await wg.wg(['show', IFACE, 'peers'])).trim(), peer.publicKey);
    const { peer: before } = await status();
    assert.equal(before.node, `127.0.0.1:${WG_PORT}`);
    assert.equal(before.public_key, goPublic);
    assert.equal(before.state, 'idle', 'no handshake before the first packet');
  });

  it('(a) oaknet initiates: its echo request waits for the handshake, and the reply comes back through onBatch', async () => {
    const { events, send, publicKey } = thePeer();
    const from = events.all.length;
    send('ping');
    const sent = await events.next('sent', 5_000, from);
    // no session yet: WgTunnel holds the packet (neither sent nor failed) and initiates
    assert.deepEqual({ sent: sent.sent, failed: sent.failed }, { sent: 0, failed: 0 });
    const reply = await events.next('echo-reply', 10_000, from).catch((err: Error) => {
      throw new Error(`${err.message}\nwireguard-go: ${wg.log()}\noaknet child: ${peerLog()}`);
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
    const [when] = await wg.show('latest-handshakes', publicKey);
    assert.ok(Number(when) >= started - 1, `wireguard-go's latest handshake at ${when}`);
    noErrors();
  });

  it('(b) wireguard-go initiates: `ping` reaches onBatch and the replies oaknet sends through wg.send reach ping', async () => {
    const { events, publicKey, port } = thePeer();
    // forget wireguard-go's session, so that its next packet to oaknet starts a handshake of its own
    await wg.removePeer(publicKey);
    await wg.setPeer(publicKey, `127.0.0.1:${port}`, '10.99.0.2/32');
    assert.equal((await wg.show('latest-handshakes', publicKey))[0], '0', 'wireguard-go has no session');
    const from = events.all.length;
    const ping = await wg.exec(['ping', '-c', '3', '-W', '1', '10.99.0.2']).catch((err: Error) => {
      throw new Error(`ping failed: ${err.message}\nwireguard-go: ${wg.log()}\noaknet child: ${peerLog()}`);
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
    assert.ok(Number((await wg.show('latest-handshakes', publicKey))[0]) >= started - 1);
    noErrors();
  });

  it('(c) a batch of 200 sealed 1,300-byte UDP packets (GSO runs) reaches a socket behind wireguard-go', async () => {
    const { events, send, publicKey } = thePeer();
    const [rxBefore] = await wg.show('transfer', publicKey);
    const overflowBefore = await rcvbufErrors(wg);
    const from = events.all.length;
    send(`burst ${BURST_PACKETS} ${BURST_BYTES}`);
    const sent = await events.next('burst-sent', 5_000, from);
    assert.equal(sent.failed, 0, `burst: ${JSON.stringify(sent)}`);
    assert.equal(sent.sent, BURST_PACKETS, `burst: ${JSON.stringify(sent)}`);
    assert.equal(sent.sealDropped, 0);
    if (sent.gso === true) assert.ok(Number(sent.gsoMessages) > 0, 'the sealed datagrams went as GSO runs');
    const received = await events.next('burst-received', 10_000, from);
    assert.equal(received.bad, 0);
    // every datagram is accounted for: it reached the sink, or the kernel dropped it at a full socket buffer
    const overflowed = (await rcvbufErrors(wg)) - overflowBefore;
    assert.ok(
      Number(received.count) + overflowed >= BURST_PACKETS,
      `${String(received.count)} arrived and ${overflowed} overflowed a socket buffer, of ${BURST_PACKETS}`,
    );
    assert.ok(
      Number(received.count) >= BURST_PACKETS * 0.95,
      `${String(received.count)} of ${BURST_PACKETS} arrived (${overflowed} overflowed a socket buffer); sent ${JSON.stringify(sent)}`,
    );
    const [rxAfter] = await wg.show('transfer', publicKey);
    assert.ok(
      Number(rxAfter) - Number(rxBefore) >= Number(received.count) * BURST_BYTES,
      `wireguard-go received ${Number(rxAfter) - Number(rxBefore)} bytes for the burst`,
    );
    noErrors();
  });

  it('wg show and WgTunnel.status() report the handshakes and the traffic', async () => {
    const { publicKey } = thePeer();
    const [when] = await wg.show('latest-handshakes', publicKey);
    assert.ok(Number(when) >= started - 1, `latest handshake at ${when}, test started at ${started}`);
    const [rx, tx] = await wg.show('transfer', publicKey);
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
