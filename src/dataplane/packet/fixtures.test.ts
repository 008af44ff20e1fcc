import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IpAddress } from '../../addressing/ip.ts';
import { fullChecksumsValid, reassemble } from './build.ts';
import { IpProto, TcpFlag } from './constants.ts';
import * as fx from './fixtures.ts';
import { DecodeError, ParsedPacket } from './parsed-packet.ts';
import { setDstAddress, setDstPort, setEchoId, setSrcAddress, setSrcPort } from './rewrite.ts';

/** What a user of the decoder would check on each captured packet. */
interface Expected {
  readonly version: 4 | 6;
  readonly proto: number;
  readonly src: string;
  readonly dst: string;
  readonly srcPort?: number;
  readonly dstPort?: number;
  readonly tcpFlags?: number;
  readonly icmpType?: number;
  readonly isEcho?: boolean;
  readonly totalLength: number;
  readonly l4Offset: number;
  readonly fragment?: { offset: number; more: boolean; id: number };
}

const A4 = '10.99.0.1';
const B4 = '10.99.0.2';
const A6 = 'fd99::1';
const B6 = 'fd99::2';
const { Tcp, Udp, Icmp, Icmpv6 } = IpProto;

// A table reads better one fixture per line than as prettier's 400-line expansion.
// prettier-ignore
const expectations: readonly (readonly [fx.PacketFixture, Expected])[] = [
  [fx.V4_ICMP_ECHO_REQUEST, { version: 4, proto: Icmp, src: A4, dst: B4, srcPort: 5474, dstPort: 5474, icmpType: 8, isEcho: true, totalLength: 84, l4Offset: 20 }],
  [fx.V4_ICMP_ECHO_REPLY, { version: 4, proto: Icmp, src: B4, dst: A4, srcPort: 5474, dstPort: 5474, icmpType: 0, isEcho: true, totalLength: 84, l4Offset: 20 }],
  [fx.V6_ICMP_NEIGHBOR_SOLICITATION, { version: 6, proto: Icmpv6, src: A6, dst: 'ff02::1:ff00:2', srcPort: 0, dstPort: 0, icmpType: 135, isEcho: false, totalLength: 72, l4Offset: 40 }],
  [fx.V6_ICMP_ECHO_REQUEST, { version: 6, proto: Icmpv6, src: A6, dst: B6, srcPort: 5475, dstPort: 5475, icmpType: 128, isEcho: true, totalLength: 104, l4Offset: 40 }],
  [fx.V6_ICMP_ECHO_REPLY, { version: 6, proto: Icmpv6, src: B6, dst: A6, srcPort: 5475, dstPort: 5475, icmpType: 129, isEcho: true, totalLength: 104, l4Offset: 40 }],
  [fx.V4_ICMP_FRAGMENT_1, { version: 4, proto: Icmp, src: A4, dst: B4, srcPort: 5476, dstPort: 5476, icmpType: 8, isEcho: true, totalLength: 1500, l4Offset: 20, fragment: { offset: 0, more: true, id: 57431 } }],
  [fx.V4_ICMP_FRAGMENT_2, { version: 4, proto: Icmp, src: A4, dst: B4, totalLength: 1500, l4Offset: -1, fragment: { offset: 1480, more: true, id: 57431 } }],
  [fx.V4_ICMP_FRAGMENT_3, { version: 4, proto: Icmp, src: A4, dst: B4, totalLength: 68, l4Offset: -1, fragment: { offset: 2960, more: false, id: 57431 } }],
  [fx.V6_ICMP_FRAGMENT_1, { version: 6, proto: Icmpv6, src: A6, dst: B6, srcPort: 5477, dstPort: 5477, icmpType: 128, isEcho: true, totalLength: 1496, l4Offset: 48, fragment: { offset: 0, more: true, id: 0x22dca18f } }],
  [fx.V6_ICMP_FRAGMENT_2, { version: 6, proto: Icmpv6, src: A6, dst: B6, totalLength: 1496, l4Offset: -1, fragment: { offset: 1448, more: true, id: 0x22dca18f } }],
  [fx.V6_ICMP_FRAGMENT_3, { version: 6, proto: Icmpv6, src: A6, dst: B6, totalLength: 160, l4Offset: -1, fragment: { offset: 2896, more: false, id: 0x22dca18f } }],
  [fx.V4_TCP_SYN, { version: 4, proto: Tcp, src: A4, dst: B4, srcPort: 40001, dstPort: 8080, tcpFlags: TcpFlag.Syn, totalLength: 60, l4Offset: 20 }],
  [fx.V4_TCP_SYN_ACK, { version: 4, proto: Tcp, src: B4, dst: A4, srcPort: 8080, dstPort: 40001, tcpFlags: TcpFlag.Syn | TcpFlag.Ack, totalLength: 60, l4Offset: 20 }],
  [fx.V4_TCP_DATA, { version: 4, proto: Tcp, src: A4, dst: B4, srcPort: 40001, dstPort: 8080, tcpFlags: TcpFlag.Psh | TcpFlag.Ack, totalLength: 65, l4Offset: 20 }],
  [fx.V4_TCP_FIN, { version: 4, proto: Tcp, src: A4, dst: B4, srcPort: 40001, dstPort: 8080, tcpFlags: TcpFlag.Fin | TcpFlag.Ack, totalLength: 52, l4Offset: 20 }],
  [fx.V4_UDP, { version: 4, proto: Udp, src: A4, dst: B4, srcPort: 40002, dstPort: 9999, totalLength: 46, l4Offset: 20 }],
  [fx.V4_UDP_FRAGMENT_1, { version: 4, proto: Udp, src: A4, dst: B4, srcPort: 40002, dstPort: 9999, totalLength: 1500, l4Offset: 20, fragment: { offset: 0, more: true, id: 19462 } }],
  [fx.V4_UDP_FRAGMENT_2, { version: 4, proto: Udp, src: A4, dst: B4, totalLength: 1500, l4Offset: -1, fragment: { offset: 1480, more: true, id: 19462 } }],
  [fx.V4_UDP_FRAGMENT_3, { version: 4, proto: Udp, src: A4, dst: B4, totalLength: 69, l4Offset: -1, fragment: { offset: 2960, more: false, id: 19462 } }],
  [fx.V4_UDP_ZERO_CHECKSUM, { version: 4, proto: Udp, src: A4, dst: B4, srcPort: 40003, dstPort: 9999, totalLength: 39, l4Offset: 20 }],
  [fx.V6_TCP_SYN, { version: 6, proto: Tcp, src: A6, dst: B6, srcPort: 40001, dstPort: 8080, tcpFlags: TcpFlag.Syn, totalLength: 80, l4Offset: 40 }],
  [fx.V6_TCP_SYN_ACK, { version: 6, proto: Tcp, src: B6, dst: A6, srcPort: 8080, dstPort: 40001, tcpFlags: TcpFlag.Syn | TcpFlag.Ack, totalLength: 80, l4Offset: 40 }],
  [fx.V6_TCP_DATA, { version: 6, proto: Tcp, src: A6, dst: B6, srcPort: 40001, dstPort: 8080, tcpFlags: TcpFlag.Psh | TcpFlag.Ack, totalLength: 85, l4Offset: 40 }],
  [fx.V6_TCP_FIN, { version: 6, proto: Tcp, src: A6, dst: B6, srcPort: 40001, dstPort: 8080, tcpFlags: TcpFlag.Fin | TcpFlag.Ack, totalLength: 72, l4Offset: 40 }],
  [fx.V6_UDP, { version: 6, proto: Udp, src: A6, dst: B6, srcPort: 40002, dstPort: 9999, totalLength: 66, l4Offset: 40 }],
  [fx.V6_UDP_FRAGMENT_1, { version: 6, proto: Udp, src: A6, dst: B6, srcPort: 40002, dstPort: 9999, totalLength: 1496, l4Offset: 48, fragment: { offset: 0, more: true, id: 0x1b48e925 } }],
  [fx.V6_UDP_FRAGMENT_2, { version: 6, proto: Udp, src: A6, dst: B6, totalLength: 1496, l4Offset: -1, fragment: { offset: 1448, more: true, id: 0x1b48e925 } }],
  [fx.V6_UDP_FRAGMENT_3, { version: 6, proto: Udp, src: A6, dst: B6, totalLength: 161, l4Offset: -1, fragment: { offset: 2896, more: false, id: 0x1b48e925 } }],
];

