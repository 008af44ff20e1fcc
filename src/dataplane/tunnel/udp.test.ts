import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SystemError } from '../../errors.ts';
import { Collector } from '../tun/fixtures.ts';
import { nativeIoAvailable } from '../tun/native.ts';
import { OutboundBatch, decodeEndpoint, endpoint } from './tunnel.ts';
import { type TunnelHarness, runTunnelConformance } from './tunnel.case.ts';
import { UdpTunnel } from './udp.ts';

// Never skipped: the addon is built by npm install; without it these tests fail.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');

function loopbackHarness(host: '127.0.0.1' | '::1'): () => TunnelHarness {
  return () => {
    const a = UdpTunnel.open();
    const b = UdpTunnel.open();
    return {
      a,
      b,
      endpointOfA: endpoint(host, a.port),
      endpointOfB: endpoint(host, b.port),
      // Broadcast without SO_BROADCAST: the kernel refuses it (EACCES) on every host.
      unreachable: endpoint('255.255.255.255', 9),
      dispose: () => {
        a.close();
        b.close();
      },
    };
  };
}

{
  runTunnelConformance('UdpTunnel over IPv4 loopback', loopbackHarness('127.0.0.1'));
  runTunnelConformance('UdpTunnel over IPv6 loopback', loopbackHarness('::1'));
}

function single(payload: Buffer, to: Buffer): OutboundBatch {
  const out = new OutboundBatch(1);
  out.reset(payload);
  out.pushTo(0, payload.length, to);
  return out;
}

describe('UdpTunnel', () => {
  it('binds a dual-stack socket on an ephemeral port, and refuses a port in use', () => {
    const a = UdpTunnel.open();
    try {
      assert.ok(a.port > 0);
      assert.equal(a.family, 6);
      assert.throws(
        () => UdpTunnel.open({ port: a.port }),
        (err: unknown) => {
          assert.ok(err instanceof SystemError);
          assert.equal((err.cause as { code?: string }).code, 'EADDRINUSE');
          return true;
        },
      );
    } finally {
      a.close();
    }
  });

  it('receives a full batch of 64 in one callback when 64+ datagrams are waiting', async () => {
    const a = UdpTunnel.open();
    const b = UdpTunnel.open({ batchSize: 64 });
    try {
      const counts: number[] = [];
      const total = new Collector<number>();
      b.start((batch) => {
        counts.push(batch.count);
        for (let i = 0; i < batch.count; i++) total.push(batch.lengths[i] ?? 0);
      });
      const n = 150;
      const out = new OutboundBatch(n);
      const payload = Buffer.alloc(1400, 7);
      out.reset(payload);
      const to = endpoint('127.0.0.1', b.port);
      for (let i = 0; i < n; i++) out.pushTo(0, payload.length, to);
      assert.equal(out.sendThrough(a), n);
      const lengths = await total.take(n);
      assert.ok(lengths.every((l) => l === 1400));
      assert.equal(Math.max(...counts), 64, `batch sizes ${counts.join(',')}`);
      assert.deepEqual(a.counters, { sent: n, rejected: 0, busy: 0 });
    } finally {
      a.close();
      b.close();
    }
  });

  it('reports loopback sources as 127.0.0.1 and ::1', async () => {
    const a = UdpTunnel.open();
    const b = UdpTunnel.open();
    try {
      const sources = new Collector<string>();
      b.start((batch, src) => {
        for (let i = 0; i < batch.count; i++) {
          const { host, port } = decodeEndpoint(src, i * 18);
          sources.push(`${host} ${port === a.port}`);
        }
      });
      single(Buffer.from('4'), endpoint('127.0.0.1', b.port)).sendThrough(a);
      assert.deepEqual(await sources.take(1), ['127.0.0.1 true']);
      single(Buffer.from('6'), endpoint('::1', b.port)).sendThrough(a);
      assert.deepEqual(await sources.take(1), ['::1 true']);
    } finally {
      a.close();
      b.close();
    }
  });

  it('skips and counts datagrams the kernel refuses (broadcast, oversized) and sends the rest', async () => {
    const a = UdpTunnel.open();
    const b = UdpTunnel.open();
    try {
      const got = new Collector<string>();
      b.start((batch) => {
        for (let i = 0; i < batch.count; i++) {
          const o = batch.offsets[i] ?? 0;
          got.push(batch.buffer.toString('latin1', o, o + (batch.lengths[i] ?? 0)));
        }
      });
      const big = Buffer.alloc(70_000, 'x');
      const buffer = Buffer.concat([Buffer.from('first'), Buffer.from('last'), big]);
      const out = new OutboundBatch(4);
      out.reset(buffer);
      const toB = endpoint('127.0.0.1', b.port);
      out.pushTo(0, 5, toB);
      out.pushTo(9, 65600, toB); // larger than any UDP datagram: EMSGSIZE
      out.pushTo(0, 5, endpoint('255.255.255.255', 9)); // EACCES
      out.pushTo(5, 4, toB);
      assert.equal(out.sendThrough(a), 2);
      assert.deepEqual(a.counters, { sent: 2, rejected: 2, busy: 0 });
      assert.deepEqual(await got.take(2), ['first', 'last']);
    } finally {
      a.close();
      b.close();
    }
  });

  it('delivers a datagram longer than maxDatagramBytes with length 0', async () => {
    const a = UdpTunnel.open();
    const b = UdpTunnel.open({ maxDatagramBytes: 100 });
    try {
      const lengths = new Collector<number>();
      b.start((batch) => {
        for (let i = 0; i < batch.count; i++) lengths.push(batch.lengths[i] ?? -1);
      });
      const payload = Buffer.alloc(1000, 1);
      const out = new OutboundBatch(2);
      out.reset(payload);
      out.pushTo(0, 1000, endpoint('127.0.0.1', b.port)); // slots are rounded up to 128 bytes
      out.pushTo(0, 100, endpoint('127.0.0.1', b.port));
      out.sendThrough(a);
      assert.deepEqual(await lengths.take(2), [0, 100]);
    } finally {
      a.close();
      b.close();
    }
  });
});
