import assert from 'node:assert/strict';
import { isIPv4, isIPv6 } from 'node:net';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../errors.ts';
import { canonicalIp, familyBits, IpAddress } from './ip.ts';

/** The bytes of text, computed without the module under test (dotted quad only). */
function v4Bytes(text: string): number[] {
  return text.split('.').map(Number);
}

/** The 16 bytes of the 8 groups given as numbers. */
function groupsToBytes(groups: number[]): number[] {
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

function isInvalidInput(err: unknown): boolean {
  return err instanceof InvalidInputError && err.code === 'E_INVALID_INPUT';
}

describe('IpAddress: IPv4 text', () => {
  it('parses dotted quads to the value of their four octets and formats them back', () => {
    for (const text of [
      '0.0.0.0',
      '10.30.0.1',
      '192.168.1.254',
      '255.255.255.255',
      '1.2.3.4',
      '10.16.0.64',
    ]) {
      const ip = IpAddress.parse(text);
      assert.equal(ip.family, 4);
      assert.deepEqual(Array.from(ip.toBytes()), v4Bytes(text));
      const [a, b, c, d] = v4Bytes(text) as [number, number, number, number];
      assert.equal(ip.value, BigInt(((a * 256 + b) * 256 + c) * 256 + d));
      assert.equal(ip.toString(), text);
      assert.equal(JSON.stringify({ ip }), JSON.stringify({ ip: text }));
    }
  });

  it('rejects everything that is not a strict dotted quad (same rule as node:net isIPv4)', () => {
    const bad = [
      '10.1',
      '10.1.2',
      '010.0.0.1',
      '1.2.3.04',
      '1.02.3.4',
      '00.0.0.0',
      '256.0.0.1',
      '1.2.3.256',
      '1.2.3.4.',
      '.1.2.3.4',
      '1.2.3.4.5',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '1.2.3.4\n',
      '0x1.2.3.4',
      '0x01020304',
      '16909060',
      '+1.2.3.4',
      '1.2.3.-4',
      '1..2.3',
      '1.2.3.4/32',
      '1.2.3.4:80',
      '',
      'localhost',
      '١.٢.٣.٤',
    ];
    for (const text of bad) {
      assert.equal(isIPv4(text), false, `node:net agrees that ${JSON.stringify(text)} is not IPv4`);
      assert.equal(IpAddress.tryParse(text)?.family === 4, false, JSON.stringify(text));
      assert.throws(() => IpAddress.parse(text), isInvalidInput, JSON.stringify(text));
    }
  });

  it('names the bad text in the error message', () => {
    assert.throws(
      () => IpAddress.parse('010.0.0.1'),
      (err: unknown) => isInvalidInput(err) && (err as Error).message.includes('"010.0.0.1"'),
    );
  });
});

describe('IpAddress: IPv6 text', () => {
  it('formats canonically as RFC 5952 section 4 says', () => {
    const cases: Array<[string, string]> = [
      // 4.1 leading zeros suppressed; 4.3 lower case
      ['2001:0DB8:0000:0000:0000:FF00:0042:8329', '2001:db8::ff00:42:8329'],
      ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
      ['2001:0db8::0001', '2001:db8::1'],
      // 4.2.1 '::' shortens as much as possible
      ['2001:db8:0:0:0::1', '2001:db8::1'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['1:0:0:0:0:0:0:0', '1::'],
      // 4.2.2 '::' never stands for a single 16-bit 0 field
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['1::2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
      // 4.2.3 the longest run is compressed; on a tie the first one
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['fdff:2000:0:0:0:0:0:5', 'fdff:2000::5'],
      ['FC00::100', 'fc00::100'],
    ];
    for (const [input, canonical] of cases) {
      const ip = IpAddress.parse(input);
      assert.equal(ip.family, 6, input);
      assert.equal(ip.toString(), canonical, input);
      assert.equal(canonicalIp(input), canonical, input);
      assert.ok(IpAddress.parse(canonical).equals(ip), `${canonical} reads back as the same address`);
    }
  });

  it('parses the value of every group', () => {
    const ip = IpAddress.parse('1:2:3:4:5:6:7:8');
    assert.deepEqual(Array.from(ip.toBytes()), groupsToBytes([1, 2, 3, 4, 5, 6, 7, 8]));
    assert.equal(IpAddress.parse('::').value, 0n);
    assert.equal(IpAddress.parse('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff').value, (1n << 128n) - 1n);
  });

  it('reads embedded IPv4 text as the low 32 bits (RFC 4291 2.2 form 3), in every form', () => {
    const cases: Array<[string, number[]]> = [
      ['::ffff:1.2.3.4', [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]],
      ['64:ff9b::1.2.3.4', [0x64, 0xff9b, 0, 0, 0, 0, 0x0102, 0x0304]],
      ['1:2:3:4:5:6:1.2.3.4', [1, 2, 3, 4, 5, 6, 0x0102, 0x0304]],
      ['::0:1.2.3.4', [0, 0, 0, 0, 0, 0, 0x0102, 0x0304]],
      // the deprecated IPv4-compatible form (RFC 4291 2.5.5.1) is the address ::102:304, not ::ffff:102:304
      ['::1.2.3.4', [0, 0, 0, 0, 0, 0, 0x0102, 0x0304]],
    ];
    for (const [text, groups] of cases) {
      const ip = IpAddress.parse(text);
      assert.deepEqual(Array.from(ip.toBytes()), groupsToBytes(groups), text);
      assert.ok(IpAddress.parse(ip.toString()).equals(ip), `${ip.toString()} round-trips`);
    }
    assert.equal(
      IpAddress.parse('::1.2.3.4').equals(IpAddress.parse('::ffff:1.2.3.4')),
      false,
      'the IPv4-compatible and the IPv4-mapped address are different addresses',
    );
  });

  it('rejects zone ids and malformed text', () => {
    const bad = [
      'fe80::1%eth0',
      'fe80::1%25eth0',
      'fe80::1%1',
      '::ffff:1.2.3.4%x',
      'fe80::1%',
      '1::2::3',
      ':::',
      '1:::2',
      '12345::',
      'g::1',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7:1.2.3.4',
      '::ffff:01.2.3.4',
      '::ffff:1.2.3',
      '[::1]',
      '::1/128',
      ' ::1',
      '::1 ',
      ':',
      '',
    ];
    for (const text of bad) {
      assert.equal(IpAddress.tryParse(text), undefined, JSON.stringify(text));
      assert.throws(() => IpAddress.parse(text), isInvalidInput, JSON.stringify(text));
    }
    assert.equal(
      isIPv6('fe80::1%eth0'),
      true,
      'node:net accepts zones, so the parser must refuse them itself',
    );
  });
});

describe('IpAddress: values', () => {
  it('round-trips bytes and values in both families', () => {
    for (const text of ['10.30.0.1', '0.0.0.0', 'fdff:1000::1', '::', 'fc00::1:0:0:ff']) {
      const ip = IpAddress.parse(text);
      const bytes = ip.toBytes();
      assert.equal(bytes.length, familyBits(ip.family) / 8);
      assert.ok(IpAddress.fromBytes(bytes).equals(ip));
      assert.ok(IpAddress.fromValue(ip.family, ip.value).equals(ip));
    }
    assert.throws(() => IpAddress.fromBytes(new Uint8Array(5)), Error);
    assert.throws(() => IpAddress.fromBytes(new Uint8Array(0)), Error);
  });

  it('refuses values that do not fit the family', () => {
    assert.throws(() => IpAddress.fromValue(4, 1n << 32n), Error);
    assert.throws(() => IpAddress.fromValue(4, -1n), Error);
    assert.throws(() => IpAddress.fromValue(6, 1n << 128n), Error);
    assert.equal(IpAddress.fromValue(4, (1n << 32n) - 1n).toString(), '255.255.255.255');
    assert.equal(
      IpAddress.fromValue(6, (1n << 128n) - 1n).toString(),
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    );
  });

  it('adds offsets, carrying across octets and groups, and refuses to leave the family', () => {
    assert.equal(IpAddress.parse('10.30.0.255').add(1).toString(), '10.30.1.0');
    assert.equal(IpAddress.parse('10.30.1.0').add(-1).toString(), '10.30.0.255');
    assert.equal(IpAddress.parse('fdff::ffff').add(1n).toString(), 'fdff::1:0');
    assert.throws(() => IpAddress.parse('255.255.255.255').add(1), Error);
    assert.throws(() => IpAddress.parse('0.0.0.0').add(-1), Error);
    assert.throws(() => IpAddress.parse('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff').add(1), Error);
  });

  it('compares by family and value', () => {
    assert.ok(IpAddress.parse('10.0.0.1').equals(IpAddress.parse('10.0.0.1')));
    assert.ok(IpAddress.parse('fdff::1').equals(IpAddress.parse('FDFF:0:0::0001')));
    assert.equal(IpAddress.parse('10.0.0.1').equals(IpAddress.parse('10.0.0.2')), false);
    // same integer value, different family
    assert.equal(IpAddress.parse('0.0.0.1').equals(IpAddress.parse('::1')), false);
    assert.equal(IpAddress.parse('1.2.3.4').equals(IpAddress.parse('::102:304')), false);
  });
});