const FRAGMENT_GROUPS = [
  fx.V4_ICMP_FRAGMENTS,
  fx.V6_ICMP_FRAGMENTS,
  fx.V4_UDP_FRAGMENTS,
  fx.V6_UDP_FRAGMENTS,
];

function addr(text: string): Uint8Array {
  return IpAddress.parse(text).toBytes();
}

test('every fixture has an expectation', () => {
  assert.deepEqual(
    expectations.map(([f]) => f.name),
    fx.ALL_FIXTURES.map((f) => f.name),
  );
});

describe('decoding captured packets', () => {
  const p = new ParsedPacket();
  for (const [fixture, e] of expectations) {
    test(fixture.name, () => {
      const b = fx.fixtureBytes(fixture);
      assert.equal(p.decode(b, 0, b.length), true, `error ${p.error}`);
      assert.equal(p.error, DecodeError.Ok);
      assert.equal(p.version, e.version);
      assert.equal(p.proto, e.proto);
      assert.equal(p.addrLength, e.version === 4 ? 4 : 16);
      assert.equal(p.srcAddress(), e.src);
      assert.equal(p.dstAddress(), e.dst);
      assert.equal(p.totalLength, e.totalLength);
      assert.equal(p.totalLength, b.length);
      assert.equal(p.l4Offset, e.l4Offset);
      assert.equal(p.srcPort, e.srcPort ?? 0);
      assert.equal(p.dstPort, e.dstPort ?? 0);
      assert.equal(p.tcpFlags, e.tcpFlags ?? 0);
      assert.equal(p.icmpType, e.icmpType ?? 0);
      assert.equal(p.icmpCode, 0);
      assert.equal(p.isEcho, e.isEcho ?? false);
      assert.equal(p.isFragment, e.fragment !== undefined);
      assert.equal(p.isFirstFragment, e.fragment?.offset === 0);
      assert.equal(p.fragmentOffset, e.fragment?.offset ?? 0);
      assert.equal(p.moreFragments, e.fragment?.more ?? false);
      if (e.fragment) assert.equal(p.fragmentId, e.fragment.id);
      assert.equal(p.ipHeaderLength, e.version === 4 ? 20 : e.fragment ? 48 : 40);
      assert.equal(p.l4Length, e.l4Offset < 0 ? 0 : b.length - e.l4Offset);
      assert.equal(fullChecksumsValid(b, 0, b.length), true, 'kernel checksums agree with the oracle');
    });
  }
});

