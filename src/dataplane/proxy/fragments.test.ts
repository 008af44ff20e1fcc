import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildUdp, fragmentPacket } from '../packet/build.ts';
import { ParsedPacket } from '../packet/index.ts';
import { Fragments } from './fragments.ts';

const p = new ParsedPacket();

/** The later fragments of a 3,000-byte UDP datagram from `src` with IPv4 ID `id`. */
function laterFragments(src: string, id: number): Buffer[] {
  const dgram = buildUdp({
    src,
    dst: '10.18.0.2',
    srcPort: 9,
    dstPort: 9,
    ipId: id,
    payload: Buffer.alloc(3000),
  });
  return fragmentPacket(dgram, 1280).slice(1);
}

describe('Fragments', () => {
  it('releases later fragments that came first when their first fragment is remembered', () => {
    const f = new Fragments();
    const [second] = laterFragments('10.30.0.7', 77);
    assert.ok(second && p.decode(second, 0, second.length));
    assert.equal(f.find(p), undefined);
    assert.ok(f.hold(p, 0, second.length, 0));
    const first = fragmentPacket(
      buildUdp({
        src: '10.30.0.7',
        dst: '10.18.0.2',
        srcPort: 9,
        dstPort: 9,
        ipId: 77,
        payload: Buffer.alloc(3000),
      }),
      1280,
    )[0]!;
    assert.ok(p.decode(first, 0, first.length));
    const held = f.remember(p, undefined, false, 0);
    assert.equal(held.length, 1);
    assert.ok(held[0]!.packet.equals(second));
    assert.ok(p.decode(second, 0, second.length));
    assert.equal(f.find(p)?.outbound, false);
  });

  it('a flood of later fragments (one ID, many sources) is bounded: refused fragments leave nothing behind', () => {
    const f = new Fragments();
    let held = 0;
    for (let i = 0; i < 20_000; i++) {
      const [frag] = laterFragments(`10.30.${(i >> 8) & 255}.${i & 255}`, 4242);
      assert.ok(frag && p.decode(frag, 0, frag.length));
      if (f.hold(p, 0, frag.length, 0)) held++;
    }
    assert.equal(held, 8, 'at most 8 datagrams with one ID are tracked');
    assert.equal(f.datagrams, 8);
    for (let i = 0; i < 20_000; i++) {
      const [frag] = laterFragments('10.30.99.1', i);
      assert.ok(frag && p.decode(frag, 0, frag.length));
      f.hold(p, 0, frag.length, 0);
    }
    assert.ok(f.datagrams <= 4096, `${f.datagrams} datagrams tracked`);
    assert.ok(f.waitingPackets <= 256, 'the waiting queue keeps its bound');
    const waiting = f.waitingPackets;
    assert.equal(f.expire(10_000, 3000), waiting, 'every held fragment expires, counted');
    assert.equal(f.datagrams, 0, 'and their datagrams are forgotten');
  });
});
