/**
 * @module dataplane/packet/segment.case
 * Super-packets for the tests of segment.ts (never imported by production code), shared by segment.test.ts
 * (the TypeScript segmenter against an independent builder) and segment-native.test.ts (against the addon):
 * random super-packets as a kernel hands them over, the segments a correct TSO/USO makes of them, named
 * malformed inputs, and random mutations for fuzzing.
 */
import {
  buildEcho,
  buildTcp,
  buildUdp,
  fragmentPacket,
  randomBytes,
  type TcpSpec,
  withPartialChecksum,
} from './build.ts';
import { IpProto, TcpFlag } from './constants.ts';

/** The fields of one random super-packet. */
export interface Shape {
  v6: boolean;
  udp: boolean;
  payload: Buffer;
  mss: number;
  flags: number;
  seq: number;
  ipId: number;
  dontFragment: boolean;
  ipv4Options?: Uint8Array;
  extensionHeaders?: number[];
  tcpOptions?: Uint8Array;
  /** Bytes after the IP packet's own length (a segmenter must ignore them). */
  trailer?: Buffer;
  /** Garbage in the partial checksum field instead of the pseudo-header sum (a segmenter must not read it). */
  badPartial?: boolean;
}

export const SRC4 = '10.30.0.10';
export const DST4 = '10.18.0.66';
export const SRC6 = 'fdff::10';
export const DST6 = 'fc00::102';

/** The complete packet of `s` carrying `payload` as segment k (full checksums), as the builder makes it. */
export function build(s: Shape, payload: Uint8Array, k = 0, flags = s.flags): Buffer {
  const ip = {
    src: s.v6 ? SRC6 : SRC4,
    dst: s.v6 ? DST6 : DST4,
    ttl: 63,
    ipId: (s.ipId + k) & 0xffff,
    dontFragment: s.dontFragment,
    ...(s.ipv4Options && !s.v6 ? { ipv4Options: s.ipv4Options } : {}),
    ...(s.extensionHeaders && s.v6 ? { extensionHeaders: s.extensionHeaders } : {}),
  };
  if (s.udp) return buildUdp({ ...ip, srcPort: 5353, dstPort: 443, payload });
  return buildTcp({
    ...ip,
    srcPort: 40000,
    dstPort: 5201,
    seq: (s.seq + k * s.mss) >>> 0,
    ack: 0x12345678,
    window: 1234,
    flags,
    ...(s.tcpOptions ? { tcpOptions: s.tcpOptions } : {}),
    payload,
  });
}

/** Bytes of the IP and transport headers of `s`. */
export function headerBytes(s: Shape): number {
  const ip = s.v6 ? 40 + (s.extensionHeaders?.length ?? 0) * 8 : 20 + (s.ipv4Options?.length ?? 0);
  return ip + (s.udp ? 8 : 20 + (s.tcpOptions?.length ?? 0));
}

/** The super-packet as a kernel reads it out: one header, all the payload, a partial checksum. */
export function superPacket(s: Shape): Buffer {
  const p = withPartialChecksum(build(s, s.payload));
  if (s.badPartial) {
    const l4 = headerBytes(s) - (s.udp ? 8 : 20 + (s.tcpOptions?.length ?? 0));
    p.writeUInt16BE(0xbeef, l4 + (s.udp ? 6 : 16));
  }
  return s.trailer ? Buffer.concat([p, s.trailer]) : p;
}

/** Wire packets a correct TSO/USO makes of `s`: the payload cut at the MSS, IP id + k, seq + k * MSS, CWR first, FIN/PSH last. */
export function expectedSegments(s: Shape): Buffer[] {
  const n = Math.max(1, Math.ceil(s.payload.length / s.mss));
  return Array.from({ length: n }, (_, k) => {
    let flags = s.flags;
    if (k > 0) flags &= ~TcpFlag.Cwr;
    if (k < n - 1) flags &= ~(TcpFlag.Fin | TcpFlag.Psh);
    return build(s, s.payload.subarray(k * s.mss, (k + 1) * s.mss), k, flags);
  });
}

