/**
 * The oaknet side of `wireguard-tunnel-interop.test.ts`: oaknet's real tunnel stack, run by the test inside the
 * namespace where Debian's wireguard-go runs (`ip netns exec NS node --import tsx wireguard-tunnel-interop.peer.ts`):
 * a native UdpTunnel (recvmmsg/sendmmsg, UDP GSO/GRO, sealing in the native send with NativeTransportSessions)
 * wrapped in a WgTunnel (handshakes, timers, opening received batches), with wireguard-go as its only peer. No
 * TUN: inner IP packets are built here and handed to `wg.send`, and the ones `onBatch` delivers are read here.
 *
 * Environment: WG_PEER_PUBLIC (wireguard-go's public key, wg's base64), WG_PEER_PORT (its UDP port on
 * 127.0.0.1), WG_SINK_PORT (the UDP port to count the burst on, on 10.99.0.1). It prints one JSON object a line
 * on stdout (`event` names it) and takes commands a line on stdin:
 *   -> {"event":"ready","port":P,"publicKey":K,"offloads":{...}}   the tunnel is started
 *   <- ping                          send an echo request 10.99.0.2 -> 10.99.0.1 through wg.send (no session
 *                                    yet: WgTunnel holds it and initiates)
 *   -> {"event":"sent",...}          what wg.send returned for it
 *   -> {"event":"echo-reply",...}    onBatch delivered the kernel's echo reply (opened by the native opener)
 *   -> {"event":"echo-request",...}  onBatch delivered an echo request to 10.99.0.2 (wireguard-go's ping); it is
 *                                    answered with an echo reply through wg.send (`replySent` says what went out)
 *   <- burst N SIZE                  send N UDP packets of SIZE bytes (IP) to 10.99.0.1:WG_SINK_PORT in one batch
 *   -> {"event":"burst-sent",...}    wg.send's result and the raw tunnel's GSO counters
 *   -> {"event":"burst-received",...} how many of them the sink socket on 10.99.0.1 counted (polled until all or
 *                                    a deadline)
 *   <- status                        -> {"event":"status","status":WgTunnel.status(),...}
 *   -> {"event":"error","message":...}   anything unexpected
 * It closes the tunnel and exits when stdin closes.
 */
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { buildEcho, buildUdp, fullChecksumsValid } from '../../src/dataplane/packet/build.ts';
import { decodeEndpoint, endpoint, OutboundBatch } from '../../src/dataplane/tunnel/tunnel.ts';
import { UdpTunnel } from '../../src/dataplane/tunnel/udp.ts';
import type { PacketBatch } from '../../src/dataplane/tun/tun.ts';
import { KeyPair, parseKey } from '../../src/dataplane/wireguard/keys.ts';
import { NativeTransportSessions } from '../../src/dataplane/wireguard/sessions-native.ts';
import { WgTunnel } from '../../src/dataplane/wireguard/wg-tunnel.ts';

const ECHO_ID = 0x0a4c;
const ECHO_PAYLOAD = Buffer.from('oaknet tunnel speaks WireGuard');
const LOCAL = '10.99.0.2';
const REMOTE = '10.99.0.1';
const BURST_MARK = Buffer.from('oaknet-burst:');

const peerKey = parseKey(process.env.WG_PEER_PUBLIC ?? '', 'WG_PEER_PUBLIC');
const peerPort = Number(process.env.WG_PEER_PORT);
const sinkPort = Number(process.env.WG_SINK_PORT);
const peerEndpoint = endpoint('127.0.0.1', peerPort);

function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function fail(message: string): void {
  emit('error', { message });
}

/** An IPv4 ICMP echo message's fields, or null. */
function parseEcho(p: Buffer) {
  const first = p[0] ?? 0;
  if (p.length < 28 || first >> 4 !== 4 || p[9] !== 1) return null;
  const ihl = (first & 0x0f) * 4;
  return {
    src: `${p[12]}.${p[13]}.${p[14]}.${p[15]}`,
    dst: `${p[16]}.${p[17]}.${p[18]}.${p[19]}`,
    type: p[ihl] ?? -1,
    id: p.readUInt16BE(ihl + 4),
    seq: p.readUInt16BE(ihl + 6),
    payload: Buffer.from(p.subarray(ihl + 8)),
    checksumsValid: fullChecksumsValid(p, 0, p.length),
  };
}

const identity = KeyPair.generate();
const sessions = new NativeTransportSessions(64);
const udp = UdpTunnel.open({ port: 0, offload: true, sessions });
const wg = new WgTunnel(udp, { identity, sessions });
wg.setPeers([{ endpoint: peerEndpoint, key: peerKey }]);

