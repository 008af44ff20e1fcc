/** The Registry façade's own view: the addresses the next allocations would hand out (availableIps). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allAddresses, inPrefix, jobName, setup, svc } from './registry.fixtures.ts';

describe('Registry.availableIps', () => {
  it('returns unreserved addresses of the shared IPv4 pool and the IPv6 instance block, without reserving', () => {
    const { registry } = setup();
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    const used = new Set(allAddresses(registry.getJob('j')!));
    const list = registry.availableIps(3);
    assert.deepEqual(registry.availableIps(3), list, 'asking again gives the same answer');
    assert.equal(list.filter((e) => e.IpType === 'IPv4').length, 3);
    assert.equal(list.filter((e) => e.IpType === 'IPv6').length, 3);
    for (const e of list) {
      if (e.IpType === 'IPv4') {
        assert.equal(e.Address_v6, null);
        assert.ok(e.Address !== null && inPrefix('10.30.0.0/16', e.Address) && !used.has(e.Address));
      } else {
        assert.equal(e.Address, null);
        assert.ok(e.Address_v6 !== null && inPrefix('fdff::/20', e.Address_v6) && !used.has(e.Address_v6));
      }
    }
    assert.ok(registry.availableIps(2, 4).every((e) => e.IpType === 'IPv4'));
    assert.ok(registry.availableIps(2, 6).every((e) => e.IpType === 'IPv6'));
    // an address offered is usable as a chosen address
    const offered = list.find((e) => e.IpType === 'IPv4')!.Address!;
    assert.equal(registry.deployService('k', svc('k', { RR_ip: offered })).rr.v4, offered);
    assert.ok(!registry.availableIps(3, 4).some((e) => e.Address === offered));
    assert.equal(job.name, jobName('s'));
  });
});
