/**
 * @module dataplane/tunnel/udp
 * The real tunnel: one non-blocking UDP socket (IPv6 dual-stack, so IPv4 and IPv6 peers share it; IPv4 only
 * on hosts without IPv6) opened by the native addon (`native/udp.c`). It receives with recvmmsg, up to
 * `batchSize` datagrams per system call into one reused buffer, and sends with sendmmsg, each packet to its
 * own endpoint. Node's dgram would make one system call per datagram in each direction, which caps a proxy at
 * a few hundred thousand packets per second.
 *
 * Super-packets (a nonzero gso word: a TUN with offloads read them) are cut into MSS-sized wire packets with
 * full checksums inside the same native send call, in the addon's scratch memory (the payload is not even
 * copied), as wireguard-go's bind coalesces inside Send: the wire only carries ordinary IP packets, so nodes
 * with and without offloads (and upstream NetManagers) interoperate.
 *
 * With `offload` (where the kernel has them): sends use UDP GSO, so a run of equal-sized datagrams to one peer
 * (a segmented TCP super-packet) is one message that travels the stack as one buffer and is cut at the NIC
 * (or not at all, between namespaces); receives use UDP_GRO, so the kernel hands over such runs as one buffer
 * with their segment size, which the reader splits back into datagrams in place. On the wire nothing changes:
 * every datagram is one raw IP packet, as without offloads.
 */
import { SystemError, errorMessage } from '../../errors.ts';
import {
  GRO_MAX_SEGMENTS,
  type NativeIo,
  type NativeSendFailure,
  loadNativeIo,
  pollFailure,
} from '../tun/native.ts';
import type { TunnelOffloadStatus } from '../../protocol/dataplane-status.ts';
import type { PacketBatch } from '../tun/tun.ts';
import type { NativeSendSessions } from '../tun/native.ts';
import type { NativeTransportSessions } from '../wireguard/sessions-native.ts';
import {
  type AddressedBatch,
  ENDPOINT_BYTES,
  type SendCounters,
  type SendResult,
  type Tunnel,
} from './tunnel.ts';

export interface UdpTunnelOptions {
  /** UDP port to bind (default 0: the kernel picks one; see `port`). */
  port?: number;
  /**
   * Address to bind (an IPv4 or IPv6 literal; the socket is then of that family only). Default [::], dual
   * stack (0.0.0.0 on hosts without IPv6).
   */
  address?: string;
  /** Most datagrams per receive batch (default 64, at most 1024). */
  batchSize?: number;
  /**
   * Largest datagram received intact (default 2048); a longer one is delivered with length 0. With UDP GRO on
   * (`offload`), slots hold at least GRO_BUFFER_BYTES (a 64 KiB run), so every datagram arrives intact.
   */
  maxDatagramBytes?: number;
  /** Free bytes before each received datagram (default 0; nothing writes a header there today). */
  headroom?: number;
  /**
   * UDP GSO on send and UDP GRO on receive where the kernel has them (default false). GRO needs headroom 0
   * (datagrams of a coalesced run follow each other; with headroom the socket gets no offloads, GSO neither)
   * and takes 64 KiB slots, so mind batchSize.
   */
  offload?: boolean;
  /**
   * WireGuard transport sessions (native): a packet whose `AddressedBatch.sessions` slot is >= 0 is sealed
   * with it inside the native send (each wire datagram of a super-packet on its own; equal sizes stay one GSO
   * run). A datagram that cannot be sealed is dropped (`sealDropped`), never sent in plaintext; without
   * sessions, packets with a slot >= 0 are dropped too. Receiving is unchanged: the owner opens batches
   * (`NativeTransportSessions.open`).
   */
  sessions?: NativeTransportSessions;
}

/**
 * Wire datagrams sent and not sent by a sendPackets call that threw because the socket failed: the addon's
 * Error says (NativeSendFailure). One without the counts (the call failed before sending anything, e.g. out of
 * memory) sent nothing, and its packets count as one datagram each, as the wire count is not known here.
 */
function sendFailureCounts(err: unknown, packets: number): { sent: number; unsent: number } {
  const { sent, unsent } = (err ?? {}) as Partial<NativeSendFailure>;
  if (typeof sent === 'number' && typeof unsent === 'number') return { sent, unsent };
  return { sent: 0, unsent: packets };
}

/** Room for the largest buffer UDP GRO hands over: a run of datagrams of about 64 KiB in all (with a margin). */
const GRO_BUFFER_BYTES = 65536 + 64;

/** GSO runs refused in a row (none taken in between) after which sends stop using GSO for good. */
export const GSO_REFUSALS_BEFORE_OFF = 8;

export class UdpTunnel implements Tunnel {
  readonly counters: SendCounters = { sent: 0, rejected: 0, busy: 0 };
  /** Runs of datagrams the kernel refused to send as one GSO message (then sent one by one). */
  gsoRefused = 0;
  /** GSO messages (runs of 2 or more datagrams) the kernel took. */
  gsoMessages = 0;
  /** Wire datagrams of sealed packets dropped: no keys, exhausted counter, too big sealed, or no sessions. */
  sealDropped = 0;
  /**
   * Whether sends use UDP GSO, and receives UDP GRO. `gso` turns off by itself after GSO_REFUSALS_BEFORE_OFF
   * refused runs in a row (the route cannot take GSO, e.g. no checksum offload on its device).
   */
  readonly offloads: { gso: boolean; gro: boolean };
  private gsoRefusedInARow = 0;
  private readonly batch: PacketBatch;
  private readonly sources: Buffer;
  private readonly slotBytes: number;
  private readonly headroom: number;
  private readonly slots: number;
  /**
   * sendPackets' stats: [rejected, lastErrno, refused runs, GSO messages, busy, dropped super-packets, sealed
   * datagrams dropped].
   */
  private readonly stats = new Uint32Array(7);
  /** sendPackets' sessions argument, reused: slots are the batch's. */
  private readonly sendSessions: NativeSendSessions;
  private poll: number | undefined;
  private readonly result: SendResult = { sent: 0, failed: 0 };
  private started = false;
  private closed = false;

