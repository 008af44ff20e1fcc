/**
 * @module dataplane/packet/bench-packet
 * Micro-benchmark of the proxy's per-packet work: decode into a reused ParsedPacket, then a full NAT rewrite
 * (source and destination address plus both ports, or the echo identifier) with incremental checksums. The
 * packets sit back to back in one buffer, as a batched TUN read would leave them, and alternate between two NAT
 * mappings so every rewrite changes bytes. Not a test; run with
 * `node --import tsx src/dataplane/packet/bench-packet.ts [seconds]` (add --trace-gc to see that the timed
 * loops do not allocate).
 */
import { buildEcho, buildTcp, buildUdp, fullChecksumsValid } from './build.ts';
import { ParsedPacket } from './parsed-packet.ts';
import { setDstAddress, setDstPort, setEchoId, setSrcAddress, setSrcPort } from './rewrite.ts';

const seconds = Number(process.argv[2] ?? 1);

const payload = (n: number): Buffer => Buffer.alloc(n, 0x5a);
const packets: Buffer[] = [
  buildTcp({ src: '10.18.0.5', dst: '10.30.0.1', srcPort: 40001, dstPort: 80, payload: payload(1200) }),
  buildTcp({ src: '10.18.0.5', dst: '10.30.0.1', srcPort: 40001, dstPort: 80 }),
  buildUdp({ src: '10.18.0.5', dst: '10.30.0.2', srcPort: 5353, dstPort: 53, payload: payload(61) }),
  buildEcho({ src: '10.18.0.5', dst: '10.30.0.3', id: 77, payload: payload(56) }),
  buildTcp({ src: 'fdff:2000::5', dst: 'fdff:1000::1', srcPort: 40001, dstPort: 80, payload: payload(1200) }),
  buildTcp({ src: 'fdff:2000::5', dst: 'fdff:1000::1', srcPort: 40001, dstPort: 80 }),
  buildUdp({ src: 'fdff:2000::5', dst: 'fdff:1000::2', srcPort: 5353, dstPort: 53, payload: payload(61) }),
  buildEcho({ src: 'fdff:2000::5', dst: 'fdff:1000::3', id: 77, payload: payload(56) }),
];
const batch = Buffer.concat(packets);
const offsets = new Int32Array(packets.length);
const lengths = new Int32Array(packets.length);
for (let i = 0, at = 0; i < packets.length; i++) {
  offsets[i] = at;
  lengths[i] = packets[i]?.length ?? 0;
  at += lengths[i] ?? 0;
}

// Two NAT mappings per family in one pool buffer: [v4 a, v4 b, v6 a, v6 b] for src and for dst.
const pool = Buffer.from(
  '0a120005' + 'c0a80a0a' + 'fdff2000000000000000000000000005' + 'fd000000000000000000000000000a0a',
  'hex',
);
const dstPool = Buffer.from(
  '0a1e0001' + '0a000107' + 'fdff1000000000000000000000000001' + 'fdaa0000000000000000000000000107',
  'hex',
);

const p = new ParsedPacket();

function decodeOnly(rounds: number): number {
  let ok = 0;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < offsets.length; i++) if (p.decode(batch, offsets[i]!, lengths[i]!)) ok++;
  }
  return ok;
}

function decodeAndRewrite(rounds: number): number {
  let ok = 0;
  for (let r = 0; r < rounds; r++) {
    const which = r & 1;
    for (let i = 0; i < offsets.length; i++) {
      if (!p.decode(batch, offsets[i]!, lengths[i]!)) continue;
      const at = p.version === 4 ? which * 4 : 8 + which * 16;
      setSrcAddress(p, batch, pool, at, p.addrLength);
      setDstAddress(p, batch, dstPool, at, p.addrLength);
      if (p.isEcho) setEchoId(p, batch, 77 + which);
      else {
        setSrcPort(p, batch, 40001 + which);
        setDstPort(p, batch, 80 + which * 8000);
      }
      ok++;
    }
  }
  return ok;
}

function measure(name: string, fn: (rounds: number) => number): void {
  fn(20000); // warm up: let V8 optimise the loops
  const rounds = 10000;
  let ops = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < deadline) {
    ops += fn(rounds);
    now = process.hrtime.bigint();
  }
  const elapsed = Number(now - start) / 1e9;
  const perSecond = Math.round(ops / elapsed);
  console.log(`${name.padEnd(44)} ${perSecond.toLocaleString('en-US').padStart(14)} packets/s`);
}

console.log(
  `node ${process.version}, ${packets.length} packets (IPv4+IPv6 x TCP/UDP/ICMP echo), ${seconds}s each`,
);
measure('decode', decodeOnly);
measure('decode + NAT rewrite (2 addresses, 2 ports)', decodeAndRewrite);
for (let i = 0; i < offsets.length; i++) {
  if (!fullChecksumsValid(batch, offsets[i]!, lengths[i]!)) throw new Error(`packet ${i} has a bad checksum`);
}
console.log('all checksums still equal a full recomputation');
