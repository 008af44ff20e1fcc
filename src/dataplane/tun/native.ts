/**
 * @module dataplane/tun/native
 * Types and loads the oaknet_native addon (`native/oaknet_native.c`). It makes the system calls Node cannot:
 * opening a TUN device (ioctl TUNSETIFF), and batched packet I/O straight into caller-owned buffers (read and
 * write on a TUN fd, recvmmsg and sendmmsg on a UDP socket), with readiness from a libuv poll watcher on
 * Node's own event loop. `tun/linux.ts` and `tunnel/udp.ts` build on it; nothing else should.
 *
 * Conventions shared by every function: all are synchronous; packets are located by parallel
 * `offsets`/`lengths` Uint32Arrays into one buffer; a UDP endpoint is 18 bytes (16-byte IPv6 address, IPv4 as
 * ::ffff:a.b.c.d, then a big-endian port). Failures throw an Error carrying `code` (errno name such as
 * 'EBUSY'), `errno` and `syscall`; bad arguments throw TypeError/RangeError. Nothing aborts the process.
 */
import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';
import { SystemError, errorMessage } from '../../errors.ts';

/** Where node-gyp puts the addon, relative to this file. */
const ADDON_PATH = '../../../native/build/Release/oaknet_native.node';

/**
 * Which system call the poller reads with. 'read-vnet': a TUN opened with offloads (each read starts with a
 * virtio_net_hdr, turned into the packet's gso word in `extra`). 'recvmmsg-gro': a UDP socket with UDP_GRO
 * (a slot may hold a run of datagrams; each becomes an entry of its own: offset in `extra`, length, source).
 */
export type PollMode = 'read' | 'read-vnet' | 'recvmmsg' | 'recvmmsg-gro';

/** TUNSETOFFLOAD bits (linux/if_tun.h), as `openTun` reports the ones the kernel accepted. */
export const TunOffload = {
  Csum: 0x01,
  Tso4: 0x02,
  Tso6: 0x04,
  TsoEcn: 0x08,
  Uso4: 0x20,
  Uso6: 0x40,
} as const;

/**
 * Most datagrams one UDP GRO buffer holds (newer kernels' UDP_MAX_SEGMENTS): a 'recvmmsg-gro' poller needs
 * lengths/extra/addrs for this many per slot.
 */
export const GRO_MAX_SEGMENTS = 128;

