import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type AddressedBatch, endpoint } from '../tunnel/tunnel.ts';
import { isProbe, PROBE_BYTES, Prober } from './prober.ts';

/** Two probers joined back to back, with a clock the test moves. */
function pair() {
  let clock = 1000;
  const now = () => clock;
  const aEnd = endpoint('198.18.0.1', 50103);
  const bEnd = endpoint('198.18.0.2', 50103);
  const queue: Array<{ to: Buffer; from: Buffer; packet: Buffer }> = [];
  const tunnelFrom = (from: Buffer) => ({
    send({ buffer, offsets, lengths, endpoints, count }: AddressedBatch) {
      for (let i = 0; i < count; i++) {
        queue.push({
          from,
          to: Buffer.from(endpoints.subarray(i * 18, i * 18 + 18)),
          packet: Buffer.from(buffer.subarray(offsets[i], offsets[i]! + lengths[i]!)),
        });
      }
      return { sent: count, failed: 0 };
    },
  });
  const a = new Prober(tunnelFrom(aEnd), { now, intervalMs: 1000 });
  const b = new Prober(tunnelFrom(bEnd), { now, intervalMs: 1000 });
  const deliver = () => {
    while (queue.length) {
      const d = queue.shift()!;
      assert.ok(isProbe(d.packet, 0, d.packet.length));
      const target = d.to.equals(aEnd) ? a : b;
      target.onProbe(d.packet, 0, d.from, 0);
    }
  };
  return { a, b, aEnd, bEnd, queue, deliver, advance: (ms: number) => (clock += ms) };
}

