import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpAddress } from '../../addressing/ip.ts';
import { createSeededRandom } from '../packet/build.ts';
import { endpoint } from '../tunnel/tunnel.ts';
import type { Instance } from '../snapshot.ts';
import { Flow, FlowTable } from './flow-table.ts';

const bytes = (text: string) => IpAddress.parse(text).toBytes();

/** The local instance that opens the flows. */
const CLIENT: Instance = {
  job: 'app.ns.client.ns',
  number: 0,
  nsip4: Uint8Array.of(10, 18, 0, 2),
  nsip6: null,
  instanceIp4: Uint8Array.of(10, 30, 0, 10),
  instanceIp6: null,
  endpoint: endpoint('10.255.0.1', 50103),
  key: null,
  local: true,
  cluster: 'c1',
};

function instance(n: number, family: 4 | 6): Instance {
  const v4 = family === 4;
  return {
    job: 'app.ns.server.ns',
    number: n,
    nsip4: v4 ? Uint8Array.of(10, 18, 1, n) : null,
    nsip6: v4 ? null : bytes(`fc00::1:${n.toString(16)}`),
    instanceIp4: v4 ? Uint8Array.of(10, 30, 1, n) : null,
    instanceIp6: v4 ? null : bytes(`fdff::1:${n.toString(16)}`),
    endpoint: endpoint('10.255.0.2', 50103),
    key: null,
    local: false,
    cluster: 'c1',
  };
}

function target(i: Instance, len: number): { ns: Uint8Array; ip: Uint8Array } {
  const ns = len === 4 ? i.nsip4 : i.nsip6;
  const ip = len === 4 ? i.instanceIp4 : i.instanceIp6;
  assert.ok(ns && ip);
  return { ns, ip };
}

