import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IpAddress } from '../../addressing/ip.ts';
import {
  buildEcho,
  buildTcp,
  buildUdp,
  computeIpv4HeaderChecksum,
  createSeededRandom,
  fragmentPacket,
  randomBytes,
} from './build.ts';
import { IpProto, TcpFlag } from './constants.ts';
import { ALL_FIXTURES, fixtureBytes, V4_TCP_SYN, V6_UDP } from './fixtures.ts';
import {
  DECODE_ERROR_COUNT,
  DecodeError,
  decodeErrorName,
  formatAddress,
  ParsedPacket,
  sameAddress,
} from './parsed-packet.ts';

const E = DecodeError;

function decoded(b: Uint8Array, offset = 0, length = b.length - offset): ParsedPacket {
  const p = new ParsedPacket();
  p.decode(b, offset, length);
  return p;
}

/** Re-seals the IPv4 header checksum after a test edits the header. */
function reseal(b: Buffer): Buffer {
  b.writeUInt16BE(0, 10);
  b.writeUInt16BE(computeIpv4HeaderChecksum(b, 0), 10);
  return b;
}

const tcp4 = (): Buffer =>
  buildTcp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1234, dstPort: 80, flags: TcpFlag.Syn });
const tcp6 = (): Buffer =>
  buildTcp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1234, dstPort: 80, flags: TcpFlag.Syn });

describe('malformed input never throws and is classified', () => {
  test('every truncation of every fixture', () => {
    const p = new ParsedPacket();
    for (const f of ALL_FIXTURES) {
      const full = fixtureBytes(f);
      const min = full[0]! >> 4 === 4 ? 20 : 40;
      for (let n = 0; n < full.length; n++) {
        const want = n === 0 || n < min ? E.TooShort : E.BadTotalLength;
        assert.equal(p.decode(full, 0, n), false, `${f.name} at ${n}`);
        assert.equal(p.error, want, `${f.name} at ${n}: ${decodeErrorName(p.error)}`);
        const exact = Buffer.from(full.subarray(0, n));
        assert.equal(p.decode(exact, 0, n), false);
        assert.equal(p.error, want);
      }
    }
  });

  test('random garbage, with and without a plausible version nibble', () => {
    const random = createSeededRandom(0xbad);
    const p = new ParsedPacket();
    const seen = new Set<number>();
    for (let i = 0; i < 20000; i++) {
      const b = randomBytes(random, Math.floor(random() * 120));
      if (b.length > 0 && random() < 0.7) b[0] = (random() < 0.5 ? 0x40 : 0x60) | (b[0]! & 0x0f);
      if (b.length > 6 && random() < 0.5)
        b.writeUInt16BE(random() < 0.5 ? b.length : Math.max(0, b.length - 40), b[0]! >> 4 === 4 ? 2 : 4);
      const ok = p.decode(b, 0, b.length);
      seen.add(p.error);
      assert.equal(ok, p.error === E.Ok);
      if (ok) {
        assert.ok(p.srcOffset >= 0 && p.dstOffset + p.addrLength <= b.length);
        assert.ok(p.totalLength <= b.length);
        if (p.l4Offset >= 0) assert.ok(p.l4Offset + p.l4Length <= b.length);
        if (p.l4ChecksumOffset >= 0) assert.ok(p.l4ChecksumOffset + 2 <= b.length);
      }
    }
    for (const e of [E.TooShort, E.BadVersion, E.BadHeaderLength, E.BadTotalLength]) assert.ok(seen.has(e));
  });

  test('bad bounds are reported, not thrown', () => {
    const b = tcp4();
    const p = new ParsedPacket();
    for (const [off, len] of [
      [-1, 10],
      [0, b.length + 1],
      [5, b.length],
      [0.5, 20],
      [0, Number.NaN],
    ] as const) {
      assert.equal(p.decode(b, off, len), false);
      assert.equal(p.error, E.OutOfBounds);
    }
    assert.equal(p.decode(b, 0, 0), false);
    assert.equal(p.error, E.TooShort);
  });

  test('bad version nibbles', () => {
    for (const first of [0x00, 0x50, 0xf5, 0x35]) {
      const b = tcp4();
      b[0] = first;
      assert.equal(decoded(b).error, E.BadVersion);
    }
  });

  test('bad IPv4 IHL: below 5, or beyond the total length', () => {
    const b = tcp4();
    b[0] = 0x44;
    assert.equal(decoded(reseal(b)).error, E.BadHeaderLength);
    b[0] = 0x4f; // 60-byte header in a 40-byte packet
    assert.equal(decoded(b).error, E.BadHeaderLength);
    const c = tcp4();
    c.writeUInt16BE(16, 2);
    assert.equal(decoded(reseal(c)).error, E.BadHeaderLength);
  });

  test('total length larger than the captured bytes', () => {
    const b = tcp4();
    b.writeUInt16BE(b.length + 1, 2);
    assert.equal(decoded(reseal(b)).error, E.BadTotalLength);
    const c = tcp6();
    c.writeUInt16BE(c.length - 39, 4);
    assert.equal(decoded(c).error, E.BadTotalLength);
  });

  test('bytes after the total length (link padding) are ignored', () => {
    const b = Buffer.concat([tcp4(), Buffer.alloc(6, 0xaa)]);
    const p = decoded(b);
    assert.equal(p.error, E.Ok);
    assert.equal(p.totalLength, 40);
    assert.equal(p.l4Length, 20);
  });

  test('a decode after a failure resets every field', () => {
    const p = new ParsedPacket();
    const good = tcp6();
    assert.equal(p.decode(good, 0, good.length), true);
    const bad = Buffer.alloc(30, 0x45);
    assert.equal(p.decode(bad, 0, bad.length), false);
    assert.deepEqual(
      [p.version, p.srcOffset, p.srcPort, p.dstPort, p.tcpFlags, p.l4Offset, p.l4ChecksumOffset, p.proto],
      [0, -1, 0, 0, 0, -1, -1, 0],
    );
  });
});

