import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  buildEcho,
  buildTcp,
  buildUdp,
  computeIpv4HeaderChecksum,
  createSeededRandom,
  fragmentPacket,
  fullChecksumsValid,
  randomBytes,
  reassemble,
  type IpSpec,
} from './build.ts';
import { IpProto, TcpFlag } from './constants.ts';
import { DecodeError, ParsedPacket } from './parsed-packet.ts';
import { setDstAddress, setDstPort, setEchoId, setSrcAddress, setSrcPort } from './rewrite.ts';

type Kind = 'tcp' | 'udp' | 'udp-nocsum' | 'icmp';

/** The varying parts of a generated packet; `build` turns them into bytes with full checksums. */
interface Shape {
  readonly kind: Kind;
  readonly ip: IpSpec;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly payload: Uint8Array;
  readonly flags: number;
  readonly seq: number;
}

function build(s: Shape, src: Uint8Array, dst: Uint8Array, srcPort: number, dstPort: number): Buffer {
  const ip = { ...s.ip, src, dst };
  switch (s.kind) {
    case 'tcp':
      return buildTcp({ ...ip, srcPort, dstPort, flags: s.flags, seq: s.seq, payload: s.payload });
    case 'udp':
    case 'udp-nocsum':
      return buildUdp({ ...ip, srcPort, dstPort, payload: s.payload, noChecksum: s.kind === 'udp-nocsum' });
    case 'icmp':
      return buildEcho({
        ...ip,
        id: srcPort,
        seq: s.seq & 0xffff,
        reply: (s.flags & 1) === 1,
        payload: s.payload,
      });
  }
}

function randomShape(random: () => number, v6: boolean, maxPayload: number): Shape {
  const kinds: readonly Kind[] = v6 ? ['tcp', 'udp', 'icmp'] : ['tcp', 'udp', 'udp-nocsum', 'icmp'];
  const kind = kinds[Math.floor(random() * kinds.length)] ?? 'tcp';
  const extensionHeaders: number[] = [];
  if (v6 && random() < 0.3) {
    if (random() < 0.5) extensionHeaders.push(IpProto.HopByHop);
    if (random() < 0.5) extensionHeaders.push(IpProto.Routing);
    extensionHeaders.push(IpProto.DestinationOptions);
  }
  const optionWords = !v6 && random() < 0.2 ? 1 + Math.floor(random() * 10) : 0;
  return {
    kind,
    ip: {
      src: randomBytes(random, v6 ? 16 : 4),
      dst: randomBytes(random, v6 ? 16 : 4),
      ttl: 1 + Math.floor(random() * 255),
      ipId: Math.floor(random() * 0x10000),
      ipv4Options: Buffer.alloc(optionWords * 4, 1), // NOP options
      extensionHeaders,
    },
    srcPort: Math.floor(random() * 0x10000),
    dstPort: Math.floor(random() * 0x10000),
    payload: randomBytes(random, Math.floor(random() * (maxPayload + 1))),
    flags: Math.floor(random() * 256),
    seq: Math.floor(random() * 0x100000000),
  };
}

function bytes(buf: Buffer, at: number, n: number): Buffer {
  return Buffer.from(buf.subarray(at, at + n));
}

