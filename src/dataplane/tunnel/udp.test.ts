import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SystemError } from '../../errors.ts';
import { buildEcho, buildTcp, withPartialChecksum } from '../packet/build.ts';
import { Collector } from '../tun/fixtures.ts';
import { type NativeAddressedBatch, type NativeIo, loadNativeIo, nativeIoAvailable } from '../tun/native.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { ENDPOINT_BYTES, OutboundBatch, decodeEndpoint, endpoint } from './tunnel.ts';
import { type TunnelHarness, runTunnelConformance } from './tunnel.case.ts';
import { GSO_REFUSALS_BEFORE_OFF, UdpTunnel } from './udp.ts';

// Never skipped: the addon is built by npm install; without it these tests fail.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');

function loopbackHarness(host: '127.0.0.1' | '::1', offload = false): () => TunnelHarness {
  return () => {
    const a = UdpTunnel.open({ offload });
    const b = UdpTunnel.open({ offload });
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
  runTunnelConformance('UdpTunnel with offloads over IPv4 loopback', loopbackHarness('127.0.0.1', true));
  runTunnelConformance('UdpTunnel with offloads over IPv6 loopback', loopbackHarness('::1', true));
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

describe('UdpTunnel with offloads (UDP GSO and GRO)', () => {
  /** Datagram i of a test: its length and a fill byte, so every one is recognisable. */
  function datagram(i: number, length: number): Buffer {
    const d = Buffer.alloc(length, i & 0xff);
    d.writeUInt32BE(i, 0);
    return d;
  }

  it('sends runs of equal datagrams as one GSO message each and receives them as GRO runs, split into datagrams, in order', async () => {
    const a = UdpTunnel.open({ offload: true });
    const b = UdpTunnel.open({ offload: true, batchSize: 8 });
    const c = UdpTunnel.open({ offload: true });
    try {
      assert.deepEqual(a.offloads, { gso: true, gro: true });
      const got = new Collector<{ payload: Buffer; from: string }>();
      let packedInOneSlot = 0;
      const receive = (batch: PacketBatch, sources: Buffer) => {
        for (let i = 0; i < batch.count; i++) {
          const o = batch.offsets[i]!;
          if (i > 0 && o === batch.offsets[i - 1]! + batch.lengths[i - 1]!) packedInOneSlot++;
          const { host, port } = decodeEndpoint(sources, i * ENDPOINT_BYTES);
          got.push({
            payload: Buffer.from(batch.buffer.subarray(o, o + batch.lengths[i]!)),
            from: `${host}:${port}`,
          });
        }
      };
      b.start(receive);
      c.start(receive);
      // runs to b (IPv4) and c (IPv6): 100 x 1400 B and a shorter last, a lone small one, 30 x 1000 B,
      // interleaved with datagrams to the other peer, which cut runs
      const plan: Array<{ length: number; to: 'b' | 'c' }> = [
        ...Array.from({ length: 100 }, () => ({ length: 1400, to: 'b' as const })),
        { length: 700, to: 'b' },
        { length: 24, to: 'c' },
        ...Array.from({ length: 30 }, () => ({ length: 1000, to: 'c' as const })),
        { length: 1000, to: 'b' },
        ...Array.from({ length: 5 }, () => ({ length: 1000, to: 'c' as const })),
      ];
      const payloads = plan.map((p, i) => datagram(i, p.length));
      const out = new OutboundBatch(plan.length);
      out.reset(Buffer.concat(payloads));
      const toB = endpoint('127.0.0.1', b.port);
      const toC = endpoint('::1', c.port);
      let at = 0;
      plan.forEach((p, i) => {
        out.pushTo(at, payloads[i]!.length, p.to === 'b' ? toB : toC);
        at += payloads[i]!.length;
      });
      assert.equal(out.sendThrough(a), plan.length);
      assert.deepEqual(a.counters, { sent: plan.length, rejected: 0, busy: 0 });
      assert.equal(a.gsoRefused, 0);
      const received = await got.take(plan.length);
      const forPeer = (who: 'b' | 'c') =>
        received.filter((r) => r.from.startsWith(who === 'b' ? '127.0.0.1' : '::1'));
      for (const who of ['b', 'c'] as const) {
        const expected = payloads.filter((_, i) => plan[i]!.to === who);
        assert.deepEqual(
          forPeer(who).map((r) => r.payload),
          expected,
          `datagrams to ${who}, in order`,
        );
        assert.ok(forPeer(who).every((r) => r.from.endsWith(`:${a.port}`)));
      }
      assert.ok(
        packedInOneSlot > 50,
        `GRO packed runs into one buffer: ${packedInOneSlot} datagrams followed another in place`,
      );
    } finally {
      a.close();
      b.close();
      c.close();
    }
  });

  it('interoperates with a tunnel without offloads both ways', async () => {
    const a = UdpTunnel.open({ offload: true });
    const b = UdpTunnel.open();
    try {
      const atB = new Collector<number>();
      const atA = new Collector<number>();
      b.start((batch) => {
        for (let i = 0; i < batch.count; i++) atB.push(batch.lengths[i]!);
      });
      a.start((batch) => {
        for (let i = 0; i < batch.count; i++) atA.push(batch.lengths[i]!);
      });
      const payload = Buffer.alloc(1200, 9);
      const send = (from: UdpTunnel, to: UdpTunnel) => {
        const out = new OutboundBatch(50);
        out.reset(payload);
        for (let i = 0; i < 50; i++) out.pushTo(0, 1200, endpoint('127.0.0.1', to.port));
        assert.equal(out.sendThrough(from), 50);
      };
      send(a, b);
      send(b, a);
      assert.deepEqual(await atB.take(50), Array<number>(50).fill(1200));
      assert.deepEqual(await atA.take(50), Array<number>(50).fill(1200));
    } finally {
      a.close();
      b.close();
    }
  });

  it('turns GRO off when asked for headroom (runs have none between their datagrams)', () => {
    const a = UdpTunnel.open({ offload: true, headroom: 16 });
    try {
      assert.equal(a.offloads.gro, false);
    } finally {
      a.close();
    }
  });
});

describe('UdpTunnel turning GSO off', () => {
  /** A tunnel on a fake addon whose sendPackets reports, per call, [refused runs, GSO messages taken]. */
  function onFakeAddon(script: Array<[number, number]>): { tunnel: UdpTunnel; gsoArgs: boolean[] } {
    const gsoArgs: boolean[] = [];
    const io = {
      udpOpen: () => ({ fd: 1000, port: 5, family: 6, gso: true, gro: false }),
      sendPackets: (
        _fd: number,
        _family: 4 | 6,
        batch: NativeAddressedBatch,
        stats?: Uint32Array,
        gso?: boolean,
      ) => {
        const [refused, taken] = script[gsoArgs.length] ?? [0, 0];
        gsoArgs.push(gso === true);
        if (stats) {
          stats[0] = 0;
          stats[2] = gso ? refused : 0;
          stats[3] = gso ? taken : 0;
        }
        return batch.count;
      },
      closeFd: () => {},
    } as unknown as NativeIo;
    return { tunnel: UdpTunnel.open({ offload: true }, io), gsoArgs };
  }

  function send(tunnel: UdpTunnel): void {
    const out = new OutboundBatch(2);
    out.reset(Buffer.alloc(100));
    out.pushTo(0, 100, endpoint('192.0.2.1', 9));
    out.pushTo(0, 100, endpoint('192.0.2.1', 9));
    assert.equal(out.sendThrough(tunnel), 2);
  }

  it(`after ${GSO_REFUSALS_BEFORE_OFF} refused runs with none taken in between, and counts them`, () => {
    // 7 refusals, a call where GSO worked (the count starts again), then 2 + 6 more: off at the 8th in a row
    const script: Array<[number, number]> = [
      ...Array.from({ length: 7 }, (): [number, number] => [1, 0]),
      [0, 3],
      [2, 0],
      [0, 0], // nothing to coalesce: says nothing either way
      ...Array.from({ length: 6 }, (): [number, number] => [1, 0]),
      [1, 0],
    ];
    const { tunnel, gsoArgs } = onFakeAddon(script);
    try {
      for (let i = 0; i < script.length; i++) send(tunnel);
      assert.deepEqual(gsoArgs, [...Array<boolean>(16).fill(true), false]);
      assert.equal(tunnel.offloads.gso, false);
      assert.equal(tunnel.gsoRefused, 7 + 2 + 6);
      assert.deepEqual(tunnel.counters, { sent: 2 * script.length, rejected: 0, busy: 0 });
    } finally {
      tunnel.close();
    }
  });
});

describe('UdpTunnel when the socket itself fails', () => {
  const MSS = 1000;
  /** A TCP super-packet of `segments` MSS-sized segments, as a TUN with offloads reads it. */
  function superPacket(segments: number): Buffer {
    const payload = Buffer.alloc(segments * MSS, 0x5a);
    return withPartialChecksum(
      buildTcp({ src: '10.30.0.10', dst: '10.18.0.66', srcPort: 40000, dstPort: 5201, payload }),
    );
  }

  /** Two ordinary packets around a super-packet of 45 segments, then one that cannot be cut (ICMP). */
  function mixedBatch(to: Buffer): OutboundBatch {
    const ordinary = Buffer.from('ordinary');
    const sp = superPacket(45);
    const echo = buildEcho({ src: '10.30.0.10', dst: '10.18.0.66', id: 7, payload: Buffer.alloc(3000) });
    const out = new OutboundBatch(4);
    out.reset(Buffer.concat([ordinary, sp, echo]));
    out.pushTo(0, ordinary.length, to);
    out.pushTo(ordinary.length, sp.length, to, 0, MSS);
    out.pushTo(0, ordinary.length, to);
    out.pushTo(ordinary.length + sp.length, echo.length, to, 0, MSS);
    return out;
  }

  it('counts every wire datagram (each segment of a super-packet) as failed when its fd was closed underneath', () => {
    const real = loadNativeIo();
    let fd = -1;
    const io: NativeIo = {
      ...real,
      udpOpen: (port, offload) => {
        const opened = real.udpOpen(port, offload);
        fd = opened.fd;
        return opened;
      },
      closeFd: () => {}, // closed by the test already
    };
    for (const offload of [false, true]) {
      const tunnel = UdpTunnel.open({ offload }, io);
      try {
        real.closeFd(fd);
        // 1 + 45 + 1 wire datagrams fail with the socket (EBADF); the ICMP "super-packet" is dropped
        assert.deepEqual({ ...tunnel.send(mixedBatch(endpoint('127.0.0.1', 9))) }, { sent: 0, failed: 48 });
        assert.deepEqual(tunnel.counters, { sent: 0, rejected: 47, busy: 0 });
      } finally {
        tunnel.close();
      }
    }
  });

  it('counts what the addon says went out before the failure as sent, the rest as failed', () => {
    let failure: unknown;
    const io = {
      udpOpen: () => ({ fd: 1000, port: 5, family: 6, gso: false, gro: false }),
      sendPackets: (_fd: number, _family: 4 | 6, _batch: NativeAddressedBatch, stats?: Uint32Array) => {
        // what the addon reports: 20 wire datagrams out, 1 refused, then the socket failed with 26 left
        stats?.set([1, 13, 0, 0, 0, 1]);
        throw failure;
      },
      closeFd: () => {},
    } as unknown as NativeIo;
    const tunnel = UdpTunnel.open({}, io);
    try {
      failure = Object.assign(new Error('sendmmsg: Bad file descriptor (EBADF)'), {
        code: 'EBADF',
        errno: 9,
        syscall: 'sendmmsg',
        sent: 20,
        unsent: 26,
      });
      assert.deepEqual({ ...tunnel.send(mixedBatch(endpoint('192.0.2.1', 9))) }, { sent: 20, failed: 28 });
      assert.deepEqual(tunnel.counters, { sent: 20, rejected: 27, busy: 0 });
      // an Error without the counts (not the addon's): nothing went out, each packet counts as one datagram
      failure = new Error('something else');
      assert.deepEqual({ ...tunnel.send(mixedBatch(endpoint('192.0.2.1', 9))) }, { sent: 0, failed: 6 });
      assert.deepEqual(tunnel.counters, { sent: 20, rejected: 27 + 5, busy: 0 });
    } finally {
      tunnel.close();
    }
  });
});
