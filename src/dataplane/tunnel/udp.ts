/**
 * @module dataplane/tunnel/udp
 * The real tunnel: one non-blocking UDP socket (IPv6 dual-stack, so IPv4 and IPv6 peers share it; IPv4 only
 * on hosts without IPv6) opened by the native addon. It receives with recvmmsg, up to `batchSize` datagrams
 * per system call into one reused buffer, and sends with sendmmsg, each datagram to its own endpoint. Node's
 * dgram would make one system call per datagram in each direction, which caps a proxy at a few hundred
 * thousand packets per second.
 */
import { SystemError, errorMessage } from '../../errors.ts';
import { type NativeIo, loadNativeIo, pollFailure } from '../tun/native.ts';
import type { PacketBatch } from '../tun/tun.ts';
import { ENDPOINT_BYTES, type SendCounters, type Tunnel } from './tunnel.ts';

export interface UdpTunnelOptions {
  /** UDP port to bind (default 0: the kernel picks one; see `port`). */
  port?: number;
  /** Most datagrams per receive batch (default 64, at most 1024). */
  batchSize?: number;
  /** Largest datagram received intact; longer ones are delivered with length 0 (default 2048). */
  maxDatagramBytes?: number;
  /** Free bytes before each received datagram (default 0). */
  headroom?: number;
}

export class UdpTunnel implements Tunnel {
  readonly counters: SendCounters = { sent: 0, rejected: 0, busy: 0 };
  private readonly batch: PacketBatch;
  private readonly sources: Buffer;
  private readonly slotBytes: number;
  private readonly headroom: number;
  private readonly stats = new Uint32Array(2);
  private poll: number | undefined;
  private started = false;
  private closed = false;

  private constructor(
    private readonly io: NativeIo,
    private readonly fd: number,
    readonly port: number,
    /** 6 for a dual-stack socket (IPv4 and IPv6 endpoints), 4 when the host has no IPv6. */
    readonly family: 4 | 6,
    options: UdpTunnelOptions,
  ) {
    const batchSize = options.batchSize ?? 64;
    this.headroom = options.headroom ?? 0;
    this.slotBytes = Math.ceil((this.headroom + (options.maxDatagramBytes ?? 2048)) / 64) * 64;
    const offsets = new Uint32Array(batchSize);
    for (let i = 0; i < batchSize; i++) offsets[i] = i * this.slotBytes + this.headroom;
    this.batch = {
      buffer: Buffer.alloc(batchSize * this.slotBytes),
      offsets,
      lengths: new Uint32Array(batchSize),
      count: 0,
    };
    this.sources = Buffer.alloc(batchSize * ENDPOINT_BYTES);
  }

  /** Binds the socket; throws SystemError (e.g. the port is in use). */
  static open(options: UdpTunnelOptions = {}, io: NativeIo = loadNativeIo()): UdpTunnel {
    const batchSize = options.batchSize ?? 64;
    const maxDatagramBytes = options.maxDatagramBytes ?? 2048;
    const headroom = options.headroom ?? 0;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1024) {
      throw new RangeError(`bad batch size ${batchSize}`);
    }
    if (!Number.isInteger(maxDatagramBytes) || maxDatagramBytes < 1 || maxDatagramBytes > 65535) {
      throw new RangeError(`bad maxDatagramBytes ${maxDatagramBytes}`);
    }
    if (!Number.isInteger(headroom) || headroom < 0 || headroom > 4096)
      throw new RangeError(`bad headroom ${headroom}`);
    let opened: { fd: number; port: number; family: 4 | 6 };
    try {
      opened = io.udpOpen(options.port ?? 0);
    } catch (cause) {
      throw new SystemError(`open UDP tunnel on port ${options.port ?? 0}: ${errorMessage(cause)}`, {
        cause,
      });
    }
    return new UdpTunnel(io, opened.fd, opened.port, opened.family, options);
  }

  start(onBatch: (batch: PacketBatch, sources: Buffer) => void, onError?: (err: Error) => void): void {
    if (this.closed) throw new Error(`UDP tunnel on port ${this.port} is closed`);
    if (this.started) throw new Error(`UDP tunnel on port ${this.port} already started`);
    this.started = true;
    const { batch, sources } = this;
    this.poll = this.io.startPoll(
      this.fd,
      'recvmmsg',
      batch.buffer,
      this.slotBytes,
      this.headroom,
      batch.offsets.length,
      batch.lengths,
      sources,
      (count) => {
        if (count < 0) {
          this.poll = undefined;
          const err = pollFailure(`receive on UDP tunnel port ${this.port}`, count);
          if (onError) onError(err);
          else throw err;
          return;
        }
        batch.count = count;
        onBatch(batch, sources);
      },
    );
  }

  send(buffer: Buffer, offsets: Uint32Array, lengths: Uint32Array, endpoints: Buffer, count: number): number {
    if (this.closed || count === 0) return 0;
    this.stats[0] = 0;
    let sent: number;
    try {
      sent = this.io.sendPackets(this.fd, buffer, offsets, lengths, endpoints, count, this.stats);
    } catch (err) {
      if (err instanceof TypeError || err instanceof RangeError) throw err; // a malformed batch is a bug
      this.counters.rejected += count; // the socket itself failed; nothing else can go out on it
      return 0;
    }
    const rejected = this.stats[0] ?? 0;
    this.counters.sent += sent;
    this.counters.rejected += rejected;
    this.counters.busy += count - sent - rejected;
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll !== undefined) this.io.stopPoll(this.poll);
    this.poll = undefined;
    this.io.closeFd(this.fd);
  }
}
