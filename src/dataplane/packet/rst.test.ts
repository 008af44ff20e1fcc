import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildTcp, fullChecksumsValid } from './build.ts';
import { TcpFlag } from './constants.ts';
import { RESET_MAX_BYTES, writeTcpReset } from './rst.ts';
import { IpAddress } from '../../addressing/ip.ts';

const bytes = (s: string) => IpAddress.parse(s).toBytes();

describe('writeTcpReset', () => {
  for (const [src, dst] of [
    ['10.30.0.1', '10.18.0.2'],
    ['fdff:2000::1', 'fc00::2'],
  ] as const) {
    it(`${src.includes(':') ? 'IPv6' : 'IPv4'}: RST and RST|ACK, byte for byte what the test builder makes`, () => {
      const out = Buffer.alloc(RESET_MAX_BYTES + 8, 0xee);
      for (const ack of [undefined, 0x01020304]) {
        const n = writeTcpReset(out, {
          src: bytes(src),
          dst: bytes(dst),
          srcPort: 80,
          dstPort: 40000,
          seq: 0xfffffff0,
          ...(ack === undefined ? {} : { ack }),
        });
        const want = buildTcp({
          src,
          dst,
          srcPort: 80,
          dstPort: 40000,
          seq: 0xfffffff0,
          ack: ack ?? 0,
          flags: ack === undefined ? TcpFlag.Rst : TcpFlag.Rst | TcpFlag.Ack,
          window: 0,
        });
        assert.equal(n, want.length);
        assert.deepEqual(out.subarray(0, n), want);
        assert.ok(fullChecksumsValid(out, 0, n));
      }
    });
  }

  it('refuses mixed families and a buffer that is too small (caller bugs)', () => {
    assert.throws(
      () =>
        writeTcpReset(Buffer.alloc(60), {
          src: bytes('10.0.0.1'),
          dst: bytes('fc00::1'),
          srcPort: 1,
          dstPort: 2,
          seq: 0,
        }),
      RangeError,
    );
    assert.throws(
      () =>
        writeTcpReset(Buffer.alloc(39), {
          src: bytes('10.0.0.1'),
          dst: bytes('10.0.0.2'),
          srcPort: 1,
          dstPort: 2,
          seq: 0,
        }),
      RangeError,
    );
  });
});