const MSS_CHOICES = [536, 1220, 1280, 1398, 1400, 1410, 1440, 1448, 8960];
const FLAG_CHOICES = [
  TcpFlag.Ack,
  TcpFlag.Ack | TcpFlag.Psh,
  TcpFlag.Ack | TcpFlag.Psh | TcpFlag.Fin,
  TcpFlag.Ack | TcpFlag.Cwr | TcpFlag.Ece,
  TcpFlag.Ack | TcpFlag.Cwr | TcpFlag.Ece | TcpFlag.Psh | TcpFlag.Fin,
  TcpFlag.Ack | TcpFlag.Urg | TcpFlag.Psh,
];

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

/**
 * A random super-packet: TCP (3/4) or UDP, IPv4 or IPv6, with IPv4 options, IPv6 extension headers and TCP
 * options at times, a payload of 0 bytes up to the 64 KiB limit, and an MSS that is a usual one, a random
 * one from 1 to 9000 (odd and tiny ones too), or at least the payload. `maxPayload` bounds the payload.
 */
export function randomShape(random: () => number, maxPayload = 65535): Shape {
  const v6 = random() < 0.5;
  const udp = random() < 0.25;
  const options = (max: number) => Buffer.alloc(Math.floor(random() * (max / 4 + 1)) * 4, 1); // NOPs
  const shape: Shape = {
    v6,
    udp,
    payload: Buffer.alloc(0),
    mss: 1,
    flags: pick(random, FLAG_CHOICES),
    seq: Math.floor(random() * 2 ** 32),
    ipId: Math.floor(random() * 65536),
    dontFragment: random() < 0.8,
    ...(random() < 0.3 ? { ipv4Options: options(40) } : {}),
    ...(random() < 0.3
      ? {
          extensionHeaders: pick(random, [
            [IpProto.HopByHop],
            [IpProto.HopByHop, IpProto.DestinationOptions],
            [IpProto.HopByHop, IpProto.Routing, IpProto.DestinationOptions],
          ]),
        }
      : {}),
    ...(!udp && random() < 0.6 ? { tcpOptions: options(40) } : {}),
    ...(random() < 0.1 ? { trailer: randomBytes(random, 1 + Math.floor(random() * 30)) } : {}),
    ...(random() < 0.2 ? { badPartial: true } : {}),
  };
  const room = Math.min(maxPayload, 65535 - headerBytes(shape) + (v6 ? 40 : 0));
  const size = random();
  const length =
    size < 0.05
      ? 0
      : size < 0.15
        ? room
        : Math.floor(random() * (size < 0.75 ? Math.min(room, 60000) : 3000));
  shape.payload = randomBytes(random, Math.min(length, room));
  const m = random();
  if (m < 0.55) shape.mss = pick(random, MSS_CHOICES);
  else if (m < 0.62) shape.mss = 1 + Math.floor(random() * 64);
  else if (m < 0.9) shape.mss = 1 + Math.floor(random() * 9000);
  else shape.mss = shape.payload.length + Math.floor(random() * 70000);
  // keep the segment count sane: tiny MSS values only on small payloads
  if (shape.mss < 64 && shape.payload.length > 4096) shape.mss += 500;
  return shape;
}

/** One named input a segmenter must refuse as malformed (with its gso word). */
export interface MalformedCase {
  name: string;
  packet: Buffer;
  gso: number;
}

