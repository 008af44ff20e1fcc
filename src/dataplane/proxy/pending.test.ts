import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type HeldPacket, PendingPackets } from './pending.ts';

const text = (held: HeldPacket[]) => held.map((h) => h.packet.toString());

describe('PendingPackets', () => {
  it('holds copies per key and gives them back oldest first, once', () => {
    const q = new PendingPackets();
    const buf = Buffer.from('xxAAxxBBxxCC');
    assert.ok(q.hold(1, buf, 2, 2, 0));
    assert.ok(q.hold('k', buf, 6, 2, 0));
    assert.ok(q.hold(1, buf, 10, 2, 0));
    buf.fill(0); // the reader reuses its buffer: held packets are copies
    assert.equal(q.size, 3);
    assert.ok(q.has(1) && q.has('k') && !q.has(2));
    assert.deepEqual(text(q.take(1)), ['AA', 'CC']);
    assert.deepEqual(q.take(1), []);
    assert.equal(q.size, 1);
    assert.deepEqual(text(q.take('k')), ['BB']);
    assert.equal(q.size, 0);
  });

  it('refuses packets beyond the per-key and the total bound', () => {
    const q = new PendingPackets(3, 5);
    const p = Buffer.from('p');
    for (let i = 0; i < 3; i++) assert.ok(q.hold(1, p, 0, 1, 0));
    assert.equal(q.hold(1, p, 0, 1, 0), false, 'per key');
    assert.ok(q.hold(2, p, 0, 1, 0));
    assert.ok(q.hold(3, p, 0, 1, 0));
    assert.equal(q.hold(4, p, 0, 1, 0), false, 'in total');
    assert.equal(q.size, 5);
    q.take(1);
    assert.ok(q.hold(4, p, 0, 1, 0), 'room again after a take');
  });

  it('expires packets older than the limit, keeps younger ones, and counts', () => {
    const q = new PendingPackets();
    const p = Buffer.from('p');
    q.hold(1, p, 0, 1, 1000);
    q.hold(1, p, 0, 1, 2000);
    q.hold(2, p, 0, 1, 1500);
    assert.equal(q.expire(4000, 2400), 2);
    assert.equal(q.size, 1);
    assert.ok(q.has(1) && !q.has(2));
    assert.equal(q.expire(4000, 2400), 0);
    assert.equal(q.expire(10_000, 2400), 1);
    assert.equal(q.size, 0);
    assert.ok(!q.has(1));
  });
});

describe('PendingPackets with super-packets', () => {
  it('keeps each packet with its gso word, and bounds the bytes held in all', () => {
    const q = new PendingPackets(64, 2048, 100_000, 50_000);
    const big = Buffer.alloc(40_000, 1);
    assert.ok(q.hold(1, big, 0, big.length, 0, 1400));
    assert.ok(q.hold(1, Buffer.from('small'), 0, 5, 0));
    assert.ok(q.hold(2, big, 0, big.length, 0, 1398));
    assert.equal(q.hold(3, big, 0, big.length, 0, 1400), false, 'a third 40 kB super-packet is over 100 kB');
    assert.ok(q.hold(3, Buffer.from('x'), 0, 1, 0), 'small packets still fit');
    assert.equal(q.hold(2, big, 0, big.length, 0, 1398), false, 'a second one under key 2 is over its 50 kB');
    assert.deepEqual(
      q.take(1).map((h) => [h.packet.length, h.gso]),
      [
        [40_000, 1400],
        [5, 0],
      ],
    );
    assert.ok(q.hold(3, big, 0, big.length, 0, 1400), 'room again after a take');
    assert.equal(q.expire(10, 5), 3);
    assert.ok(
      q.hold(4, big, 0, big.length, 10, 1400) && q.hold(5, big, 0, big.length, 10, 1400),
      'expiry frees the bytes',
    );
  });
});
