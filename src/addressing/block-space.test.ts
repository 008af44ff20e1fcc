import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressOutOfRangeError } from '../errors.ts';
import { BlockSpace } from './block-space.ts';
import { Cidr } from './cidr.ts';
import { IpAddress } from './ip.ts';

/**
 * The blocks a BlockSpace should hold, by enumeration: every /blockPrefix of range in address order, minus the
 * blocks that share at least one address with an excluded prefix.
 */
function enumerate(
  range: string,
  blockPrefix: number,
  exclude: string[],
): Array<{ first: bigint; last: bigint }> {
  const r = Cidr.parse(range);
  const bits = r.family === 4 ? 32 : 128;
  const blockSize = 1n << BigInt(bits - blockPrefix);
  const ex = exclude.map((e) => Cidr.parse(e)).filter((e) => e.family === r.family);
  const out: Array<{ first: bigint; last: bigint }> = [];
  for (let first = r.network.value; first <= r.last.value; first += blockSize) {
    const last = first + blockSize - 1n;
    const touched = ex.some((e) => e.network.value <= last && e.last.value >= first);
    if (!touched) out.push({ first, last });
  }
  return out;
}

function checkAgainstEnumeration(range: string, blockPrefix: number, exclude: string[]): BlockSpace {
  const space = new BlockSpace(
    Cidr.parse(range),
    blockPrefix,
    exclude.map((e) => Cidr.parse(e)),
  );
  const expected = enumerate(range, blockPrefix, exclude);
  const label = `${range} /${blockPrefix} minus [${exclude.join(', ')}]`;
  assert.equal(space.capacity, expected.length, `${label}: capacity`);
  expected.forEach((b, i) => {
    const block = space.at(i);
    assert.equal(block.prefix, blockPrefix);
    assert.equal(block.network.value, b.first, `${label}: block ${i}`);
    assert.ok(space.addressAt(i).equals(block.network));
    // every address of the block maps back to its index (first, last, one inside)
    for (const v of [b.first, b.last, (b.first + b.last) / 2n]) {
      assert.equal(space.indexOf(IpAddress.fromValue(block.family, v)), i, `${label}: index of block ${i}`);
    }
  });
  return space;
}

