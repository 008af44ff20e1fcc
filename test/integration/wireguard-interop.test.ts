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
 * they are missing. The namespace, wireguard-go and the peer are test/support/wireguard-go.ts's: everything it
 * starts it stops by PID; the namespace goes by name, also after a failure.
 */
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { KeyPair } from '../../src/dataplane/wireguard/keys.ts';
import { type Peer, WireguardGoNetns, wgPubkey } from '../support/wireguard-go.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const WG_PORT = 51820;

describe('WireGuard interoperability with Debian wireguard-go', () => {
  const wg = new WireguardGoNetns('wgi');
  const IFACE = wg.iface;
  let peer: Peer | undefined;
  /** The TS peer; each scenario fails (not skips) when setup did not get that far. */
  const thePeer = (): Peer => {
    if (!peer) throw new Error('setup failed: no TS peer is running');
    return peer;
  };
  const peerLog = (): string => peer?.log() ?? '';
  const started = Math.floor(Date.now() / 1000);

  after(() => wg.stop());

  // setup is a test of its own, so that a missing wireguard-go or wg is a failure (a failed hook would only cancel)
  it('runs wireguard-go in a namespace of its own and the TS peer beside it, each knowing the other', async () => {
    await wg.start();
    const privateKey = await wg.setPrivateKey(WG_PORT);
    const goPublic = await wgPubkey(privateKey);
    assert.equal(
      KeyPair.fromText(privateKey).publicText(),
      goPublic,
      'keys.ts derives what wg pubkey derives',
    );
    await wg.up('10.99.0.1/24');

    peer = await wg.startPeer(join(HERE, 'wireguard-interop.peer.ts'), {
      WG_PEER_PUBLIC: goPublic,
      WG_PEER_PORT: String(WG_PORT),
    });
    await wg.setPeer(peer.publicKey, `127.0.0.1:${peer.port}`, '10.99.0.2/32');
    const peers = await wg.wg(['show', IFACE, 'peers']);
    assert.equal(peers.trim(), peer.publicKey, 'wg parsed the TS side public key (keys.ts text form)');
  });

  it('(b) wireguard-go initiates, TS responds, and ICMP flows both ways over the session', async () => {
    const { events } = thePeer();
    const from = events.all.length;
    const ping = wg.exec(['ping', '-c', '1', '-W', '5', '10.99.0.2']);
    const responded = await events.next('responded', 10_000, from);
    const request = await events.next('echo-request', 10_000, from);
    await assert.doesNotReject(ping, `ping failed: the TS echo reply was refused; wireguard-go: ${wg.log()}`);
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
    const { events, send } = thePeer();
    const from = events.all.length;
    send('initiate');
    const complete = await events.next('handshake-complete', 10_000, from);
    assert.equal(complete.keepaliveSent, true);
    const reply = await events.next('echo-reply', 10_000, from).catch((err: Error) => {
      throw new Error(`${err.message}\nwireguard-go: ${wg.log()}`);
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
    const { events, send, publicKey, port } = thePeer();
    await wg.removePeer(publicKey);
    await wg.setPeer(publicKey, `127.0.0.1:${port}`, '10.99.0.2/32');
    const from = events.all.length;
    send('under-load');
    await events.next('under-load', 5_000, from);
    // wireguard-go retries an unanswered initiation after REKEY_TIMEOUT (5 s + up to 333 ms of jitter)
    const ping = wg.exec(['ping', '-c', '1', '-W', '15', '10.99.0.2']);
    const cookie = await events.next('cookie-sent', 10_000, from);
    const responded = await events.next('responded', 15_000, from);
    assert.equal(responded.mac2Valid, true, 'the retried initiation carries the MAC2 of our cookie');
    // (wireguard-go's retry is a new initiation with a new sender index: the cookie binds the source, not it)
    assert.equal(typeof cookie.senderIndex, 'number');
    await events.next('echo-request', 10_000, from);
    await assert.doesNotReject(ping, `ping failed; wireguard-go: ${wg.log()}`);
    assert.deepEqual(
      events.all.filter((e) => e.event === 'error'),
      [],
      `peer: ${peerLog()}`,
    );
  });

  it('(d) with a preshared key on both sides, TS initiates and the echo comes back', async () => {
    const { events, send, publicKey } = thePeer();
    const psk = (await wg.wg(['genpsk'])).trim();
    await wg.wg(['set', IFACE, 'peer', publicKey, 'preshared-key', wg.writeSecret('psk', psk)]);
    const from = events.all.length;
    send(`initiate ${psk}`);
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
    const latest = await wg.wg(['show', IFACE, 'latest-handshakes']);
    const [key, when] = latest.trim().split('\t');
    assert.equal(key, thePeer().publicKey);
    assert.ok(Number(when) >= started - 1, `latest handshake at ${when}, test started at ${started}`);
    const [, rx, tx] = (await wg.wg(['show', IFACE, 'transfer'])).trim().split('\t');
    assert.ok(Number(rx) > 0 && Number(tx) > 0, `transfer rx ${rx} tx ${tx}`);
  });
});
