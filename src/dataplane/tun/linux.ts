/**
 * @module dataplane/tun/linux
 * The real TUN device on Linux, through the native addon (`native/tun.c`): the fd is opened with TUNSETIFF
 * (non-blocking, no packet-info prefix), configured with `ip link set dev NAME mtu MTU up`, read by a libuv
 * poll watcher that fills one reused buffer with up to `batchSize` packets per callback, and written with one
 * write() per packet in a single native call per batch. The device lives in the network namespace of the
 * process that opens it and disappears when it is closed (it is not persistent).
 *
 * With `offload` the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD (checksum, TSO4/6 with ECN, and USO
 * where the kernel has it): reads then deliver TCP (and UDP) super-packets of up to 64 KiB, marked in the
 * batch's `gso` words (packet/offload.ts), into slots that are that large; writes go behind a virtio header,
 * super-packets as they are and runs of consecutive segments of one TCP flow coalesced into one super-packet
 * (one write() for many segments; the receive side of the kernel's own GRO, done in the addon: wireguard-go
 * does it inside its TUN's Write too, tun/offload_linux.go).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SystemError, errorMessage } from '../../errors.ts';
import { type NativeIo, TunOffload, loadNativeIo, pollFailure } from './native.ts';
import type { TunOffloadStatus } from '../../protocol/dataplane-status.ts';
import type { PacketBatch, Tun, WriteCounters } from './tun.ts';

const execFileAsync = promisify(execFile);

export interface LinuxTunOptions {
  /** Interface name, shorter than 16 bytes; '' lets the kernel pick tunN. */
  name: string;
  /** MTU in bytes to set on the device (default 1500). */
  mtu?: number;
  /** Free bytes before each packet read, room for a header written in place (default 0; none is, today). */
  headroom?: number;
  /** Most packets per read batch (default 64, at most 1024). */
  batchSize?: number;
  /** Open one queue of a multi-queue device (IFF_MULTI_QUEUE), so several readers can share it (default false). */
  multiQueue?: boolean;
  /**
   * Packets the kernel queues for the reader (default 10,000; the kernel's own default, 500, overflows under
   * a TCP burst and the losses turn into retransmissions).
   */
  txQueueLength?: number;
  /** Runs `ip` with these arguments (default: execFile of `ip`); injected by tests or a netlink wrapper. */
  runIp?: (args: string[]) => Promise<void>;
  /**
   * Offloads (default false): virtio headers, TSO/USO super-packets on read (batch.gso), GSO and coalesced
   * writes. Read slots become 64 KiB each, so mind batchSize.
   */
  offload?: boolean;
}

/** Offload figures of a LinuxTun opened with `offload`. */
export interface TunOffloadCounters {
  /** Super-packets read (packets with a nonzero gso word). */
  superPacketsRead: number;
  /** write() calls made. */
  writes: number;
  /** Packets that went out coalesced into super-packets. */
  coalesced: number;
  /** Super-packets the kernel refused to take whole (their packets were then written one by one). */
  coalesceRefused: number;
}

/** Largest packet a read with offloads may deliver: a 64 KiB super-packet (IPv6: 40 + a 16-bit payload length). */
const SUPER_PACKET_BYTES = 40 + 65535;

async function runIpCommand(args: string[]): Promise<void> {
  await execFileAsync('ip', args);
}

export class LinuxTun implements Tun {
  readonly counters: WriteCounters = { written: 0, rejected: 0, busy: 0 };
  readonly offloadCounters: TunOffloadCounters = {
    superPacketsRead: 0,
    writes: 0,
    coalesced: 0,
    coalesceRefused: 0,
  };
  private readonly batch: PacketBatch;
  private readonly slotBytes: number;
  private readonly stats = new Uint32Array(5);
  private poll: number | undefined;
  private started = false;
  private closed = false;

  private constructor(
    private readonly io: NativeIo,
    private readonly fd: number,
    readonly name: string,
    readonly mtu: number,
    readonly headroom: number,
    batchSize: number,
    /** TUNSETOFFLOAD bits in force (TunOffload); -1 when opened without offloads (no virtio header). */
    readonly offloads: number,
  ) {
    const room = offloads >= 0 ? Math.max(mtu, SUPER_PACKET_BYTES) : mtu;
    this.slotBytes = Math.ceil((headroom + room) / 64) * 64; // cache-line aligned slots
    const offsets = new Uint32Array(batchSize);
    for (let i = 0; i < batchSize; i++) offsets[i] = i * this.slotBytes + headroom;
    this.batch = {
      buffer: Buffer.alloc(batchSize * this.slotBytes),
      offsets,
      lengths: new Uint32Array(batchSize),
      count: 0,
      ...(offloads >= 0 ? { gso: new Uint32Array(batchSize) } : {}),
    };
  }

