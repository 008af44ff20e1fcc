/**
 * Bad input from the TUN and the tunnel: counted drops, never a crash, and traffic goes on.
 * The test bed (nodes, jobs, instances, packet helpers) is in proxy.fixtures.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildEcho, createSeededRandom, randomBytes } from '../packet/build.ts';
import { DecodeError } from '../packet/index.ts';
import { ENDPOINT_BYTES, OutboundBatch } from '../tunnel/tunnel.ts';
import { Drop } from './counters.ts';
import {
  TUNNEL_PORT,
  CLI,
  SERVER,
  X0,
  X1,
  cluster,
  until,
  payloadOf,
  udp,
  across,
} from './proxy.fixtures.ts';

// ---- garbage ------------------------------------------------------------------------------------------------

describe('ProxyTUN and bad input', () => {
  it('garbage into the TUN: counted drops, no throw, traffic continues', async (t) => {
    const { n1, n2 } = cluster(t, [X0]);
    const random = createSeededRandom(42);
    const junk: Buffer[] = [];
    for (let i = 0; i < 200; i++) junk.push(randomBytes(random, 1 + Math.floor(random() * 200)));
    const valid = udp(CLI.ns4, 1, SERVER.rr4, 2, 'valid');
    for (let cut = 1; cut < valid.length; cut += 3) junk.push(valid.subarray(0, cut)); // truncated
    junk.push(Buffer.from([0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01])); // ARP-like, not IP
    const gre = udp(CLI.ns4, 1, SERVER.rr4, 2);
    gre[9] = 47; // GRE: an IP packet of an unsupported protocol
    junk.push(gre);
    const before = n1.decodeErrors() + n1.drops(Drop.NotSemantic) + n1.drops(Drop.UnsupportedIcmp);
    n1.send(...junk);
    n1.send(udp(CLI.ns4, 1, '8.8.8.8', 53)); // not a semantic destination
    const unreachable = buildEcho({ src: CLI.ns4, dst: SERVER.rr4, id: 1 });
    unreachable[20] = 3; // ICMP destination unreachable: not carried
    n1.send(unreachable);
    n1.send(Buffer.alloc(1600, 0x45)); // longer than the TUN's MTU: arrives truncated (length 0)
    await until(() => n1.proxy.counters.tunIn === junk.length + 3, 'all read');
    const after = n1.decodeErrors() + n1.drops(Drop.NotSemantic) + n1.drops(Drop.UnsupportedIcmp);
    assert.equal(after - before, junk.length + 2, 'every bad packet is one counted drop');
    assert.equal(n1.drops(Drop.NotSemantic), 1);
    assert.equal(n1.drops(Drop.UnsupportedIcmp), 1);
    assert.equal(n1.drops(Drop.Truncated), 1);
    assert.ok((n1.proxy.counters.decodeErrors[DecodeError.BadVersion] ?? 0) >= 1);
    assert.ok((n1.proxy.counters.decodeErrors[DecodeError.UnsupportedProtocol] ?? 0) >= 1);
    assert.equal(n1.proxy.status().waiting_packets, 0);
    assert.equal(n1.tunnel.log.length, 0, 'nothing went out');
    const ok = await across(n1, n2, udp(CLI.ns4, 3, SERVER.rr4, 4, 'still fine'));
    assert.equal(payloadOf(ok.delivered), 'still fine');
  });

  it('garbage and strays from the tunnel: counted drops, no throw, traffic continues', async (t) => {
    const { w, n1, n2 } = cluster(t, [X0]);
    const rogue = w.net.open('10.255.0.99', TUNNEL_PORT);
    t.after(() => rogue.close());
    const random = createSeededRandom(7);
    const datagrams: Buffer[] = [];
    for (let i = 0; i < 100; i++) datagrams.push(randomBytes(random, 1 + Math.floor(random() * 300)));
    datagrams.push(udp(CLI.ip4, 1, CLI.ns4, 2)); // for a namespace on n1, not n2
    datagrams.push(udp(CLI.ip6, 1, 'fc00::99', 2)); // v6, outside n2's /120
    datagrams.push(udp('8.8.8.8', 1, X0.ns4, 2)); // from outside the overlay
    datagrams.push(udp('fc00::2', 1, X0.ns6, 2)); // a namespace address is no semantic source
    const out = new OutboundBatch(datagrams.length);
    out.reset(Buffer.concat(datagrams));
    let at = 0;
    const to = Buffer.alloc(ENDPOINT_BYTES);
    n2.tunnel.inner.endpoint.copy(to);
    for (const d of datagrams) {
      out.pushTo(at, d.length, to);
      at += d.length;
    }
    assert.equal(out.sendThrough(rogue), datagrams.length);
    await until(() => n2.proxy.counters.tunnelIn === datagrams.length, 'all received');
    const counted =
      n2.decodeErrors() +
      n2.drops(Drop.NotForThisNode) +
      n2.drops(Drop.FromOutsideOverlay) +
      n2.drops(Drop.Truncated);
    assert.equal(counted, datagrams.length, 'every datagram is one counted drop');
    assert.equal(n2.drops(Drop.NotForThisNode), 2);
    assert.equal(n2.drops(Drop.FromOutsideOverlay), 2);
    assert.equal(n2.tun.written.length, 0, 'nothing reached the instances');
    const ok = await across(n1, n2, udp(CLI.ns4, 3, SERVER.rr4, 4, 'still fine'));
    assert.equal(payloadOf(ok.delivered), 'still fine');
  });

  it('a peer speaks only for its own instances: a known source address from another node is dropped', async (t) => {
    const { n2, n3 } = cluster(t, [X0]);
    // n3 hosts x1; it claims to be the client on n1, the service's RR_IP, and n2's own x0
    const forged = [
      udp(CLI.ip4, 1, X0.ns4, 2, 'as the client'),
      udp(CLI.ip6, 1, X0.ns6, 2, 'as the client, v6'),
      udp(SERVER.rr4, 1, X0.ns4, 2, 'as the RR_IP'),
      udp(X0.ip4, 1, X0.ns4, 2, 'as x0 itself'),
    ];
    const own = udp(X1.ip4, 1, X0.ns4, 2, 'as x1');
    const datagrams = [...forged, own];
    const out = new OutboundBatch(datagrams.length);
    out.reset(Buffer.concat(datagrams));
    let at = 0;
    for (const d of datagrams) {
      out.pushTo(at, d.length, n2.tunnel.inner.endpoint);
      at += d.length;
    }
    assert.equal(out.sendThrough(n3.tunnel.inner), datagrams.length);
    await until(() => n2.proxy.counters.tunnelIn === datagrams.length, 'all received');
    assert.equal(n2.drops(Drop.WrongPeer), forged.length);
    assert.deepEqual(
      n2.tun.written.map((p) => payloadOf(p)),
      ['as x1'],
      'only the packet from its own instance reached x0',
    );
    assert.equal(n2.proxy.status().drops['tunnelled packet from an instance its sender does not host'], 4);
  });
});
