/**
 * WgTunnel over in-memory tunnels with the JavaScript transport: handshakes both ways, packets waiting for a
 * handshake, only known peers, forged and replayed datagrams, plaintext policy, cookies under load, rekeying
 * and expiry on a fake clock, and a peer that changes its key.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IpAddress } from '../../addressing/ip.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { MemorySwitch, type MemoryTunnel } from '../tunnel/memory.ts';
import { decodeEndpoint, endpoint, OutboundBatch } from '../tunnel/tunnel.ts';
import { ServiceSnapshot } from '../snapshot.ts';
import { REJECT_AFTER_TIME, REKEY_AFTER_TIME } from './constants.ts';
import { KeyPair } from './keys.ts';
import { INITIATIONS_BURST } from './ratelimit.ts';
import { JsTransportSessions } from './transport-js.ts';
import { WgTunnel } from './wg-tunnel.ts';

/** An IPv4/UDP packet of `size` bytes (the tunnel only reads the IPv4 total length when it trims padding). */
function packet(size: number, fill: number): Buffer {
  const p = Buffer.alloc(size, fill);
  p[0] = 0x45;
  p.writeUInt16BE(size, 2);
  p[9] = 17;
  return p;
}

interface Side {
  raw: MemoryTunnel;
  wg: WgTunnel;
  keys: KeyPair;
  got: Buffer[];
  sources: string[];
}

function side(
  net: MemorySwitch,
  host: string,
  clock: { now: number },
  opts: { key?: boolean; underLoad?: number; ask?: (a: IpAddress) => void; port?: number } = {},
): Side {
  const sessions = new JsTransportSessions(64);
  const raw = net.open(host, opts.port ?? 50103, { sessions });
  const keys = KeyPair.generate();
  const wg = new WgTunnel(raw, {
    identity: opts.key === false ? null : keys,
    sessions: opts.key === false ? null : sessions,
    now: () => clock.now,
    ...(opts.ask ? { ask: opts.ask } : {}),
    ...(opts.underLoad !== undefined ? { underLoadPerSecond: opts.underLoad } : {}),
  });
  const s: Side = { raw, wg, keys, got: [], sources: [] };
  wg.start((batch: PacketBatch, src: Buffer) => {
    for (let i = 0; i < batch.count; i++) {
      const off = batch.offsets[i]!;
      s.got.push(Buffer.from(batch.buffer.subarray(off, off + batch.lengths[i]!)));
      s.sources.push(src.subarray(i * 18, i * 18 + 18).toString('hex'));
    }
  });
  return s;
}

function sendTo(from: Side, host: string, ...packets: Buffer[]): void {
  const b = new OutboundBatch(packets.length);
  b.reset(Buffer.concat(packets));
  let at = 0;
  const to = endpoint(host, 50103);
  for (const p of packets) {
    b.pushTo(at, p.length, to);
    at += p.length;
  }
  from.wg.send(b);
}

/** Lets the in-memory tunnels deliver what is queued (they deliver from setImmediate). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

function pair(opts: { underLoad?: number } = {}) {
  const clock = { now: 1_000_000 };
  const net = new MemorySwitch();
  const a = side(net, '10.255.0.1', clock);
  const b = side(net, '10.255.0.2', clock, opts); // only b is ever under load
  a.wg.setPeers([{ endpoint: endpoint('10.255.0.2', 50103), key: b.keys.publicKey }]);
  b.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: a.keys.publicKey }]);
  const close = () => {
    a.wg.close();
    b.wg.close();
  };
  return { clock, net, a, b, close };
}

/** a and b, where b asks about the sources of packets from keys its tables do not name (none named yet). */
function askingPair() {
  const clock = { now: 5_000 };
  const net = new MemorySwitch();
  const asked: string[] = [];
  const a = side(net, '10.255.0.1', clock);
  const b = side(net, '10.255.0.2', clock, { ask: (x) => asked.push(x.toString()) });
  return { a, b, asked };
}