test('2,000 seeded random rewrites equal a fresh build with full checksums, and reverse exactly', () => {
  const random = createSeededRandom(20240601);
  const p = new ParsedPacket();
  const counts = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const v6 = i % 2 === 1;
    const shape = randomShape(random, v6, random() < 0.1 ? 9000 : 300);
    const n = v6 ? 16 : 4;
    const src = Buffer.from(shape.ip.src as Uint8Array);
    const dst = Buffer.from(shape.ip.dst as Uint8Array);
    const original = build(
      shape,
      src,
      dst,
      shape.srcPort,
      shape.kind === 'icmp' ? shape.srcPort : shape.dstPort,
    );
    const key = `${v6 ? 'v6' : 'v4'}-${shape.kind}-${original.length % 2 ? 'odd' : 'even'}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);

    // The packet sits at a random offset inside a larger buffer whose other bytes must not change.
    const head = Math.floor(random() * 64);
    const frame = randomBytes(random, head + original.length + 32);
    original.copy(frame, head);
    const framed = Buffer.from(frame);
    assert.equal(p.decode(frame, head, original.length), true, `case ${i}: ${p.error}`);

    // New values come from a pool buffer at an offset, as a proxy's NAT table would hold them.
    const pool = randomBytes(random, 3 + 2 * n);
    const newSrc = bytes(pool, 3, n);
    const newDst = bytes(pool, 3 + n, n);
    const changeSrc = random() < 0.8;
    const changeDst = random() < 0.8;
    const newSrcPort = random() < 0.1 ? shape.srcPort : Math.floor(random() * 0x10000);
    const newDstPort = Math.floor(random() * 0x10000);
    if (changeSrc) assert.equal(setSrcAddress(p, frame, pool, 3, n), true);
    if (changeDst) assert.equal(setDstAddress(p, frame, pool, 3 + n, n), true);
    if (shape.kind === 'icmp') {
      assert.equal(setEchoId(p, frame, newSrcPort), true);
      assert.equal(setSrcPort(p, frame, 1), false);
    } else {
      assert.equal(setSrcPort(p, frame, newSrcPort), true);
      assert.equal(setDstPort(p, frame, newDstPort), true);
      assert.equal(setEchoId(p, frame, 1), false);
    }

    const expected = build(
      shape,
      changeSrc ? newSrc : src,
      changeDst ? newDst : dst,
      newSrcPort,
      shape.kind === 'icmp' ? newSrcPort : newDstPort,
    );
    assert.deepEqual(bytes(frame, head, original.length), expected, `case ${i} (${key})`);
    assert.equal(fullChecksumsValid(frame, head, original.length), true);
    assert.deepEqual(frame.subarray(0, head), framed.subarray(0, head));
    assert.deepEqual(frame.subarray(head + original.length), framed.subarray(head + original.length));

    // Reverse NAT on the same parsed view restores every byte, checksums included.
    setSrcAddress(p, frame, src);
    setDstAddress(p, frame, dst);
    if (shape.kind === 'icmp') setEchoId(p, frame, shape.srcPort);
    else {
      setSrcPort(p, frame, shape.srcPort);
      setDstPort(p, frame, shape.dstPort);
    }
    assert.deepEqual(frame, framed, `case ${i} reverse`);
  }
  for (const family of ['v4', 'v6']) {
    for (const kind of ['tcp', 'udp', 'icmp']) {
      for (const parity of ['odd', 'even']) {
        assert.ok(
          (counts.get(`${family}-${kind}-${parity}`) ?? 0) > 50,
          `${family}-${kind}-${parity} covered`,
        );
      }
    }
  }
});

test('random fragmented datagrams: rewriting the first fragment and all headers survives reassembly', () => {
  const random = createSeededRandom(1858);
  const p = new ParsedPacket();
  let fragmented = 0;
  for (let i = 0; i < 300; i++) {
    const v6 = i % 2 === 1;
    const shape = randomShape(random, v6, 5000);
    const n = v6 ? 16 : 4;
    const src = Buffer.from(shape.ip.src as Uint8Array);
    const dst = Buffer.from(shape.ip.dst as Uint8Array);
    const dstPort = shape.kind === 'icmp' ? shape.srcPort : shape.dstPort;
    const datagram = build(shape, src, dst, shape.srcPort, dstPort);
    const mtu = (v6 ? 120 : 68) + Math.floor(random() * 1400);
    const fragments = fragmentPacket(datagram, mtu, Math.floor(random() * 0x100000000));
    if (fragments.length > 1) fragmented++;
    const newSrc = randomBytes(random, n);
    const newDst = randomBytes(random, n);
    const newSrcPort = Math.floor(random() * 0x10000);
    const newDstPort = Math.floor(random() * 0x10000);
    for (const f of fragments) {
      assert.equal(p.decode(f, 0, f.length), true, `case ${i}: ${p.error}`);
      setSrcAddress(p, f, newSrc);
      setDstAddress(p, f, newDst);
      if (p.l4Offset >= 0) {
        if (shape.kind === 'icmp') setEchoId(p, f, newSrcPort);
        else {
          setSrcPort(p, f, newSrcPort);
          setDstPort(p, f, newDstPort);
        }
      }
      assert.equal(fullChecksumsValid(f, 0, f.length), true);
    }
    const expected = build(
      shape,
      newSrc,
      newDst,
      newSrcPort,
      shape.kind === 'icmp' ? newSrcPort : newDstPort,
    );
    const [only] = fragments;
    const whole = fragments.length === 1 && only ? only : reassemble(fragments);
    assert.deepEqual(whole, expected, `case ${i}`);
  }
  assert.ok(fragmented > 200, `${fragmented} of 300 cases fragmented`);
});

test('IPv4 UDP checksum 0 means "none" and stays 0 through address and port rewrites', () => {
  const b = buildUdp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1000, dstPort: 2000, noChecksum: true });
  const p = new ParsedPacket();
  assert.equal(p.decode(b, 0, b.length), true);
  setSrcAddress(p, b, Uint8Array.of(192, 168, 1, 1));
  setDstPort(p, b, 53);
  assert.equal(b.readUInt16BE(26), 0);
  assert.equal(fullChecksumsValid(b, 0, b.length), true);
});

test('a rewrite whose checksum computes to 0 writes 0xffff for UDP (both families) and 0 for TCP', () => {
  for (const src of ['10.0.0.1', 'fd00::1']) {
    const dst = src.includes(':') ? 'fd00::2' : '10.0.0.2';
    for (const kind of ['udp', 'tcp'] as const) {
      const b =
        kind === 'udp'
          ? buildUdp({ src, dst, srcPort: 1000, dstPort: 2000, payload: Buffer.from('zero') })
          : buildTcp({ src, dst, srcPort: 1000, dstPort: 2000, payload: Buffer.from('zero') });
      const p = new ParsedPacket();
      assert.equal(p.decode(b, 0, b.length), true);
      const at = p.l4ChecksumOffset;
      // Solve ~HC + ~old + new ≡ 0xffff (mod 0xffff) for the new source port, so the new sum is "all ones".
      const hc = b.readUInt16BE(at);
      let a = (~hc & 0xffff) + (~1000 & 0xffff);
      a = (a & 0xffff) + (a >>> 16);
      const port = ~a & 0xffff;
      assert.equal(setSrcPort(p, b, port), true);
      assert.equal(b.readUInt16BE(at), kind === 'udp' ? 0xffff : 0);
      assert.equal(fullChecksumsValid(b, 0, b.length), true);
      const rebuilt =
        kind === 'udp'
          ? buildUdp({ src, dst, srcPort: port, dstPort: 2000, payload: Buffer.from('zero') })
          : buildTcp({ src, dst, srcPort: port, dstPort: 2000, payload: Buffer.from('zero') });
      assert.deepEqual(b, rebuilt);
      setSrcPort(p, b, 1000);
      assert.equal(b.readUInt16BE(at), hc);
    }
  }
});

test('ICMPv4 address rewrites leave the ICMP checksum alone; ICMPv6 ones update it', () => {
  const p = new ParsedPacket();
  const v4 = buildEcho({ src: '10.0.0.1', dst: '10.0.0.2', id: 7, payload: Buffer.from('abc') });
  p.decode(v4, 0, v4.length);
  const icmp4 = v4.readUInt16BE(22);
  setSrcAddress(p, v4, Uint8Array.of(1, 2, 3, 4));
  assert.equal(v4.readUInt16BE(22), icmp4);
  assert.equal(fullChecksumsValid(v4, 0, v4.length), true);

  const v6 = buildEcho({ src: 'fd00::1', dst: 'fd00::2', id: 7, payload: Buffer.from('abc') });
  p.decode(v6, 0, v6.length);
  const icmp6 = v6.readUInt16BE(42);
  setSrcAddress(p, v6, Buffer.alloc(16, 0x20));
  assert.notEqual(v6.readUInt16BE(42), icmp6);
  assert.equal(fullChecksumsValid(v6, 0, v6.length), true);
});

test('non-first fragments: only the IP header changes and port rewrites are refused', () => {
  const p = new ParsedPacket();
  for (const src of ['10.1.1.1', 'fd00::1']) {
    const dst = src.includes(':') ? 'fd00::2' : '10.1.1.2';
    const whole = buildTcp({ src, dst, srcPort: 1, dstPort: 2, payload: Buffer.alloc(400, 9) });
    const [, second] = fragmentPacket(whole, 200);
    assert.ok(second);
    const before = Buffer.from(second);
    assert.equal(p.decode(second, 0, second.length), true);
    assert.equal(p.l4Offset, -1);
    const n = p.addrLength;
    assert.equal(setDstAddress(p, second, Buffer.alloc(n, 0xee)), true);
    assert.equal(setSrcPort(p, second, 99), false);
    assert.equal(setDstPort(p, second, 99), false);
    assert.equal(fullChecksumsValid(second, 0, second.length), true);
    const hl = p.ipHeaderLength;
    assert.deepEqual(second.subarray(hl), before.subarray(hl), 'fragment data untouched');
  }
});

test('unsupported transports get their IP header rewritten and nothing else', () => {
  const b = buildUdp({
    src: '10.0.0.1',
    dst: '10.0.0.2',
    srcPort: 1,
    dstPort: 2,
    payload: Buffer.alloc(20, 3),
  });
  b[9] = 47; // GRE
  b.writeUInt16BE(computeIpv4HeaderChecksum(b, 0), 10);
  const before = Buffer.from(b);
  const p = new ParsedPacket();
  assert.equal(p.decode(b, 0, b.length), false);
  assert.equal(p.error, DecodeError.UnsupportedProtocol);
  assert.equal(setDstAddress(p, b, Uint8Array.of(8, 8, 8, 8)), true);
  assert.equal(setSrcPort(p, b, 5), false);
  assert.equal(fullChecksumsValid(b, 0, b.length), true);
  assert.deepEqual(b.subarray(20), before.subarray(20));
});

test('an undecodable packet is refused without changes', () => {
  const p = new ParsedPacket();
  const b = Buffer.alloc(10, 0x45);
  assert.equal(p.decode(b, 0, b.length), false);
  assert.equal(setSrcAddress(p, b, Uint8Array.of(1, 2, 3, 4)), false);
  assert.equal(setSrcPort(p, b, 1), false);
  assert.equal(setEchoId(p, b, 1), false);
  assert.deepEqual(b, Buffer.alloc(10, 0x45));
});

test('programmer errors throw: family mismatch, foreign buffer, bad port, address out of range', () => {
  const p = new ParsedPacket();
  const b = buildTcp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 1, dstPort: 2, flags: TcpFlag.Syn });
  p.decode(b, 0, b.length);
  assert.throws(() => setSrcAddress(p, b, Buffer.alloc(16)), /4-byte|16-byte/);
  assert.throws(() => setDstAddress(p, b, Buffer.alloc(16), 0, 16), /16-byte address/);
  assert.throws(() => setSrcAddress(p, Buffer.from(b), Uint8Array.of(1, 2, 3, 4)), /not the buffer/);
  assert.throws(() => setSrcPort(p, b, 70000), RangeError);
  assert.throws(() => setDstPort(p, b, -1), RangeError);
  assert.throws(() => setEchoId(p, b, 1.5), RangeError);
  assert.throws(() => setSrcAddress(p, b, Uint8Array.of(1, 2, 3), 0, 4), RangeError);
  const v6 = buildUdp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1, dstPort: 2 });
  p.decode(v6, 0, v6.length);
  assert.throws(() => setSrcAddress(p, v6, Uint8Array.of(1, 2, 3, 4)), /IPv6 packet given a 4-byte address/);
});

test('setting the same value is a no-op on every byte', () => {
  const p = new ParsedPacket();
  const b = buildUdp({ src: 'fd00::1', dst: 'fd00::2', srcPort: 1, dstPort: 2, payload: Buffer.from('x') });
  const before = Buffer.from(b);
  p.decode(b, 0, b.length);
  setSrcAddress(p, b, b, p.srcOffset, 16);
  setDstPort(p, b, 2);
  assert.deepEqual(b, before);
});