describe('transport headers', () => {
  test('too-short transports in unfragmented packets are TruncatedTransport', () => {
    for (const [make, min] of [
      [tcp4, 20],
      [() => buildUdp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2 }), 8],
      [() => buildEcho({ src: '10.0.0.1', dst: '10.0.0.2', id: 1 }), 8],
    ] as const) {
      for (let k = 0; k < min; k++) {
        const b = make();
        b.writeUInt16BE(20 + k, 2);
        assert.equal(decoded(reseal(b)).error, E.TruncatedTransport, `k=${k}`);
      }
    }
    for (let k = 0; k < 20; k++) {
      const b = tcp6();
      b.writeUInt16BE(k, 4);
      assert.equal(decoded(b).error, E.TruncatedTransport);
    }
  });

  test('TCP data offset below 5 or beyond the packet', () => {
    const b = tcp4();
    b[32] = 0x40;
    assert.equal(decoded(b).error, E.BadTransportHeader);
    b[32] = 0x60;
    assert.equal(decoded(b).error, E.BadTransportHeader);
  });

  test('TCP options and flags', () => {
    const b = buildTcp({
      src: 'fd00::1',
      dst: 'fd00::2',
      srcPort: 5,
      dstPort: 6,
      flags: TcpFlag.Fin | TcpFlag.Rst | TcpFlag.Cwr,
      tcpOptions: Buffer.from('020405b4', 'hex'),
      payload: Buffer.from('x'),
    });
    const p = decoded(b);
    assert.equal(p.error, E.Ok);
    assert.equal(p.tcpFlags, TcpFlag.Fin | TcpFlag.Rst | TcpFlag.Cwr);
    assert.equal(p.l4Length, 25);
    assert.equal(p.l4ChecksumOffset, 56);
  });

  test('UDP length below 8 or beyond the packet; shorter than the packet is fine', () => {
    const b = buildUdp({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      srcPort: 1,
      dstPort: 2,
      payload: Buffer.alloc(4),
    });
    for (const [len, want] of [
      [7, E.BadTransportHeader],
      [13, E.BadTransportHeader],
      [12, E.Ok],
      [8, E.Ok],
    ] as const) {
      b.writeUInt16BE(len, 24);
      assert.equal(decoded(b).error, want, `udp length ${len}`);
    }
  });

  test('ICMP echo identifiers key both ports; other ICMP types have none', () => {
    for (const [src, dst] of [
      ['10.0.0.1', '10.0.0.2'],
      ['fd00::1', 'fd00::2'],
    ] as const) {
      for (const reply of [false, true]) {
        const p = decoded(buildEcho({ src, dst, id: 0xabcd, seq: 9, reply }));
        assert.equal(p.error, E.Ok);
        assert.equal(p.isEcho, true);
        assert.deepEqual([p.srcPort, p.dstPort], [0xabcd, 0xabcd]);
      }
      const unreachable = buildEcho({ src, dst, id: 0xabcd });
      unreachable[src.includes(':') ? 40 : 20] = src.includes(':') ? 1 : 3;
      const p = decoded(unreachable);
      assert.equal(p.error, E.Ok);
      assert.equal(p.isEcho, false);
      assert.deepEqual([p.srcPort, p.dstPort, p.icmpType], [0, 0, src.includes(':') ? 1 : 3]);
    }
  });

  test('the other family’s ICMP and other protocols are UnsupportedProtocol with the IP header decoded', () => {
    const v4 = buildEcho({ src: '10.0.0.1', dst: '10.0.0.2', id: 1 });
    v4[9] = IpProto.Icmpv6;
    let p = decoded(reseal(v4));
    assert.deepEqual(
      [p.error, p.proto, p.srcAddress(), p.l4Offset],
      [E.UnsupportedProtocol, 58, '10.0.0.1', 20],
    );
    const v6 = buildEcho({ src: 'fd00::1', dst: 'fd00::2', id: 1 });
    v6[6] = IpProto.Icmp;
    p = decoded(v6);
    assert.deepEqual([p.error, p.proto, p.dstAddress()], [E.UnsupportedProtocol, 1, 'fd00::2']);
    for (const next of [IpProto.Esp, IpProto.Ah, IpProto.NoNextHeader, 132]) {
      const b = tcp6();
      b[6] = next;
      p = decoded(b);
      assert.deepEqual([p.error, p.proto, p.l4ChecksumOffset], [E.UnsupportedProtocol, next, -1]);
    }
  });
});