test('the kernel fragments reassemble into datagrams whose transport checksum verifies', () => {
  const p = new ParsedPacket();
  for (const group of FRAGMENT_GROUPS) {
    const whole = reassemble(group.map(fx.fixtureBytes));
    assert.equal(p.decode(whole, 0, whole.length), true);
    assert.equal(p.isFragment, false);
    assert.equal(p.totalLength, (p.version === 4 ? 20 : 40) + 8 + (p.proto === Udp ? 3001 : 3000));
    assert.equal(fullChecksumsValid(whole, 0, whole.length), true);
  }
});

test('the zero-checksum UDP fixture really carries checksum 0', () => {
  const b = fx.fixtureBytes(fx.V4_UDP_ZERO_CHECKSUM);
  assert.equal(b.readUInt16BE(26), 0);
});

describe('rewriting captured packets', () => {
  const p = new ParsedPacket();
  for (const fixture of fx.ALL_FIXTURES) {
    test(`${fixture.name}: NAT both ways, checksums stay valid, reverse restores the bytes`, () => {
      const original = fx.fixtureBytes(fixture);
      const b = Buffer.from(original);
      assert.equal(p.decode(b, 0, b.length), true);
      const v4 = p.version === 4;
      const newSrc = addr(v4 ? '172.16.5.9' : '2001:db8:aa::17');
      const newDst = addr(v4 ? '10.30.0.3' : 'fdff:0:0:3::1');
      const oldSrc = Buffer.alloc(16);
      const oldDst = Buffer.alloc(16);
      const n = p.copySrcAddress(oldSrc);
      p.copyDstAddress(oldDst);
      const { srcPort, dstPort, isEcho } = p;
      const hasPorts = p.l4Offset >= 0 && (p.proto === Tcp || p.proto === Udp);

      assert.equal(setSrcAddress(p, b, newSrc), true);
      assert.equal(setDstAddress(p, b, newDst), true);
      assert.equal(setSrcPort(p, b, 31337), hasPorts);
      assert.equal(setDstPort(p, b, 443), hasPorts);
      assert.equal(setEchoId(p, b, 0xbeef), isEcho);
      assert.equal(fullChecksumsValid(b, 0, b.length), true);
      assert.equal(p.srcAddressEquals(newSrc), true);
      assert.equal(p.dstAddressEquals(newDst), true);

      const again = new ParsedPacket();
      assert.equal(again.decode(b, 0, b.length), true);
      if (hasPorts) assert.deepEqual([again.srcPort, again.dstPort], [31337, 443]);
      if (isEcho) assert.deepEqual([again.srcPort, again.dstPort], [0xbeef, 0xbeef]);
      if (fixture === fx.V4_UDP_ZERO_CHECKSUM) assert.equal(b.readUInt16BE(26), 0, 'no checksum stays none');

      setSrcAddress(p, b, oldSrc, 0, n);
      setDstAddress(p, b, oldDst, 0, n);
      if (hasPorts) {
        setSrcPort(p, b, srcPort);
        setDstPort(p, b, dstPort);
      }
      if (isEcho) setEchoId(p, b, srcPort);
      assert.deepEqual(b, original);
    });
  }
});

