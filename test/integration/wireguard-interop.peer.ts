/**
 * The TypeScript side of `wireguard-interop.test.ts`: a WireGuard peer made of oaknet's handshake
 * (handshake.ts) and JsTransportSessions on a node:dgram socket, run by the test inside the namespace where
 * Debian's wireguard-go runs (`ip netns exec NS node --import tsx wireguard-interop.peer.ts`).
 *
 * Environment: WG_PEER_PUBLIC (wireguard-go's public key, wg's base64), WG_PEER_PORT (its UDP port on
 * 127.0.0.1). It prints one JSON object a line on stdout (`event` names it) and takes commands a line on stdin:
 *   -> {"event":"ready","port":P,"publicKey":K}        after binding 127.0.0.1:P
 *   <- initiate                                          start a handshake as the initiator (scenario a)
 *   <- initiate PSK                                      the same with a preshared key (wg's base64; scenario d)
 *   <- under-load                                        act as a responder under load (scenario c): answer
 *                                                        initiations without a valid MAC2 with a cookie reply
 *   -> {"event":"cookie-sent",...}                       it did so
 *   -> {"event":"responded",...}                         it answered an initiation from wireguard-go (scenario b)
 *   -> {"event":"echo-request",...}                      it opened wireguard-go's transport message with the
 *                                                        echo request of `ping` and sealed the reply
 *   -> {"event":"handshake-complete",...}                wireguard-go's response to its initiation verified;
 *                                                        a keepalive went out, then an echo request
 *   -> {"event":"echo-reply",...}                        it opened the echo reply to that request
 *   -> {"event":"error","message":...}                   anything it refused that it should not have
 * It exits when stdin closes.
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { buildEcho, fullChecksumsValid } from '../../src/dataplane/packet/build.ts';
import { MessageType } from '../../src/dataplane/wireguard/constants.ts';
import { consumeCookieReply, CookieChecker } from '../../src/dataplane/wireguard/cookie.ts';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  messageMac1,
  type InitiatorState,
} from '../../src/dataplane/wireguard/handshake.ts';
import { KeyPair, parseKey } from '../../src/dataplane/wireguard/keys.ts';
import { timestampAfter } from '../../src/dataplane/wireguard/primitives.ts';
import { TRANSPORT_OVERHEAD_MAX } from '../../src/dataplane/wireguard/sessions.ts';
import { JsTransportSessions } from '../../src/dataplane/wireguard/transport-js.ts';

/** Slots of the two sessions: the one wireguard-go initiated, and the one this side initiated. */
const RESPONDER_SLOT = 0;
const INITIATOR_SLOT = 1;
const ECHO_ID = 0x0a4b;
const ECHO_PAYLOAD = Buffer.from('oaknet speaks WireGuard');

const peerPublic = parseKey(process.env.WG_PEER_PUBLIC ?? '', 'WG_PEER_PUBLIC');
const peerPort = Number(process.env.WG_PEER_PORT);
const local = KeyPair.generate();
const sessions = new JsTransportSessions(2);
const socket = dgram.createSocket('udp4');
let lastTimestamp: Buffer = Buffer.alloc(12);
let pending: InitiatorState | undefined;
let cookie: Uint8Array | undefined;
const cookies = new CookieChecker(local.publicKey);
let underLoad = false;

function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function send(message: Uint8Array): void {
  socket.send(message, peerPort, '127.0.0.1');
}

function sealAndSend(slot: number, packet: Uint8Array): void {
  const out = Buffer.alloc(packet.length + TRANSPORT_OVERHEAD_MAX);
  const n = sessions.seal(slot, packet, out, 0);
  if (n < 0) emit('error', { message: `slot ${slot} cannot seal` });
  else send(out.subarray(0, n));
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
    payload: p.subarray(ihl + 8),
    checksumsValid: fullChecksumsValid(p, 0, p.length),
  };
}

/** The source of a datagram as the cookie binds it: IPv4 address bytes and the port, big-endian. */
function sourceBytes(address: string, port: number): Buffer {
  const out = Buffer.alloc(6);
  address.split('.').forEach((octet, i) => (out[i] = Number(octet)));
  out.writeUInt16BE(port, 4);
  return out;
}