/** The addon's functions (see native/oaknet_native.c). */
export interface NativeIo {
  /**
   * Opens /dev/net/tun (non-blocking, close-on-exec) as a layer-3 TUN without packet info, attached to `name`
   * ('' = kernel picks tunN) in the caller's network namespace. With `offload`: IFF_VNET_HDR (10-byte
   * virtio_net_hdr on every read and write) and the most of TUN_F_CSUM/TSO4/TSO6/TSO_ECN/USO4/USO6 the kernel
   * accepts; `offloads` is that set (TunOffload bits; 0 = header but no offloads), -1 without `offload`.
   */
  openTun(
    name: string,
    multiQueue: boolean,
    offload?: boolean,
  ): { fd: number; name: string; offloads: number };
  /**
   * Opens a non-blocking UDP socket on `bindPort` (0 = ephemeral): IPv6 dual-stack on [::], or IPv4 on 0.0.0.0
   * when the host has no IPv6; 4 MiB buffers. With `offload`: `gso` says sendmsg takes UDP_SEGMENT, `gro` that
   * UDP_GRO is on (reads must then use 'recvmmsg-gro' with 64 KiB slots).
   */
  udpOpen(
    bindPort: number,
    offload?: boolean,
  ): { fd: number; port: number; family: 4 | 6; gso: boolean; gro: boolean };
  /**
   * Watches `fd` for readability. Per wake-up it reads up to maxBatch packets (packet i at
   * buffer[i * slotSize + headroom], its length in lengths[i], 0 = truncated; in 'recvmmsg' mode its source
   * endpoint at addrs[i * 18]) and calls onBatch(count) once; after a few full batches it yields to the loop.
   * 'read-vnet' also writes packet i's gso word to extra[i]; there a packet the kernel could not describe in a
   * virtio header (read() fails with EINVAL; the kernel has dropped it) is an entry of length 0 and gso word 0,
   * and 64 of them in a row end the batch. 'recvmmsg-gro' writes entry i's offset in buffer to extra[i]
   * (lengths, extra and addrs then need GRO_MAX_SEGMENTS entries per slot, and count is entries); a buffer
   * whose data or control message was cut is one entry of length 0. onBatch(-errno) means reading failed
   * and the poller has stopped. Returns a handle for stopPoll.
   */
  startPoll(
    fd: number,
    mode: PollMode,
    buffer: Uint8Array,
    slotSize: number,
    headroom: number,
    maxBatch: number,
    lengths: Uint32Array,
    addrs: Uint8Array | null,
    onBatch: (count: number) => void,
    extra?: Uint32Array | null,
  ): number;
  /** Stops a poller (safe inside its onBatch); it no longer keeps the process alive. False if it had already stopped. */
  stopPoll(handle: number): boolean;
  /** write()s packets 0..count-1 to a TUN fd in order; returns how many were accepted. Rejected packets are skipped (stats[0] += count, stats[1] = last errno); EAGAIN stops early. */
  writePackets(
    fd: number,
    buffer: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    count: number,
    stats?: Uint32Array,
  ): number;
  /**
   * sendmmsg()s datagrams 0..count-1, datagram i to the endpoint at addrs[i * 18]; returns how many were sent.
   * Rejected ones (unreachable, too big, wrong family) are skipped (stats as writePackets); EAGAIN stops early.
   * With `gso` (a socket whose udpOpen reported gso): each run of datagrams to one endpoint, of one size but a
   * shorter last, goes as one UDP_SEGMENT message (at most 64 datagrams, 65,507 bytes); a run the kernel refuses
   * is resent datagram by datagram and counted in stats[2], and after an EIO refusal (no checksum offload on
   * the route) the rest of the call goes without GSO. stats[3] = GSO messages the kernel took. Each stat as far
   * as stats is long.
   */
  sendPackets(
    fd: number,
    buffer: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint8Array,
    count: number,
    stats?: Uint32Array,
    gso?: boolean,
  ): number;
  /**
   * Writes packets 0..count-1 to a TUN opened with offloads, each behind its virtio_net_hdr: zeros for gso
   * word 0, a GSO header for a super-packet. With `coalesce`, a run of consecutive TCP segments of one flow
   * (contiguous, plain ACK/PSH, equal sizes but a shorter last, no IP options or fragments, valid checksums)
   * goes as ONE super-packet (writev, no copy); one the kernel refuses is written again packet by packet. A
   * gso word of 0xffff or more (no virtio header carries it) means one segment: that is written as an
   * ordinary packet with its checksum completed (the buffer is not changed). Returns packets accepted; stats
   * gets [rejected, lastErrno, writes, coalesced, refused super-packets], as far as it is long.
   */
  writeVnetPackets(
    fd: number,
    buffer: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    gso: Uint32Array | null,
    count: number,
    stats?: Uint32Array,
    coalesce?: boolean,
  ): number;
  /**
   * Turns packets from..count-1 into wire packets back to back in `out`: gso word 0 (or no gso) copies the
   * packet, a super-packet is cut into segments with their own IP/TCP/UDP headers and full checksums; each
   * output gets its packet's endpoint when both endpoint buffers are given. Stops before the first packet
   * that no longer fits and returns its index (count when all fit); stats[0] = outputs, stats[1] = packets
   * dropped (cannot be segmented, or too big for an empty `out`). Throws RangeError when the out arrays have
   * no room for a single output.
   */
  segmentPackets(
    buffer: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    gso: Uint32Array | null,
    endpoints: Uint8Array | null,
    from: number,
    count: number,
    out: Uint8Array,
    outOffsets: Uint32Array,
    outLengths: Uint32Array,
    outEndpoints: Uint8Array | null,
    stats: Uint32Array,
  ): number;
  /**
   * What writeVnetPackets(..., coalesce = true) would write, copied to `out` instead (for tests): output i
   * (virtio_net_hdr, then the packet or super-packet) at out[outOffsets[i]], outLengths[i] bytes. Returns the
   * number of outputs; throws RangeError when out or the arrays are too small.
   */
  coalescePackets(
    buffer: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    gso: Uint32Array | null,
    count: number,
    out: Uint8Array,
    outOffsets: Uint32Array,
    outLengths: Uint32Array,
  ): number;
  /** Stops any poller on `fd`, then closes it. */
  closeFd(fd: number): void;
}

/** Loads the addon (Node caches it); throws SystemError saying how to build it when it is missing. */
export function loadNativeIo(): NativeIo {
  try {
    return createRequire(import.meta.url)(ADDON_PATH) as NativeIo;
  } catch (cause) {
    throw new SystemError(
      `cannot load the native addon (${errorMessage(cause)}); build it with "npm run build:native"`,
      { cause },
    );
  }
}

/** Whether the addon is built, so tests can say why they skip. */
export function nativeIoAvailable(): boolean {
  try {
    loadNativeIo();
    return true;
  } catch {
    return false;
  }
}

/** A SystemError for the negative errno that a poller's onBatch reports when reading fails. */
export function pollFailure(what: string, negativeErrno: number): SystemError {
  let name: string;
  try {
    name = getSystemErrorName(negativeErrno);
  } catch {
    name = `errno ${-negativeErrno}`;
  }
  return new SystemError(`${what} failed (${name}); reading has stopped`);
}
