import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../errors.ts';
import { Cidr } from './cidr.ts';
import { IpAddress } from './ip.ts';

function isInvalidInput(err: unknown): boolean {
  return err instanceof InvalidInputError && err.code === 'E_INVALID_INPUT';
}

/** node:net's own opinion on whether address lies in prefix (an oracle independent of Cidr). */
function nodeContains(prefix: string, address: string): boolean {
  const [net, len] = prefix.split('/') as [string, string];
  const type = net.includes(':') ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  list.addSubnet(net, Number(len), type);
  return list.check(address, address.includes(':') ? 'ipv6' : 'ipv4');
}

describe('Cidr.parse', () => {
  it('reads prefixes of both families and prints them back canonically', () => {
    const cases: Array<[string, string, number, bigint]> = [
      ['10.16.0.0/12', '10.16.0.0/12', 12, 1n << 20n],
      ['10.30.0.0/16', '10.30.0.0/16', 16, 1n << 16n],
      ['10.16.0.64/26', '10.16.0.64/26', 26, 64n],
      ['0.0.0.0/0', '0.0.0.0/0', 0, 1n << 32n],
      ['10.30.0.7/32', '10.30.0.7/32', 32, 1n],
      ['fc00::/7', 'fc00::/7', 7, 1n << 121n],
      ['FDFF:2000:0::/21', 'fdff:2000::/21', 21, 1n << 107n],
      ['fc00::100/120', 'fc00::100/120', 120, 256n],
      ['::/0', '::/0', 0, 1n << 128n],
      ['fdff::1/128', 'fdff::1/128', 128, 1n],
    ];
    for (const [text, canonical, prefix, size] of cases) {
      const c = Cidr.parse(text);
      assert.equal(c.toString(), canonical, text);
      assert.equal(JSON.stringify([c]), JSON.stringify([canonical]));
      assert.equal(c.prefix, prefix);
      assert.equal(c.size, size, text);
      assert.equal(c.last.value - c.network.value, size - 1n, `${text}: last is network + size - 1`);
      assert.ok(Cidr.parse(canonical).equals(c));
    }
  });

  it('rejects a network address with host bits set, naming the prefix', () => {
    for (const text of [
      '10.16.0.1/12',
      '10.30.0.1/16',
      '10.16.0.32/26',
      '1.2.3.4/0',
      'fc00::1/120',
      'fdff:2000::/2',
    ]) {
      assert.throws(
        () => Cidr.parse(text),
        (err: unknown) => isInvalidInput(err) && (err as Error).message.includes('host bits'),
        text,
      );
    }
  });

  it('rejects malformed prefixes with InvalidInputError', () => {
    const bad = [
      '10.0.0.0',
      '10.0.0.0/',
      '10.0.0.0/33',
      '10.0.0.0/-1',
      '10.0.0.0/+8',
      '10.0.0.0/8.0',
      '10.0.0.0/abc',
      '10.0.0.0/1000',
      '10.0.0.0/8/8',
      '10.0.0.0 /8',
      '10.0.0/8',
      '010.0.0.0/8',
      'fc00::/129',
      'fe80::%eth0/64',
      '/8',
      '',
    ];
    for (const text of bad) assert.throws(() => Cidr.parse(text), isInvalidInput, JSON.stringify(text));
  });

  it('Cidr.of checks the length against the family', () => {
    assert.throws(() => Cidr.of(IpAddress.parse('10.0.0.0'), 33), isInvalidInput);
    assert.throws(() => Cidr.of(IpAddress.parse('10.0.0.0'), -1), isInvalidInput);
    assert.throws(() => Cidr.of(IpAddress.parse('10.0.0.0'), 8.5), isInvalidInput);
    assert.equal(Cidr.of(IpAddress.parse('fc00::'), 128).size, 1n);
  });
});

