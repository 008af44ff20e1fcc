/**
 * The partial checksum of an offloaded super-packet (offload.ts) through NAT rewrites: an address change adds
 * the delta to the pseudo-header sum (the mirror image of RFC 1624 on a complete checksum), a port change leaves
 * it alone, and the result equals a fresh pseudo-header sum bit for bit, so a NIC (or the segmenter) completing
 * it produces the packet a full recomputation would.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  buildTcp,
  buildUdp,
  completePartialChecksum,
  createSeededRandom,
  fullChecksumsValid,
  randomBytes,
  withPartialChecksum,
} from './build.ts';
import { TcpFlag } from './constants.ts';
import { addToPartialChecksum, readVnetHeader, VNET_HDR_BYTES, VnetFlag, VnetGso } from './offload.ts';
import { ParsedPacket } from './parsed-packet.ts';
import { setDstAddress, setDstPort, setSrcAddress, setSrcPort } from './rewrite.ts';

function address(random: () => number, v6: boolean): Uint8Array {
  return randomBytes(random, v6 ? 16 : 4);
}

function packet(
  kind: 'tcp' | 'udp',
  src: Uint8Array,
  dst: Uint8Array,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
): Buffer {
  return kind === 'tcp'
    ? buildTcp({ src, dst, srcPort, dstPort, seq: 7, flags: TcpFlag.Ack | TcpFlag.Psh, payload })
    : buildUdp({ src, dst, srcPort, dstPort, payload });
}

test('2,000 random rewrites of partial checksums equal the partial checksum of the rewritten packet', () => {
  const random = createSeededRandom(0x0ff10ad);
  const p = new ParsedPacket();
  for (let n = 0; n < 2000; n++) {
    const v6 = random() < 0.5;
    const kind = random() < 0.7 ? 'tcp' : 'udp';
    const port = () => Math.floor(random() * 65536);
    const [src, dst, src2, dst2] = [0, 1, 2, 3].map(() => address(random, v6)) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ];
    const [sp, dp, sp2, dp2] = [port(), port(), port(), port()];
    const payload = randomBytes(random, Math.floor(random() * 3000));
    const original = withPartialChecksum(packet(kind, src, dst, sp, dp, payload));
    const rewritten = Buffer.from(original);
    assert.ok(p.decode(rewritten, 0, rewritten.length));
    assert.equal(p.l4ChecksumPartial, false, 'decode clears the flag');
    p.l4ChecksumPartial = true;
    setSrcAddress(p, rewritten, src2);
    setDstAddress(p, rewritten, dst2);
    setSrcPort(p, rewritten, sp2);
    setDstPort(p, rewritten, dp2);
    const expected = withPartialChecksum(packet(kind, src2, dst2, sp2, dp2, payload));
    assert.deepEqual(rewritten, expected, `case ${n} (${kind}, IPv${v6 ? 6 : 4})`);
    const done = completePartialChecksum(rewritten);
    assert.ok(fullChecksumsValid(done, 0, done.length), `case ${n}: completed checksum`);
  }
});

test('a port rewrite leaves a partial checksum alone; a complete one still gets the RFC 1624 update', () => {
  const base = buildTcp({
    src: '10.0.0.1',
    dst: '10.0.0.2',
    srcPort: 1,
    dstPort: 2,
    payload: Buffer.from('x'),
  });
  const partial = withPartialChecksum(base);
  const p = new ParsedPacket();
  assert.ok(p.decode(partial, 0, partial.length));
  p.l4ChecksumPartial = true;
  const field = partial.readUInt16BE(36);
  setDstPort(p, partial, 4321);
  assert.equal(partial.readUInt16BE(36), field);
  const complete = Buffer.from(base);
  assert.ok(p.decode(complete, 0, complete.length));
  setDstPort(p, complete, 4321);
  assert.notEqual(complete.readUInt16BE(36), base.readUInt16BE(36));
  assert.ok(fullChecksumsValid(complete, 0, complete.length));
});

test("addToPartialChecksum adds in one's complement (no complement on either side), folding carries", () => {
  assert.equal(addToPartialChecksum(0x1234, 0), 0x1234);
  assert.equal(addToPartialChecksum(0x1234, 0x0001), 0x1235);
  assert.equal(addToPartialChecksum(0xffff, 0x0001), 0x0001);
  assert.equal(addToPartialChecksum(0xfffe, 0x1fffe), 0xfffe);
});

test('readVnetHeader reads the host-order virtio_net_hdr', () => {
  const b = Buffer.alloc(VNET_HDR_BYTES);
  b[0] = VnetFlag.NeedsCsum;
  b[1] = VnetGso.TcpV4 | VnetGso.Ecn;
  b.writeUInt16LE(52, 2);
  b.writeUInt16LE(1400, 4);
  b.writeUInt16LE(20, 6);
  b.writeUInt16LE(16, 8);
  assert.deepEqual(readVnetHeader(b), {
    flags: 1,
    gsoType: 0x81,
    hdrLen: 52,
    gsoSize: 1400,
    csumStart: 20,
    csumOffset: 16,
  });
});
