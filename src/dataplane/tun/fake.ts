/**
 * @module dataplane/tun/fake
 * An in-memory TUN for tests. `inject` plays the kernel sending a packet into the device; `written` records
 * copies of what the consumer wrote. Delivery is batched and asynchronous like the real reader (see
 * `packet-queue.ts`), and write applies the kernel's one check (the IP version nibble), so code that passes with
 * FakeTun behaves the same with LinuxTun. `FakeTun.link(a, b)` cross-connects two fakes, so that two in-process
 * proxies can exchange packets through their "kernels".
 *
 * With `offload` it plays a TUN opened with offloads: injected packets may carry a gso word (a super-packet,
 * packet/offload.ts), which batches deliver in `gso`, and written packets keep theirs (`writtenGso`). It does
 * not coalesce writes (LinuxTun does that in the addon). Without `offload` a packet written with a nonzero gso
 * word is refused, as it could never have come from this device.
 */
import { PacketQueue } from './packet-queue.ts';
import type { PacketBatch, Tun, WriteCounters } from './tun.ts';

export interface FakeTunOptions {
  /** Interface name (default "faketun0"). */
  name?: string;
  /** Largest packet in bytes (default 1500). */
  mtu?: number;
  /** Free bytes before each delivered packet (default 0). */
  headroom?: number;
  /** Most packets per delivered batch (default 64). */
  batchSize?: number;
  /** Most injected packets waiting for the reader; more are dropped (default 4096). */
  queueCapacity?: number;
  /** Carry gso words (a TUN with offloads; default false). Read slots then hold 64 KiB super-packets. */
  offload?: boolean;
}

export class FakeTun implements Tun {
  readonly name: string;
  readonly mtu: number;
  readonly headroom: number;
  /** Copies of every packet the device accepted from write(), in order. */
  readonly written: Buffer[] = [];
  /** The gso word of each packet in `written`. */
  readonly writtenGso: number[] = [];
  readonly offload: boolean;
  readonly counters: WriteCounters = { written: 0, rejected: 0, busy: 0 };
  /** Called with each accepted packet (a copy) and its gso word after it is recorded; lets tests wait for writes. */
  onWrite: ((packet: Buffer, gso: number) => void) | undefined;
  private readonly queue: PacketQueue;
  private readonly peers: FakeTun[] = [];
  private started = false;
  private closed = false;

  constructor(options: FakeTunOptions = {}) {
    this.name = options.name ?? 'faketun0';
    this.mtu = options.mtu ?? 1500;
    this.headroom = options.headroom ?? 0;
    this.offload = options.offload ?? false;
    this.queue = new PacketQueue({
      batchSize: options.batchSize ?? 64,
      slotBytes: this.headroom + (this.offload ? Math.max(this.mtu, 40 + 65535) : this.mtu),
      headroom: this.headroom,
      capacity: options.queueCapacity ?? 4096,
      gso: this.offload,
    });
  }

  /** Connects two fakes both ways: what one's consumer writes, the other's consumer reads. */
  static link(a: FakeTun, b: FakeTun): void {
    a.peers.push(b);
    b.peers.push(a);
  }

  /**
   * Delivers a copy of `packet` to the consumer in a later batch; false if dropped (queue full or closed). A
   * nonzero gso word (offload only) makes it a super-packet.
   */
  inject(packet: Buffer, gso = 0): boolean {
    if (gso !== 0 && !this.offload) throw new Error(`FakeTun ${this.name} has no offloads`);
    return this.queue.push(packet, undefined, 0, gso);
  }

  start(onBatch: (batch: PacketBatch) => void, _onError?: (err: Error) => void): void {
    if (this.closed) throw new Error(`FakeTun ${this.name} is closed`);
    if (this.started) throw new Error(`FakeTun ${this.name} already started`);
    this.started = true;
    this.queue.start((batch) => onBatch(batch));
  }

  write(batch: PacketBatch): number {
    if (this.closed) return 0;
    let accepted = 0;
    for (let i = 0; i < batch.count; i++) {
      const offset = batch.offsets[i] ?? 0;
      const length = batch.lengths[i] ?? 0;
      const gso = batch.gso?.[i] ?? 0;
      const version = length > 0 ? (batch.buffer[offset] ?? 0) >> 4 : 0;
      if ((version !== 4 && version !== 6) || (gso !== 0 && !this.offload)) {
        this.counters.rejected++; // the kernel answers EINVAL
        continue;
      }
      const packet = Buffer.from(batch.buffer.subarray(offset, offset + length));
      this.written.push(packet);
      this.writtenGso.push(gso);
      for (const peer of this.peers) peer.inject(packet, peer.offload ? gso : 0);
      accepted++;
      this.onWrite?.(packet, gso);
    }
    this.counters.written += accepted;
    return accepted;
  }

  close(): void {
    this.closed = true;
    this.queue.close();
  }
}
