/**
 * @module dataplane/tunnel/memory
 * In-memory tunnels for tests, so several ProxyTUN instances can talk inside one process. A `MemorySwitch` is
 * a tiny network: each `MemoryTunnel` on it holds an endpoint (host:port), and `send` copies every datagram to
 * the tunnel holding its destination endpoint, which delivers it later, in batches, with the sender's endpoint
 * as its source, as UDP would. A datagram to an endpoint nobody holds is lost and counted, not an error (UDP
 * again). `createMemoryTunnelPair()` is the common two-node case.
 *
 * Like every Tunnel it cuts the super-packets it is asked to send into their wire packets itself, here in
 * TypeScript (packet/segment.ts; the UDP tunnel does the same in C), so tests over it need no compiled addon.
 */
import { SystemError } from '../../errors.ts';
import { segmentPacket } from '../packet/segment.ts';
import { PacketQueue } from '../tun/packet-queue.ts';
import { BatchBuilder, type PacketBatch } from '../tun/tun.ts';
import { TRANSPORT_OVERHEAD_MAX, type TransportSessions } from '../wireguard/sessions.ts';
import {
  type AddressedBatch,
  ENDPOINT_BYTES,
  type SendCounters,
  type SendResult,
  type Tunnel,
  decodeEndpoint,
  endpoint,
  endpointKey,
} from './tunnel.ts';

/** Largest UDP payload over IPv4; longer datagrams are refused, as the kernel does (EMSGSIZE). */
const MAX_DATAGRAM_BYTES = 65507;
/** Scratch for the wire packets of one super-packet: bytes and packets (a super-packet needing more is dropped). */
const SEGMENT_SCRATCH_BYTES = 1 << 20;
const SEGMENT_SCRATCH_PACKETS = 1024;

export interface MemoryTunnelOptions {
  /** Most datagrams per delivered batch (default 64). */
  batchSize?: number;
  /** Largest datagram delivered intact; longer ones arrive with length 0 (default 2048). */
  maxDatagramBytes?: number;
  /** Free bytes before each delivered datagram (default 0). */
  headroom?: number;
  /** Most datagrams waiting for the receiver; more are lost (default 4096). */
  queueCapacity?: number;
  /** Sessions for packets sent with a slot (WireGuard transport); without them such packets fail. */
  sessions?: TransportSessions;
}

export class MemorySwitch {
  /** Datagrams sent to an endpoint nobody holds, or to a receiver whose queue was full or closed. */
  lost = 0;
  /** Sees every datagram on the wire (tests: a capture point), before it is delivered or lost; valid during the call. */
  onDatagram: ((datagram: Buffer, to: Buffer, from: Buffer) => void) | undefined;
  private readonly tunnels = new Map<number | string, MemoryTunnel>();
  private nextPort = 40000;

  /** Attaches a tunnel at host:port (port 0 picks a free one); throws SystemError if the endpoint is taken. */
  open(host = '127.0.0.1', port = 0, options: MemoryTunnelOptions = {}): MemoryTunnel {
    let chosen = port;
    if (chosen === 0) {
      do chosen = this.nextPort++;
      while (this.tunnels.has(endpointKey(endpoint(host, chosen))));
    }
    const at = endpoint(host, chosen);
    const key = endpointKey(at);
    if (this.tunnels.has(key)) throw new SystemError(`memory tunnel endpoint ${host}:${chosen} is in use`);
    const tunnel = new MemoryTunnel(this, at, options);
    this.tunnels.set(key, tunnel);
    return tunnel;
  }

  /** Hands one datagram to the tunnel at to[toOffset]; false (and counted as lost) if nobody takes it. */
  carry(datagram: Buffer, to: Buffer, toOffset: number, from: Buffer): boolean {
    this.onDatagram?.(datagram, to.subarray(toOffset, toOffset + ENDPOINT_BYTES), from);
    const receiver = this.tunnels.get(endpointKey(to, toOffset));
    if (receiver?.receive(datagram, from)) return true;
    this.lost++;
    return false;
  }

  /** Detaches a closed tunnel so its endpoint can be reused. */
  detach(tunnel: MemoryTunnel): void {
    const key = endpointKey(tunnel.endpoint);
    if (this.tunnels.get(key) === tunnel) this.tunnels.delete(key);
  }
}

