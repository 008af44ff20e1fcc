/**
 * @module dataplane/tun/native
 * Types and loads the oaknet_native addon (`native/`, one C file per concern: see `native/oaknet.h`). It makes
 * the system calls Node cannot: opening a TUN device (ioctl TUNSETIFF), and batched packet I/O straight into
 * caller-owned buffers (read and write on a TUN fd, with virtio headers and coalescing where the TUN has
 * offloads; recvmmsg and sendmmsg on a UDP socket, with UDP GRO/GSO, cutting super-packets on send), with
 * readiness from a libuv poll watcher on Node's own event loop. `tun/linux.ts` and `tunnel/udp.ts` build on
 * it; nothing else should, but tests and test doubles, which may load its test build (`loadNativeTestIo`).
 *
 * Conventions shared by every function: all are synchronous; packets travel as batch objects (the shape of
 * PacketBatch: one buffer, parallel `offsets`/`lengths` Uint32Arrays, a count, optional gso words); a UDP
 * endpoint is 18 bytes (16-byte IPv6 address, IPv4 as ::ffff:a.b.c.d, then a big-endian port). Failures throw
 * an Error carrying `code` (errno name such as 'EBUSY'), `errno` and `syscall`; bad arguments throw
 * TypeError/RangeError. Nothing aborts the process.
 */
import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';
import { SystemError, errorMessage } from '../../errors.ts';

/** Where node-gyp puts the addon, relative to this file. */
const ADDON_PATH = '../../../native/build/Release/oaknet_native.node';
/** ... and its test build (the same code, plus the exports of native/test_exports.c). */
const TEST_ADDON_PATH = '../../../native/build/Release/oaknet_native_test.node';

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

/** A batch of packets as the addon reads it (PacketBatch has this shape): packet i is buffer[offsets[i], +lengths[i]). */
export interface NativeBatch {
  buffer: Uint8Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
  count: number;
  /** Gso word per packet (packet/offload.ts); absent or null: all 0. */
  gso?: Uint32Array | null | undefined;
}

/** A NativeBatch whose packet i goes to the endpoint at endpoints[i * 18] (AddressedBatch has this shape). */
export interface NativeAddressedBatch extends NativeBatch {
  endpoints: Uint8Array;
}

/**
 * Where a poller reads to: maxBatch slots of slotSize bytes in `buffer`, packet i at i * slotSize + headroom,
 * its length in lengths[i] (0 = lost: truncated, or dropped by the kernel). 'recvmmsg' modes write entry i's
 * source endpoint to addrs[i * 18]; 'read-vnet' writes packet i's gso word to extra[i]; 'recvmmsg-gro' writes
 * entry i's offset in buffer to extra[i], and there lengths, extra and addrs need GRO_MAX_SEGMENTS entries
 * per slot.
 */
export interface PollRing {
  buffer: Uint8Array;
  slotSize: number;
  headroom: number;
  maxBatch: number;
  lengths: Uint32Array;
  /** 'recvmmsg' and 'recvmmsg-gro' only. */
  addrs?: Uint8Array | null;
  /** 'read-vnet' and 'recvmmsg-gro' only. */
  extra?: Uint32Array | null;
}