describe('Cidr membership', () => {
  it('contains exactly the addresses from network to last (checked against node:net BlockList)', () => {
    const probes: Array<[string, string[]]> = [
      [
        '10.30.0.0/16',
        ['10.30.0.0', '10.30.255.255', '10.29.255.255', '10.31.0.0', '10.30.128.1', '10.3.0.0', '0.0.0.0'],
      ],
      ['10.16.0.64/26', ['10.16.0.63', '10.16.0.64', '10.16.0.127', '10.16.0.128', '10.16.0.100']],
      [
        'fdff:1000::/21',
        ['fdff:1000::', 'fdff:17ff:ffff:ffff:ffff:ffff:ffff:ffff', 'fdff:1800::', 'fdff:fff::ff'],
      ],
      ['fc00::/7', ['fc00::', 'fdff::1', 'fe00::', 'fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']],
    ];
    for (const [prefix, addresses] of probes) {
      const c = Cidr.parse(prefix);
      for (const a of addresses) {
        assert.equal(c.contains(IpAddress.parse(a)), nodeContains(prefix, a), `${prefix} contains ${a}`);
      }
    }
  });

  it('never contains an address of the other family', () => {
    assert.equal(Cidr.parse('0.0.0.0/0').contains(IpAddress.parse('::1')), false);
    assert.equal(Cidr.parse('::/0').contains(IpAddress.parse('10.0.0.1')), false);
    assert.equal(Cidr.parse('::/96').contains(IpAddress.parse('0.0.0.1')), false);
  });

  it('covers prefixes inside it, and overlaps is symmetric', () => {
    const c = (t: string) => Cidr.parse(t);
    const table: Array<[string, string, boolean, boolean]> = [
      // a, b, a covers b, a overlaps b
      ['10.16.0.0/12', '10.30.0.0/16', true, true],
      ['10.30.0.0/16', '10.16.0.0/12', false, true],
      ['10.30.0.0/16', '10.30.0.0/16', true, true],
      ['10.16.0.0/26', '10.16.0.64/26', false, false],
      ['10.16.0.0/25', '10.16.0.64/26', true, true],
      ['10.16.0.0/12', '10.32.0.0/12', false, false],
      ['fdff::/16', 'fdff:2000::/21', true, true],
      ['fdff:1000::/21', 'fdff:2000::/21', false, false],
      ['fdff::/20', 'fdff:1000::/21', false, false],
      ['fc00::/7', 'fdfe::/16', true, true],
      ['0.0.0.0/0', '::/0', false, false],
      ['::/0', '0.0.0.0/0', false, false],
    ];
    for (const [a, b, covers, overlaps] of table) {
      assert.equal(c(a).covers(c(b)), covers, `${a} covers ${b}`);
      assert.equal(c(a).overlaps(c(b)), overlaps, `${a} overlaps ${b}`);
      assert.equal(c(b).overlaps(c(a)), overlaps, `${b} overlaps ${a}`);
    }
  });

  it('at and offsetOf are inverse inside the prefix and refuse outside it', () => {
    for (const text of ['10.16.0.64/26', 'fc00::100/120', '10.30.0.0/30']) {
      const c = Cidr.parse(text);
      const size = Number(c.size);
      for (let o = 0; o < size; o++) {
        const ip = c.at(o);
        assert.ok(c.contains(ip));
        assert.equal(c.offsetOf(ip), BigInt(o));
        assert.equal(ip.value, c.network.value + BigInt(o));
      }
      assert.ok(c.at(0).equals(c.network));
      assert.ok(c.at(c.size - 1n).equals(c.last));
      assert.throws(() => c.at(c.size), Error);
      assert.throws(() => c.at(-1), Error);
      assert.equal(c.offsetOf(c.last.add(1)), undefined);
      assert.equal(c.offsetOf(c.network.add(-1)), undefined);
    }
    assert.equal(Cidr.parse('10.0.0.0/8').offsetOf(IpAddress.parse('::a00:1')), undefined);
  });
});
