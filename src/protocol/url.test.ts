import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hostForUrl, isHostOrIp } from './url.ts';

describe('hostForUrl', () => {
  it('brackets IPv6 literals and leaves names and IPv4 alone', () => {
    assert.equal(hostForUrl('127.0.0.1'), '127.0.0.1');
    assert.equal(hostForUrl('cluster.example'), 'cluster.example');
    assert.equal(hostForUrl('fd00::1'), '[fd00::1]');
    assert.equal(hostForUrl('[fd00::1]'), '[fd00::1]');
  });
});

describe('isHostOrIp', () => {
  it('takes addresses and host names, nothing else', () => {
    for (const ok of [
      '10.0.0.1',
      'fd00::1',
      '::1',
      'cluster.example',
      'cluster_1',
      'c-1.edge.local',
      'localhost',
    ])
      assert.equal(isHostOrIp(ok), true, ok);
    for (const bad of [
      '',
      'http://10.0.0.1',
      '10.0.0.1:10110',
      '10.0.0.1/x',
      'evil.example/path?x=1',
      'a b',
      ' 10.0.0.1',
      '[fd00::1]',
      'fe80::1%eth0',
      '-bad.example',
      'bad-.example',
      'a..b',
      'trailing.',
      '1.2.3',
      '999.1.1.1',
      'user@host',
      'x'.repeat(64),
      `${'a.'.repeat(127)}ab`,
    ])
      assert.equal(isHostOrIp(bad), false, JSON.stringify(bad));
  });
});