/** The addon's functions (native/glue.c exports them; see native/oaknet.h for which file does what). */
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
   * Opens a non-blocking UDP socket on `bindPort` (0 = ephemeral): IPv6 dual-stack on [::] (`family` 6), or
   * IPv4 on 0.0.0.0 when the host has no IPv6 (`family` 4, which sendPackets must be given); 4 MiB buffers.
   * With `offload`: `gso` says sendmsg takes UDP_SEGMENT, `gro` that UDP_GRO is on (reads must then use
   * 'recvmmsg-gro' with 64 KiB slots).
   */
  udpOpen(
    bindPort: number,
    offload?: boolean,
    /** An IPv4 or IPv6 literal to bind to (IPv6: that family only); default [::], dual stack. */
    bindAddress?: string,
  ): { fd: number; port: number; family: 4 | 6; gso: boolean; gro: boolean };
  /**
   * Watches `fd` for readability. Per wake-up it reads up to ring.maxBatch packets into `ring` (PollRing) and
   * calls onBatch(count) once; after a few full batches it yields to the loop. In 'read-vnet' mode a packet
   * the kernel could not describe in a virtio header (read() fails with EINVAL; the kernel has dropped it) is
   * an entry of length 0 and gso word 0, and 64 of them in a row end the batch. In 'recvmmsg-gro' mode count
   * is entries (datagrams), and a buffer whose data or control message was cut is one entry of length 0.
   * onBatch(-errno) means reading failed and the poller has stopped. The poller holds on to the ring's arrays.
   * Returns a handle for stopPoll.
   */
  startPoll(fd: number, mode: PollMode, ring: PollRing, onBatch: (count: number) => void): number;
  /**
   * Opens `path` inside the directory `root` as that root sees it (openat2 RESOLVE_IN_ROOT: symlinks and ..
   * stay inside; RESOLVE_NO_XDEV: no mount point crossed, EXDEV; no magic links) for writing, created 0644 if
   * missing, non-blocking, never through a symlink at its end. Returns the fd (close it with fs.closeSync).
   */
  openInRoot(root: string, path: string): number;
  /** Sets the calling thread's nice value (-20..19): setpriority on its thread ID. */
  setThreadNice(nice: number): void;
  /** Stops a poller (safe inside its onBatch); it no longer keeps the process alive. False if it had already stopped. */
  stopPoll(handle: number): boolean;
  /** write()s packets 0..count-1 of `batch` to a TUN fd in order (its gso words are not read); returns how many were accepted. Rejected packets are skipped (stats[0] = how many, stats[1] = last errno); EAGAIN stops early. */
  writePackets(fd: number, batch: NativeBatch, stats?: Uint32Array): number;
  /**
   * Writes packets 0..count-1 of `batch` to a TUN opened with offloads, each behind its virtio_net_hdr: zeros
   * for gso word 0, a GSO header for a super-packet. With `coalesce`, a run of consecutive TCP segments of one
   * flow (contiguous, plain ACK/PSH, equal sizes but a shorter last, no IP options or fragments, valid
   * checksums) goes as ONE super-packet (writev, no copy); one the kernel refuses is written again packet by
   * packet. A gso word of 0xffff or more (no virtio header carries it) means one segment: that is written as
   * an ordinary packet with its checksum completed (the buffer is not changed). A super-packet no virtio
   * header can describe (not an unfragmented TCP/UDP packet, or more than 65,535 bytes of headers) is
   * rejected with EINVAL, unwritten. Returns packets accepted; stats gets [rejected, lastErrno, writes,
   * coalesced, refused super-packets], as far as it is long.
   */
  writeVnetPackets(fd: number, batch: NativeBatch, stats?: Uint32Array, coalesce?: boolean): number;
  /**
   * Sends packets 0..count-1 of `batch` on a UDP socket of `family` (as udpOpen reported it), packet i to the
   * endpoint at batch.endpoints[i * 18], in order; returns how many wire datagrams were sent. A packet with
   * gso word 0 is one datagram. A super-packet (gso word n > 0, TCP or UDP, partial checksum) is cut here
   * into wire packets of n payload bytes with their own IP/TCP/UDP headers and full checksums, in scratch
   * memory of the addon (the payload is not copied); one that cannot be cut (not an unfragmented TCP/UDP
   * packet, or more segments than that scratch holds: 1,024, and 256 KiB of their headers) is dropped.
   * Rejected datagrams (unreachable, too big, wrong family) are skipped; EAGAIN stops. With `gso` (a socket
   * whose udpOpen reported gso): each run of datagrams to one endpoint, of one size but a shorter last, goes
   * as one UDP_SEGMENT message (at most 64 datagrams, 65,507 bytes); a run the kernel refuses is resent
   * datagram by datagram, and after an EIO refusal (no checksum offload on the route) the rest of the call
   * goes without GSO. stats gets [rejected, lastErrno, refused runs, GSO messages taken, busy (datagrams not
   * tried: the socket was full), dropped super-packets, sealed datagrams dropped (see NativeSendSessions)], as
   * far as it is long. With `sessions`, packets are sealed as WireGuard transport messages on the way. When
   * the socket itself fails (EBADF, ENOTSOCK, EFAULT) it throws a NativeSendFailure, which says how many wire datagrams went out
   * before and how many did not; stats is then filled in as far as the call got.
   */
  sendPackets(
    fd: number,
    family: 4 | 6,
    batch: NativeAddressedBatch,
    stats?: Uint32Array,
    gso?: boolean,
    sessions?: NativeSendSessions | null,
  ): number;
  /**
   * A table of `capacity` (1..2^20) WireGuard transport sessions (native/wg.c): the handle frees its native
   * contexts when it is garbage-collected, or at once with wgClose. Every wg* call throws TypeError for
   * something that is not such a handle, an Error (code ERR_WG_CLOSED) for a closed one, RangeError for a slot
   * outside 0..capacity-1.
   */
  wgSessionsCreate(capacity: number): WgSessionsHandle;
  /** Zeroes every session's keys and frees the table now; later calls with the handle throw; idempotent. */
  wgClose(table: WgSessionsHandle): void;
  /**
   * Installs 32-byte keys in `slot` (TransportSessions.install): resets its counter, replay window and stats.
   * RangeError when localIndex (u32) is installed in another slot or a key is not 32 bytes.
   */
  wgInstall(
    table: WgSessionsHandle,
    slot: number,
    send: Uint8Array,
    recv: Uint8Array,
    localIndex: number,
    remoteIndex: number,
  ): void;
  /** Forgets the slot's keys (zeroed); a slot without keys is left as it is. */
  wgRemove(table: WgSessionsHandle, slot: number): void;
  /** Writes the slot's SESSION_STAT_FIELDS (6) numbers into out (SessionStat order). */
  wgStats(table: WgSessionsHandle, slot: number, out: Float64Array): void;
  /**
   * Opens datagrams 0..count-1 of `batch` in place (TransportSessions.open): verdicts[i] (at least count
   * entries) is the slot or an OpenVerdict; an opened datagram's offsets[i] grows by 16 and lengths[i] becomes
   * its trimmed plaintext's length. Works on GRO batches (any offsets inside the buffer).
   */
  wgOpen(table: WgSessionsHandle, batch: NativeBatch, verdicts: Int32Array): void;
  /**
   * Seals one packet (at most 65,535 bytes) with `slot` into out[outOffset...]: the message's length, or -1
   * when the slot has no keys or its counter is exhausted. RangeError when out has no room for 32 + the packet
   * padded to 16 bytes after outOffset.
   */
  wgSeal(
    table: WgSessionsHandle,
    slot: number,
    packet: Uint8Array,
    out: Uint8Array,
    outOffset: number,
  ): number;
  /** Stops any poller on `fd`, then closes it. */
  closeFd(fd: number): void;
}