describe('IPv4 options and IPv6 extension headers', () => {
  test('IPv4 options move the transport', () => {
    const b = buildUdp({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      srcPort: 7,
      dstPort: 8,
      ipv4Options: Buffer.alloc(12, 1),
    });
    const p = decoded(b);
    assert.deepEqual([p.error, p.ipHeaderLength, p.l4Offset, p.srcPort, p.dstPort], [E.Ok, 32, 32, 7, 8]);
  });

  test('hop-by-hop, routing (segments left 0) and destination options are walked', () => {
    const b = buildUdp({
      src: 'fd00::1',
      dst: 'fd00::2',
      srcPort: 7,
      dstPort: 8,
      extensionHeaders: [
        IpProto.HopByHop,
        IpProto.DestinationOptions,
        IpProto.Routing,
        IpProto.DestinationOptions,
      ],
    });
    const p = decoded(b);
    assert.deepEqual([p.error, p.proto, p.ipHeaderLength, p.l4Offset, p.srcPort], [E.Ok, 17, 72, 72, 7]);
  });

  test('a routing header with segments left is refused: the pseudo-header uses another destination', () => {
    const b = buildTcp({
      src: 'fd00::1',
      dst: 'fd00::2',
      srcPort: 1,
      dstPort: 2,
      extensionHeaders: [IpProto.Routing],
      routingSegmentsLeft: 1,
    });
    assert.equal(decoded(b).error, E.UnsupportedExtensionHeader);
  });

  test('broken extension chains', () => {
    // Hop-by-hop after another header.
    let b = buildUdp({
      src: 'fd00::1',
      dst: 'fd00::2',
      srcPort: 1,
      dstPort: 2,
      extensionHeaders: [IpProto.DestinationOptions, IpProto.HopByHop],
    });
    assert.equal(decoded(b).error, E.BadExtensionHeader);
    // A header whose length runs past the packet.
    b = buildUdp({
      src: 'fd00::1',
      dst: 'fd00::2',
      srcPort: 1,
      dstPort: 2,
      extensionHeaders: [IpProto.DestinationOptions],
    });
    b[41] = 10;
    assert.equal(decoded(b).error, E.BadExtensionHeader);
    // A chain that ends exactly at the end of the packet: header but no transport.
    b = buildUdp({
      src: 'fd00::1',
      dst: 'fd00::2',
      srcPort: 1,
      dstPort: 2,
      extensionHeaders: [IpProto.DestinationOptions],
    });
    b.writeUInt16BE(8, 4);
    assert.equal(decoded(b.subarray(0, 48)).error, E.TruncatedTransport);
    // Two fragment headers.
    const [first] = fragmentPacket(
      buildUdp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(200) }),
      120,
    );
    assert.ok(first);
    first[40] = IpProto.Fragment;
    assert.equal(decoded(first).error, E.BadExtensionHeader);
  });

  test('an atomic fragment (offset 0, no M) is an unfragmented packet with a fragment id', () => {
    const b = tcp6();
    const atomic = Buffer.concat([b.subarray(0, 40), Buffer.from('0600000012345678', 'hex'), b.subarray(40)]);
    atomic[6] = IpProto.Fragment;
    atomic.writeUInt16BE(b.length - 40 + 8, 4);
    const p = decoded(atomic);
    assert.deepEqual(
      [p.error, p.isFragment, p.fragmentId, p.srcPort, p.l4Offset],
      [E.Ok, false, 0x12345678, 1234, 48],
    );
  });
});

