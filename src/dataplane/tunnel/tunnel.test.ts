import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../../errors.ts';
import {
  ENDPOINT_BYTES,
  OutboundBatch,
  decodeEndpoint,
  encodeEndpoint,
  endpoint,
  endpointEquals,
  endpointKey,
  isIpv4Endpoint,
} from './tunnel.ts';

describe('endpoints', () => {
  it('encodes IPv4 as v4-mapped IPv6 plus a big-endian port, and decodes it back', () => {
    const out = Buffer.alloc(ENDPOINT_BYTES + 2);
    encodeEndpoint('192.0.2.7', 50103, out, 2);
    assert.equal(out.toString('hex'), '0000' + '00000000000000000000ffffc0000207' + 'c3b7');
    assert.deepEqual(decodeEndpoint(out, 2), { host: '192.0.2.7', port: 50103 });
    assert.equal(isIpv4Endpoint(out, 2), true);
  });

  it('decodes to canonical text: RFC 5952 IPv6, dotted IPv4 for mapped text', () => {
    assert.deepEqual(decodeEndpoint(endpoint('FD00:0:0::0001', 1)), { host: 'fd00::1', port: 1 });
    assert.deepEqual(decodeEndpoint(endpoint('::ffff:10.0.0.1', 2)), { host: '10.0.0.1', port: 2 });
    assert.deepEqual(decodeEndpoint(endpoint('::1', 65535)), { host: '::1', port: 65535 });
    assert.equal(isIpv4Endpoint(endpoint('::1', 1)), false);
  });

  it('refuses bad hosts and ports', () => {
    for (const [host, port] of [
      ['10.0.0.256', 1],
      ['example.com', 1],
      ['fe80::1%eth0', 1],
      ['10.0.0.1', 65536],
      ['10.0.0.1', -1],
      ['10.0.0.1', 1.5],
    ] as const) {
      assert.throws(() => endpoint(host, port), InvalidInputError, `${host} ${port}`);
    }
  });

  it('gives equal keys for equal endpoints: a number for IPv4, a string for IPv6', () => {
    const both = Buffer.concat([endpoint('10.1.2.3', 80), endpoint('10.1.2.3', 80), endpoint('fd00::1', 80)]);
    assert.equal(endpointKey(both, 0), endpointKey(both, 18));
    assert.equal(typeof endpointKey(both, 0), 'number');
    assert.equal(endpointKey(both, 0), 0x0a010203 * 65536 + 80);
    assert.equal(typeof endpointKey(both, 36), 'string');
    assert.notEqual(endpointKey(endpoint('10.1.2.3', 81)), endpointKey(both, 0));
    assert.equal(endpointKey(endpoint('fd00::1', 80)), endpointKey(both, 36));
    assert.equal(endpointEquals(both, 0, both, 18), true);
    assert.equal(endpointEquals(both, 0, both, 36), false);
  });
});

describe('OutboundBatch', () => {
  it('records a destination per datagram and stops at capacity', () => {
    const out = new OutboundBatch(2);
    const to = Buffer.concat([Buffer.alloc(3), endpoint('10.0.0.1', 1)]);
    out.reset(Buffer.alloc(10));
    assert.equal(out.pushTo(0, 5, to, 3), true);
    assert.equal(out.pushTo(5, 5, endpoint('::1', 2)), true);
    assert.equal(out.pushTo(0, 1, to, 3), false);
    assert.deepEqual(decodeEndpoint(out.endpoints, 0), { host: '10.0.0.1', port: 1 });
    assert.deepEqual(decodeEndpoint(out.endpoints, 18), { host: '::1', port: 2 });
  });
});