export class MemoryTunnel implements Tunnel {
  readonly counters: SendCounters = { sent: 0, rejected: 0, busy: 0 };
  readonly port: number;
  /** Host part of this tunnel's endpoint. */
  readonly host: string;
  private readonly queue: PacketQueue;
  private closed = false;
  private readonly result: SendResult = { sent: 0, failed: 0 };
  /** The wire packets of the super-packet being sent (made on the first one). */
  private wire: BatchBuilder | undefined;
  /** Sessions that packets with a slot (AddressedBatch.sessions) are sealed with. */
  private readonly sessions: TransportSessions | undefined;
  private slot = -1;
  private readonly sealed = Buffer.alloc(MAX_DATAGRAM_BYTES + TRANSPORT_OVERHEAD_MAX);

  constructor(
    private readonly network: MemorySwitch,
    /** This tunnel's own 18-byte endpoint: the source of what it sends. */
    readonly endpoint: Buffer,
    options: MemoryTunnelOptions = {},
  ) {
    const { host, port } = decodeEndpoint(endpoint);
    this.host = host;
    this.port = port;
    this.sessions = options.sessions;
    const headroom = options.headroom ?? 0;
    this.queue = new PacketQueue({
      batchSize: options.batchSize ?? 64,
      slotBytes: headroom + (options.maxDatagramBytes ?? 2048),
      headroom,
      capacity: options.queueCapacity ?? 4096,
    });
  }

  start(onBatch: (batch: PacketBatch, sources: Buffer) => void, _onError?: (err: Error) => void): void {
    if (this.closed) throw new Error(`memory tunnel ${this.host}:${this.port} is closed`);
    this.queue.start(onBatch); // throws "already started" on a second call
  }

  send(batch: AddressedBatch): SendResult {
    const result = this.result;
    result.sent = 0;
    result.failed = 0;
    if (this.closed) return result;
    const { buffer, offsets, lengths, gso, endpoints } = batch;
    for (let i = 0; i < batch.count; i++) {
      const offset = offsets[i] ?? 0;
      const length = lengths[i] ?? 0;
      const word = gso ? (gso[i] ?? 0) : 0;
      this.slot = batch.sessions?.[i] ?? -1;
      if (word === 0) {
        this.carryOne(buffer, offset, length, endpoints, i * ENDPOINT_BYTES);
        continue;
      }
      // a super-packet: cut it into its wire packets, each its own datagram to the same endpoint
      const wire = (this.wire ??= newScratch());
      wire.reset();
      const n = segmentPacket(buffer, offset, length, word, wire);
      if (n < 0) {
        result.failed++; // malformed, or needs more than the whole scratch: one packet that cannot go out
        continue;
      }
      for (let k = 0; k < n; k++)
        this.carryOne(wire.buffer, wire.offsets[k]!, wire.lengths[k]!, endpoints, i * ENDPOINT_BYTES);
    }
    this.counters.sent += result.sent;
    return result;
  }

  private carryOne(buffer: Buffer, offset: number, length: number, to: Buffer, toOffset: number): void {
    if (this.slot >= 0) {
      // sealed with the packet's session, as the UDP tunnel does in its native send
      const sealed =
        this.sessions?.seal(this.slot, buffer.subarray(offset, offset + length), this.sealed, 0) ?? -1;
      if (sealed < 0) {
        this.counters.rejected++;
        this.result.failed++;
        return;
      }
      buffer = this.sealed;
      offset = 0;
      length = sealed;
    }
    if (length > MAX_DATAGRAM_BYTES) {
      this.counters.rejected++;
      this.result.failed++;
      return;
    }
    this.network.carry(buffer.subarray(offset, offset + length), to, toOffset, this.endpoint);
    this.result.sent++;
  }

  /** Queues a datagram arriving from the switch; false if this tunnel cannot take it. */
  receive(datagram: Buffer, from: Buffer): boolean {
    return this.queue.push(datagram, from);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.close();
    this.network.detach(this);
  }
}

function newScratch(): BatchBuilder {
  const scratch = new BatchBuilder(SEGMENT_SCRATCH_PACKETS);
  scratch.reset(Buffer.alloc(SEGMENT_SCRATCH_BYTES));
  return scratch;
}

/** Two tunnels on a fresh switch, at 10.255.0.1:50103 and 10.255.0.2:50103. */
export function createMemoryTunnelPair(options: MemoryTunnelOptions = {}): [MemoryTunnel, MemoryTunnel] {
  const network = new MemorySwitch();
  return [network.open('10.255.0.1', 50103, options), network.open('10.255.0.2', 50103, options)];
}