describe('fragments', () => {
  test('a TCP first fragment without the whole TCP header, and a TCP fragment at offset 8, are TinyFragment', () => {
    for (const [make, mtu] of [
      [tcp4, 28],
      [tcp6, 56],
    ] as const) {
      const frags = fragmentPacket(make(), mtu);
      assert.equal(frags.length, 3);
      const [first, second, third] = frags.map((f) => decoded(f));
      assert.deepEqual([first?.error, first?.isFirstFragment], [E.TinyFragment, true]);
      assert.deepEqual([second?.error, second?.fragmentOffset], [E.TinyFragment, 8]);
      assert.deepEqual([third?.error, third?.fragmentOffset, third?.l4Offset], [E.Ok, 16, -1]);
    }
  });

  test('a first fragment with the 8-byte UDP / ICMP header is fine; a shorter one is tiny', () => {
    const udp = buildUdp({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      srcPort: 1,
      dstPort: 2,
      payload: Buffer.alloc(40),
    });
    const [first] = fragmentPacket(udp, 28);
    assert.ok(first);
    const p = decoded(first);
    assert.deepEqual([p.error, p.srcPort, p.dstPort, p.l4Length], [E.Ok, 1, 2, 8]);
    // A first fragment with no transport bytes at all is tiny; one with 4 is ragged.
    const empty = Buffer.from(first.subarray(0, 20));
    empty.writeUInt16BE(20, 2);
    assert.equal(decoded(reseal(empty)).error, E.TinyFragment);
    const ragged = Buffer.from(first.subarray(0, 24));
    ragged.writeUInt16BE(24, 2);
    assert.equal(
      decoded(reseal(ragged)).error,
      E.BadFragment,
      'a non-final fragment carries a multiple of 8 bytes',
    );
    const echo = buildEcho({ src: 'fd00::1', dst: 'fd00::2', id: 77, payload: Buffer.alloc(100) });
    const [e1] = fragmentPacket(echo, 56);
    assert.ok(e1);
    const q = decoded(e1);
    assert.deepEqual([q.error, q.isEcho, q.srcPort], [E.Ok, true, 77]);
  });

  test('fragments running past 65535 bytes or with a ragged non-final size are BadFragment', () => {
    const frags = fragmentPacket(
      buildUdp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(100) }),
      60,
    );
    const second = frags[1];
    assert.ok(second);
    second.writeUInt16BE(0x2000 | 0x1fff, 6);
    assert.equal(decoded(reseal(second)).error, E.BadFragment);
    const v6 = fragmentPacket(
      buildUdp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(100) }),
      80,
    )[1];
    assert.ok(v6);
    v6.writeUInt16BE(0xfff8 | 1, 42);
    assert.equal(decoded(v6).error, E.BadFragment);
  });

  test('IPv6 non-first fragments keep the transport named in the fragment header', () => {
    const frags = fragmentPacket(
      buildUdp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1, dstPort: 2, payload: Buffer.alloc(300) }),
      200,
      0xfeedf00d,
    );
    const p = decoded(frags[1] ?? Buffer.alloc(0));
    assert.deepEqual(
      [p.error, p.proto, p.isFragment, p.isFirstFragment, p.fragmentOffset, p.fragmentId, p.l4Offset],
      [E.Ok, IpProto.Udp, true, false, 152, 0xfeedf00d, -1],
    );
  });
});

