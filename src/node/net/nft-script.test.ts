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
  BOUNDARY_COUNTER,
  DNS_GUARD_COUNTER,
  elementsFor,
  parseCounter,
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
      'oifname "oktun0" accept',
      'meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pm4',
      'ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @pm6',
      'ip saddr 10.18.0.0/26 oifname != { "okbr0", "oktun0" } masquerade',
      'ip6 saddr fc00::/120 oifname != { "okbr0", "oktun0" } masquerade',
      'oifname "okbr0" ct status dnat ip saddr 10.18.0.0/26 masquerade',
    ]) {
      assert.ok(script.includes(rule), rule);
    }
  });

  it('lets into the bridge only the TUN, the bridge, replies and port mappings; counts the rest', () => {
    const script = tableScript({ ...config, table: 'oaknet' });
    const chain = (name: string): string[] => {
      const m = new RegExp(`\\n  chain ${name} \\{\\n([\\s\\S]*?)\\n  \\}`).exec(script);
      assert.ok(m?.[1], `chain ${name}`);
      return m[1].split('\n').map((l) => l.trim());
    };
    // The forward hook sends everything towards the bridge through the boundary first.
    assert.deepEqual(chain('forward'), [
      'type filter hook forward priority filter; policy accept;',
      'oifname "okbr0" jump into_bridge',
      'iifname { "okbr0", "oktun0" } accept',
      'oifname "oktun0" accept',
    ]);
    // The boundary: every path ends in accept or the counted drop; no policy can let anything else by.
    assert.deepEqual(chain('into_bridge'), [
      'iifname { "okbr0", "oktun0" } accept',
      'ct state established,related accept',
      'ct status dnat accept',
      `counter name ${BOUNDARY_COUNTER} drop`,
    ]);
    assert.ok(script.includes(`  counter ${BOUNDARY_COUNTER} {\n  }\n`), 'the named counter');
    // one rule set for both families: nothing in the boundary names an address family
    assert.doesNotMatch(chain('into_bridge').join('\n'), /\bip6?\b|nfproto/);
    // a non-default table and device names go where they belong
    const other = tableScript({ ...config, table: 'nm2', bridge: 'br9', tun: 'tun9' });
    assert.match(other, /oifname "br9" jump into_bridge/);
    assert.match(other, /chain into_bridge \{\n {4}iifname \{ "br9", "tun9" \} accept/);
  });

  it("drops DNS to the bridge's gateways that did not come from the bridge or the node, counted", () => {
    const script = tableScript({ ...config, table: 'oaknet' });
    const m = /\n {2}chain input \{\n([\s\S]*?)\n {2}\}/.exec(script);
    assert.deepEqual(
      m?.[1]?.split('\n').map((l) => l.trim()),
      [
        'type filter hook input priority filter; policy accept;',
        `iifname != { "lo", "okbr0" } ip daddr 10.18.0.1 meta l4proto { tcp, udp } th dport 53 counter name ${DNS_GUARD_COUNTER} drop`,
        `iifname != { "lo", "okbr0" } ip6 daddr fc00::1 meta l4proto { tcp, udp } th dport 53 counter name ${DNS_GUARD_COUNTER} drop`,
      ],
    );
    assert.ok(script.includes(`  counter ${DNS_GUARD_COUNTER} {\n  }\n`));
  });

  it('reads the named counter from an nft listing', () => {
    assert.equal(BOUNDARY_COUNTER, 'bridge_in_dropped');
    const listing = [
      { metainfo: { version: '1.0.6' } },
      { counter: { family: 'inet', name: 'other', table: 'oaknet', packets: 9, bytes: 9 } },
      { counter: { family: 'inet', name: BOUNDARY_COUNTER, table: 'oaknet', packets: 100, bytes: 6000 } },
    ];
    assert.deepEqual(parseCounter(listing, BOUNDARY_COUNTER), { packets: 100, bytes: 6000 });
    assert.equal(parseCounter([{ counter: { name: BOUNDARY_COUNTER } }], BOUNDARY_COUNTER), undefined);
    assert.equal(parseCounter([], BOUNDARY_COUNTER), undefined);
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