describe('Prober', () => {
  it('never looks like an IP packet to a decoder (version nibble 0) and is recognised exactly', () => {
    const { a, bEnd, queue } = pair();
    a.want(bEnd);
    const probe = queue[0]!.packet;
    assert.equal(probe.length, PROBE_BYTES);
    assert.equal(probe[0]! >> 4, 0);
    assert.ok(isProbe(probe, 0, probe.length));
    assert.ok(!isProbe(probe, 0, probe.length - 1));
    const ipv4 = Buffer.from(probe);
    ipv4[0] = 0x45;
    assert.ok(!isProbe(ipv4, 0, ipv4.length));
  });

  it('measures the round trip of its probes; one slow answer does not move the estimate', () => {
    const { a, bEnd, queue, advance } = pair();
    a.want(bEnd);
    assert.equal(a.rtt(bEnd), undefined, 'unknown before the first answer');
    // the request travels 20 ms, b answers at once, the reply travels 20 ms
    advance(20);
    const req = queue.shift()!;
    const { b } = {
      b: new Prober({
        send: (batch) => (
          queue.push({
            from: bEnd,
            to: Buffer.from(batch.endpoints.subarray(0, 18)),
            packet: Buffer.from(
              batch.buffer.subarray(batch.offsets[0], batch.offsets[0]! + batch.lengths[0]!),
            ),
          }),
          { sent: batch.count, failed: 0 }
        ),
      }),
    };
    b.onProbe(req.packet, 0, req.from, 0);
    advance(20);
    const rep = queue.shift()!;
    a.onProbe(rep.packet, 0, bEnd, 0);
    assert.equal(a.rtt(bEnd), 40);
    // one slow answer moves the estimate a quarter of the way
    (a as unknown as { probeAll(): void }).probeAll();
    advance(100);
    const req2 = queue.shift()!;
    b.onProbe(req2.packet, 0, req2.from, 0);
    const rep2 = queue.shift()!;
    a.onProbe(rep2.packet, 0, bEnd, 0);
    assert.equal(a.list()[0]?.srtt, 40 + 0.25 * (100 - 40), 'the average moves a quarter of the way');
    assert.equal(a.rtt(bEnd), 40, 'the estimate (the minimum of the last samples) does not');
    assert.equal(a.list()[0]?.samples, 2);
  });

  it('answers requests from anyone, ignores replies from peers it did not ask, and forgets unwanted peers', () => {
    const { a, b, aEnd, bEnd, queue, deliver, advance } = pair();
    b.want(aEnd);
    deliver();
    assert.notEqual(b.rtt(aEnd), undefined, 'a answered b without knowing it');
    assert.equal(a.list().length, 0, 'answering does not make a peer');
    const stray = Buffer.alloc(PROBE_BYTES);
    stray.set([0, 0x4f, 0x41, 0x4b, 0x50, 2]);
    a.onProbe(stray, 0, bEnd, 0);
    assert.equal(a.list().length, 0);
    advance(61_000);
    (b as unknown as { probeAll(): void }).probeAll();
    assert.equal(b.list().length, 0, 'not wanted for 60 s: forgotten');
    assert.equal(queue.length, 0);
  });

  it('counts only replies to its own outstanding requests, timed by its own clock (forged and replayed replies do nothing)', () => {
    const { a, b, bEnd, queue, advance } = pair();
    a.want(bEnd);
    const req = queue.shift()!;
    // a forged reply, made up without the request: a fresh nonce, a send time that claims 1 ms
    advance(50);
    const forged = Buffer.from(req.packet);
    forged[5] = 2;
    forged.writeDoubleBE(1000 + 49, 8);
    forged.fill(0xaa, 16);
    a.onProbe(forged, 0, bEnd, 0);
    assert.equal(a.rtt(bEnd), undefined, 'a reply with no outstanding nonce is not a sample');
    assert.equal(a.unmatched, 1);
    // the real reply, with its send time rewritten to claim a short round trip: timed by a's record
    b.onProbe(req.packet, 0, req.from, 0);
    const rep = queue.shift()!;
    rep.packet.writeDoubleBE(1000 + 49, 8);
    a.onProbe(rep.packet, 0, bEnd, 0);
    assert.equal(a.rtt(bEnd), 50);
    // the same reply again (replayed) later, while b is silent: no sample, and b turns unreachable
    for (let round = 0; round < 4; round++) {
      a.probeAll();
      queue.length = 0;
      advance(1000);
      a.onProbe(rep.packet, 0, bEnd, 0);
    }
    assert.equal(a.list()[0]?.samples, 1);
    assert.equal(a.reachable(bEnd), false, 'replayed replies do not keep a silent peer reachable');
  });

  it('does nothing with an interval of 0', () => {
    const { a, bEnd, queue } = pair();
    const off = new Prober({ send: () => ({ sent: 0, failed: 0 }) }, { intervalMs: 0 });
    off.want(bEnd);
    assert.equal(off.rtt(bEnd), undefined);
    assert.equal(off.list().length, 0);
    void a;
    assert.equal(queue.length, 0);
  });

  it('calls a peer that answered before unreachable after 3 unanswered probes, and reachable again once it answers', () => {
    const { a, bEnd, queue, deliver } = pair();
    const silent = endpoint('198.18.0.3', 50103); // never answers: an upstream NetManager, say
    const dropTo = (to: Buffer) => queue.splice(0, queue.length, ...queue.filter((d) => !d.to.equals(to)));
    a.want(bEnd);
    a.want(silent);
    dropTo(silent);
    deliver();
    assert.ok(a.rtt(bEnd) !== undefined && a.reachable(bEnd));
    // b goes down: its probes are lost
    for (let round = 1; round <= 3; round++) {
      a.probeAll();
      queue.length = 0;
      assert.ok(a.reachable(bEnd), `still reachable after ${round} lost probe(s)`);
    }
    a.probeAll();
    queue.length = 0;
    assert.equal(
      a.reachable(bEnd),
      false,
      'unreachable after the 4th probe went out with 3 unanswered before it',
    );
    assert.ok(a.reachable(silent), 'a peer that never answered is not called unreachable');
    // b is back: the next answer makes it reachable at once
    a.probeAll();
    dropTo(silent);
    deliver();
    assert.ok(a.reachable(bEnd));
    assert.ok(a.reachable(endpoint('198.18.0.9', 50103)), 'an unknown peer is reachable');
  });
});
