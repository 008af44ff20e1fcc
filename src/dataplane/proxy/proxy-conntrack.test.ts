/**
 * Flow lifetimes and peers that go down: idle expiry (TCP-aware), session affinity, liveness (conntrack.ts, policy.ts).
 * The test bed (nodes, jobs, instances, packet helpers) is in proxy.fixtures.ts.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { buildEcho } from '../packet/build.ts';
import { TcpFlag } from '../packet/index.ts';
import { Drop } from './counters.ts';
import {
  N1,
  N2,
  N3,
  CLIENT,
  CLI,
  SERVER,
  X0,
  X1,
  World,
  cluster,
  until,
  line,
  udp,
  tcp,
  across,
} from './proxy.fixtures.ts';

// ---- peers that go down, idle expiry and TCP closing --------------------------------------------------------

describe('ProxyTUN and peers that go down', () => {
  it('sends new flows only to instances on nodes that answer probes, and back to a node once it answers again', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1], { probeIntervalMs: 10 });
    const peers = () => n1.proxy.status().peers;
    const until = async (what: string, check: () => boolean) => {
      const deadline = performance.now() + 5000;
      while (!check()) {
        assert.ok(performance.now() < deadline, `${what}: ${JSON.stringify(peers())}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    // the first flows make n1 probe both nodes
    await across(n1, n2, udp(CLI.ns4, 5000, SERVER.rr4, 53)); // x0
    await across(n1, n3, udp(CLI.ns4, 5001, SERVER.rr4, 53)); // x1
    await until('both peers measured', () => peers().filter((p) => p.samples > 0).length === 2);
    // n3 goes down (its node died; the control plane has not said so yet): nothing comes back from it
    n3.tunnel.down = true;
    await until('n3 unreachable', () => peers().some((p) => !p.reachable));
    for (let i = 0; i < 4; i++) n1.send(udp(CLI.ns4, 5100 + i, SERVER.rr4, 53));
    const sent = await n1.tunnel.sent.take(4);
    assert.deepEqual(
      sent.map((s) => s.to),
      [n2.endpoint, n2.endpoint, n2.endpoint, n2.endpoint],
      'every new flow to the instance that is still there',
    );
    // n3 is back: new flows take turns again
    n3.tunnel.down = false;
    await until('n3 reachable again', () => peers().every((p) => p.reachable));
    for (let i = 0; i < 4; i++) n1.send(udp(CLI.ns4, 5200 + i, SERVER.rr4, 53));
    const later = (await n1.tunnel.sent.take(4)).map((s) => s.to);
    assert.equal(later.filter((x) => x === n3.endpoint).length, 2, JSON.stringify(later));
  });
});

describe('ProxyTUN flow lifetimes', () => {
  it('a closed TCP flow (FIN both ways) is forgotten; a new SYN on its 5-tuple makes a new choice', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    const { Syn, Ack, Fin } = TcpFlag;
    const S = SERVER.rr4;
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Syn, 10));
    await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4242, Syn | Ack, 90, 11));
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Syn, 10)); // a retransmitted SYN stays on its flow
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Fin | Ack, 11, 91));
    await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4242, Fin | Ack, 91, 12));
    await across(n1, n2, tcp(CLI.ns4, 4242, S, 80, Ack, 12, 92));
    const again = await across(n1, n3, tcp(CLI.ns4, 4242, S, 80, Syn, 5000));
    assert.equal(again.wire.to, n3.endpoint, 'round robin continues with the next instance');
    assert.equal(line(again.wire.packet), `tcp ${CLI.ip4}:4242 > ${X1.ns4}:80 [S]`);
    const reply = await across(n3, n1, tcp(X1.ns4, 80, CLI.ip4, 4242, Syn | Ack, 1, 5001));
    assert.equal(line(reply.delivered), `tcp ${S}:80 > ${CLI.ns4}:4242 [S.]`);
    assert.equal(n1.proxy.status().flows, 1);
  });

  it('a TCP flow reset by the server is closed; a new SYN makes a new choice', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    await across(n1, n2, tcp(CLI.ns4, 4300, SERVER.rr4, 80, TcpFlag.Syn, 10));
    const rst = await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4300, TcpFlag.Rst | TcpFlag.Ack, 0, 11));
    assert.equal(line(rst.delivered), `tcp ${SERVER.rr4}:80 > ${CLI.ns4}:4300 [R.]`);
    const again = await across(n1, n3, tcp(CLI.ns4, 4300, SERVER.rr4, 80, TcpFlag.Syn, 20));
    assert.equal(again.wire.to, n3.endpoint);
  });

  it('idle flows expire (UDP before established TCP); the next packet chooses again', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const idle = { udp: 60_000, tcpEstablished: 600_000, tcpOpening: 30_000, tcpClosed: 10_000 };
      const n1 = w.node(N1, { idle });
      const n2 = w.node(N2, { idle });
      const n3 = w.node(N3, { idle });
      n1.learn(CLIENT, [CLI]);
      n1.learn(SERVER, [X0, X1]);
      for (const n of [n2, n3]) {
        n.learn(CLIENT, [CLI]);
        n.learn(SERVER, [X0, X1]);
      }
      const { Syn, Ack } = TcpFlag;
      await across(n1, n2, tcp(CLI.ns4, 4400, SERVER.rr4, 80, Syn, 1)); // x0
      await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4400, Syn | Ack, 1, 2));
      await across(n1, n2, tcp(CLI.ns4, 4400, SERVER.rr4, 80, Ack, 2, 2, 'GET')); // in use
      await across(n1, n3, udp(CLI.ns4, 4401, SERVER.rr4, 53)); // x1
      // joins the young connection in use (session affinity), without taking a round-robin turn
      await across(n1, n2, tcp(CLI.ns4, 4402, SERVER.rr4, 80, Syn, 1)); // x0, never answered
      assert.equal(n1.proxy.status().flows, 3);
      t.mock.timers.tick(31_000);
      assert.equal(n1.proxy.status().flows, 2, 'the unanswered SYN expired after tcpOpening');
      t.mock.timers.tick(30_000);
      assert.equal(n1.proxy.status().flows, 1, 'the UDP flow expired after 60 s; the TCP one stays');
      const udpAgain = await across(n1, n2, udp(CLI.ns4, 4401, SERVER.rr4, 53));
      assert.equal(udpAgain.wire.to, n2.endpoint, 'a new choice (round robin: after x0, x1 comes x0)');
      const tcpLater = await across(n1, n2, tcp(CLI.ns4, 4400, SERVER.rr4, 80, Ack, 2, 2));
      assert.equal(tcpLater.wire.to, n2.endpoint, 'the established flow still goes to its instance');
      assert.ok(n1.inUse().has(SERVER.name), 'a job with live flows stays in use, however idle they are');
      t.mock.timers.tick(600_000 + 2000);
      assert.equal(n1.proxy.status().flows, 0);
    } finally {
      w.close();
    }
  });

  it('closed TCP flows and ICMP flows expire after their own idle times', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const n1 = w.node(N1);
      const n2 = w.node(N2);
      n1.learn(CLIENT, [CLI]);
      n1.learn(SERVER, [X0]);
      n2.learn(CLIENT, [CLI]);
      n2.learn(SERVER, [X0]);
      const { Syn, Ack, Fin } = TcpFlag;
      await across(n1, n2, tcp(CLI.ns4, 4500, SERVER.rr4, 80, Syn, 1));
      await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4500, Syn | Ack, 1, 2));
      await across(n1, n2, tcp(CLI.ns4, 4500, SERVER.rr4, 80, Fin | Ack, 2, 2));
      await across(n2, n1, tcp(X0.ns4, 80, CLI.ip4, 4500, Fin | Ack, 2, 3));
      await across(n1, n2, buildEcho({ src: CLI.ns4, dst: SERVER.rr4, id: 9 }));
      assert.equal(n1.proxy.status().flows, 2);
      t.mock.timers.tick(11_000);
      assert.equal(n1.proxy.status().flows, 1, 'the closed TCP flow went after 10 s');
      t.mock.timers.tick(20_000);
      assert.equal(n1.proxy.status().flows, 0, 'the echo flow went after 30 s');
    } finally {
      w.close();
    }
  });

  it('held packets time out as counted drops and the address can be asked again', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const n1 = w.node(N1, { resolveTimeoutMs: 3000 });
      n1.learn(CLIENT, [CLI]);
      n1.send(udp(CLI.ns4, 1, SERVER.rr4, 2), udp(CLI.ns4, 1, SERVER.rr4, 2));
      await n1.dir.asked.take(1);
      await until(() => n1.proxy.status().waiting_packets === 2, 'held');
      t.mock.timers.tick(4000);
      assert.equal(n1.proxy.status().waiting_packets, 0);
      assert.equal(n1.drops(Drop.Unresolved), 2);
      n1.send(udp(CLI.ns4, 1, SERVER.rr4, 2));
      assert.deepEqual(await n1.dir.asked.take(1), [SERVER.rr4]);
    } finally {
      w.close();
    }
  });
});