/** A native WireGuard sessions table (an opaque napi_external; wgSessionsCreate makes it). */
export type WgSessionsHandle = { readonly __brand: 'WgSessionsHandle' };

/**
 * sendPackets' sessions: packet i of the batch goes out as WireGuard transport messages sealed with slots[i]
 * when that is >= 0 (each wire datagram of a super-packet is sealed on its own, equal sizes stay one GSO run);
 * -1 sends it as it is. table null: packets with a slot >= 0 are dropped. A datagram that cannot be sealed (no
 * keys, exhausted counter, larger than 65,507 bytes sealed) is dropped and counted in stats[6]; none of a
 * sealed packet ever goes out in plaintext. slots needs at least count entries, each -1 or a slot of table.
 */
export interface NativeSendSessions {
  table: WgSessionsHandle | null;
  slots: Int32Array;
}

/**
 * What sendPackets throws when the socket fails (or its send scratch cannot be allocated): the errno Error
 * every addon call throws, with where the batch had got to, in wire datagrams. sent + unsent + stats' rejected
 * and busy are all the batch's wire datagrams (super-packets that cannot be cut are in stats' dropped).
 */
export interface NativeSendFailure extends Error {
  code: string;
  errno: number;
  syscall: string;
  /** Wire datagrams sent before the failure (by earlier sendmmsg calls of the same batch). */
  sent: number;
  /** Wire datagrams not sent because of it. */
  unsent: number;
}

/** Where segmentPackets and coalescePackets copy their outputs: output i at buffer[offsets[i], +lengths[i]). */
export interface NativeOutputs {
  buffer: Uint8Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
  /** segmentPackets: output i's endpoint at endpoints[i * 18] (copied only when the input has endpoints too). */
  endpoints?: Uint8Array | null;
}

/**
 * The test build of the addon (oaknet_native_test.node, compiled with OAKNET_TEST_EXPORTS): everything
 * NativeIo has, and two functions that copy out what the data path hands the kernel, so tests can look at it.
 * Production code never loads it.
 */
export interface NativeTestIo extends NativeIo {
  /**
   * The wire packets sendPackets makes of packets from..count-1, back to back in out.buffer: gso word 0 copies
   * the packet, a super-packet is cut into segments with their own IP/TCP/UDP headers and full checksums; each
   * output gets its packet's endpoint when batch.endpoints and out.endpoints are both given. Stops before the
   * first packet that no longer fits and returns its index (count when all fit); stats[0] = outputs,
   * stats[1] = packets dropped (cannot be segmented, or too big for an empty out). Throws RangeError when the
   * out arrays have no room for a single output.
   */
  segmentPackets(
    batch: NativeBatch & { endpoints?: Uint8Array | null },
    from: number,
    out: NativeOutputs,
    stats: Uint32Array,
  ): number;
  /**
   * What writeVnetPackets(fd, batch, stats, true) would write, copied to out: output i (virtio_net_hdr, then
   * the packet or super-packet) at out.buffer[out.offsets[i]], out.lengths[i] bytes. Returns the number of
   * outputs; throws RangeError when out is too small.
   */
  coalescePackets(batch: NativeBatch, out: NativeOutputs): number;
}

function load(path: string): unknown {
  try {
    return createRequire(import.meta.url)(path);
  } catch (cause) {
    throw new SystemError(
      `cannot load the native addon (${errorMessage(cause)}); build it with "npm run build:native"`,
      { cause },
    );
  }
}

/** Loads the addon (Node caches it); throws SystemError saying how to build it when it is missing. */
export function loadNativeIo(): NativeIo {
  return load(ADDON_PATH) as NativeIo;
}

/** Loads the test build of the addon (tests and test doubles only; `npm install` builds it beside the other). */
export function loadNativeTestIo(): NativeTestIo {
  return load(TEST_ADDON_PATH) as NativeTestIo;
}

/**
 * Whether the addon loads. The tests that need it check this first, so that without a build they fail with a
 * message saying how to make one (none of them skips).
 */
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