  /** Opens (creating if needed) the device, sets its MTU and brings it up; throws SystemError on failure. */
  static async open(options: LinuxTunOptions, io: NativeIo = loadNativeIo()): Promise<LinuxTun> {
    const mtu = options.mtu ?? 1500;
    const headroom = options.headroom ?? 0;
    const batchSize = options.batchSize ?? 64;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`bad MTU ${mtu}`);
    if (!Number.isInteger(headroom) || headroom < 0 || headroom > 4096) {
      throw new RangeError(`bad headroom ${headroom}`);
    }
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1024) {
      throw new RangeError(`bad batch size ${batchSize}`);
    }
    let opened: { fd: number; name: string; offloads: number };
    try {
      opened = io.openTun(options.name, options.multiQueue ?? false, options.offload ?? false);
    } catch (cause) {
      throw new SystemError(`open TUN "${options.name}": ${errorMessage(cause)}`, { cause });
    }
    try {
      await (options.runIp ?? runIpCommand)([
        'link',
        'set',
        'dev',
        opened.name,
        'mtu',
        String(mtu),
        'txqueuelen',
        String(options.txQueueLength ?? 10_000),
        'up',
      ]);
    } catch (cause) {
      io.closeFd(opened.fd);
      throw new SystemError(`configure TUN "${opened.name}": ${errorMessage(cause)}`, { cause });
    }
    return new LinuxTun(io, opened.fd, opened.name, mtu, headroom, batchSize, opened.offloads);
  }

  offloadStatus(): TunOffloadStatus | undefined {
    if (this.offloads < 0) return undefined;
    const c = this.offloadCounters;
    return {
      features: Object.entries(TunOffload)
        .filter(([, bit]) => (this.offloads & bit) !== 0)
        .map(([name]) => name.toLowerCase()),
      super_packets_read: c.superPacketsRead,
      writes: c.writes,
      coalesced_packets: c.coalesced,
      coalesce_refused: c.coalesceRefused,
    };
  }

  start(onBatch: (batch: PacketBatch) => void, onError?: (err: Error) => void): void {
    if (this.closed) throw new Error(`TUN ${this.name} is closed`);
    if (this.started) throw new Error(`TUN ${this.name} already started`);
    this.started = true;
    const batch = this.batch;
    const gso = batch.gso;
    this.poll = this.io.startPoll(
      this.fd,
      gso ? 'read-vnet' : 'read',
      {
        buffer: batch.buffer,
        slotSize: this.slotBytes,
        headroom: this.headroom,
        maxBatch: batch.offsets.length,
        lengths: batch.lengths,
        extra: gso ?? null,
      },
      (count) => {
        if (count < 0) {
          this.poll = undefined;
          const err = pollFailure(`read from TUN ${this.name}`, count);
          if (onError) onError(err);
          else throw err;
          return;
        }
        batch.count = count;
        if (gso) for (let i = 0; i < count; i++) if (gso[i] !== 0) this.offloadCounters.superPacketsRead++;
        onBatch(batch);
      },
    );
  }

  write(batch: PacketBatch): number {
    if (this.closed || batch.count === 0) return 0;
    this.stats.fill(0);
    let accepted: number;
    try {
      if (this.offloads >= 0) {
        accepted = this.io.writeVnetPackets(this.fd, batch, this.stats, true);
        this.offloadCounters.writes += this.stats[2] ?? 0;
        this.offloadCounters.coalesced += this.stats[3] ?? 0;
        this.offloadCounters.coalesceRefused += this.stats[4] ?? 0;
      } else {
        accepted = this.io.writePackets(this.fd, batch, this.stats);
      }
    } catch (err) {
      if (err instanceof TypeError || err instanceof RangeError) throw err; // a malformed batch is a bug
      // The fd itself failed (the device was deleted); the reader reports that through onError.
      this.counters.rejected += batch.count;
      return 0;
    }
    const rejected = this.stats[0] ?? 0;
    this.counters.written += accepted;
    this.counters.rejected += rejected;
    this.counters.busy += batch.count - accepted - rejected;
    return accepted;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll !== undefined) this.io.stopPoll(this.poll);
    this.poll = undefined;
    this.io.closeFd(this.fd);
  }
}