describe('BlockSpace', () => {
  it('without exclusions: index i is the i-th block of the range', () => {
    checkAgainstEnumeration('10.0.0.0/24', 26, []);
    checkAgainstEnumeration('10.0.0.0/24', 28, []);
    checkAgainstEnumeration('10.0.0.0/24', 24, []);
    checkAgainstEnumeration('fc00::/112', 120, []);
  });

  it('round-trips index <-> block around exclusions (start, middle, end, adjacent, nested, unaligned)', () => {
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.0.32/27']);
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.0.0/28']);
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.0.240/28']);
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.0.32/27', '10.0.0.64/28', '10.0.0.200/32']);
    // nested and duplicated exclusions count once
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.0.64/26', '10.0.0.80/28', '10.0.0.64/26']);
    // exclusions that only partly lie in the range, or not at all, or are of the other family
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.0.0/16', '10.1.0.0/16', 'fc00::/7']);
    checkAgainstEnumeration('10.0.0.128/25', 28, ['10.0.0.0/24']);
    checkAgainstEnumeration('10.0.0.0/24', 28, ['10.0.1.0/24', '9.0.0.0/8']);
    // single-address blocks, the shape of the ServiceIP pool (network and broadcast left out)
    checkAgainstEnumeration('10.30.0.0/28', 32, ['10.30.0.0/32', '10.30.0.15/32']);
    checkAgainstEnumeration('fdff:2000::/124', 128, ['fdff:2000::/128', 'fdff:2000::8/126']);
  });

  it('the default worker space: 10.16.0.0/12 in /26 blocks minus 10.30.0.0/16', () => {
    const range = Cidr.parse('10.16.0.0/12');
    const excluded = Cidr.parse('10.30.0.0/16');
    const space = new BlockSpace(range, 26, [excluded]);
    const blocksIn = (c: Cidr) => 1 << (26 - c.prefix);
    assert.equal(space.capacity, blocksIn(range) - blocksIn(excluded));
    // the last block before the gap and the first after it are neighbours in index space
    const before = space.indexOf(excluded.network.add(-1));
    assert.ok(before !== undefined);
    const after = space.indexOf(excluded.last.add(1));
    assert.equal(after, before + 1);
    assert.ok(space.at(before + 1).network.equals(excluded.last.add(1)));
    assert.ok(space.at(space.capacity - 1).last.equals(range.last));
  });

  it('excluded and outside addresses have no index', () => {
    const space = new BlockSpace(Cidr.parse('10.0.0.0/24'), 28, [Cidr.parse('10.0.0.32/27')]);
    for (const a of [
      '10.0.0.32',
      '10.0.0.47',
      '10.0.0.63',
      '10.0.1.0',
      '9.255.255.255',
      '::a00:20',
      'fc00::',
    ]) {
      assert.equal(space.indexOf(IpAddress.parse(a)), undefined, a);
    }
    assert.equal(space.indexOf(IpAddress.parse('10.0.0.31')), 1);
    assert.equal(space.indexOf(IpAddress.parse('10.0.0.64')), 2);
  });

  it('requireIndexOf throws AddressOutOfRangeError naming the address and the range', () => {
    const space = new BlockSpace(Cidr.parse('10.30.0.0/16'), 32, [
      Cidr.parse('10.30.0.0/32'),
      Cidr.parse('10.30.255.255/32'),
    ]);
    assert.equal(space.requireIndexOf(IpAddress.parse('10.30.0.1')), 0);
    for (const a of ['10.30.0.0', '10.30.255.255', '10.31.0.1', 'fdff::1']) {
      assert.throws(
        () => space.requireIndexOf(IpAddress.parse(a)),
        (err: unknown) =>
          err instanceof AddressOutOfRangeError &&
          err.code === 'E_ADDRESS_OUT_OF_RANGE' &&
          err.message.includes(a) &&
          err.message.includes('10.30.0.0/16'),
        a,
      );
    }
  });

  it('refuses indices outside 0..capacity-1', () => {
    const space = new BlockSpace(Cidr.parse('10.0.0.0/24'), 26, [Cidr.parse('10.0.0.0/26')]);
    assert.equal(space.capacity, 3);
    for (const i of [-1, 3, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 2]) {
      assert.throws(() => space.at(i), Error, String(i));
    }
  });

  it('an exclusion covering the whole range leaves no block', () => {
    const space = new BlockSpace(Cidr.parse('10.30.0.0/24'), 26, [Cidr.parse('10.0.0.0/8')]);
    assert.equal(space.capacity, 0);
    assert.throws(() => space.at(0), Error);
    assert.equal(space.indexOf(IpAddress.parse('10.30.0.1')), undefined);
  });

  it('caps the capacity of huge IPv6 spaces at Number.MAX_SAFE_INTEGER and still maps both ways', () => {
    const space = new BlockSpace(Cidr.parse('fc00::/7'), 120, [Cidr.parse('fdff::/16')]);
    assert.equal(space.capacity, Number.MAX_SAFE_INTEGER);
    const i = Number.MAX_SAFE_INTEGER - 1;
    const block = space.at(i);
    assert.equal(block.network.value, Cidr.parse('fc00::/7').network.value + (BigInt(i) << 8n));
    assert.equal(space.indexOf(block.network), i);
    // far above the capped capacity: no index rather than a wrong one
    assert.equal(space.indexOf(IpAddress.parse('fdfe::1')), undefined);
  });

  it('refuses blocks that do not fit the range', () => {
    assert.throws(() => new BlockSpace(Cidr.parse('10.0.0.0/24'), 23), Error);
    assert.throws(() => new BlockSpace(Cidr.parse('10.0.0.0/24'), 33), Error);
  });
});