function tcp4(payload = 100, extra: Partial<TcpSpec> = {}): Buffer {
  return buildTcp({
    src: SRC4,
    dst: DST4,
    srcPort: 1,
    dstPort: 2,
    payload: Buffer.alloc(payload, 7),
    ...extra,
  });
}
function tcp6(payload = 100, extra: Partial<TcpSpec> = {}): Buffer {
  return buildTcp({
    src: SRC6,
    dst: DST6,
    srcPort: 1,
    dstPort: 2,
    payload: Buffer.alloc(payload, 7),
    ...extra,
  });
}
function udp4(payload = 100): Buffer {
  return buildUdp({ src: SRC4, dst: DST4, srcPort: 1, dstPort: 2, payload: Buffer.alloc(payload, 9) });
}
function udp6(payload = 100): Buffer {
  return buildUdp({ src: SRC6, dst: DST6, srcPort: 1, dstPort: 2, payload: Buffer.alloc(payload, 9) });
}
function edit(p: Buffer, fn: (b: Buffer) => void): Buffer {
  const b = Buffer.from(p);
  fn(b);
  return b;
}

/** Inputs the addon's segmenting refuses (offload.c parse_l4 fails), each with a nonzero gso word. */
export function malformedCases(): MalformedCase[] {
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['19 bytes of IPv4', tcp4().subarray(0, 19)],
    ['IPv6 shorter than its fixed header', tcp6().subarray(0, 39)],
    ['version 5', edit(tcp4(), (b) => (b[0] = 0x55))],
    ['version 0', edit(tcp4(), (b) => (b[0] = 0x05))],
    ['IPv4 header length below 20 (IHL 4)', edit(tcp4(), (b) => (b[0] = 0x44))],
    [
      'IPv4 header longer than the total length',
      edit(tcp4(), (b) => {
        b[0] = 0x4f;
        b.writeUInt16BE(40, 2);
      }),
    ],
    ['IPv4 total length 0', edit(tcp4(), (b) => b.writeUInt16BE(0, 2))],
    ['IPv4 total length below the header', edit(tcp4(), (b) => b.writeUInt16BE(19, 2))],
    ['IPv4 truncated (total length beyond the bytes)', tcp4().subarray(0, 139)],
    ['IPv4 fragment (MF)', edit(tcp4(), (b) => b.writeUInt16BE(0x2000, 6))],
    ['IPv4 fragment (offset)', edit(tcp4(), (b) => b.writeUInt16BE(0x0001, 6))],
    ['IPv4 first fragment of a real split', fragmentPacket(udp4(3000), 1400)[0]!],
    ['IPv4 last fragment of a real split', fragmentPacket(udp4(3000), 1400)[2]!],
    ['ICMP', buildEcho({ src: SRC4, dst: DST4, id: 1, payload: Buffer.alloc(3000) })],
    ['ICMPv6', buildEcho({ src: SRC6, dst: DST6, id: 1, payload: Buffer.alloc(3000) })],
    ['IPv4 ESP', edit(tcp4(), (b) => (b[9] = IpProto.Esp))],
    ['IPv6 no next header', edit(tcp6(), (b) => (b[6] = IpProto.NoNextHeader))],
    ['IPv6 truncated (payload length beyond the bytes)', tcp6().subarray(0, 159)],
    ['IPv6 fragment header', fragmentPacket(udp6(3000), 1400)[0]!],
    [
      'IPv6 routing header with segments left',
      tcp6(100, { extensionHeaders: [IpProto.Routing], routingSegmentsLeft: 1 }),
    ],
    [
      'IPv6 extension header past the end',
      edit(tcp6(100, { extensionHeaders: [IpProto.HopByHop] }), (b) => (b[41] = 200)),
    ],
    [
      'IPv6 extension header without its 8 bytes',
      edit(tcp6(0, { extensionHeaders: [IpProto.HopByHop] }), (b) => b.writeUInt16BE(4, 4)),
    ],
    [
      'IPv6 jumbo-style payload length 0',
      edit(tcp6(100, { extensionHeaders: [IpProto.HopByHop] }), (b) => b.writeUInt16BE(0, 4)),
    ],
    ['TCP data offset below 5', edit(tcp4(), (b) => (b[32] = 0x40))],
    ['TCP header longer than the packet', edit(tcp4(10), (b) => (b[32] = 0xf0))],
    ['TCP header cut by the IPv4 length', edit(tcp4(0), (b) => b.writeUInt16BE(30, 2))],
    ['TCP header cut by the IPv6 length', edit(tcp6(0), (b) => b.writeUInt16BE(19, 4))],
    ['UDP header cut by the IPv4 length', edit(udp4(0), (b) => b.writeUInt16BE(27, 2))],
    ['UDP header cut by the IPv6 length', edit(udp6(0), (b) => b.writeUInt16BE(7, 4))],
  ];
  return cases.map(([name, packet]) => ({ name, packet, gso: 1000 }));
}

