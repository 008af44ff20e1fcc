/**
 * @module dataplane/tunnel/tunnel
 * The tunnel contract (wireguard-go's Bind role): the UDP path between ProxyTUN instances on different nodes.
 * It moves batches of datagrams, each to or from its own remote endpoint, and knows nothing of what is inside
 * them. Implementations: `UdpTunnel` (`udp.ts`, recvmmsg/sendmmsg through the addon) and the in-memory
 * `MemoryTunnel` on a `MemorySwitch` (`memory.ts`); every one passes `tunnel.case.ts`.
 *
 * Endpoints are 18 bytes in a Buffer (a 16-byte IPv6 address, IPv4 as ::ffff:a.b.c.d, then a big-endian
 * port) rather than objects: received sources arrive packed in one buffer, can be compared and used as map
 * keys in place, and can be handed straight back to `send` (a reply goes where the request came from) with no
 * per-packet allocation. IPv4 and IPv6 share that one layout, so no code needs `_v6` twins.
 */
import { InvalidInputError } from '../../errors.ts';
import { IpAddress } from '../../addressing/ip.ts';
import type { TunnelOffloadStatus } from '../../protocol/dataplane-status.ts';
import { BatchBuilder, type PacketBatch } from '../tun/tun.ts';

/** Bytes of one encoded endpoint. */
export const ENDPOINT_BYTES = 18;

/** Datagrams to send: a PacketBatch whose packet i goes to the endpoint at endpoints[i * 18]. */
export interface AddressedBatch extends PacketBatch {
  /** Destination endpoint of packet i at i * ENDPOINT_BYTES; at least count * 18 bytes. */
  readonly endpoints: Buffer;
  /**
   * The WireGuard session slot of packet i (at least count entries): a tunnel with transport sessions
   * (`UdpTunnelOptions.sessions`) seals a packet whose slot is >= 0 and never sends it in plaintext; -1 (or
   * no array) sends it as it is.
   */
  readonly sessions?: Int32Array;
}

/** What became of the wire datagrams of one `Tunnel.send`. */
export interface SendResult {
  /** Wire datagrams handed to the network. */
  sent: number;
  /** Wire datagrams not sent: refused (unreachable, too big, wrong family), the socket full, or a super-packet that could not be cut. */
  failed: number;
}

/** A tunnel endpoint's UDP socket (or its in-memory stand-in), moving batches of datagrams. */
export interface Tunnel {
  /** Local port datagrams are received on; never 0 once open. */
  readonly port: number;
  /** Starts delivering received datagrams, one call per batch; datagram i's source endpoint is at sources[i * 18]; call once. Received batches carry no gso words. onError (default: throw) reports a failure that stopped receiving. */
  start(onBatch: (batch: PacketBatch, sources: Buffer) => void, onError?: (err: Error) => void): void;
  /**
   * Sends packets 0..count-1 of `batch`, packet i to the endpoint at batch.endpoints[i * 18], in order. A packet
   * with a nonzero gso word is a super-packet (packet/offload.ts): the tunnel cuts it into MSS-sized wire
   * packets with full checksums and sends those, so the wire only ever carries ordinary IP packets. The result
   * counts wire datagrams; the tunnel reuses the object (read it before the next send). Never throws for an
   * unreachable endpoint; after close nothing is sent.
   */
  send(batch: AddressedBatch): SendResult;
  /** Stops receiving and releases the socket; idempotent; safe inside a callback. */
  close(): void;
  /** What offloads the socket uses and what they did (for status output); absent when it has none. */
  offloadStatus?(): TunnelOffloadStatus | undefined;
}

/** Send-side drop counters that implementations keep (not part of `Tunnel`, which stays small). */
export interface SendCounters {
  /** Datagrams handed to the network. */
  sent: number;
  /** Datagrams refused (unreachable, too big, IPv6 endpoint on an IPv4-only socket, ...). */
  rejected: number;
  /** Datagrams not attempted because the socket buffer was full. */
  busy: number;
}