  private constructor(
    private readonly io: NativeIo,
    private readonly fd: number,
    readonly port: number,
    /** 6 for a dual-stack socket (IPv4 and IPv6 endpoints), 4 when the host has no IPv6. */
    readonly family: 4 | 6,
    options: UdpTunnelOptions,
    offloads: { gso: boolean; gro: boolean },
  ) {
    this.offloads = offloads;
    this.sendSessions = { table: options.sessions?.handle ?? null, slots: new Int32Array(0) };
    const batchSize = (this.slots = options.batchSize ?? 64);
    this.headroom = options.headroom ?? 0;
    const room = Math.max(options.maxDatagramBytes ?? 2048, offloads.gro ? GRO_BUFFER_BYTES : 0);
    this.slotBytes = Math.ceil((this.headroom + room) / 64) * 64;
    // with GRO a slot may hold up to GRO_MAX_SEGMENTS datagrams, each an entry of its own (the reader fills in offsets)
    const entries = offloads.gro ? batchSize * GRO_MAX_SEGMENTS : batchSize;
    const offsets = new Uint32Array(entries);
    if (!offloads.gro) for (let i = 0; i < batchSize; i++) offsets[i] = i * this.slotBytes + this.headroom;
    this.batch = {
      buffer: Buffer.alloc(batchSize * this.slotBytes),
      offsets,
      lengths: new Uint32Array(entries),
      count: 0,
    };
    this.sources = Buffer.alloc(entries * ENDPOINT_BYTES);
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
    let opened: { fd: number; port: number; family: 4 | 6; gso: boolean; gro: boolean };
    // GRO packs a run of datagrams back to back (no headroom in front of the later ones), and a socket with
    // UDP_GRO on must be read in GRO mode: with headroom the socket gets no offloads at all, GSO included
    const offload = options.offload === true;
    try {
      opened = io.udpOpen(options.port ?? 0, offload && headroom === 0, options.address);
    } catch (cause) {
      const where = options.address !== undefined ? `${options.address} port` : 'port';
      throw new SystemError(`open UDP socket on ${where} ${options.port ?? 0}: ${errorMessage(cause)}`, {
        cause,
      });
    }
    const offloads = { gso: offload && opened.gso, gro: offload && headroom === 0 && opened.gro };
    return new UdpTunnel(io, opened.fd, opened.port, opened.family, options, offloads);
  }

  offloadStatus(): TunnelOffloadStatus | undefined {
    if (!this.offloads.gso && !this.offloads.gro && this.gsoRefused === 0) return undefined;
    return { gso: this.offloads.gso, gro: this.offloads.gro, gso_refused: this.gsoRefused };
  }

  start(onBatch: (batch: PacketBatch, sources: Buffer) => void, onError?: (err: Error) => void): void {
    if (this.closed) throw new Error(`UDP tunnel on port ${this.port} is closed`);
    if (this.started) throw new Error(`UDP tunnel on port ${this.port} already started`);
    this.started = true;
    const { batch, sources } = this;
    const gro = this.offloads.gro;
    this.poll = this.io.startPoll(
      this.fd,
      gro ? 'recvmmsg-gro' : 'recvmmsg',
      {
        buffer: batch.buffer,
        slotSize: this.slotBytes,
        headroom: this.headroom,
        maxBatch: this.slots,
        lengths: batch.lengths,
        addrs: sources,
        extra: gro ? batch.offsets : null,
      },
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

  send(batch: AddressedBatch): SendResult {
    const { result, stats } = this;
    result.sent = 0;
    result.failed = 0;
    if (this.closed || batch.count === 0) return result;
    stats.fill(0);
    let sent: number;
    let unsent = 0;
    try {
      let sessions: NativeSendSessions | null = null;
      if (batch.sessions) {
        sessions = this.sendSessions;
        sessions.slots = batch.sessions;
      }
      sent = this.io.sendPackets(this.fd, this.family, batch, stats, this.offloads.gso, sessions);
    } catch (err) {
      if (err instanceof TypeError || err instanceof RangeError) throw err; // a malformed batch is a bug
      // The socket itself failed; nothing else can go out on it. What went out before it did (earlier
      // sendmmsg calls of this batch) counts as sent, the wire datagrams that did not as rejected.
      ({ sent, unsent } = sendFailureCounts(err, batch.count));
    }
    const rejected = (stats[0] ?? 0) + unsent;
    const refused = stats[2] ?? 0;
    const busy = stats[4] ?? 0;
    const gsoMessages = stats[3] ?? 0;
    const sealDropped = stats[6] ?? 0;
    this.gsoMessages += gsoMessages;
    this.sealDropped += sealDropped;
    if (gsoMessages > 0) this.gsoRefusedInARow = 0; // GSO messages went out: it works
    if (refused > 0) {
      this.gsoRefused += refused;
      this.gsoRefusedInARow += refused;
      if (this.gsoRefusedInARow >= GSO_REFUSALS_BEFORE_OFF) this.offloads.gso = false;
    }
    this.counters.sent += sent;
    this.counters.rejected += rejected;
    this.counters.busy += busy;
    result.sent = sent;
    result.failed = rejected + busy + (stats[5] ?? 0) + sealDropped;
    return result;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll !== undefined) this.io.stopPoll(this.poll);
    this.poll = undefined;
    this.io.closeFd(this.fd);
  }
}
