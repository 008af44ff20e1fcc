import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeTun, type FakeTunOptions } from './fake.ts';
import { Collector, buildIpv4Udp, parseIpv4Udp } from './fixtures.ts';
import { BatchBuilder, type PacketBatch } from './tun.ts';
import { type TunHarness, runTunConformance } from './tun.case.ts';

function fakeHarness(options: FakeTunOptions): () => Promise<TunHarness> {
  return () => {
    const tun = new FakeTun(options);
    const host = { address: '10.77.0.1', port: 40000 };
    const peer = { address: '10.77.0.2', port: 9000 };
    const receivedOnHost = new Collector<Buffer>();
    tun.onWrite = (packet) => {
      const udp = parseIpv4Udp(packet);
      if (udp && udp.dst === host.address && udp.dstPort === host.port) receivedOnHost.push(udp.payload);
    };
    return Promise.resolve({
      tun,
      host,
      peer,
      receivedOnHost,
      sendFromHost: (payloads) => {
        for (const p of payloads)
          tun.inject(buildIpv4Udp(host.address, host.port, peer.address, peer.port, p));
      },
      dispose: () => {
        tun.close();
        return Promise.resolve();
      },
    });
  };
}

runTunConformance('FakeTun', fakeHarness({}));
runTunConformance('FakeTun (headroom 32, batches of 16)', fakeHarness({ headroom: 32, batchSize: 16 }));
runTunConformance('FakeTun with offloads', fakeHarness({ offload: true }));

function packet(payload: string): Buffer {
  return buildIpv4Udp('10.0.0.1', 1000, '10.0.0.2', 2000, Buffer.from(payload));
}

describe('FakeTun', () => {
  it('records copies of what was written, not views of the caller buffer', () => {
    const tun = new FakeTun();
    const p = packet('abc');
    assert.equal(
      tun.write({ buffer: p, offsets: Uint32Array.of(0), lengths: Uint32Array.of(p.length), count: 1 }),
      1,
    );
    p.fill(0);
    assert.equal(parseIpv4Udp(tun.written[0] ?? Buffer.alloc(0))?.payload.toString(), 'abc');
    assert.deepEqual(tun.counters, { written: 1, rejected: 0, busy: 0 });
  });

  it('links two devices: what one consumer writes, the other consumer reads', async () => {
    const a = new FakeTun({ name: 'a' });
    const b = new FakeTun({ name: 'b' });
    FakeTun.link(a, b);
    const atB = new Collector<string>();
    const atA = new Collector<string>();
    const collect = (into: Collector<string>) => (batch: PacketBatch) => {
      for (let i = 0; i < batch.count; i++) {
        const o = batch.offsets[i] ?? 0;
        into.push(parseIpv4Udp(batch.buffer, o, batch.lengths[i])?.payload.toString() ?? '?');
      }
    };
    a.start(collect(atA));
    b.start(collect(atB));
    const out = new BatchBuilder(2);
    const p = Buffer.concat([packet('to b 1'), packet('to b 2')]);
    out.reset(p);
    out.push(0, p.length / 2);
    out.push(p.length / 2, p.length / 2);
    assert.equal(a.write(out), 2);
    assert.deepEqual(await atB.take(2), ['to b 1', 'to b 2']);
    const q = packet('to a');
    b.write({ buffer: q, offsets: Uint32Array.of(0), lengths: Uint32Array.of(q.length), count: 1 });
    assert.deepEqual(await atA.take(1), ['to a']);
    a.close();
    b.close();
  });

  it('delivers a packet longer than its slot with length 0, and drops injections beyond its queue', async () => {
    const tun = new FakeTun({ mtu: 100, queueCapacity: 2 });
    const lengths = new Collector<number>();
    tun.start((batch) => {
      for (let i = 0; i < batch.count; i++) lengths.push(batch.lengths[i] ?? -1);
    });
    assert.equal(tun.inject(Buffer.alloc(101, 0x45)), true);
    assert.equal(tun.inject(Buffer.alloc(100, 0x45)), true);
    assert.equal(tun.inject(Buffer.alloc(10, 0x45)), false);
    assert.deepEqual(await lengths.take(2), [0, 100]);
    tun.close();
    assert.equal(tun.inject(Buffer.alloc(10, 0x45)), false);
  });
});

describe('FakeTun with offloads', () => {
  it('delivers gso words with the packets, keeps them on write, and takes 64 KiB super-packets', async () => {
    const tun = new FakeTun({ offload: true });
    const seen = new Collector<[number, number]>();
    tun.start((batch) => {
      assert.ok(batch.gso, 'batches carry gso words');
      const out = new BatchBuilder(batch.count);
      out.reset(batch.buffer);
      for (let i = 0; i < batch.count; i++) {
        seen.push([batch.lengths[i]!, batch.gso[i]!]);
        out.push(batch.offsets[i]!, batch.lengths[i]!, batch.gso[i]);
      }
      assert.equal(tun.write(out), batch.count);
    });
    const big = Buffer.alloc(60000, 0x45);
    tun.inject(big, 1400);
    tun.inject(packet('plain'));
    assert.deepEqual(await seen.take(2), [
      [60000, 1400],
      [packet('plain').length, 0],
    ]);
    assert.deepEqual(tun.writtenGso, [1400, 0]);
    tun.close();
  });

  it('without offloads, refuses a gso word on inject and on write', () => {
    const tun = new FakeTun();
    assert.throws(() => tun.inject(packet('x'), 1000), /no offloads/);
    const out = new BatchBuilder(2);
    out.reset(Buffer.concat([packet('a'), packet('b')]));
    out.push(0, packet('a').length, 1000);
    out.push(packet('a').length, packet('b').length);
    assert.equal(out.offloaded, true);
    assert.equal(tun.write(out), 1);
    assert.deepEqual(tun.counters, { written: 1, rejected: 1, busy: 0 });
    tun.close();
  });
});

describe('BatchBuilder', () => {
  it('collects pairs up to its capacity and resets without allocating', () => {
    const b = new BatchBuilder(2);
    const offsets = b.offsets;
    const buf = Buffer.alloc(10);
    b.reset(buf);
    assert.equal(b.push(1, 2), true);
    assert.equal(b.push(3, 4), true);
    assert.equal(b.push(5, 6), false);
    assert.equal(b.count, 2);
    assert.deepEqual([...b.offsets], [1, 3]);
    assert.deepEqual([...b.lengths], [2, 4]);
    b.reset();
    assert.equal(b.count, 0);
    assert.equal(b.buffer, buf);
    assert.equal(b.offsets, offsets);
  });
});
