/**
 * @module dataplane/tunnel/segmenter
 * Software TSO/USO for the tunnel: turns an outbound batch holding offloaded super-packets (nonzero gso words,
 * read from a TUN with offloads; see packet/offload.ts) into the wire packets the tunnel carries. The addon cuts
 * each super-packet into MSS-sized IP packets with their own IP/TCP/UDP headers and full checksums, straight
 * into a scratch buffer owned here, and copies each one's endpoint along; ordinary packets are copied as they
 * are, so order is kept. The result is an ordinary OutboundBatch: the tunnel (and its UDP GSO, which sends the
 * equal-sized segments to one peer as one message) never sees a super-packet.
 */
import { type NativeIo, loadNativeIo } from '../tun/native.ts';
import { type AddressedBatch, OutboundBatch } from './tunnel.ts';

export interface SegmenterOptions {
  /** Scratch bytes (default 1 MiB: about 16 super-packets of 64 KiB). */
  bytes?: number;
  /** Most wire packets per fill (default 1024). */
  capacity?: number;
}

export class Segmenter {
  /** The wire packets of the last fill, with their endpoints. */
  readonly out: OutboundBatch;
  /** Packets dropped because they could not be segmented (malformed super-packets). */
  dropped = 0;
  private readonly stats = new Uint32Array(2);

  constructor(
    options: SegmenterOptions = {},
    private readonly io: Pick<NativeIo, 'segmentPackets'> = loadNativeIo(),
  ) {
    const capacity = options.capacity ?? 1024;
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`bad segmenter capacity ${capacity}`);
    this.out = new OutboundBatch(capacity);
    this.out.reset(Buffer.alloc(options.bytes ?? 1 << 20));
  }

  /**
   * Replaces `out` with the wire packets of input packets from.. as many as fit; returns the index of the first
   * packet not taken (input.count when all were). Always takes at least one (a packet too big even for an empty
   * scratch is dropped and counted), so a loop `for (i = 0; i < n; i = fill(input, i))` ends.
   */
  fill(input: AddressedBatch, from: number): number {
    const out = this.out;
    out.reset();
    const next = this.io.segmentPackets(
      input.buffer,
      input.offsets,
      input.lengths,
      input.gso ?? null,
      input.endpoints,
      from,
      input.count,
      out.buffer,
      out.offsets,
      out.lengths,
      out.endpoints,
      this.stats,
    );
    out.count = this.stats[0] ?? 0;
    this.dropped += this.stats[1] ?? 0;
    return next;
  }

  /** The wire packets of one packet as Buffers of their own (slow path: to hold a super-packet in a queue). */
  split(buf: Buffer, offset: number, length: number, gso: number): Buffer[] {
    const one = new OutboundBatch(1);
    one.reset(buf);
    one.pushTo(offset, length, ZERO_ENDPOINT, 0, gso);
    const packets: Buffer[] = [];
    for (let i = 0; i < 1;) {
      i = this.fill(one, i);
      const out = this.out;
      for (let k = 0; k < out.count; k++) {
        const at = out.offsets[k]!;
        packets.push(Buffer.from(out.buffer.subarray(at, at + out.lengths[k]!)));
      }
    }
    return packets;
  }
}

const ZERO_ENDPOINT = Buffer.alloc(18);