/** Inputs at the edges that the addon's segmenting accepts, with the number of wire packets each makes. */
export function edgeCases(): Array<MalformedCase & { segments: number }> {
  return [
    { name: 'TCP without payload', packet: tcp4(0), gso: 1000, segments: 1 },
    { name: 'UDP without payload over IPv6', packet: udp6(0), gso: 1, segments: 1 },
    {
      name: 'IPv4 reserved flag bit set',
      packet: edit(tcp4(3000), (b) => b.writeUInt16BE(0x8000, 6)),
      gso: 1000,
      segments: 3,
    },
    {
      name: 'UDP length field wrong (ignored)',
      packet: edit(udp4(3000), (b) => b.writeUInt16BE(5, 24)),
      gso: 1000,
      segments: 3,
    },
    {
      name: 'IPv4 bytes after the total length',
      packet: Buffer.concat([tcp4(2500), Buffer.alloc(9, 0xee)]),
      gso: 1000,
      segments: 3,
    },
    {
      name: 'IPv6 routing header, no segments left',
      packet: tcp6(2001, { extensionHeaders: [IpProto.Routing] }),
      gso: 1000,
      segments: 3,
    },
    { name: 'gso word 1', packet: udp4(50), gso: 1, segments: 50 },
    { name: 'gso word 0xffff', packet: tcp4(3000), gso: 0xffff, segments: 1 },
    { name: 'gso word 0x10000', packet: tcp6(3000), gso: 0x10000, segments: 1 },
    { name: 'gso word 2^32 - 1', packet: udp6(3000), gso: 0xffffffff, segments: 1 },
    { name: 'largest IPv4 packet', packet: tcp4(65535 - 40), gso: 1448, segments: Math.ceil(65495 / 1448) },
    { name: 'largest IPv6 packet', packet: udp6(65535 - 8), gso: 1232, segments: Math.ceil(65527 / 1232) },
  ];
}

/**
 * A random mutation of `packet` for fuzzing: a few header bytes set or flipped, the IP length fields
 * rewritten, the packet cut short or lengthened with junk; returns a new buffer.
 */
export function mutate(random: () => number, packet: Buffer): Buffer {
  let p = Buffer.from(packet);
  const edits = 1 + Math.floor(random() * 4);
  for (let e = 0; e < edits; e++) {
    const what = random();
    const near = Math.min(p.length, 100);
    if (what < 0.35 && near > 0) {
      p[Math.floor(random() * near)] = Math.floor(random() * 256);
    } else if (what < 0.55 && near > 0) {
      const at = Math.floor(random() * near);
      p[at] = p[at]! ^ (1 << Math.floor(random() * 8));
    } else if (what < 0.7 && p.length >= 6) {
      const at = (p[0]! >> 4 === 6 ? 4 : 2) + (random() < 0.2 ? 2 : 0);
      p.writeUInt16BE(Math.floor(random() * 65536), at);
    } else if (what < 0.85) {
      p = p.subarray(0, Math.floor(random() * (p.length + 1)));
    } else {
      p = Buffer.concat([p, randomBytes(random, Math.floor(random() * 64))]);
    }
  }
  return p;
}

/** A random gso word for fuzzing: 0, small, usual, or anything up to 2^32 - 1. */
export function randomGso(random: () => number): number {
  const g = random();
  if (g < 0.1) return 0;
  if (g < 0.3) return 1 + Math.floor(random() * 64);
  if (g < 0.8) return 1 + Math.floor(random() * 9000);
  return Math.floor(random() * 2 ** 32);
}