describe('address helpers', () => {
  test('copy and compare addresses without allocation', () => {
    const b = fixtureBytes(V6_UDP);
    const p = decoded(b);
    const out = Buffer.alloc(20);
    assert.equal(p.copySrcAddress(out, 2), 16);
    assert.deepEqual(out.subarray(2, 18), Buffer.from(IpAddress.parse('fd99::1').toBytes()));
    assert.equal(p.srcAddressEquals(out, 2, 16), true);
    assert.equal(p.dstAddressEquals(out, 2, 16), false);
    assert.equal(p.srcAddressEquals(out, 2, 4), false, 'family must match');
    assert.equal(sameAddress(b, p.srcOffset, out, 2, 16), true);
    assert.equal(sameAddress(b, p.srcOffset, out, 10, 16), false, 'out of range is never equal');
    assert.throws(() => p.copyDstAddress(out, 10), RangeError);
    const v4 = decoded(fixtureBytes(V4_TCP_SYN));
    const a = Buffer.alloc(4);
    v4.copyDstAddress(a);
    assert.equal(formatAddress(a, 0, 4), '10.99.0.2');
    assert.equal(v4.dstAddressEquals(a), true);
    const none = decoded(Buffer.alloc(3));
    assert.deepEqual([none.copySrcAddress(out), none.srcAddress(), none.srcAddressEquals(a)], [0, '', false]);
  });

  test('formatAddress matches IpAddress.toString (RFC 5952) on random addresses with zero runs', () => {
    const random = createSeededRandom(5952);
    for (let i = 0; i < 3000; i++) {
      const v6 = i % 4 !== 0;
      const b = randomBytes(random, v6 ? 16 : 4);
      if (v6) for (let g = 0; g < 8; g++) if (random() < 0.5) b.writeUInt16BE(0, g * 2);
      assert.equal(formatAddress(b, 0, b.length), IpAddress.fromBytes(b).toString());
    }
    assert.equal(formatAddress(Buffer.alloc(16), 0, 16), '::');
    assert.equal(formatAddress(Buffer.alloc(3), 0, 3), '');
  });
});

test('decode error names cover every value', () => {
  assert.equal(DECODE_ERROR_COUNT, Object.keys(DecodeError).length);
  for (const [name, value] of Object.entries(DecodeError)) assert.equal(decodeErrorName(value), name);
  assert.equal(decodeErrorName(99), 'Unknown');
});

test('decoding at an offset inside a larger buffer reports absolute offsets', () => {
  const pkt = tcp6();
  const b = Buffer.concat([Buffer.alloc(13, 0xff), pkt, Buffer.alloc(5, 0xff)]);
  const p = decoded(b, 13, pkt.length);
  assert.deepEqual(
    [p.error, p.ipOffset, p.srcOffset, p.dstOffset, p.l4Offset, p.l4ChecksumOffset],
    [E.Ok, 13, 21, 37, 53, 69],
  );
});
