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

/** Which system call the poller reads with. */
export type PollMode = 'read' | 'recvmmsg';

/** The addon's functions (see native/oaknet_native.c). */
export interface NativeIo {
  /** Opens /dev/net/tun (non-blocking, close-on-exec) as a layer-3 TUN without packet info, attached to `name` ('' = kernel picks tunN) in the caller's network namespace. */
  openTun(name: string, multiQueue: boolean): { fd: number; name: string };
  /** Opens a non-blocking UDP socket on `bindPort` (0 = ephemeral): IPv6 dual-stack on [::], or IPv4 on 0.0.0.0 when the host has no IPv6; 4 MiB buffers. */
  udpOpen(bindPort: number): { fd: number; port: number; family: 4 | 6 };
  /**
   * Watches `fd` for readability. Per wake-up it reads up to maxBatch packets (packet i at
   * buffer[i * slotSize + headroom], its length in lengths[i], 0 = truncated; in 'recvmmsg' mode its source
   * endpoint at addrs[i * 18]) and calls onBatch(count) once; after a few full batches it yields to the loop.
   * onBatch(-errno) means reading failed and the poller has stopped. Returns a handle for stopPoll.
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
  /** sendmmsg()s datagrams 0..count-1, datagram i to the endpoint at addrs[i * 18]; returns how many were sent. Rejected ones (unreachable, too big, wrong family) are skipped (stats as writePackets); EAGAIN stops early. */
  sendPackets(
    fd: number,
    buffer: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint8Array,
    count: number,
    stats?: Uint32Array,
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
