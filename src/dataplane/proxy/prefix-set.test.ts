import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { PrefixSet } from './prefix-set.ts';

function inSet(set: PrefixSet, address: string): boolean {
  const b = IpAddress.parse(address).toBytes();
  const buf = Buffer.alloc(b.length + 7); // at an offset inside a larger buffer, as in a packet
  buf.set(b, 5);
  return set.contains(buf, 5, b.length);
}

describe('PrefixSet', () => {
  it('IPv4: the edges of each prefix', () => {
    const set = new PrefixSet([
      Cidr.parse('10.18.0.64/26'),
      Cidr.parse('10.30.0.0/16'),
      Cidr.parse('192.0.2.7/32'),
    ]);
    for (const a of ['10.18.0.64', '10.18.0.127', '10.30.0.0', '10.30.255.255', '192.0.2.7'])
      assert.ok(inSet(set, a), a);
    for (const a of ['10.18.0.63', '10.18.0.128', '10.29.255.255', '10.31.0.0', '192.0.2.6', '192.0.2.8'])
      assert.ok(!inSet(set, a), a);
  });

  it('IPv6: byte-aligned and unaligned prefixes', () => {
    const set = new PrefixSet([
      Cidr.parse('fc00::100/120'),
      Cidr.parse('fdff:2000::/21'),
      Cidr.parse('fdff::7/128'),
    ]);
    for (const a of ['fc00::100', 'fc00::1ff', 'fdff:2000::', 'fdff:27ff:ffff::1', 'fdff::7'])
      assert.ok(inSet(set, a), a);
    for (const a of ['fc00::ff', 'fc00::200', 'fdff:1fff::', 'fdff:2800::', 'fdff::6', 'fdff::8'])
      assert.ok(!inSet(set, a), a);
  });

  it('keeps families apart and handles /0 and /7', () => {
    const v4only = new PrefixSet([Cidr.parse('0.0.0.0/0')]);
    assert.ok(inSet(v4only, '255.255.255.255'));
    assert.ok(!inSet(v4only, '::'), 'an IPv4 prefix never matches an IPv6 address');
    const v6 = new PrefixSet([Cidr.parse('fc00::/7')]);
    assert.ok(inSet(v6, 'fdff:ffff::1'));
    assert.ok(!inSet(v6, 'fe00::'));
    assert.ok(!inSet(v6, '10.0.0.1'), 'an IPv6 prefix never matches an IPv4 address');
    const none = new PrefixSet([]);
    assert.ok(!inSet(none, '10.30.0.1') && !inSet(none, 'fdff::1'));
    assert.ok(inSet(new PrefixSet([Cidr.parse('::/0')]), 'fe80::1'));
  });
});
