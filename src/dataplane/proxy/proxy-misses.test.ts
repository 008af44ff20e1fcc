/**
 * Cache misses and local instances without their own entry yet: packets wait, bounded, and follow the answer (misses.ts).
 * The test bed (nodes, jobs, instances, packet helpers) is in proxy.fixtures.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TcpFlag } from '../packet/index.ts';
import { Drop } from './counters.ts';
import {
  N1,
  N2,
  N3,
  TUNNEL_PORT,
  CLIENT,
  CLI,
  SERVER,
  X0,
  X1,
  OTHER,
  O0,
  FAMILIES,
  World,
  world,
  cluster,
  until,
  line,
  payloadOf,
  assertChecksums,
  udp,
  tcp,
  br,
  across,
} from './proxy.fixtures.ts';

// ---- cache misses -------------------------------------------------------------------------------------------

describe('ProxyTUN cache misses', () => {
  it('holds the first packets to an unknown ServiceIP, asks once, lets other flows go, then sends in order', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    n1.learn(OTHER, [O0]);
    n2.learn(CLIENT, [CLI]);
    n1.send(
      udp(CLI.ns4, 5000, SERVER.rr4, 53, 'one'),
      udp(CLI.ns4, 5000, SERVER.rr4, 53, 'two'),
      tcp(CLI.ns4, 5001, SERVER.rr4, 80, TcpFlag.Syn, 9),
      udp(CLI.ns4, 5000, SERVER.rr4, 53, 'three'),
    );
    assert.deepEqual(await n1.dir.asked.take(1), [SERVER.rr4]);
    await until(() => n1.proxy.status().waiting_packets === 4, 'four packets held');
    // another service flows meanwhile
    const other = await across(n1, n2, udp(CLI.ns4, 5002, OTHER.rr4, 7, 'meanwhile'));
    assert.equal(line(other.wire.packet), `udp ${CLI.ip4}:5002 > ${O0.ns4}:7`);
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, 'four'));
    await until(() => n1.proxy.status().waiting_packets === 5, 'five packets held');
    assert.deepEqual(n1.dir.questions, [SERVER.rr4], 'exactly one question');

    n1.answer(SERVER.rr4, SERVER, [X0]);
    const released = await n2.written.take(5);
    assert.deepEqual(
      released.map((p) => `${line(p)} ${payloadOf(p)}`),
      [
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 one`,
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 two`,
        `tcp ${CLI.ip4}:5001 > ${X0.ns4}:80 [S] `,
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 three`,
        `udp ${CLI.ip4}:5000 > ${X0.ns4}:53 four`,
      ],
    );
    for (const p of released) assertChecksums(p);
    assert.equal(n1.proxy.status().waiting_packets, 0);
    assert.equal(n1.drops(Drop.Unresolved) + n1.drops(Drop.QueueFull), 0);
  });

  it('keeps the order when the table learns the address before the answer arrives', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, '1'), udp(CLI.ns4, 5000, SERVER.rr4, 53, '2'));
    await n1.dir.asked.take(1);
    await until(() => n1.proxy.status().waiting_packets === 2, 'two packets held');
    // the resolver applies the table, then still waits (subscribing to the job) before it reports
    n1.learn(SERVER, [X0]);
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, '3'));
    const got = await n2.written.take(3);
    assert.deepEqual(got.map(payloadOf), ['1', '2', '3']);
    n1.answer(SERVER.rr4, SERVER, [X0]); // the answer, now that the table already knew it
    n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, '4'));
    assert.deepEqual((await n2.written.take(1)).map(payloadOf), ['4']);
    assert.equal(n1.proxy.counters.flowsCreated, 1);
  });

  it('a directory answering inside request() (mid-batch) releases the batch in order and applies removals', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    await across(n1, n2, tcp(CLI.ns4, 3000, SERVER.rr4, 80, TcpFlag.Syn, 1)); // x0
    // another port: a connection to port 80 while the first is open would join x0 (session affinity)
    await across(n1, n3, tcp(CLI.ns4, 3001, SERVER.rr4, 81, TcpFlag.Syn, 1)); // x1
    n1.dir.onRequest = (address) => {
      n1.learn(SERVER, [X1]); // the cached answer also says that x0 is gone
      n1.answer(address, OTHER, [O0]);
    };
    n1.send(
      udp(CLI.ns4, 3002, OTHER.rr4, 7, 'a'),
      udp(CLI.ns4, 3002, OTHER.rr4, 7, 'b'),
      udp(CLI.ns4, 3003, OTHER.rr4, 7, 'c'),
    );
    const got = await n2.written.take(3);
    assert.deepEqual(got.map(payloadOf), ['a', 'b', 'c']);
    assert.equal(line(got[0]!), `udp ${CLI.ip4}:3002 > ${O0.ns4}:7`);
    assert.deepEqual(
      (await n1.tunnel.sent.take(3)).map((s) => s.to),
      [n2.endpoint, n2.endpoint, n2.endpoint],
    );
    const [rst] = await n1.written.take(1);
    // the flow never saw an answer (SYN-SENT): the reset acknowledges the SYN, as such a socket requires
    assert.equal(line(rst!), `tcp ${SERVER.rr4}:80 > ${CLI.ns4}:3000 [R.]`);
    assert.deepEqual(n1.dir.questions, [OTHER.rr4]);
    const still = await across(n1, n3, tcp(CLI.ns4, 3001, SERVER.rr4, 81, TcpFlag.Ack, 2, 1));
    assert.equal(still.wire.to, n3.endpoint);
  });

  it('a negative answer drops the held packets, counted', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    n1.learn(CLIENT, [CLI]);
    n1.send(udp(CLI.ns4, 5000, '10.30.9.9', 1), udp(CLI.ns4, 5001, '10.30.9.9', 1));
    assert.deepEqual(await n1.dir.asked.take(1), ['10.30.9.9']);
    await until(() => n1.proxy.status().waiting_packets === 2, 'two packets held');
    n1.answer('10.30.9.9');
    await n1.settled();
    assert.equal(n1.drops(Drop.Unresolved), 2);
    assert.equal(n1.proxy.status().waiting_packets, 0);
    assert.equal(n1.tunnel.log.length + n1.tun.written.length, 0);
    // the next packet asks again
    n1.send(udp(CLI.ns4, 5000, '10.30.9.9', 1));
    assert.deepEqual(await n1.dir.asked.take(1), ['10.30.9.9']);
    // the old answer, still in the next snapshot (made for another job), does not end the new question
    n1.learn(OTHER, [O0]);
    await n1.settled();
    assert.equal(n1.proxy.status().waiting_packets, 1, 'the new packet still waits for its own answer');
    assert.equal(n1.drops(Drop.Unresolved), 2);
  });

  it('IPv6: held, asked once by its canonical text, released on the answer', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n3 = w.node(N3);
    n1.learn(CLIENT, [CLI]);
    n1.send(udp(CLI.ns6, 5000, SERVER.rr6, 53, 'a'), udp(CLI.ns6, 5000, SERVER.rr6, 53, 'b'));
    assert.deepEqual(await n1.dir.asked.take(1), [SERVER.rr6]);
    n1.answer(SERVER.rr6, SERVER, [X1]);
    const got = await n3.written.take(2);
    assert.deepEqual(got.map(payloadOf), ['a', 'b']);
    assert.equal(line(got[0]!), `udp [${CLI.ip6}]:5000 > [${X1.ns6}]:53`);
  });

  it('bounds the queue: a flood of distinct unknown addresses drops the excess, counted', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    n1.learn(CLIENT, [CLI]);
    const flood = 2100;
    const started = Date.now();
    for (let i = 0; i < flood; i++) n1.send(udp(CLI.ns4, 5000, `10.30.${100 + (i >> 8)}.${i & 255}`, 1));
    await until(() => n1.proxy.counters.tunIn === flood, 'the flood read');
    const budget = 400 + Math.ceil(((Date.now() - started) * 200) / 1000); // burst + refill at 200/s
    assert.equal(n1.proxy.status().waiting_packets, 2048);
    assert.equal(n1.drops(Drop.QueueFull), flood - 2048);
    // one question per address at most, and no more than the proxy's question budget (a scan must not
    // become a flood of table queries); the rest are counted as throttled
    assert.equal(new Set(n1.dir.questions).size, n1.dir.questions.length);
    assert.ok(n1.dir.questions.length <= budget, `${n1.dir.questions.length} questions, budget ${budget}`);
    assert.equal(n1.proxy.counters.questionsThrottled, 2048 - n1.dir.questions.length);
    // the node is not wedged: a known service still flows
    n1.learn(OTHER, [O0]);
    n1.send(udp(CLI.ns4, 5001, OTHER.rr4, 7));
    const [s] = await n1.tunnel.sent.take(1);
    assert.equal(s?.to, `${N2.host}:${TUNNEL_PORT}`);
  });

  it('bounds the queue per address: many packets to one unknown address, the first 64 go in order', async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    for (let i = 0; i < 100; i++) n1.send(udp(CLI.ns4, 5000, SERVER.rr4, 53, `${i}`));
    await until(() => n1.proxy.counters.tunIn === 100, 'all read');
    assert.equal(n1.drops(Drop.QueueFull), 36);
    assert.deepEqual(n1.dir.questions, [SERVER.rr4]);
    n1.answer(SERVER.rr4, SERVER, [X0]);
    const got = await n2.written.take(64);
    assert.deepEqual(
      got.map(payloadOf),
      Array.from({ length: 64 }, (_, i) => `${i}`),
    );
  });

  it("the server's node holds the reply until it knows the client's instance IP (one question)", async (t) => {
    const w = world(t);
    const n1 = w.node(N1);
    const n2 = w.node(N2);
    n1.learn(CLIENT, [CLI]);
    n1.learn(SERVER, [X0]);
    n2.learn(SERVER, [X0]); // n2 does not know the client's job yet
    const syn = await across(n1, n2, tcp(CLI.ns4, 42000, SERVER.rr4, 80, TcpFlag.Syn, 1));
    assert.equal(line(syn.delivered), `tcp ${CLI.ip4}:42000 > ${X0.ns4}:80 [S]`, 'a request goes in as is');
    assert.deepEqual(await n2.dir.asked.take(1), [CLI.ip4], 'the unknown sender is looked up at once');
    n2.send(tcp(X0.ns4, 80, CLI.ip4, 42000, TcpFlag.Syn | TcpFlag.Ack, 100, 2));
    await until(() => n2.proxy.status().waiting_packets === 1, 'SYN-ACK held');
    assert.deepEqual(n2.dir.questions, [CLI.ip4], 'no second question');
    n2.answer(CLI.ip4, CLIENT, [CLI]);
    const [wire] = await n2.tunnel.sent.take(1);
    assert.equal(line(wire!.packet), `tcp ${X0.ip4}:80 > ${CLI.ns4}:42000 [S.]`);
    const [delivered] = await n1.written.take(1);
    assert.equal(line(delivered!), `tcp ${SERVER.rr4}:80 > ${CLI.ns4}:42000 [S.]`);
  });
});

// ---- the source's own entry ---------------------------------------------------------------------------------

describe('ProxyTUN and local instances without their own entry yet', () => {
  for (const f of FAMILIES) {
    it(`${f.name}: packets wait for the instance's entry and go when it arrives`, async (t) => {
      const w = world(t);
      const n1 = w.node(N1);
      const n2 = w.node(N2);
      n1.learn(SERVER, [X0]);
      n2.learn(CLIENT, [CLI]);
      n1.send(
        udp(f.ns(CLI), 5000, f.rr(SERVER), 53, 'early'),
        udp(f.ns(CLI), 5000, f.rr(SERVER), 53, 'later'),
      );
      await until(() => n1.proxy.status().waiting_packets === 2, 'held');
      assert.equal(n1.tunnel.log.length, 0);
      assert.deepEqual(n1.dir.questions, [], 'the node refreshes its own job itself; nothing to ask');
      n1.learn(CLIENT, [CLI]); // the post-deploy table query: the next snapshot lists the instance
      const got = await n2.written.take(2);
      assert.deepEqual(got.map(payloadOf), ['early', 'later']);
      assert.equal(line(got[0]!), `udp ${br(f, f.ip(CLI))}:5000 > ${br(f, f.ns(X0))}:53`);
    });
  }

  it('an instance that never gets its entry: its packets expire as counted drops', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
    const w = new World();
    try {
      const n1 = w.node(N1, { resolveTimeoutMs: 3000 });
      n1.learn(SERVER, [X0]);
      n1.send(udp('10.18.0.9', 5000, SERVER.rr4, 53));
      await until(() => n1.proxy.status().waiting_packets === 1, 'held');
      t.mock.timers.tick(5000);
      assert.equal(n1.proxy.status().waiting_packets, 0);
      assert.equal(n1.drops(Drop.UnknownSource), 1);
    } finally {
      w.close();
    }
  });
});