test('rewriting the first fragment and the headers of the others keeps the reassembled checksum valid', () => {
  const p = new ParsedPacket();
  for (const group of FRAGMENT_GROUPS) {
    const frags = group.map(fx.fixtureBytes);
    const v4 = (frags[0]?.[0] ?? 0) >> 4 === 4;
    const newSrc = addr(v4 ? '192.0.2.77' : '2001:db8::77');
    const newDst = addr(v4 ? '198.51.100.1' : '2001:db8:ffff::1');
    for (const f of frags) {
      assert.equal(p.decode(f, 0, f.length), true);
      setSrcAddress(p, f, newSrc);
      setDstAddress(p, f, newDst);
      if (p.isFirstFragment) {
        if (p.isEcho) assert.equal(setEchoId(p, f, 4242), true);
        else {
          assert.equal(setSrcPort(p, f, 5353), true);
          assert.equal(setDstPort(p, f, 53), true);
        }
      } else {
        assert.equal(setSrcPort(p, f, 5353), false, 'a non-first fragment has no ports');
        assert.equal(setEchoId(p, f, 4242), false);
      }
      assert.equal(fullChecksumsValid(f, 0, f.length), true, 'IPv4 header checksum of each fragment');
    }
    const whole = reassemble(frags);
    assert.equal(fullChecksumsValid(whole, 0, whole.length), true);
    assert.equal(p.decode(whole, 0, whole.length), true);
    assert.equal(p.srcAddressEquals(newSrc), true);
    assert.equal(p.srcPort, p.isEcho ? 4242 : 5353);
  }
});
