/**
 * @module dataplane/tun/test-segmenter
 * For tests: the addon's segmenting (its test build), as a scratch-buffer batch filler. Kept apart from
 * fixtures.ts so that tests which must run without the addon can use the fixtures.
 */
import { type AddressedBatch, OutboundBatch } from '../tunnel/tunnel.ts';
import { type NativeTestIo, loadNativeTestIo } from './native.ts';

export interface TestSegmenterOptions {
  /** Scratch bytes (default 1 MiB: about 16 super-packets of 64 KiB). */
  bytes?: number;
  /** Most wire packets per fill (default 1024). */
  capacity?: number;
}

/**
 * Cuts super-packets into the wire packets `UdpTunnel.send` puts on the wire (byte for byte: the addon's test
 * build copies out what its send path gathers), into a scratch buffer, for tests.
 */
export class TestSegmenter {
  /** The wire packets of the last fill, with their endpoints. */
  readonly out: OutboundBatch;
  /** Packets dropped because they could not be segmented (malformed super-packets). */
  dropped = 0;
  private readonly stats = new Uint32Array(2);

  constructor(
    options: TestSegmenterOptions = {},
    private readonly io: Pick<NativeTestIo, 'segmentPackets'> = loadNativeTestIo(),
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
    const next = this.io.segmentPackets(input, from, out, this.stats);
    out.count = this.stats[0] ?? 0;
    this.dropped += this.stats[1] ?? 0;
    return next;
  }

  /** The wire packets of one packet as Buffers of their own. */
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
