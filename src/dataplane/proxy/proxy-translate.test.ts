/**
 * Translation across nodes through RR_IPs, instance IPs and Closest_IPs, and the header details (translate.ts, policy.ts).
 * The test bed (nodes, jobs, instances, packet helpers) is in proxy.fixtures.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildEcho, buildTcp, buildUdp } from '../packet/build.ts';
import { TcpFlag } from '../packet/index.ts';
import { SESSION_WINDOW_MS } from './conntrack.ts';
import {
  CLI,
  SERVER,
  CLOSEST,
  X0,
  X1,
  X2,
  V4,
  FAMILIES,
  cluster,
  flagText,
  line,
  seqAck,
  payloadOf,
  assertChecksums,
  udp,
  tcp,
  br,
  across,
} from './proxy.fixtures.ts';

// ---- UDP and TCP through an RR_IP across nodes --------------------------------------------------------------

for (const f of FAMILIES) {
  describe(`ProxyTUN across nodes (${f.name})`, () => {
    const S = f.rr(SERVER);
    const nsC = f.ns(CLI);
    const iC = f.ip(CLI);
    const nsT = f.ns(X0);
    const iT = f.ip(X0);

    it('UDP through the RR_IP: iC -> nsT on the wire to the chosen node, reply arrives from S', async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const request = udp(nsC, 5000, S, 53, 'question');
      const out = await across(n1, n2, request);
      assert.equal(out.wire.to, n2.endpoint);
      assert.equal(line(out.wire.packet), `udp ${br(f, iC)}:5000 > ${br(f, nsT)}:53`);
      assert.deepEqual(out.delivered, out.wire.packet, 'the target node delivers the packet unchanged');
      assert.equal(payloadOf(out.delivered), 'question');

      const back = await across(n2, n1, udp(nsT, 53, iC, 5000, 'answer'));
      assert.equal(back.wire.to, n1.endpoint);
      assert.equal(line(back.wire.packet), `udp ${br(f, iT)}:53 > ${br(f, nsC)}:5000`);
      assert.equal(line(back.delivered), `udp ${br(f, S)}:53 > ${br(f, nsC)}:5000`);
      assert.equal(payloadOf(back.delivered), 'answer');

      assert.equal(n1.proxy.counters.flowsCreated, 1);
      assert.deepEqual(n1.dir.questions, [], 'everything was known: no question');
      assert.ok(n1.inUse().has(SERVER.name), 'traffic keeps the interest in the job alive');
    });

    it('TCP: SYN, SYN-ACK, data, FIN both ways keep the translation, with valid checksums', async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const port = 40000;
      const up = async (flags: number, seq: number, ack: number, data = '') => {
        const r = await across(n1, n2, tcp(nsC, port, S, 80, flags, seq, ack, data));
        assert.equal(r.wire.to, n2.endpoint);
        assert.equal(line(r.wire.packet), `tcp ${br(f, iC)}:${port} > ${br(f, nsT)}:80 [${flagText(flags)}]`);
        assert.deepEqual(r.delivered, r.wire.packet);
        assert.deepEqual(seqAck(r.delivered), { seq, ack });
        assert.equal(payloadOf(r.delivered), data);
      };
      const down = async (flags: number, seq: number, ack: number, data = '') => {
        const r = await across(n2, n1, tcp(nsT, 80, iC, port, flags, seq, ack, data));
        assert.equal(r.wire.to, n1.endpoint);
        assert.equal(line(r.wire.packet), `tcp ${br(f, iT)}:80 > ${br(f, nsC)}:${port} [${flagText(flags)}]`);
        assert.equal(line(r.delivered), `tcp ${br(f, S)}:80 > ${br(f, nsC)}:${port} [${flagText(flags)}]`);
        assert.deepEqual(seqAck(r.delivered), { seq, ack });
        assert.equal(payloadOf(r.delivered), data);
      };
      const { Syn, Ack, Fin, Psh } = TcpFlag;
      await up(Syn, 1000, 0);
      await down(Syn | Ack, 7000, 1001);
      await up(Ack, 1001, 7001);
      await up(Psh | Ack, 1001, 7001, 'GET / HTTP/1.1\r\n\r\n');
      await down(Psh | Ack, 7001, 1019, 'HTTP/1.1 200 OK\r\n\r\n');
      await up(Fin | Ack, 1019, 7020);
      await down(Fin | Ack, 7020, 1020);
      await up(Ack, 1020, 7021);
      assert.equal(n1.proxy.counters.flowsCreated, 1, 'one flow on the client node');
      assert.equal(n2.proxy.counters.flowsCreated, 1, 'one flow (for the replies) on the server node');
      assert.equal(n1.proxy.counters.tunnelOut, 5);
      assert.equal(n1.proxy.counters.tunOut, 3);
    });

    it('ICMP echo through the RR_IP: the reply comes from the RR_IP with the echo id kept', async (t) => {
      const { n1, n2 } = cluster(t, [X0]);
      const ping = buildEcho({ src: nsC, dst: S, id: 0x4d2, seq: 7, payload: Buffer.from('ping') });
      const out = await across(n1, n2, ping);
      const request = f === V4 ? 8 : 128;
      const reply = f === V4 ? 0 : 129;
      assert.equal(out.wire.to, n2.endpoint);
      assert.equal(line(out.wire.packet), `echo ${br(f, iC)}:1234 > ${br(f, nsT)}:1234 type ${request}`);
      const pong = buildEcho({
        src: nsT,
        dst: iC,
        id: 0x4d2,
        seq: 7,
        reply: true,
        payload: Buffer.from('ping'),
      });
      const back = await across(n2, n1, pong);
      assert.equal(line(back.wire.packet), `echo ${br(f, iT)}:1234 > ${br(f, nsC)}:1234 type ${reply}`);
      assert.equal(line(back.delivered), `echo ${br(f, S)}:1234 > ${br(f, nsC)}:1234 type ${reply}`);
      assert.equal(payloadOf(back.delivered), 'ping');
    });

    it('round robin: new flows alternate over two instances, each flow stays on its instance', async (t) => {
      const { n1, n2, n3 } = cluster(t, [X0, X1]);
      const flows = 8;
      for (let i = 0; i < flows; i++) n1.send(udp(nsC, 6000 + i, S, 9, `first ${i}`));
      const first = await n1.tunnel.sent.take(flows);
      const chosen = first.map((s) => s.to);
      const expected = Array.from({ length: flows }, (_, i) => (i % 2 === 0 ? n2.endpoint : n3.endpoint));
      assert.deepEqual(chosen, expected, 'exactly alternating, starting with instance 0');
      first.forEach((s, i) =>
        assert.equal(
          line(s.packet),
          `udp ${br(f, iC)}:${6000 + i} > ${br(f, f.ns(i % 2 === 0 ? X0 : X1))}:9`,
        ),
      );
      // three more packets per flow, interleaved: each follows its flow's choice
      for (let round = 0; round < 3; round++)
        for (let i = 0; i < flows; i++) n1.send(udp(nsC, 6000 + i, S, 9, `again ${i}`));
      const later = await n1.tunnel.sent.take(3 * flows);
      later.forEach((s, k) => {
        const i = k % flows;
        assert.equal(s.to, expected[i], `packet ${k} of flow ${i} sticks to its instance`);
        assertChecksums(s.packet);
      });
      assert.equal(n1.proxy.status().flows, flows);
      await n2.written.take(flows * 2);
      await n3.written.take(flows * 2);
      // replies from both instances come back from the RR_IP
      n2.send(udp(nsT, 9, iC, 6000, 'r0'));
      n3.send(udp(f.ns(X1), 9, iC, 6001, 'r1'));
      const replies = await n1.written.take(2);
      assert.deepEqual(replies.map(line).sort(), [
        `udp ${br(f, S)}:9 > ${br(f, nsC)}:6000`,
        `udp ${br(f, S)}:9 > ${br(f, nsC)}:6001`,
      ]);
    });

    it("TCP session affinity: a new connection joins its client's young control connection in use; a pool's connections take turns", async (t) => {
      t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
      const { n1, n2, n3 } = cluster(t, [X0, X1]);
      const { Syn, Ack, Fin } = TcpFlag;
      const to = async (n: number) => (await n1.tunnel.sent.take(n)).map((x) => x.to);
      // a connection pool: two connections opened at once, before either carried data, are two turns
      n1.send(tcp(nsC, 6000, S, 5201, Syn, 1), tcp(nsC, 6001, S, 5201, Syn, 1));
      assert.deepEqual(await to(2), [n2.endpoint, n3.endpoint], 'x0, then x1');
      // iperf3-style: a control connection (a turn: x0) sends its cookie, then a data connection joins it
      n1.send(tcp(nsC, 7000, S, 5201, Syn, 1));
      n1.send(tcp(nsC, 7000, S, 5201, Ack, 2, 1, 'cookie'));
      n1.send(tcp(nsC, 7001, S, 5201, Syn, 1));
      assert.deepEqual(await to(3), [n2.endpoint, n2.endpoint, n2.endpoint], 'all three to instance 0');
      // another port is another session: a round-robin turn (instance 1)
      n1.send(tcp(nsC, 7002, S, 5202, Syn, 1));
      assert.deepEqual(await to(1), [n3.endpoint]);
      // more than SESSION_WINDOW_MS after the control connection opened, a new connection is a turn again
      // (a keep-alive connection that stays open does not pin its client's later connections)
      t.mock.timers.tick(SESSION_WINDOW_MS + 1);
      n1.send(tcp(nsC, 7005, S, 5201, Syn, 1));
      assert.deepEqual(await to(1), [n2.endpoint], 'a turn: x0 (after x1)');
      n1.send(tcp(nsC, 7006, S, 5201, Syn, 1));
      assert.deepEqual(await to(1), [n3.endpoint], 'and the next one x1: 7005 sent no data, nobody joins it');
      // both connections of the iperf3-style session close (FIN out, FIN back); the next one is a turn
      for (const port of [7000, 7001]) {
        n1.send(tcp(nsC, port, S, 5201, Fin | Ack, 2, 2));
        n2.send(tcp(nsT, 5201, iC, port, Fin | Ack, 2, 3));
      }
      await n1.tunnel.sent.take(2);
      await n1.written.take(2);
      n1.send(tcp(nsC, 7003, S, 5201, Syn, 1));
      assert.deepEqual(await to(1), [n2.endpoint]);
      n1.send(tcp(nsC, 7004, S, 5203, Syn, 1));
      assert.deepEqual(await to(1), [n3.endpoint], 'and the one after goes to instance 1');
    });

    it('an instance IP reaches exactly that instance, and its replies come from that instance IP', async (t) => {
      const { n1, n3 } = cluster(t, [X0, X1, X2]);
      const iX1 = f.ip(X1);
      for (let i = 0; i < 5; i++) n1.send(udp(nsC, 7000 + i, iX1, 99));
      const sent = await n1.tunnel.sent.take(5);
      sent.forEach((s, i) => {
        assert.equal(s.to, n3.endpoint);
        assert.equal(line(s.packet), `udp ${br(f, iC)}:${7000 + i} > ${br(f, f.ns(X1))}:99`);
      });
      await n3.written.take(5);
      const back = await across(n3, n1, udp(f.ns(X1), 99, iC, 7000));
      assert.equal(line(back.delivered), `udp ${br(f, iX1)}:99 > ${br(f, nsC)}:7000`);
    });

    it('Closest_IP prefers the instance on this node, then (before any RTT is measured) one in this cluster', async (t) => {
      const { n1, n2 } = cluster(t, [X0, X1, X2], { probeIntervalMs: 0 });
      const K = f === V4 ? CLOSEST.v4 : CLOSEST.v6;
      for (let i = 0; i < 4; i++) n1.send(udp(nsC, 7100 + i, K, 99));
      const local = await n1.written.take(4);
      local.forEach((p, i) => assert.equal(line(p), `udp ${br(f, iC)}:${7100 + i} > ${br(f, f.ns(X2))}:99`));
      assert.equal(n1.tunnel.log.length, 0, 'nothing on the tunnel');
      // without the local instance: x0 (n2, cluster c1 like n1) beats x1 (n3, cluster c2)
      n1.learn(SERVER, [X0, X1]);
      for (let i = 0; i < 4; i++) n1.send(udp(nsC, 7200 + i, K, 99));
      const remote = await n1.tunnel.sent.take(4);
      assert.deepEqual(
        remote.map((s) => s.to),
        [n2.endpoint, n2.endpoint, n2.endpoint, n2.endpoint],
      );
    });

    it('same node: translated both ways through the TUN, nothing on the tunnel', async (t) => {
      const { n1 } = cluster(t, [X2]);
      const nsX2 = f.ns(X2);
      const iX2 = f.ip(X2);
      n1.send(tcp(nsC, 41000, S, 80, TcpFlag.Syn, 1));
      const [req] = await n1.written.take(1);
      assert.ok(req);
      assert.equal(line(req), `tcp ${br(f, iC)}:41000 > ${br(f, nsX2)}:80 [S]`);
      assertChecksums(req);
      n1.send(tcp(nsX2, 80, iC, 41000, TcpFlag.Syn | TcpFlag.Ack, 50, 2));
      const [rep] = await n1.written.take(1);
      assert.ok(rep);
      assert.equal(line(rep), `tcp ${br(f, S)}:80 > ${br(f, nsC)}:41000 [S.]`);
      assert.deepEqual(seqAck(rep), { seq: 50, ack: 2 });
      assertChecksums(rep);
      n1.send(udp(nsC, 41001, iX2, 5, 'u'));
      const [u] = await n1.written.take(1);
      assert.ok(u);
      assert.equal(line(u), `udp ${br(f, iC)}:41001 > ${br(f, nsX2)}:5`);
      assert.equal(n1.tunnel.log.length, 0);
      assert.equal(n1.proxy.counters.tunnelOut, 0);
      assert.equal(n1.proxy.counters.local, 3);
    });
  });
}

describe('ProxyTUN header details', () => {
  it('IPv4 UDP without checksum (0) stays without; IPv4 and TCP options survive; TTL is left alone', async (t) => {
    const { n1, n2 } = cluster(t, [X0]);
    const bare = buildUdp({
      src: CLI.ns4,
      dst: SERVER.rr4,
      srcPort: 1,
      dstPort: 2,
      payload: Buffer.from('nocsum'),
      noChecksum: true,
    });
    const out = await across(n1, n2, bare);
    assert.equal(out.wire.packet.readUInt16BE(26), 0, 'still "no checksum" on the wire');
    const back = await across(
      n2,
      n1,
      buildUdp({ src: X0.ns4, dst: CLI.ip4, srcPort: 2, dstPort: 1, noChecksum: true }),
    );
    assert.equal(back.delivered.readUInt16BE(26), 0);
    assert.equal(line(back.delivered), `udp ${SERVER.rr4}:2 > ${CLI.ns4}:1`);

    const withOptions = buildTcp({
      src: CLI.ns4,
      dst: SERVER.rr4,
      srcPort: 3,
      dstPort: 4,
      flags: TcpFlag.Syn,
      ttl: 17,
      ipId: 0xbeef,
      ipv4Options: Uint8Array.of(1, 1, 1, 0), // NOP NOP NOP EOL
      tcpOptions: Uint8Array.of(2, 4, 0x05, 0xb4), // MSS 1460
    });
    const o = await across(n1, n2, withOptions);
    const w = o.wire.packet;
    assert.equal(line(w), `tcp ${CLI.ip4}:3 > ${X0.ns4}:4 [S]`);
    assert.equal(w[0], 0x46, 'IHL 6: the options are still there');
    assert.deepEqual([...w.subarray(20, 24)], [1, 1, 1, 0]);
    assert.equal(w[8], 17);
    assert.equal(w.readUInt16BE(4), 0xbeef);
    assert.deepEqual([...w.subarray(24 + 20, 24 + 24)], [2, 4, 0x05, 0xb4], 'MSS option kept');
  });
});