/** Sends packets (each its own buffer) to wireguard-go in one batch through wg.send. */
function sendPackets(packets: readonly Buffer[]): { sent: number; failed: number } {
  const buffer = Buffer.concat(packets);
  const batch = new OutboundBatch(packets.length);
  batch.reset(buffer);
  let at = 0;
  for (const p of packets) {
    if (!batch.pushTo(at, p.length, peerEndpoint)) throw new Error('the batch is full');
    at += p.length;
  }
  const { sent, failed } = wg.send(batch);
  return { sent, failed };
}

function onBatch(batch: PacketBatch, sources: Buffer): void {
  for (let i = 0; i < batch.count; i++) {
    const off = batch.offsets[i]!;
    const len = batch.lengths[i]!;
    const packet = Buffer.from(batch.buffer.subarray(off, off + len));
    const from = decodeEndpoint(sources, i * 18);
    const source = `${from.host}:${from.port}`;
    const echo = parseEcho(packet);
    if (!echo) {
      fail(`onBatch delivered a packet that is not an IPv4 echo (${len} bytes from ${source})`);
      continue;
    }
    if (echo.type === 0) {
      emit('echo-reply', {
        src: echo.src,
        dst: echo.dst,
        id: echo.id,
        seq: echo.seq,
        matches: echo.id === ECHO_ID && echo.payload.equals(ECHO_PAYLOAD),
        checksumsValid: echo.checksumsValid,
        source,
      });
    } else if (echo.type === 8 && echo.dst === LOCAL) {
      const reply = buildEcho({
        src: LOCAL,
        dst: echo.src,
        reply: true,
        id: echo.id,
        seq: echo.seq,
        payload: echo.payload,
      });
      const replySent = sendPackets([reply]);
      emit('echo-request', {
        src: echo.src,
        dst: echo.dst,
        seq: echo.seq,
        checksumsValid: echo.checksumsValid,
        source,
        replySent,
      });
    } else {
      fail(`unexpected ICMP type ${echo.type} ${echo.src} -> ${echo.dst}`);
    }
  }
}

// the sink the burst is counted on: 10.99.0.1 is wireguard-go's address in this namespace, so what arrives here
// went oaknet -> sealed UDP -> wireguard-go -> its TUN -> this namespace's kernel
let sinkCount = 0;
let sinkBad = 0;
const sink = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
sink.on('message', (msg) => {
  if (msg.subarray(0, BURST_MARK.length).equals(BURST_MARK)) sinkCount++;
  else sinkBad++;
});
sink.on('error', (err) => fail(`sink: ${err.message}`));

function burst(n: number, size: number): void {
  const before = { gsoMessages: udp.gsoMessages, sealDropped: udp.sealDropped, sent: udp.counters.sent };
  sinkCount = 0;
  sinkBad = 0;
  const packets: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const payload = Buffer.alloc(size - 28, i & 0xff);
    BURST_MARK.copy(payload);
    packets.push(buildUdp({ src: LOCAL, dst: REMOTE, srcPort: 40000, dstPort: sinkPort, payload }));
  }
  const result = sendPackets(packets);
  emit('burst-sent', {
    ...result,
    gso: udp.offloads.gso,
    gsoMessages: udp.gsoMessages - before.gsoMessages,
    sealDropped: udp.sealDropped - before.sealDropped,
    wireSent: udp.counters.sent - before.sent,
    busy: udp.counters.busy,
  });
  // poll the count until all arrived or the deadline passed (what is lost stays lost)
  const deadline = Date.now() + 5000;
  const check = (): void => {
    if (sinkCount >= n || Date.now() > deadline) {
      emit('burst-received', { count: sinkCount, bad: sinkBad });
      return;
    }
    setTimeout(check, 20);
  };
  check();
}

function command(line: string): void {
  const [name, ...args] = line.trim().split(/\s+/);
  try {
    if (name === 'ping') {
      const request = buildEcho({ src: LOCAL, dst: REMOTE, id: ECHO_ID, seq: 1, payload: ECHO_PAYLOAD });
      emit('sent', sendPackets([request]));
    } else if (name === 'burst') {
      burst(Number(args[0]), Number(args[1]));
    } else if (name === 'status') {
      emit('status', {
        status: wg.status(),
        drops: Object.fromEntries(wg.drops),
        raw: { ...udp.counters, sealDropped: udp.sealDropped, gsoMessages: udp.gsoMessages },
      });
    } else if (name) {
      fail(`unknown command ${name}`);
    }
  } catch (err) {
    fail(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
}

sink.bind(sinkPort, REMOTE, () => {
  wg.start(onBatch, (err) => fail(`tunnel receive: ${err.message}`));
  emit('ready', { port: wg.port, publicKey: identity.publicText(), offloads: udp.offloads });
  createInterface({ input: process.stdin })
    .on('line', command)
    .on('close', () => {
      wg.close();
      sink.close();
    });
});