describe('WgTunnel', () => {
  it('holds packets for the handshake, then delivers them in order, encrypted on the wire', async () => {
    const { net, a, b, close } = pair();
    const wire: Buffer[] = [];
    net.onDatagram = (d) => wire.push(Buffer.from(d));
    try {
      const p1 = packet(100, 1);
      const p2 = packet(1400, 2);
      sendTo(a, '10.255.0.2', p1, p2);
      await settle();
      assert.deepEqual(b.got, [p1, p2]);
      const fromA = endpoint('10.255.0.1', 50103).toString('hex');
      assert.deepEqual(b.sources, [fromA, fromA], 'each delivered packet names its peer as the source');
      assert.deepEqual(
        wire.map((d) => d[0]),
        [1, 2, 4, 4],
        'initiation, response, then two transport messages',
      );
      for (const d of wire) assert.equal(d.indexOf(p2.subarray(20, 60)), -1, 'no plaintext on the wire');
      // the reverse direction uses the same session (the responder's, confirmed by the data)
      sendTo(b, '10.255.0.1', packet(60, 3));
      await settle();
      assert.equal(a.got.length, 1);
      assert.equal(wire.filter((d) => d[0] === 1).length, 1, 'one handshake for both directions');
      const st = a.wg.status();
      assert.equal(st.encryption, 'wireguard');
      assert.equal(st.peers[0]?.state, 'established');
      assert.equal(st.peers[0]?.encrypted, true);
      assert.ok(st.peers[0].bytes_out > 1500);
      assert.ok(st.peers[0].last_handshake);
    } finally {
      close();
    }
  });

  it('drops replayed, forged and plaintext datagrams and datagrams from unknown endpoints, and counts them', async () => {
    const { net, a, b, close } = pair();
    const captured: Buffer[] = [];
    net.onDatagram = (d) => {
      if (d[0] === 4) captured.push(Buffer.from(d));
    };
    try {
      sendTo(a, '10.255.0.2', packet(200, 7));
      await settle();
      assert.equal(b.got.length, 1);
      const attacker = net.open('10.255.0.9', 50103);
      attacker.start(() => undefined);
      const toB = endpoint('10.255.0.2', 50103);
      const inject = (from: MemoryTunnel | Side, d: Buffer) => {
        const o = new OutboundBatch(1);
        o.reset(d);
        o.pushTo(0, d.length, toB);
        if ('raw' in from) from.raw.send(o);
        else from.send(o);
      };
      net.onDatagram = undefined;
      // replayed from the peer's own endpoint
      for (const d of captured) inject(a, d);
      // forged: a fresh counter, a flipped bit in the ciphertext
      const forged = Buffer.from(captured[0]!);
      forged[8] = (forged[8]! + 100) & 0xff;
      forged[40] = forged[40]! ^ 1;
      inject(a, forged);
      // plaintext from the known peer (it has a key: refused), and from an unknown endpoint
      inject(a, packet(100, 9));
      inject(attacker, packet(100, 9));
      inject(attacker, captured[0]!);
      await settle();
      assert.equal(b.got.length, 1, 'nothing more got in');
      const st = b.wg.status();
      // every captured one again, and the attacker's copy of the first
      assert.equal(st.peers[0]?.drops['replayed'], captured.length + 1);
      assert.equal(st.peers[0]?.drops['auth_failed'], 1);
      assert.equal(st.peers[0]?.drops['plaintext_refused'], 1);
      assert.equal(st.drops['unknown_peer'], 1);
      attacker.close();
    } finally {
      close();
    }
  });

  it('a low-order key in the tables is left out and counted once; sending to its endpoint sends nothing', async () => {
    const clock = { now: 5_000 };
    const net = new MemorySwitch();
    const a = side(net, '10.255.0.1', clock);
    const wire: Buffer[] = [];
    net.onDatagram = (d) => wire.push(Buffer.from(d));
    try {
      const peer = [{ endpoint: endpoint('10.255.0.2', 50103), key: new Uint8Array(32) }];
      a.wg.setPeers(peer);
      a.wg.setPeers(peer);
      assert.doesNotThrow(() => sendTo(a, '10.255.0.2', packet(100, 1)));
      await settle();
      assert.deepEqual(wire, [], 'no handshake with a key that gives no shared secret');
      assert.equal(a.wg.status().drops['bad_key'], 1);
      assert.equal(a.wg.status().peers.length, 0);
    } finally {
      a.wg.close();
    }
  });

  it('refuses handshakes from keys its tables do not know', async () => {
    const clock = { now: 5_000 };
    const net = new MemorySwitch();
    const a = side(net, '10.255.0.1', clock);
    const b = side(net, '10.255.0.2', clock);
    try {
      a.wg.setPeers([{ endpoint: endpoint('10.255.0.2', 50103), key: b.keys.publicKey }]);
      b.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: KeyPair.generate().publicKey }]);
      sendTo(a, '10.255.0.2', packet(100, 1));
      await settle();
      assert.equal(b.got.length, 0);
      assert.equal(b.wg.status().drops['unknown_key'], 1);
      // the tables learn a's real key: the next attempt goes through without a restart
      b.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: a.keys.publicKey }]);
      clock.now += 6_000;
      await new Promise((r) => setTimeout(r, 300)); // one timer tick retries the handshake
      await settle();
      assert.equal(b.got.length, 1, 'the held packet arrives after the retried handshake');
    } finally {
      a.wg.close();
      b.wg.close();
    }
  });

  it('a key the tables do not name yet: packets are held and their source asked about, delivered once it is named', async () => {
    const { a, b, asked } = askingPair();
    try {
      a.wg.setPeers([{ endpoint: endpoint('10.255.0.2', 50103), key: b.keys.publicKey }]);
      const p = packet(100, 1);
      Buffer.from([10, 30, 0, 10]).copy(p, 12); // from the client's instance IP
      sendTo(a, '10.255.0.2', p);
      await settle();
      assert.equal(b.got.length, 0, 'held while the key is unknown');
      assert.deepEqual(asked, ['10.30.0.10']);
      // an RTT probe request from the provisional peer is answered at once (liveness while it waits)
      const probe = Buffer.alloc(24);
      Buffer.from([0, 0x4f, 0x41, 0x4b, 0x50, 1]).copy(probe);
      sendTo(a, '10.255.0.2', probe);
      await settle();
      assert.equal(a.got.length, 1, 'the probe reply came back');
      assert.equal(a.got[0]![5], 2);
      a.got.length = 0;
      // the answer: an instance on a's node, with a's key
      b.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: a.keys.publicKey }]);
      await settle();
      assert.deepEqual(b.got, [p]);
      sendTo(b, '10.255.0.1', packet(80, 2));
      await settle();
      assert.equal(a.got.length, 1, 'and the reply goes back on the same session');
      assert.equal(b.wg.status().peers[0]?.state, 'established');
    } finally {
      a.wg.close();
      b.wg.close();
    }
  });

  it('a peer the tables stop naming keeps its live session as a provisional peer: what it sends on it is held, asked about and delivered once it is named again', async () => {
    const { a, b, asked } = askingPair();
    try {
      a.wg.setPeers([{ endpoint: endpoint('10.255.0.2', 50103), key: b.keys.publicKey }]);
      b.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: a.keys.publicKey }]);
      sendTo(a, '10.255.0.2', packet(60, 1));
      await settle();
      assert.equal(b.got.length, 1);
      // b's interest in a's instances expired while a was idle: the tables no longer name a
      b.wg.setPeers([]);
      assert.deepEqual(b.wg.status().peers, []);
      const sentBefore = a.raw.counters.sent;
      const p = packet(100, 3);
      Buffer.from([10, 30, 0, 10]).copy(p, 12);
      sendTo(a, '10.255.0.2', p);
      await settle();
      assert.equal(a.raw.counters.sent, sentBefore + 1, 'a sent it on its session, no new handshake');
      assert.equal(b.got.length, 1, 'held');
      assert.deepEqual(asked, ['10.30.0.10']);
      b.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: a.keys.publicKey }]);
      await settle();
      assert.deepEqual(b.got[1], p, 'delivered once named again');
      sendTo(b, '10.255.0.1', packet(80, 2));
      await settle();
      assert.equal(a.got.length, 1, 'the reply goes back on the same session');
      assert.equal(b.wg.status().peers[0]?.handshakes, 1, 'no handshake since');
      // a peer that is named again under another endpoint (it moved) is not kept twice
      b.wg.setPeers([{ endpoint: endpoint('10.255.0.9', 50103), key: a.keys.publicKey }]);
      assert.equal(b.wg.status().peers.length, 1);
    } finally {
      a.wg.close();
      b.wg.close();
    }
  });

  it('one source address gets at most 8 provisional peers', async () => {
    const clock = { now: 5_000 };
    const net = new MemorySwitch();
    const b = side(net, '10.255.0.2', clock, { ask: () => undefined });
    const attackers = Array.from({ length: 9 }, (_, i) =>
      side(net, '10.255.0.66', clock, { port: 40000 + i }),
    );
    const other = side(net, '10.255.0.67', clock);
    try {
      for (const x of [...attackers, other]) {
        x.wg.setPeers([{ endpoint: endpoint('10.255.0.2', 50103), key: b.keys.publicKey }]);
        sendTo(x, '10.255.0.2', packet(100, 1));
        await settle();
      }
      assert.equal(b.wg.status().drops['unknown_key'], 1, 'the ninth from 10.255.0.66 is refused');
      // the ones admitted (and the other address) completed their handshakes: their probes are answered
      const probe = Buffer.alloc(24);
      Buffer.from([0, 0x4f, 0x41, 0x4b, 0x50, 1]).copy(probe);
      for (const x of [...attackers, other]) sendTo(x, '10.255.0.2', probe);
      await settle();
      assert.deepEqual(
        [...attackers, other].map((x) => x.got.length),
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 1],
      );
    } finally {
      for (const x of [b, ...attackers, other]) x.wg.close();
    }
  });

  it('a snapshot whose records give one endpoint two keys, or one key two endpoints, names neither peer', () => {
    const k1 = KeyPair.generate().publicKey;
    const k2 = KeyPair.generate().publicKey;
    const inst = (host: string, key: Uint8Array, n: number) => ({
      job: 'a.b.c.d',
      number: n,
      nsip4: new Uint8Array([10, 16, 0, n]),
      nsip6: null,
      instanceIp4: new Uint8Array([10, 30, 0, n]),
      instanceIp6: null,
      endpoint: endpoint(host, 50103),
      key,
      local: false,
      cluster: 'c',
    });
    const snap = (instances: ReturnType<typeof inst>[]) =>
      new ServiceSnapshot({
        generation: 1,
        localSubnets: [],
        cluster: 'c',
        services: [{ service: { job: 'a.b.c.d', instances }, addresses: [] }],
      });
    // a victim at 10.255.0.5 with k1; an attacker's record claims 10.255.0.5 with k2
    const hijack = snap([inst('10.255.0.5', k1, 1), inst('10.255.0.5', k2, 2), inst('10.255.0.6', k2, 3)]);
    assert.deepEqual(
      hijack.peers().map((p) => decodeEndpoint(p.endpoint).host),
      [],
      'both endpoints that k2 claims are left out',
    );
    assert.equal(hijack.peerConflicts, 2);
    const fine = snap([inst('10.255.0.5', k1, 1), inst('10.255.0.6', k2, 2)]);
    assert.equal(fine.peers().length, 2);
  });

  it('plaintext only with peers without a key, and only when allowed', async () => {
    const clock = { now: 5_000 };
    const net = new MemorySwitch();
    const a = side(net, '10.255.0.1', clock);
    const up = side(net, '10.255.0.3', clock, { key: false }); // an upstream NetManager
    try {
      a.wg.setPeers([{ endpoint: endpoint('10.255.0.3', 50103), key: null }]);
      up.wg.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: null }]);
      sendTo(a, '10.255.0.3', packet(100, 1));
      sendTo(up, '10.255.0.1', packet(100, 2));
      await settle();
      assert.equal(up.got.length + a.got.length, 0, 'refused by default');
      assert.equal(a.wg.status().peers[0]?.state, 'refused');
      const allow = {
        peers: () => [{ endpoint: endpoint('10.255.0.3', 50103), key: null }],
        allowPlaintextPeers: true,
      };
      a.wg.use(allow as never);
      up.wg.use({
        peers: () => [{ endpoint: endpoint('10.255.0.1', 50103), key: null }],
        allowPlaintextPeers: true,
      } as never);
      sendTo(a, '10.255.0.3', packet(100, 1));
      sendTo(up, '10.255.0.1', packet(100, 2));
      await settle();
      assert.equal(up.got.length, 1);
      assert.equal(a.got.length, 1);
      assert.equal(a.wg.status().peers[0]?.state, 'plaintext');
    } finally {
      a.wg.close();
      up.wg.close();
    }
  });

  it('plaintext from an endpoint the tables do not name yet (allowed): held and asked about, delivered once it is named without a key', async () => {
    const clock = { now: 5_000 };
    const net = new MemorySwitch();
    const asked: string[] = [];
    const server = side(net, '10.255.0.1', clock, { key: false, ask: (x) => asked.push(x.toString()) });
    const client = side(net, '10.255.0.3', clock, { key: false }); // a keyless node calling the server
    const plain = (peers: Array<{ endpoint: Buffer; key: Uint8Array | null }>) =>
      ({ peers: () => peers, allowPlaintextPeers: true }) as never;
    try {
      server.wg.use(plain([]));
      client.wg.use(plain([{ endpoint: endpoint('10.255.0.1', 50103), key: null }]));
      const p = packet(100, 1);
      Buffer.from([10, 30, 0, 10]).copy(p, 12);
      sendTo(client, '10.255.0.1', p);
      await settle();
      assert.equal(server.got.length, 0, 'held while the endpoint is unknown');
      assert.deepEqual(asked, ['10.30.0.10']);
      const probe = Buffer.alloc(24);
      Buffer.from([0, 0x4f, 0x41, 0x4b, 0x50, 1]).copy(probe);
      sendTo(client, '10.255.0.1', probe);
      await settle();
      assert.equal(client.got.length, 1, 'its probe is answered meanwhile');
      assert.equal(client.got[0]![5], 2);
      server.wg.use(plain([{ endpoint: endpoint('10.255.0.3', 50103), key: null }]));
      await settle();
      assert.deepEqual(server.got, [p], 'delivered once named');
      assert.deepEqual(server.sources, [endpoint('10.255.0.3', 50103).toString('hex')]);
      // not allowed: plaintext from unknown endpoints is dropped at once, nothing held or asked
      const other = side(net, '10.255.0.4', clock, { key: false });
      other.wg.use(plain([{ endpoint: endpoint('10.255.0.1', 50103), key: null }]));
      server.wg.use({ peers: () => [], allowPlaintextPeers: false } as never);
      sendTo(other, '10.255.0.1', packet(100, 3));
      await settle();
      assert.equal(server.got.length, 1);
      assert.equal(asked.length, 1);
      assert.equal(server.wg.status().drops['unknown_peer'], 1);
      other.wg.close();
    } finally {
      server.wg.close();
      client.wg.close();
    }
  });

  it('plaintext held from an endpoint that the tables then name with a key is refused, on a node with a key', async () => {
    const clock = { now: 5_000 };
    const net = new MemorySwitch();
    const server = side(net, '10.255.0.1', clock, { ask: () => undefined });
    const client = side(net, '10.255.0.3', clock, { key: false });
    try {
      server.wg.use({ peers: () => [], allowPlaintextPeers: true } as never);
      client.wg.use({
        peers: () => [{ endpoint: endpoint('10.255.0.1', 50103), key: null }],
        allowPlaintextPeers: true,
      } as never);
      sendTo(client, '10.255.0.1', packet(100, 1));
      await settle();
      server.wg.use({
        peers: () => [{ endpoint: endpoint('10.255.0.3', 50103), key: client.keys.publicKey }],
        allowPlaintextPeers: true,
      } as never);
      await settle();
      assert.equal(server.got.length, 0);
      assert.equal(server.wg.status().drops['plaintext_refused'], 1);
    } finally {
      server.wg.close();
      client.wg.close();
    }
  });

  it('under load, answers initiations without a valid MAC2 with a cookie, and the retry with it succeeds', async () => {
    const { a, b, clock, close } = pair({ underLoad: 0 });
    try {
      sendTo(a, '10.255.0.2', packet(100, 1));
      await settle();
      assert.equal(b.got.length, 0);
      assert.equal(b.wg.cookiesSent, 1);
      clock.now += 6_000;
      await new Promise((r) => setTimeout(r, 300));
      await settle();
      assert.equal(b.got.length, 1, 'the retried initiation carried the cookie');
    } finally {
      close();
    }
  });

  it('under load, a source whose MAC2 is valid gets INITIATIONS_BURST handshakes, the rest are rate limited', async () => {
    const { net, a, b, clock, close } = pair({ underLoad: 0 });
    const wire: Array<{ d: Buffer; from: Buffer }> = [];
    const carry = net.carry.bind(net);
    net.carry = (d, to, off, from) => {
      wire.push({ d: Buffer.from(d), from: Buffer.from(from) });
      return carry(d, to, off, from);
    };
    try {
      sendTo(a, '10.255.0.2', packet(100, 1));
      await settle();
      clock.now += 6_000;
      await new Promise((r) => setTimeout(r, 300));
      await settle();
      assert.equal(b.got.length, 1, 'handshake with the cookie done');
      // the initiation that carried the cookie (a valid MAC2 from a's address), replayed 50 times at once
      const initiations = wire.filter((w) => w.d.length === 148 && w.d[0] === 1);
      const withCookie = initiations.at(-1)!;
      for (let i = 0; i < 50; i++) b.raw.receive(withCookie.d, withCookie.from);
      await settle();
      const drops = b.wg.status().drops;
      assert.equal(drops['rate_limited'], 50 - (INITIATIONS_BURST - 1), 'the rest never reach the DH work');
      assert.equal(drops['handshake_replayed'], INITIATIONS_BURST - 1, 'the burst is caught as replays');
    } finally {
      close();
    }
  });

  it('a peer that restarted (lost its sessions) is handshaken again after KEEPALIVE + REKEY_TIMEOUT without answers', async () => {
    const { net, a, b, clock, close } = pair();
    try {
      sendTo(a, '10.255.0.2', packet(100, 1));
      await settle();
      assert.equal(b.got.length, 1);
      // b restarts with the same key and no sessions
      b.wg.close();
      const sessions = new JsTransportSessions(64);
      const raw = net.open('10.255.0.2', 50103, { sessions });
      const b2 = new WgTunnel(raw, { identity: b.keys, sessions, now: () => clock.now });
      const got: number[] = [];
      b2.start((batch) => got.push(batch.count));
      b2.setPeers([{ endpoint: endpoint('10.255.0.1', 50103), key: a.keys.publicKey }]);
      try {
        sendTo(a, '10.255.0.2', packet(100, 2));
        await settle();
        assert.equal(got.length, 0, 'the old session is unknown to the new process');
        assert.equal(b2.status().drops['unknown_index'], 1);
        clock.now += 15_001;
        sendTo(a, '10.255.0.2', packet(100, 3)); // still on the old session
        await new Promise((r) => setTimeout(r, 300)); // a timer tick notices the silence
        await settle();
        sendTo(a, '10.255.0.2', packet(100, 4));
        await settle();
        assert.ok(got.length >= 1, 'after the new handshake, packets arrive again');
      } finally {
        b2.close();
      }
    } finally {
      a.wg.close();
      void close;
    }
  });

  it('the initiator rekeys after REKEY_AFTER_TIME; sessions are dropped after REJECT_AFTER_TIME', async () => {
    const { net, a, b, clock, close } = pair();
    const types: number[] = [];
    net.onDatagram = (d) => types.push(d[0]!);
    try {
      sendTo(a, '10.255.0.2', packet(100, 1));
      await settle();
      clock.now += REKEY_AFTER_TIME + 1;
      sendTo(a, '10.255.0.2', packet(100, 2));
      await settle();
      assert.equal(b.got.length, 2, 'the old session still carries packets while the new one is made');
      assert.equal(types.filter((t) => t === 1).length, 2, 'a second handshake');
      assert.equal(a.wg.status().peers[0]?.handshakes, 2);
      // nothing for REJECT_AFTER_TIME: the sessions expire; a new packet makes a new handshake
      clock.now += REJECT_AFTER_TIME + 1;
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(a.wg.status().peers[0]?.state, 'idle');
      sendTo(a, '10.255.0.2', packet(100, 3));
      await settle();
      assert.equal(b.got.length, 3);
    } finally {
      close();
    }
  });
});
