import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hostForUrl } from './url.ts';

describe('hostForUrl', () => {
  it('brackets IPv6 literals and leaves names and IPv4 alone', () => {
    assert.equal(hostForUrl('127.0.0.1'), '127.0.0.1');
    assert.equal(hostForUrl('cluster.example'), 'cluster.example');
    assert.equal(hostForUrl('fd00::1'), '[fd00::1]');
    assert.equal(hostForUrl('[fd00::1]'), '[fd00::1]');
  });
});