const V4_MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** Writes host (IPv4 or IPv6 text) and port as an 18-byte endpoint at out[offset]; throws InvalidInputError for bad input. */
export function encodeEndpoint(host: string, port: number, out: Buffer, offset = 0): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidInputError(`bad port ${port}`);
  const address = IpAddress.parse(host);
  const bytes = address.toBytes();
  if (address.family === 4) {
    V4_MAPPED_PREFIX.copy(out, offset);
    out.set(bytes, offset + 12);
  } else {
    out.set(bytes, offset);
  }
  out.writeUInt16BE(port, offset + 16);
}

/** A new 18-byte endpoint buffer for host and port (control path; the data path reuses buffers). */
export function endpoint(host: string, port: number): Buffer {
  const out = Buffer.alloc(ENDPOINT_BYTES);
  encodeEndpoint(host, port, out);
  return out;
}

/** Whether the endpoint at buf[offset] is an IPv4 address (v4-mapped). */
export function isIpv4Endpoint(buf: Buffer, offset = 0): boolean {
  return (
    buf.readUInt32BE(offset) === 0 &&
    buf.readUInt32BE(offset + 4) === 0 &&
    buf.readUInt32BE(offset + 8) === 0xffff
  );
}

/** The endpoint at buf[offset] as canonical text: dotted IPv4 for v4-mapped addresses, RFC 5952 IPv6 otherwise. */
export function decodeEndpoint(buf: Buffer, offset = 0): { host: string; port: number } {
  const port = buf.readUInt16BE(offset + 16);
  if (isIpv4Endpoint(buf, offset)) {
    return { host: `${buf[offset + 12]}.${buf[offset + 13]}.${buf[offset + 14]}.${buf[offset + 15]}`, port };
  }
  return { host: IpAddress.fromBytes(buf.subarray(offset, offset + 16)).toString(), port };
}

/**
 * A map key for the endpoint at buf[offset]: a number for IPv4 (address * 65536 + port, no allocation), a
 * short string for IPv6. Equal endpoints give equal keys; numbers and strings never collide in a Map.
 */
export function endpointKey(buf: Buffer, offset = 0): number | string {
  if (isIpv4Endpoint(buf, offset))
    return buf.readUInt32BE(offset + 12) * 65536 + buf.readUInt16BE(offset + 16);
  return buf.toString('latin1', offset, offset + ENDPOINT_BYTES);
}

/** Whether the endpoints at a[aOffset] and b[bOffset] are equal, compared in place. */
export function endpointEquals(a: Buffer, aOffset: number, b: Buffer, bOffset: number): boolean {
  return a.compare(b, bOffset, bOffset + ENDPOINT_BYTES, aOffset, aOffset + ENDPOINT_BYTES) === 0;
}

/** A BatchBuilder that also records each datagram's destination endpoint, ready for `Tunnel.send`. */
export class OutboundBatch extends BatchBuilder implements AddressedBatch {
  /** Destination endpoint of datagram i at i * 18. */
  readonly endpoints: Buffer;
  /** WireGuard session slot of datagram i (-1: unsealed); pushTo sets it. */
  readonly sessions: Int32Array;

  constructor(capacity: number) {
    super(capacity);
    this.endpoints = Buffer.alloc(capacity * ENDPOINT_BYTES);
    this.sessions = new Int32Array(capacity).fill(-1);
  }

  /**
   * Appends buffer[offset, offset + length) addressed to the endpoint at to[toOffset]; false when full. A
   * nonzero gso word marks an offloaded super-packet, which the tunnel segments when it sends it. `session`
   * (default -1: none) is the WireGuard slot a tunnel with transport sessions seals it with.
   */
  pushTo(offset: number, length: number, to: Buffer, toOffset = 0, gso = 0, session = -1): boolean {
    const i = this.count;
    if (!this.push(offset, length, gso)) return false;
    to.copy(this.endpoints, i * ENDPOINT_BYTES, toOffset, toOffset + ENDPOINT_BYTES);
    this.sessions[i] = session;
    return true;
  }

  /** Sets the WireGuard slot of datagram i (already pushed); -1: send it unsealed. */
  setSession(i: number, slot: number): void {
    if (i < 0 || i >= this.count) throw new RangeError(`no datagram ${i} in a batch of ${this.count}`);
    this.sessions[i] = slot;
  }

  /** Sends everything collected through `tunnel`; returns how many wire datagrams went out. */
  sendThrough(tunnel: Tunnel): number {
    return tunnel.send(this).sent;
  }
}
