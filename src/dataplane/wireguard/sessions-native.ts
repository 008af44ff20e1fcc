/**
 * @module dataplane/wireguard/sessions-native
 * TransportSessions in the native addon (native/wg.c): OpenSSL's EVP ChaCha20-Poly1305 with one reused
 * context per session and direction, keyed at install. The UDP tunnel hands `handle` to its native send
 * (`UdpTunnelOptions.sessions`), which seals every wire datagram of a packet whose slot is >= 0 in the same
 * call that cuts super-packets and sends them with UDP GSO; `open` opens a whole received batch (GRO runs
 * included) in one native call. Receiver indexes are looked up in a native open-addressing map, so
 * `localIndex` may be any u32 (unique among installed slots).
 */
import { type NativeIo, type WgSessionsHandle, loadNativeIo } from '../tun/native.ts';
import type { MutableBatch, TransportSessions } from './sessions.ts';

export class NativeTransportSessions implements TransportSessions {
  /** The native table (for `UdpTunnelOptions.sessions`, and sendPackets' `sessions.table`). */
  readonly handle: WgSessionsHandle;
  private closed = false;

  constructor(
    readonly capacity: number,
    private readonly io: NativeIo = loadNativeIo(),
  ) {
    this.handle = io.wgSessionsCreate(capacity);
  }

  install(slot: number, send: Uint8Array, recv: Uint8Array, localIndex: number, remoteIndex: number): void {
    this.io.wgInstall(this.handle, slot, send, recv, localIndex, remoteIndex);
  }

  remove(slot: number): void {
    this.io.wgRemove(this.handle, slot);
  }

  stats(slot: number, out: Float64Array): void {
    this.io.wgStats(this.handle, slot, out);
  }

  open(batch: MutableBatch, verdicts: Int32Array): void {
    this.io.wgOpen(this.handle, batch, verdicts);
  }

  seal(slot: number, packet: Uint8Array, out: Uint8Array, outOffset: number): number {
    return this.io.wgSeal(this.handle, slot, packet, out, outOffset);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.io.wgClose(this.handle);
  }
}
