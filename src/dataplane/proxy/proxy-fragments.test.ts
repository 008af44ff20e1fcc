/**
 * Fragments without reassembly: later fragments follow their first fragment, or wait for it (fragments.ts).
 * The test bed (nodes, jobs, instances, packet helpers) is in proxy.fixtures.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildUdp, fragmentPacket, reassemble } from '../packet/build.ts';
import { IpProto } from '../packet/index.ts';
import { ENDPOINT_BYTES, OutboundBatch } from '../tunnel/tunnel.ts';
import { Drop } from './counters.ts';
import {
  N1,
  N2,
  CLIENT,
  CLI,
  SERVER,
  X0,
  X2,
  FAMILIES,
  world,
  cluster,
  until,
  parsed,
  line,
  payloadOf,
  assertChecksums,
  udp,
  br,
  across,
} from './proxy.fixtures.ts';

// ---- fragments ----------------------------------------------------------------------------------------------

describe('ProxyTUN and fragments', () => {
  const big = (n: number) =>
    Buffer.from(Array.from({ length: n }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''));

  for (const f of FAMILIES) {
    for (const order of ['in order', 'a non-first fragment first'] as const) {
      it(`${f.name} ${order}: every fragment is translated both ways and reassembles with a valid checksum`, async (t) => {
        const { n1, n2 } = cluster(t, [X0]);
        const S = f.rr(SERVER);
        const data = big(3000);
        const request = buildUdp({
          src: f.ns(CLI),
          dst: S,
          srcPort: 9000,
          dstPort: 9001,
          payload: data,
          ipId: 0x1111,
        });
        const pieces = fragmentPacket(request, 1280, 0x1111);
        assert.equal(pieces.length, 3);
        const sendOrder = order === 'in order' ? pieces : [pieces[1]!, pieces[2]!, pieces[0]!];
        n1.send(...sendOrder);
        const wire = await n1.tunnel.sent.take(3);
        for (const s of wire) {
          assert.equal(s.to, n2.endpoint);
          assertChecksums(s.packet, 'fragment');
          assert.ok(parsed.decode(s.packet, 0, s.packet.length));
          assert.equal(parsed.srcAddress(), f.ip(CLI));
          assert.equal(parsed.dstAddress(), f.ns(X0));
        }
        const delivered = await n2.written.take(3);
        const whole = reassemble(delivered);
        assertChecksums(whole, 'reassembled request');
        assert.equal(line(whole), `udp ${br(f, f.ip(CLI))}:9000 > ${br(f, f.ns(X0))}:9001`);
        assert.equal(payloadOf(whole), data.toString('latin1'));

        const reply = buildUdp({
          src: f.ns(X0),
          dst: f.ip(CLI),
          srcPort: 9001,
          dstPort: 9000,
          payload: data,
          ipId: 0x2222,
        });
        const replyPieces = fragmentPacket(reply, 1280, 0x2222);
        n2.send(
          ...(order === 'in order' ? replyPieces : [replyPieces[2]!, replyPieces[1]!, replyPieces[0]!]),
        );
        const back = await n2.tunnel.sent.take(3);
        for (const s of back) {
          assert.equal(s.to, n1.endpoint);
          assert.ok(parsed.decode(s.packet, 0, s.packet.length));
          assert.equal(parsed.srcAddress(), f.ip(X0));
          assert.equal(parsed.dstAddress(), f.ns(CLI));
        }
        const got = await n1.written.take(3);
        for (const p of got) {
          assertChecksums(p, 'reply fragment');
          assert.ok(parsed.decode(p, 0, p.length));
          assert.equal(parsed.srcAddress(), S, 'every reply fragment comes from the dialed address');
          assert.equal(parsed.dstAddress(), f.ns(CLI));
        }
        const wholeReply = reassemble(got);
        assertChecksums(wholeReply, 'reassembled reply');
        assert.equal(line(wholeReply), `udp ${br(f, S)}:9001 > ${br(f, f.ns(CLI))}:9000`);
        assert.equal(payloadOf(wholeReply), data.toString('latin1'));
      });
    }
  }

  for (const f of FAMILIES) {
    it(`${f.name}: fragments reordered by the underlay: replies are all translated, requests all pass as they are`, async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const S = f.rr(SERVER);
      await across(n1, n2, udp(f.ns(CLI), 9100, S, 9101)); // the flow the reply belongs to
      const data = big(3000);
      // as n2 puts x0's fragmented reply on the wire, and as x0 sends a fragmented request of its own
      const reply = fragmentPacket(
        buildUdp({
          src: f.ip(X0),
          dst: f.ns(CLI),
          srcPort: 9101,
          dstPort: 9100,
          payload: data,
          ipId: 0x3333,
        }),
        1280,
        0x3333,
      );
      const request = fragmentPacket(
        buildUdp({
          src: f.ip(X0),
          dst: f.ns(CLI),
          srcPort: 7777,
          dstPort: 8888,
          payload: data,
          ipId: 0x4444,
        }),
        1280,
        0x4444,
      );
      const datagrams = [reply[1]!, request[2]!, reply[2]!, request[0]!, reply[0]!, request[1]!];
      const out = new OutboundBatch(datagrams.length);
      out.reset(Buffer.concat(datagrams));
      const to = Buffer.alloc(ENDPOINT_BYTES);
      n1.tunnel.inner.endpoint.copy(to);
      let at = 0;
      for (const d of datagrams) {
        out.pushTo(at, d.length, to);
        at += d.length;
      }
      assert.equal(out.sendThrough(n2.tunnel.inner), datagrams.length);
      const got = await n1.written.take(datagrams.length);
      const byId = (id: number) =>
        got.filter((p) => parsed.decode(p, 0, p.length) && parsed.fragmentId === id);
      const replies = byId(0x3333);
      const requests = byId(0x4444);
      assert.equal(replies.length, 3);
      assert.equal(requests.length, 3);
      for (const p of replies) {
        assert.ok(parsed.decode(p, 0, p.length));
        assert.equal(parsed.srcAddress(), S, 'each reply fragment comes from the dialed address');
        assertChecksums(p);
      }
      const wholeReply = reassemble(replies);
      assertChecksums(wholeReply);
      assert.equal(line(wholeReply), `udp ${br(f, S)}:9101 > ${br(f, f.ns(CLI))}:9100`);
      const wholeRequest = reassemble(requests);
      assertChecksums(wholeRequest);
      assert.equal(line(wholeRequest), `udp ${br(f, f.ip(X0))}:7777 > ${br(f, f.ns(CLI))}:8888`);
      assert.equal(n1.drops(Drop.FragmentUnmatched), 0);
    });
  }

  it('a busy flow of fragmented datagrams (more than the table holds within its 5 s memory) all get through', async (t) => {
    // UDP bigger than the overlay MTU (1,400-byte datagrams under WireGuard's): every datagram is two
    // fragments; a datagram whose fragments have all passed is forgotten at once, not after 5 s
    const { n1, n2 } = cluster(t, [X0]);
    const f = FAMILIES[0]!;
    const total = 5000;
    for (let k = 0; k < total; k += 500) {
      const pieces: Buffer[] = [];
      for (let i = k; i < k + 500; i++)
        pieces.push(
          ...fragmentPacket(
            buildUdp({
              src: f.ns(CLI),
              dst: f.rr(SERVER),
              srcPort: 9300,
              dstPort: 9301,
              payload: big(1400),
              ipId: i,
            }),
            1280,
            i,
          ),
        );
      n1.send(...pieces);
      await n2.written.take(pieces.length);
    }
    assert.equal(n1.drops(Drop.FragmentUnmatched), 0);
    assert.equal(n2.drops(Drop.FragmentUnmatched), 0);
    assert.equal(n1.proxy.status().waiting_packets, 0);
  });

  it('IPv6 fragments whose fragmentable part starts with Destination Options still follow their first', async (t) => {
    const { n1, n2 } = cluster(t, [X0]);
    const data = big(3000);
    const ext = [IpProto.DestinationOptions];
    const request = buildUdp({
      src: CLI.ns6,
      dst: SERVER.rr6,
      srcPort: 9200,
      dstPort: 9201,
      payload: data,
      extensionHeaders: ext,
    });
    const pieces = fragmentPacket(request, 1280, 0x5555);
    n1.send(pieces[1]!, pieces[0]!, pieces[2]!);
    const delivered = await n2.written.take(3);
    const whole = reassemble(delivered);
    assertChecksums(whole);
    assert.equal(line(whole), `udp [${CLI.ip6}]:9200 > [${X0.ns6}]:9201`);
    const reply = fragmentPacket(
      buildUdp({
        src: X0.ns6,
        dst: CLI.ip6,
        srcPort: 9201,
        dstPort: 9200,
        payload: data,
        extensionHeaders: ext,
      }),
      1280,
      0x6666,
    );
    n2.send(...reply);
    const got = await n1.written.take(3);
    for (const p of got) {
      assert.ok(parsed.decode(p, 0, p.length));
      assert.equal(parsed.srcAddress(), SERVER.rr6);
    }
    const wholeReply = reassemble(got);
    assertChecksums(wholeReply);
    assert.equal(line(wholeReply), `udp [${SERVER.rr6}]:9201 > [${CLI.ns6}]:9200`);
  });

  it('fragments of a datagram to an unknown address wait with it and follow it after the answer', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    const data = big(2500);
    const pieces = fragmentPacket(
      buildUdp({ src: CLI.ns4, dst: SERVER.rr4, srcPort: 1, dstPort: 2, payload: data, ipId: 77 }),
      1000,
    );
    n1.send(...pieces);
    await n1.dir.asked.take(1);
    await until(() => n1.proxy.status().waiting_packets === pieces.length, 'all fragments held');
    n1.answer(SERVER.rr4, SERVER, [X0]);
    const got = await n2.written.take(pieces.length);
    const whole = reassemble(got);
    assertChecksums(whole);
    assert.equal(line(whole), `udp ${CLI.ip4}:1 > ${X0.ns4}:2`);
    assert.equal(payloadOf(whole), data.toString('latin1'));
  });

  it('same node: a fragmented datagram and its fragmented reply are translated locally', async (t) => {
    const { n1 } = cluster(t, [X2]);
    const data = big(2000);
    const pieces = fragmentPacket(
      buildUdp({ src: CLI.ns4, dst: SERVER.rr4, srcPort: 11, dstPort: 12, payload: data, ipId: 5 }),
      1000,
    );
    n1.send(pieces[1]!, pieces[0]!, pieces[2]!);
    const req = reassemble(await n1.written.take(pieces.length));
    assert.equal(line(req), `udp ${CLI.ip4}:11 > ${X2.ns4}:12`);
    assertChecksums(req);
    const back = fragmentPacket(
      buildUdp({ src: X2.ns4, dst: CLI.ip4, srcPort: 12, dstPort: 11, payload: data, ipId: 6 }),
      1000,
    );
    n1.send(back[2]!, back[0]!, back[1]!);
    const rep = await n1.written.take(back.length);
    for (const p of rep) {
      assert.ok(parsed.decode(p, 0, p.length));
      assert.equal(parsed.srcAddress(), SERVER.rr4);
    }
    const whole = reassemble(rep);
    assertChecksums(whole);
    assert.equal(line(whole), `udp ${SERVER.rr4}:12 > ${CLI.ns4}:11`);
    assert.equal(n1.tunnel.log.length, 0);
  });
});
