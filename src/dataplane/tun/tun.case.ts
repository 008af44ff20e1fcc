/**
 * The conformance suite every Tun implementation passes (run from each implementation's tests). The harness
 * plays the kernel's side: a "host" UDP endpoint whose datagrams to "peer" arrive at the device as IPv4/UDP
 * packets, and which receives what the device's consumer writes back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Collector,
  type Ipv4Udp,
  buildIpv4Udp,
  loopTurns,
  parseIpv4Udp,
  swapIpv4UdpInPlace,
} from './fixtures.ts';
import { BatchBuilder, type PacketBatch, type Tun } from './tun.ts';

export interface TunHarness {
  /** The device under test, opened but not started. */
  tun: Tun;
  /** The kernel-side endpoint (address on the host side of the device, a bound UDP port). */
  host: { address: string; port: number };
  /** An address routed into the device, and a port there. */
  peer: { address: string; port: number };
  /** Sends each payload from host to peer, so it arrives at the device as one IPv4/UDP packet. */
  sendFromHost(payloads: Buffer[]): void;
  /** Payloads of the datagrams the host received from packets written to the device. */
  receivedOnHost: Collector<Buffer>;
  /** Releases the device and everything else the harness made. */
  dispose(): Promise<void>;
}

interface Reader {
  /** host -> peer UDP packets delivered so far (copies). */
  packets: Collector<Ipv4Udp>;
  /** Packet count of every batch delivered. */
  batchCounts: number[];
}

/** Starts the device with a consumer that checks batch layout and keeps the host -> peer packets. */
function startReader(h: TunHarness, extra?: (batch: PacketBatch) => void): Reader {
  const reader: Reader = { packets: new Collector(), batchCounts: [] };
  h.tun.start((batch) => {
    reader.batchCounts.push(batch.count);
    let end = 0;
    for (let i = 0; i < batch.count; i++) {
      const offset = batch.offsets[i] ?? 0;
      const length = batch.lengths[i] ?? 0;
      assert.ok(offset - h.tun.headroom >= end, `packet ${i} has ${h.tun.headroom} bytes of headroom`);
      assert.ok(offset + length <= batch.buffer.length, `packet ${i} lies inside the buffer`);
      end = offset + length;
      const udp = parseIpv4Udp(batch.buffer, offset, length);
      if (udp && udp.dst === h.peer.address && udp.dstPort === h.peer.port) reader.packets.push(udp);
    }
    extra?.(batch);
  });
  return reader;
}

function payloads(n: number, size = 100): Buffer[] {
  return Array.from({ length: n }, (_, i) => Buffer.alloc(size, `packet ${i};`));
}

function sorted(buffers: Buffer[]): string[] {
  return buffers.map((b) => b.toString()).sort();
}

export function runTunConformance(name: string, open: () => Promise<TunHarness>): void {
  describe(`${name} conforms to Tun`, () => {
    it('has a name and a sane MTU', async () => {
      const h = await open();
      try {
        assert.ok(h.tun.name.length > 0);
        assert.ok(h.tun.mtu >= 576);
        assert.ok(h.tun.headroom >= 0);
      } finally {
        await h.dispose();
      }
    });

    it('delivers a datagram sent into the device as one IPv4/UDP packet after the headroom', async () => {
      const h = await open();
      try {
        const reader = startReader(h);
        h.sendFromHost([Buffer.from('hello tun')]);
        const [packet] = await reader.packets.take(1);
        assert.ok(packet);
        assert.equal(packet.payload.toString(), 'hello tun');
        assert.equal(packet.src, h.host.address);
        assert.equal(packet.srcPort, h.host.port);
      } finally {
        await h.dispose();
      }
    });

    it('delivers a burst completely, several packets per batch', async () => {
      const h = await open();
      try {
        const reader = startReader(h);
        const sent = payloads(150);
        h.sendFromHost(sent);
        const got = await reader.packets.take(sent.length);
        assert.deepEqual(sorted(got.map((p) => p.payload)), sorted(sent));
        assert.ok(Math.max(...reader.batchCounts) > 1, `batches: ${reader.batchCounts.join(',')}`);
      } finally {
        await h.dispose();
      }
    });

    it('writes packets rewritten in place, straight from the batch buffer', async () => {
      const h = await open();
      try {
        const out = new BatchBuilder(1024);
        const reader = startReader(h, (batch) => {
          out.reset(batch.buffer);
          for (let i = 0; i < batch.count; i++) {
            const offset = batch.offsets[i] ?? 0;
            const length = batch.lengths[i] ?? 0;
            const udp = parseIpv4Udp(batch.buffer, offset, length);
            if (!udp || udp.dstPort !== h.peer.port) continue;
            swapIpv4UdpInPlace(batch.buffer, offset);
            out.push(offset, length);
          }
          assert.equal(h.tun.write(out), out.count);
        });
        const sent = payloads(40, 300);
        h.sendFromHost(sent);
        const echoed = await h.receivedOnHost.take(sent.length);
        assert.deepEqual(sorted(echoed), sorted(sent));
        assert.equal(reader.packets.length, sent.length);
      } finally {
        await h.dispose();
      }
    });

    it('skips a packet the device rejects and writes the rest', async () => {
      const h = await open();
      try {
        startReader(h);
        const good = buildIpv4Udp(
          h.peer.address,
          h.peer.port,
          h.host.address,
          h.host.port,
          Buffer.from('ok'),
        );
        const buffer = Buffer.concat([Buffer.alloc(40), good]); // 40 zero bytes: IP version 0
        const batch = {
          buffer,
          offsets: Uint32Array.of(0, 40),
          lengths: Uint32Array.of(40, good.length),
          count: 2,
        };
        assert.equal(h.tun.write(batch), 1);
        const [payload] = await h.receivedOnHost.take(1);
        assert.equal(payload?.toString(), 'ok');
      } finally {
        await h.dispose();
      }
    });

    it('stops delivering when closed inside a callback; close is idempotent and later writes return 0', async () => {
      const h = await open();
      try {
        let calls = 0;
        let closedIn!: () => void;
        const closed = new Promise<void>((resolve) => (closedIn = resolve));
        h.tun.start(() => {
          calls++;
          h.tun.close();
          h.tun.close();
          closedIn();
        });
        h.sendFromHost(payloads(200));
        await closed;
        await loopTurns(3);
        assert.equal(calls, 1);
        const good = buildIpv4Udp(h.peer.address, h.peer.port, h.host.address, h.host.port, Buffer.from('x'));
        const batch = {
          buffer: good,
          offsets: Uint32Array.of(0),
          lengths: Uint32Array.of(good.length),
          count: 1,
        };
        assert.equal(h.tun.write(batch), 0);
        assert.throws(() => h.tun.start(() => {}));
      } finally {
        await h.dispose();
      }
    });

    it('refuses a second start', async () => {
      const h = await open();
      try {
        h.tun.start(() => {});
        assert.throws(() => h.tun.start(() => {}), /already started/);
      } finally {
        await h.dispose();
      }
    });
  });
}
