/**
 * @module dataplane/tun/tun
 * The TUN device contract: the virtual NIC through which ProxyTUN sees the IP packets of local workloads.
 *
 * Why it looks like this: a Node process can afford only a few hundred thousand system calls and JS calls per
 * second, so packets move in batches (one callback per batch, one native call per write), and the reader
 * fills one reused buffer, so the data path allocates nothing. A reader can leave `headroom` free bytes in
 * front of each packet, room to write a header in place (wireguard-go's read offset, tailscale's
 * PacketStartOffset); nothing in oaknet writes one today (the tunnel carries bare IP packets, as upstream
 * does), so every caller opens its devices with headroom 0. Implementations: `LinuxTun` (`linux.ts`) and
 * `FakeTun` (`fake.ts`); every one passes `tun.case.ts`.
 */
import type { TunOffloadStatus } from '../../protocol/dataplane-status.ts';

/**
 * A run of packets inside one buffer. A batch handed to a callback is valid only during that callback: the
 * reader reuses its buffer. The consumer may rewrite packets in place and write or send them from the same
 * buffer before it returns.
 */
export interface PacketBatch {
  /** Holds every packet: packet i is buffer[offsets[i], offsets[i] + lengths[i]). */
  buffer: Buffer;
  /** Start of each packet in `buffer`; at least `count` entries. */
  offsets: Uint32Array;
  /**
   * Length of each packet in bytes; 0 marks a packet lost on read (drop it): it did not fit its slot, or the
   * kernel could not hand it over (a TUN with offloads) or cut a GRO buffer's control data (the tunnel).
   */
  lengths: Uint32Array;
  /** Number of packets; entries at and beyond it are stale. */
  count: number;
  /**
   * Offloads (optional): packet i's gso word (packet/offload.ts). 0 = an ordinary packet with complete
   * checksums; n > 0 = a TCP/UDP super-packet of up to 64 KiB to be cut into n-byte segments, its transport
   * checksum partial. Absent means all 0. Only a TUN opened with offloads reads nonzero words; such a TUN may
   * be given them to write, and `Tunnel.send` takes them (it cuts super-packets into ordinary wire packets),
   * but batches received from a tunnel never carry them.
   */
  gso?: Uint32Array;
}

/** A TUN device that reads and writes batches of IP packets. */
export interface Tun {
  /** Interface name as the kernel (or the fake) knows it. */
  readonly name: string;
  /** Largest packet in bytes the device carries; the reader has room for this much after the headroom. */
  readonly mtu: number;
  /** Free bytes guaranteed in front of every packet the reader delivers (0 unless asked for; none ask today). */
  readonly headroom: number;
  /** Starts delivering received packets, one call per batch; call once. onError (default: throw) reports a failure that stopped reading. */
  start(onBatch: (batch: PacketBatch) => void, onError?: (err: Error) => void): void;
  /** Writes packets 0..count-1 in order; returns how many the device accepted (the rest are dropped and counted). After close it returns 0. */
  write(batch: PacketBatch): number;
  /** Stops reading and releases the device; idempotent; safe inside a callback. */
  close(): void;
  /** What offloads the device uses and what they did (for status output); absent when it has none. */
  offloadStatus?(): TunOffloadStatus | undefined;
}

/** Write-side drop counters that implementations keep (not part of `Tun`, which stays small). */
export interface WriteCounters {
  /** Packets the device accepted. */
  written: number;
  /** Packets the device refused (not IPv4/IPv6, device down, ...). */
  rejected: number;
  /** Packets not attempted because the device was full. */
  busy: number;
}

/**
 * Collects (offset, length) pairs of packets to write or send, in arrays allocated once. Typical use: reset it
 * to the batch being processed, push the packets that go out, then `tun.write(builder)`.
 */
export class BatchBuilder implements PacketBatch {
  buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /** Gso word of each packet (0 unless pushed with one). */
  readonly gso: Uint32Array;
  count = 0;
  /** Whether a packet with a nonzero gso word was pushed since the last reset. */
  offloaded = false;

  constructor(
    /** Most packets the builder holds. */
    readonly capacity: number,
  ) {
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.gso = new Uint32Array(capacity);
    this.buffer = Buffer.alloc(0);
  }

  /** Empties the builder; packets pushed next live in `buffer` (default: the current one). */
  reset(buffer: Buffer = this.buffer): void {
    this.buffer = buffer;
    this.count = 0;
    this.offloaded = false;
  }

  /** Appends packet buffer[offset, offset + length) with its gso word; returns false (and appends nothing) when full. */
  push(offset: number, length: number, gso = 0): boolean {
    if (this.count >= this.capacity) return false;
    this.offsets[this.count] = offset;
    this.lengths[this.count] = length;
    this.gso[this.count] = gso;
    if (gso !== 0) this.offloaded = true;
    this.count++;
    return true;
  }
}
