/**
 * @module dataplane/tun/packet-queue
 * An in-memory stand-in for the native batch reader, shared by `FakeTun` and the memory tunnel. Packets pushed
 * in are copied into a bounded queue and delivered later (setImmediate), in batches, from one reused buffer laid
 * out exactly like the native reader's: slot i starts at i * slotBytes, its packet after `headroom` bytes.
 * Delivery is asynchronous on purpose: a consumer that writes into a linked peer, which writes back, never
 * re-enters its own callback while its batch buffer is still in use, just as with a real device.
 */
import type { PacketBatch } from './tun.ts';

/** Bytes of one source endpoint, the same layout as `tunnel.ts` ENDPOINT_BYTES. */
const SOURCE_BYTES = 18;

export interface PacketQueueOptions {
  /** Most packets per delivered batch. */
  batchSize: number;
  /** Bytes per slot, headroom included; longer packets are delivered with length 0 (truncated). */
  slotBytes: number;
  /** Free bytes before each delivered packet. */
  headroom: number;
  /** Most packets waiting; beyond it pushes are dropped and counted, like a full device queue. */
  capacity: number;
  /** Deliver each packet's gso word in `batch.gso` (a TUN with offloads; default false). */
  gso?: boolean;
}

export class PacketQueue {
  /** The batch handed to the consumer; reused for every delivery. */
  readonly batch: PacketBatch;
  /** Source endpoint of packet i at i * 18 (zeros when none was given). */
  readonly sources: Buffer;
  /** Packets dropped because the queue was full. */
  dropped = 0;
  private readonly waiting: Array<{ packet: Buffer; source: Buffer | undefined; gso: number }> = [];
  private head = 0;
  private deliver: ((batch: PacketBatch, sources: Buffer) => void) | undefined;
  private timer: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(private readonly options: PacketQueueOptions) {
    const offsets = new Uint32Array(options.batchSize);
    for (let i = 0; i < options.batchSize; i++) offsets[i] = i * options.slotBytes + options.headroom;
    this.batch = {
      buffer: Buffer.alloc(options.batchSize * options.slotBytes),
      offsets,
      lengths: new Uint32Array(options.batchSize),
      count: 0,
      ...(options.gso ? { gso: new Uint32Array(options.batchSize) } : {}),
    };
    this.sources = Buffer.alloc(options.batchSize * SOURCE_BYTES);
  }

  /** Queues a copy of `packet` (and of its 18-byte source endpoint, and its gso word); false if dropped (full or closed). */
  push(packet: Buffer, source?: Buffer, sourceOffset = 0, gso = 0): boolean {
    if (this.closed || this.waiting.length - this.head >= this.options.capacity) {
      this.dropped++;
      return false;
    }
    this.waiting.push({
      packet: Buffer.from(packet),
      source: source ? Buffer.from(source.subarray(sourceOffset, sourceOffset + SOURCE_BYTES)) : undefined,
      gso,
    });
    this.schedule();
    return true;
  }

  /** Starts delivering, one batch per event-loop turn; throws if already started or closed. */
  start(deliver: (batch: PacketBatch, sources: Buffer) => void): void {
    if (this.closed) throw new Error('packet queue is closed');
    if (this.deliver) throw new Error('packet queue already started');
    this.deliver = deliver;
    this.schedule();
  }

  /** Drops everything waiting and delivers nothing more; idempotent. */
  close(): void {
    this.closed = true;
    this.waiting.length = 0;
    this.head = 0;
    if (this.timer) clearImmediate(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.deliver && !this.closed && !this.timer && this.head < this.waiting.length) {
      this.timer = setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.timer = undefined;
    const deliver = this.deliver;
    if (!deliver || this.closed) return;
    const { batchSize, slotBytes, headroom } = this.options;
    const { buffer, lengths, gso } = this.batch;
    let n = 0;
    while (n < batchSize && this.head < this.waiting.length) {
      const item = this.waiting[this.head++];
      if (!item) break;
      const room = slotBytes - headroom;
      const fits = item.packet.length <= room;
      if (fits) item.packet.copy(buffer, n * slotBytes + headroom);
      lengths[n] = fits ? item.packet.length : 0;
      if (gso) gso[n] = item.gso;
      if (item.source) item.source.copy(this.sources, n * SOURCE_BYTES);
      else this.sources.fill(0, n * SOURCE_BYTES, (n + 1) * SOURCE_BYTES);
      n++;
    }
    if (this.head === this.waiting.length || this.head > 4096) {
      this.waiting.splice(0, this.head);
      this.head = 0;
    }
    this.batch.count = n;
    this.schedule(); // before delivering, so a throwing consumer does not stall the queue
    if (n > 0) deliver(this.batch, this.sources);
  }
}
