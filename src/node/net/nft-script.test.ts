/**
 * The nft-script text builders and the listing parser: the one table's rules and the map-element scripts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpAddress } from '../../addressing/ip.ts';
import { config } from './environment.fixtures.ts';
import {
  addElementsScript,
  deleteElementsScript,
  elementsFor,
  parseMapElements,
  tableScript,
} from './nft-script.ts';

describe('nft-script', () => {
  it('builds one table that deletes its leftover first', () => {
    const script = tableScript({ ...config, table: 'oaknet' });
    assert.ok(script.startsWith('table inet oaknet {}\ndelete table inet oaknet\ntable inet oaknet {\n'));
    for (const rule of [
      'type inet_proto . inet_service : ipv4_addr . inet_service;',
      'type inet_proto . inet_service : ipv6_addr . inet_service;',
      'iifname { "okbr0", "oktun0" } accept',
      'oifname { "okbr0", "oktun0" } accept',
      'meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pm4',
      'ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @pm6',
      'ip saddr 10.18.0.0/26 oifname != { "okbr0", "oktun0" } masquerade',
      'ip6 saddr fc00::/120 oifname != { "okbr0", "oktun0" } masquerade',
      'oifname "okbr0" ct status dnat ip saddr 10.18.0.0/26 masquerade',
    ]) {
      assert.ok(script.includes(rule), rule);
    }
  });

  it('writes and parses map elements', () => {
    const elements = elementsFor(
      [{ protocol: 'udp', hostPort: 5353, containerPort: 53 }],
      IpAddress.parse('fc00::7'),
    );
    assert.equal(addElementsScript('t', elements), 'add element inet t pm6 { udp . 5353 : fc00::7 . 53 }\n');
    assert.equal(deleteElementsScript('t', elements), 'delete element inet t pm6 { udp . 5353 }\n');
    assert.equal(addElementsScript('t', []), '');
    assert.deepEqual(
      parseMapElements([
        { map: { name: 'pm6', elem: [[{ concat: ['udp', 5353] }, { concat: ['fc00::7', 53] }]] } },
        { map: { name: 'other', elem: [[{ concat: ['udp', 1] }, { concat: ['fc00::7', 1] }]] } },
        { map: { name: 'pm4' } },
        { chain: {} },
      ]),
      elements,
    );
  });
});
