import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { systemResolvers } from './forwarder.ts';

describe('the node resolvers', () => {
  it('are the nameserver lines of resolv.conf, in order, addresses only (no zoned link-local ones)', () => {
    const conf = [
      '# generated',
      'nameserver 10.255.255.53',
      'search example.org',
      '  nameserver fe80::1%eth0',
      'nameserver not-an-address',
      'nameserver 2001:DB8::53',
      'options ndots:1',
    ].join('\n');
    assert.deepEqual(systemResolvers(conf), [
      { host: '10.255.255.53', port: 53 },
      { host: '2001:db8::53', port: 53 },
    ]);
    assert.deepEqual(systemResolvers(''), []);
  });
});
