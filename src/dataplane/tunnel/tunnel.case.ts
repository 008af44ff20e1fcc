/**
 * The conformance suite every Tunnel implementation passes (run from each implementation's tests): two
 * connected tunnels a and b, the endpoints at which each is reached, and one endpoint that nobody answers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Collector, loopTurns } from '../tun/fixtures.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { ENDPOINT_BYTES, OutboundBatch, type Tunnel, decodeEndpoint, endpointEquals } from './tunnel.ts';

export interface TunnelHarness {
  /** An open, unstarted tunnel that can reach b. */
  a: Tunnel;
  /** An open, unstarted tunnel that can reach a. */
  b: Tunnel;
  /** The endpoint at which a is reached, which is also the source b sees on a's datagrams. */
  endpointOfA: Buffer;
  /** The endpoint at which b is reached, which is also the source a sees on b's datagrams. */
  endpointOfB: Buffer;
  /** An endpoint the network refuses or loses datagrams to. */
  unreachable: Buffer;
  /** Closes both tunnels and anything else the harness made. */
  dispose(): void;
}

interface Received {
  /** The datagram's bytes as latin1 text. */
  payload: string;
  /** A copy of the 18-byte source endpoint. */
  source: Buffer;
}

function collect(t: Tunnel, batchCounts: number[] = []): Collector<Received> {
  const got = new Collector<Received>();
  t.start((batch, sources) => {
    batchCounts.push(batch.count);
    for (let i = 0; i < batch.count; i++) {
      const offset = batch.offsets[i] ?? 0;
      got.push({
        payload: batch.buffer.toString('latin1', offset, offset + (batch.lengths[i] ?? 0)),
        source: Buffer.from(sources.subarray(i * ENDPOINT_BYTES, (i + 1) * ENDPOINT_BYTES)),
      });
    }
  });
  return got;
}

/** One buffer holding the payloads back to back, addressed to `to[i % to.length]`. */
function outbound(payloads: string[], to: Buffer[]): OutboundBatch {
  const out = new OutboundBatch(payloads.length);
  const buffer = Buffer.from(payloads.join(''), 'latin1');
  out.reset(buffer);
  let offset = 0;
  payloads.forEach((p, i) => {
    const dest = to[i % to.length];
    assert.ok(dest);
    out.pushTo(offset, p.length, dest);
    offset += p.length;
  });
  return out;
}

function numbered(n: number, size: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    `datagram ${i} `.padEnd(size, String.fromCharCode(65 + (i % 26))),
  );
}

function show(endpoint: Buffer): string {
  const { host, port } = decodeEndpoint(endpoint);
  return `${host}:${port}`;
}

export function runTunnelConformance(name: string, open: () => TunnelHarness): void {
  describe(`${name} conforms to Tunnel`, () => {
    it('is bound to a port', () => {
      const h = open();
      try {
        assert.ok(h.a.port > 0 && h.b.port > 0);
      } finally {
        h.dispose();
      }
    });

    it("delivers a datagram with the sender's endpoint as its source", async () => {
      const h = open();
      try {
        const atB = collect(h.b);
        assert.equal(outbound(['hello tunnel'], [h.endpointOfB]).sendThrough(h.a), 1);
        const [got] = await atB.take(1);
        assert.equal(got?.payload, 'hello tunnel');
        assert.ok(
          got && endpointEquals(got.source, 0, h.endpointOfA, 0),
          `source ${got && show(got.source)}`,
        );
      } finally {
        h.dispose();
      }
    });

    it('delivers a burst of 150 datagrams of 1400 bytes from one send, intact, several per batch', async () => {
      const h = open();
      try {
        const counts: number[] = [];
        const atB = collect(h.b, counts);
        const sent = numbered(150, 1400);
        assert.equal(outbound(sent, [h.endpointOfB]).sendThrough(h.a), sent.length);
        const got = await atB.take(sent.length);
        assert.deepEqual(got.map((r) => r.payload).sort(), [...sent].sort());
        assert.ok(Math.max(...counts) > 1, `batch sizes ${counts.join(',')}`);
      } finally {
        h.dispose();
      }
    });

    it('sends each datagram of one batch to its own endpoint', async () => {
      const h = open();
      try {
        const atA = collect(h.a);
        const atB = collect(h.b);
        const sent = numbered(10, 50);
        assert.equal(outbound(sent, [h.endpointOfB, h.endpointOfA]).sendThrough(h.a), 10);
        const [toB, toA] = [await atB.take(5), await atA.take(5)];
        assert.deepEqual(toB.map((r) => r.payload).sort(), sent.filter((_, i) => i % 2 === 0).sort());
        assert.deepEqual(toA.map((r) => r.payload).sort(), sent.filter((_, i) => i % 2 === 1).sort());
      } finally {
        h.dispose();
      }
    });

    it('replies in place: sends a received batch back to its sources from the same buffers', async () => {
      const h = open();
      try {
        const atA = collect(h.a);
        h.b.start((batch: PacketBatch, sources) => {
          assert.equal(h.b.send({ ...batch, endpoints: sources }).sent, batch.count);
        });
        const sent = numbered(20, 300);
        outbound(sent, [h.endpointOfB]).sendThrough(h.a);
        const echoed = await atA.take(sent.length);
        assert.deepEqual(echoed.map((r) => r.payload).sort(), [...sent].sort());
        assert.ok(echoed.every((r) => endpointEquals(r.source, 0, h.endpointOfB, 0)));
      } finally {
        h.dispose();
      }
    });

    it('does not throw for an unreachable endpoint, and still sends the rest', async () => {
      const h = open();
      try {
        const atB = collect(h.b);
        const sent = outbound(
          ['lost 1', 'kept 1', 'lost 2', 'kept 2'],
          [h.unreachable, h.endpointOfB],
        ).sendThrough(h.a);
        assert.ok(sent >= 2, `sent ${sent}`);
        assert.deepEqual((await atB.take(2)).map((r) => r.payload).sort(), ['kept 1', 'kept 2']);
      } finally {
        h.dispose();
      }
    });

    it('stops delivering when closed inside a callback; close is idempotent and later sends return 0', async () => {
      const h = open();
      try {
        let calls = 0;
        let closedIn!: () => void;
        const closed = new Promise<void>((resolve) => (closedIn = resolve));
        h.b.start(() => {
          calls++;
          h.b.close();
          h.b.close();
          closedIn();
        });
        outbound(numbered(300, 100), [h.endpointOfB]).sendThrough(h.a);
        await closed;
        await loopTurns(3);
        assert.equal(calls, 1);
        assert.equal(outbound(['late'], [h.endpointOfA]).sendThrough(h.b), 0);
        assert.throws(() => h.b.start(() => {}));
      } finally {
        h.dispose();
      }
    });

    it('refuses a second start', () => {
      const h = open();
      try {
        h.a.start(() => {});
        assert.throws(() => h.a.start(() => {}), /already started/);
      } finally {
        h.dispose();
      }
    });
  });
}