function onInitiation(message: Buffer, source: Buffer): void {
  if (!cookies.checkMac1(message)) return emit('error', { message: 'an initiation with a bad MAC1' });
  const mac2Valid = cookies.checkMac2(message, source);
  if (underLoad && !mac2Valid) {
    const mac1 = messageMac1(message);
    if (!mac1) return emit('error', { message: 'no MAC1' });
    send(cookies.createReply(message.readUInt32LE(4), mac1, source));
    return emit('cookie-sent', { senderIndex: message.readUInt32LE(4) });
  }
  const got = consumeInitiation(local, message);
  if (!got) return emit('error', { message: 'an initiation did not verify' });
  if (!got.peerPublic.equals(peerPublic))
    return emit('error', { message: 'an initiation from an unknown peer' });
  if (!timestampAfter(got.timestamp, lastTimestamp))
    return emit('error', { message: 'a replayed initiation' });
  lastTimestamp = got.timestamp;
  const localIndex = randomInt(2 ** 32);
  const response = createResponse(got.state, localIndex);
  if (!response) return emit('error', { message: 'could not respond' });
  sessions.install(RESPONDER_SLOT, response.keys.send, response.keys.recv, localIndex, response.remoteIndex);
  send(response.message);
  emit('responded', { localIndex, remoteIndex: response.remoteIndex, mac2Valid });
}

function onResponse(message: Buffer): void {
  if (!pending) return emit('error', { message: 'a response without an initiation' });
  const done = consumeResponse(pending, message);
  if (!done) return emit('error', { message: 'the response did not verify' });
  sessions.install(INITIATOR_SLOT, done.keys.send, done.keys.recv, pending.senderIndex, done.remoteIndex);
  pending = undefined;
  // whitepaper 6.5: the initiator sends first; with nothing queued, a keepalive confirms the session
  sealAndSend(INITIATOR_SLOT, new Uint8Array(0));
  emit('handshake-complete', { remoteIndex: done.remoteIndex, keepaliveSent: true });
  sealAndSend(
    INITIATOR_SLOT,
    buildEcho({ src: '10.99.0.2', dst: '10.99.0.1', id: ECHO_ID, seq: 1, payload: ECHO_PAYLOAD }),
  );
}

function onTransport(message: Buffer): void {
  const batch = {
    buffer: message,
    offsets: Uint32Array.of(0),
    lengths: Uint32Array.of(message.length),
    count: 1,
  };
  const verdicts = new Int32Array(1);
  sessions.open(batch, verdicts);
  const slot = verdicts[0] ?? -1;
  if (slot < 0) return emit('error', { message: `transport message refused: verdict ${slot}` });
  const plain = message.subarray(batch.offsets[0], (batch.offsets[0] ?? 0) + (batch.lengths[0] ?? 0));
  if (plain.length === 0) return emit('keepalive-received', { slot });
  const echo = parseEcho(plain);
  if (!echo) return emit('error', { message: `unexpected packet ${plain.toString('hex')}` });
  const fields = { slot, ...echo, payload: echo.payload.toString('hex'), length: plain.length };
  if (echo.type === 8) {
    sealAndSend(
      slot,
      buildEcho({
        src: echo.dst,
        dst: echo.src,
        reply: true,
        id: echo.id,
        seq: echo.seq,
        payload: echo.payload,
      }),
    );
    emit('echo-request', fields);
  } else if (echo.type === 0) {
    emit('echo-reply', { ...fields, matches: echo.id === ECHO_ID && echo.payload.equals(ECHO_PAYLOAD) });
  }
}

socket.on('message', (message, rinfo) => {
  switch (message.length > 0 ? message[0] : -1) {
    case MessageType.Initiation:
      return onInitiation(message, sourceBytes(rinfo.address, rinfo.port));
    case MessageType.Response:
      return onResponse(message);
    case MessageType.CookieReply: {
      const held = consumeCookieReply(message, peerPublic, pending?.mac1);
      if (held) cookie = held.cookie;
      return emit('cookie', { accepted: held !== null });
    }
    case MessageType.Transport:
      return onTransport(message);
    default:
      return emit('error', { message: `unknown datagram of ${message.length} bytes` });
  }
});

socket.bind(0, '127.0.0.1', () => {
  emit('ready', { port: socket.address().port, publicKey: local.publicText() });
});

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'under-load') {
    underLoad = true;
    return emit('under-load');
  }
  const [command, pskText] = line.trim().split(' ');
  if (command !== 'initiate') return emit('error', { message: `unknown command ${line}` });
  const psk = pskText === undefined ? undefined : parseKey(pskText, 'preshared key');
  const senderIndex = randomInt(2 ** 32);
  const init = createInitiation(local, peerPublic, psk, senderIndex, Date.now(), cookie);
  pending = init.state;
  send(init.message);
  emit('initiated', { senderIndex, psk: psk !== undefined });
});
process.stdin.on('end', () => {
  sessions.close();
  socket.close();
});
