/**
 * One-off throughput figures for the native WireGuard transport (a script, not a test), 1400-byte packets:
 *   1. seal: wgSeal, one JS call per packet (what handshakes and the in-memory path pay);
 *   2. open: wgOpen over batches of 1024 sealed datagrams, one call per batch (the receive path);
 *   3. seal + open together (sealed one by one, opened per batch);
 *   4. sealed sends: UdpTunnel.send of batches of 64 packets, sealed inside the native send, over loopback to
 *      a socket nobody reads (sendmmsg included; the kernel drops what overflows the receive buffer), against
 *      the same sends unsealed;
 *   5. node:crypto's chacha20-poly1305 on the same packets, one cipher object per packet, for reference.
 * MB/s counts plaintext bytes (10^6 per MB).
 *
 * Usage: node --import tsx src/dataplane/wireguard/bench-wg.ts [seconds per figure]
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { endpoint, OutboundBatch } from '../tunnel/tunnel.ts';
import { UdpTunnel } from '../tunnel/udp.ts';
import { NativeTransportSessions } from './sessions-native.ts';

const PACKET = 1400;
const BATCH = 1024;
const SECONDS = Number(process.argv[2] ?? 2);

function measure(name: string, bytesPerRound: number, round: () => void): void {
  const until = performance.now() + SECONDS * 1000;
  let rounds = 0;
  for (let i = 0; i < 20; i++) round(); // warm-up
  const start = performance.now();
  while (performance.now() < until) {
    round();
    rounds++;
  }
  const seconds = (performance.now() - start) / 1000;
  const mbps = (rounds * bytesPerRound) / seconds / 1e6;
  const pps = (rounds * bytesPerRound) / PACKET / seconds;
  console.log(
    `${name.padEnd(52)} ${mbps.toFixed(0).padStart(6)} MB/s  ${(pps / 1e3).toFixed(0).padStart(6)} kpps`,
  );
}

const send = randomBytes(32);
const recv = randomBytes(32);
const tx = new NativeTransportSessions(1);
const rx = new NativeTransportSessions(1);
tx.install(0, send, recv, 1, 2);
rx.install(0, recv, send, 2, 1);

// a probe-like plaintext (first byte 0): opened datagrams keep their length, no IP header to trim
const packet = randomBytes(PACKET);
packet[0] = 0;
const stride = PACKET + 64;
const sealed = Buffer.alloc(BATCH * stride);
const work = Buffer.alloc(BATCH * stride);
const offsets = new Uint32Array(BATCH);
const lengths = new Uint32Array(BATCH);
const verdicts = new Int32Array(BATCH);

function sealBatch(into: Buffer): number {
  let n = 0;
  for (let i = 0; i < BATCH; i++) n = tx.seal(0, packet, into, i * stride);
  return n;
}
const sealedLength = sealBatch(sealed);

measure(`seal (wgSeal per packet)`, BATCH * PACKET, () => {
  sealBatch(work);
});

// open: a fresh copy of sealed datagrams with fresh counters each round (the replay window takes each once)
function openRound(): void {
  sealBatch(work);
  for (let i = 0; i < BATCH; i++) {
    offsets[i] = i * stride;
    lengths[i] = sealedLength;
  }
  rx.open({ buffer: work, offsets, lengths, count: BATCH }, verdicts);
  if (verdicts[BATCH - 1] !== 0) throw new Error(`verdict ${verdicts[BATCH - 1]}`);
}
// open alone: time seal+open and seal, report both and the difference
let sealOpenSeconds = 0;
{
  const start = performance.now();
  let rounds = 0;
  const until = start + SECONDS * 1000;
  while (performance.now() < until) {
    openRound();
    rounds++;
  }
  sealOpenSeconds = (performance.now() - start) / 1000 / rounds;
  const mbps = (BATCH * PACKET) / sealOpenSeconds / 1e6;
  console.log(
    `${'seal + open (wgSeal per packet, wgOpen per 1024)'.padEnd(52)} ${mbps.toFixed(0).padStart(6)} MB/s`,
  );
}
{
  const start = performance.now();
  let rounds = 0;
  const until = start + SECONDS * 1000;
  while (performance.now() < until) {
    sealBatch(work);
    rounds++;
  }
  const sealSeconds = (performance.now() - start) / 1000 / rounds;
  const mbps = (BATCH * PACKET) / (sealOpenSeconds - sealSeconds) / 1e6;
  console.log(
    `${'open alone (wgOpen per 1024; seal time subtracted)'.padEnd(52)} ${mbps.toFixed(0).padStart(6)} MB/s`,
  );
}

// sealed sends inside UdpTunnel.send, vs unsealed
const sink = UdpTunnel.open({ offload: true });
const sessions = new NativeTransportSessions(1);
sessions.install(0, send, recv, 3, 4);
const sender = UdpTunnel.open({ offload: true, sessions });
const to = endpoint('127.0.0.1', sink.port);
const SEND_BATCH = 64;
const out = new OutboundBatch(SEND_BATCH);
out.reset(Buffer.concat(Array.from({ length: SEND_BATCH }, () => packet)));
for (const seal of [false, true]) {
  for (let i = 0; i < SEND_BATCH; i++) out.pushTo(i * PACKET, PACKET, to, 0, 0, seal ? 0 : -1);
  measure(
    `UdpTunnel.send, batches of 64, ${seal ? 'sealed natively' : 'unsealed'}`,
    SEND_BATCH * PACKET,
    () => {
      sender.send(out);
    },
  );
  out.reset();
}
sender.close();
sink.close();

const nonce = Buffer.alloc(12);
measure(`node:crypto chacha20-poly1305 (reference)`, BATCH * PACKET, () => {
  for (let i = 0; i < BATCH; i++) {
    nonce.writeUInt32LE(i, 4);
    const c = createCipheriv('chacha20-poly1305', send, nonce, { authTagLength: 16 });
    c.update(packet);
    c.final();
    c.getAuthTag();
  }
});
tx.close();
rx.close();
sessions.close();