function makeFlow(
  proto: number,
  client: Uint8Array,
  clientPort: number,
  dialed: Uint8Array,
  port: number,
  inst: Instance,
): Flow {
  const { ns, ip } = target(inst, client.length);
  return new Flow(proto, client, clientPort, dialed, port, client, CLIENT, inst, ns, ip, 0);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const keyText = (proto: number, a: Uint8Array, ap: number, b: Uint8Array, bp: number) =>
  `${proto}/${hex(a)}:${ap}>${hex(b)}:${bp}`;
const outKey = (f: Flow) => keyText(f.proto, f.clientAddr, f.clientPort, f.dialed, f.port);
const replyKey = (f: Flow) => keyText(f.proto, f.targetIp, f.port, f.clientAddr, f.clientPort);

function lookup(
  t: FlowTable,
  proto: number,
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
): Flow | undefined {
  t.setKey(proto, src, 0, dst, 0, src.length, srcPort, dstPort);
  return t.get();
}
const byOut = (t: FlowTable, f: Flow) => lookup(t, f.proto, f.clientAddr, f.clientPort, f.dialed, f.port);
const byReply = (t: FlowTable, f: Flow) => lookup(t, f.proto, f.targetIp, f.port, f.clientAddr, f.clientPort);

/**
 * What the table must answer: the outbound key belongs to its flow (the proxy adds a flow only when its
 * outbound key is free); a reply key belongs to the flow that took it last (added or retargeted), and goes
 * away when that flow goes or moves.
 */
class Oracle {
  readonly out = new Map<string, Flow>();
  readonly reply = new Map<string, Flow>();
  readonly live: Flow[] = [];

  add(f: Flow): void {
    this.out.set(outKey(f), f);
    this.reply.set(replyKey(f), f);
    this.live.push(f);
  }

  remove(index: number): Flow {
    const f = this.live[index]!;
    this.live[index] = this.live[this.live.length - 1]!;
    this.live.pop();
    this.out.delete(outKey(f));
    if (this.reply.get(replyKey(f)) === f) this.reply.delete(replyKey(f));
    return f;
  }

  /** Call before the table's retarget (which changes the flow), then `retargeted` after. */
  leaving(f: Flow): void {
    if (this.reply.get(replyKey(f)) === f) this.reply.delete(replyKey(f));
  }

  retargeted(f: Flow): void {
    this.reply.set(replyKey(f), f);
  }
}

function checkAll(table: FlowTable, oracle: Oracle, removed: readonly Flow[]): void {
  assert.equal(table.size, oracle.live.length);
  for (const f of oracle.live) {
    assert.equal(byOut(table, f), f, 'outbound key finds its flow');
    assert.equal(byReply(table, f), oracle.reply.get(replyKey(f)), 'reply key finds its owner');
  }
  for (const f of removed) {
    assert.equal(f.dead, true);
    assert.equal(byOut(table, f), oracle.out.get(outKey(f)));
    assert.equal(byReply(table, f), oracle.reply.get(replyKey(f)));
  }
}

describe('FlowTable', () => {
  it('finds a flow by its outbound and by its reply 5-tuple, for both families, and nothing else', () => {
    const table = new FlowTable();
    const x4 = instance(0, 4);
    const x6 = instance(0, 6);
    const f4 = makeFlow(17, bytes('10.18.0.2'), 5000, bytes('10.30.0.1'), 53, x4);
    const f6 = makeFlow(17, bytes('fc00::2'), 5000, bytes('fdff:2000::1'), 53, x6);
    table.add(f4);
    table.add(f6);
    assert.equal(byOut(table, f4), f4);
    assert.equal(byReply(table, f4), f4);
    assert.equal(byOut(table, f6), f6);
    assert.equal(byReply(table, f6), f6);
    assert.equal(
      lookup(table, 6, bytes('10.18.0.2'), 5000, bytes('10.30.0.1'), 53),
      undefined,
      'other proto',
    );
    assert.equal(
      lookup(table, 17, bytes('10.18.0.2'), 5001, bytes('10.30.0.1'), 53),
      undefined,
      'other port',
    );
    assert.equal(
      lookup(table, 17, bytes('10.30.0.1'), 53, bytes('10.18.0.2'), 5000),
      undefined,
      'dialed != instance',
    );
    table.remove(f4);
    assert.equal(f4.dead, true);
    assert.equal(byOut(table, f4), undefined);
    assert.equal(byReply(table, f4), undefined);
    assert.equal(byOut(table, f6), f6);
    assert.equal(table.size, 1);
    table.remove(f4); // idempotent
    assert.equal(table.size, 1);
  });

  it('retarget moves the reply key to the new instance', () => {
    const table = new FlowTable(4);
    const [a, b] = [instance(0, 4), instance(1, 4)];
    const f = makeFlow(17, bytes('10.18.0.2'), 1, bytes('10.30.0.1'), 2, a);
    table.add(f);
    f.stale = true;
    const oldReply = { ip: f.targetIp };
    const t = target(b, 4);
    table.retarget(f, b, t.ns, t.ip);
    assert.equal(f.instance, b);
    assert.equal(f.stale, false);
    assert.equal(lookup(table, 17, oldReply.ip, 2, f.clientAddr, 1), undefined);
    assert.equal(byReply(table, f), f);
    assert.equal(byOut(table, f), f);
  });

  it('survives endless retargets and removals without adds (no slot runs out)', () => {
    const table = new FlowTable(1);
    const insts = Array.from({ length: 250 }, (_, n) => instance(n, 4)); // distinct reply keys
    const f = makeFlow(17, bytes('10.18.0.2'), 1, bytes('10.30.0.1'), 2, insts[0]!);
    table.add(f);
    for (let i = 1; i <= 5000; i++) {
      const inst = insts[i % insts.length]!;
      const t = target(inst, 4);
      table.retarget(f, inst, t.ns, t.ip);
      assert.equal(byReply(table, f), f);
      assert.equal(lookup(table, 17, bytes('10.18.0.2'), 1 + (i % 1000), bytes('10.30.0.9'), 2), undefined);
    }
    assert.equal(byOut(table, f), f);
  });

  it('a reply key shared by two flows belongs to the later one, also after churn', () => {
    // the same client port to the RR address and to the instance's own address: both flows reach x0, so
    // their replies look alike (upstream's cache has the same ambiguity); the later flow takes the key
    const random = createSeededRandom(3);
    for (let round = 0; round < 200; round++) {
      const table = new FlowTable(1);
      const oracle = new Oracle();
      const removed: Flow[] = [];
      const x0 = instance(0, 4);
      // churn first, so tombstones lie in the probe chains
      for (let i = 0; i < 12; i++) {
        const f = makeFlow(
          17,
          bytes('10.18.0.2'),
          100 + Math.floor(random() * 50),
          bytes('10.30.0.7'),
          9,
          x0,
        );
        if (!oracle.out.has(outKey(f))) {
          table.add(f);
          oracle.add(f);
        }
      }
      while (oracle.live.length > 3) {
        const f = oracle.remove(Math.floor(random() * oracle.live.length));
        table.remove(f);
        removed.push(f);
      }
      const viaRr = makeFlow(17, bytes('10.18.0.2'), 5000, bytes('10.30.0.1'), 80, x0);
      const viaIp = makeFlow(17, bytes('10.18.0.2'), 5000, bytes('10.30.1.0'), 80, x0);
      table.add(viaRr);
      oracle.add(viaRr);
      table.add(viaIp);
      oracle.add(viaIp);
      assert.equal(byReply(table, viaRr), viaIp);
      checkAll(table, oracle, removed);
      const first = oracle.live.indexOf(viaRr);
      table.remove(oracle.remove(first));
      removed.push(viaRr);
      assert.equal(byReply(table, viaIp), viaIp, 'the earlier flow leaving does not take the key');
      table.remove(oracle.remove(oracle.live.indexOf(viaIp)));
      removed.push(viaIp);
      assert.equal(byReply(table, viaIp), undefined, 'no dead flow answers for the key');
      checkAll(table, oracle, removed);
    }
  });

  it('matches a Map oracle over random adds, removes, retargets and lookups (crowded keys)', () => {
    const random = createSeededRandom(11);
    const table = new FlowTable(1);
    const oracle = new Oracle();
    const removed: Flow[] = [];
    const insts4 = [0, 1, 2].map((n) => instance(n, 4));
    const insts6 = [0, 1].map((n) => instance(n, 6));
    const clients4 = ['10.18.0.2', '10.18.0.3'].map(bytes);
    const clients6 = ['fc00::2'].map(bytes);
    const dialed4 = ['10.30.0.1', '10.30.1.0', '10.30.1.1'].map(bytes);
    const dialed6 = ['fdff:2000::1', 'fdff::1:0'].map(bytes);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    for (let op = 0; op < 40_000; op++) {
      const r = random();
      if (r < 0.45 || oracle.live.length === 0) {
        const v4 = random() < 0.7;
        const f = makeFlow(
          pick([6, 17]),
          pick(v4 ? clients4 : clients6),
          1 + Math.floor(random() * 30),
          pick(v4 ? dialed4 : dialed6),
          pick([53, 80]),
          pick(v4 ? insts4 : insts6),
        );
        if (oracle.out.has(outKey(f))) continue; // the proxy only adds flows whose outbound key is free
        table.add(f);
        oracle.add(f);
      } else if (r < 0.8) {
        const f = oracle.remove(Math.floor(random() * oracle.live.length));
        table.remove(f);
        removed.push(f);
      } else {
        const f = pick(oracle.live);
        const inst = pick(f.clientAddr.length === 4 ? insts4 : insts6);
        const t = target(inst, f.clientAddr.length);
        oracle.leaving(f);
        table.retarget(f, inst, t.ns, t.ip);
        oracle.retargeted(f);
      }
      if (op % 500 === 0) checkAll(table, oracle, removed.slice(-200));
    }
    checkAll(table, oracle, removed.slice(-2000));
  });

  it('matches a Map oracle with 50,000 flows: growth, tombstones and rebuilds', () => {
    const random = createSeededRandom(12345);
    const table = new FlowTable(16);
    const oracle = new Oracle();
    const removed: Flow[] = [];
    const insts = [0, 1, 2, 3].map((n) => instance(n, 4));
    const insts6 = [0, 1].map((n) => instance(n, 6));
    const randomFlow = (): Flow => {
      const v6 = random() < 0.2;
      const client = v6
        ? bytes(`fc00::${Math.floor(random() * 0xffff).toString(16)}`)
        : Uint8Array.of(10, 18, Math.floor(random() * 256), Math.floor(random() * 256));
      const dialed = v6 ? bytes('fdff:2000::1') : Uint8Array.of(10, 30, 0, 1 + Math.floor(random() * 4));
      return makeFlow(
        random() < 0.5 ? 6 : 17,
        client,
        1024 + Math.floor(random() * 60000),
        dialed,
        random() < 0.5 ? 80 : 443,
        v6 ? insts6[Math.floor(random() * 2)]! : insts[Math.floor(random() * 4)]!,
      );
    };
    while (oracle.live.length < 50_000) {
      const f = randomFlow();
      if (oracle.out.has(outKey(f))) continue;
      table.add(f);
      oracle.add(f);
    }
    checkAll(table, oracle, removed);
    for (let op = 0; op < 100_000; op++) {
      const r = random();
      if (r < 0.4) {
        const f = randomFlow();
        if (oracle.out.has(outKey(f))) continue;
        table.add(f);
        oracle.add(f);
      } else if (r < 0.8 && oracle.live.length) {
        const f = oracle.remove(Math.floor(random() * oracle.live.length));
        table.remove(f);
        removed.push(f);
      } else if (r < 0.9 && oracle.live.length) {
        const f = oracle.live[Math.floor(random() * oracle.live.length)]!;
        const pool = f.clientAddr.length === 4 ? insts : insts6;
        const inst = pool[Math.floor(random() * pool.length)]!;
        const t = target(inst, f.clientAddr.length);
        oracle.leaving(f);
        table.retarget(f, inst, t.ns, t.ip);
        oracle.retargeted(f);
      } else {
        const f = randomFlow(); // most likely absent
        assert.equal(byOut(table, f), oracle.out.get(outKey(f)));
        assert.equal(byReply(table, f), oracle.reply.get(replyKey(f)));
      }
    }
    checkAll(table, oracle, removed);
    for (const f of [...oracle.live]) table.remove(f);
    assert.equal(table.size, 0);
    for (const f of oracle.live.slice(0, 1000)) assert.equal(byOut(table, f), undefined);
  });
});
