import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../errors.ts';
import { Cidr } from './cidr.ts';
import { IpAddress } from './ip.ts';
import {
  AddressPlan,
  DEFAULT_ADDRESS_PLAN,
  FIRST_NAMESPACE_SLOT,
  gatewayAddress,
  namespaceAddress,
  type AddressPlanConfig,
} from './plan.ts';

function isInvalidInput(err: unknown): boolean {
  return err instanceof InvalidInputError && err.code === 'E_INVALID_INPUT';
}

/** Number of /blockPrefix blocks in a prefix of length prefix. */
function blocks(prefix: number, blockPrefix: number): number {
  return 2 ** (blockPrefix - prefix);
}

function inPrefix(prefix: string, address: IpAddress): boolean {
  const [net, len] = prefix.split('/') as [string, string];
  const list = new BlockList();
  list.addSubnet(net, Number(len), net.includes(':') ? 'ipv6' : 'ipv4');
  return list.check(address.toString(), address.family === 4 ? 'ipv4' : 'ipv6');
}

describe('AddressPlan defaults', () => {
  const plan = new AddressPlan();
  const d = DEFAULT_ADDRESS_PLAN;

  it('uses the seed design ranges', () => {
    assert.deepEqual({ ...plan.config }, { ...d });
    assert.equal(d.workerRangeV4, '10.16.0.0/12');
    assert.equal(d.workerPrefixV4, 26);
    assert.equal(d.serviceRangeV4, '10.30.0.0/16');
    assert.equal(d.workerRangeV6, 'fc00::/7');
    assert.equal(d.workerPrefixV6, 120);
    assert.equal(d.serviceRangeV6, 'fdff::/16');
    assert.deepEqual(d.reservedV6, ['fdfe::/16']);
    assert.equal(d.instanceRangeV6, 'fdff::/20');
    assert.equal(d.closestRangeV6, 'fdff:1000::/21');
    assert.equal(d.rrRangeV6, 'fdff:2000::/21');
    assert.ok(Object.isFrozen(plan.config));
  });

  it('holds every /26 of the worker range except those of the service range: 15,360 workers', () => {
    const workers = Cidr.parse(d.workerRangeV4);
    const services = Cidr.parse(d.serviceRangeV4);
    const expected = blocks(workers.prefix, d.workerPrefixV4) - blocks(services.prefix, d.workerPrefixV4);
    assert.equal(plan.workerCapacity, expected);
    assert.equal(plan.workerCapacity, 15_360);
    assert.equal(plan.workerV4.capacity, expected);
    assert.ok(plan.workerV6.capacity >= plan.workerCapacity);
  });

  it('holds every ServiceIP of 10.30.0.0/16 except its network and broadcast address', () => {
    const r = Cidr.parse(d.serviceRangeV4);
    assert.equal(plan.serviceV4.capacity, Number(r.size) - 2);
    assert.ok(plan.serviceV4.addressAt(0).equals(r.network.add(1)));
    assert.ok(plan.serviceV4.addressAt(plan.serviceV4.capacity - 1).equals(r.last.add(-1)));
    assert.equal(plan.serviceV4.indexOf(r.network), undefined);
    assert.equal(plan.serviceV4.indexOf(r.last), undefined);
  });

  it('gives each IPv6 policy its own block inside fdff::/16, first address left out', () => {
    const pools: Array<[string, typeof plan.rrV6]> = [
      [d.rrRangeV6, plan.rrV6],
      [d.closestRangeV6, plan.closestV6],
      [d.instanceRangeV6, plan.instanceV6],
    ];
    for (const [range, space] of pools) {
      const r = Cidr.parse(range);
      assert.ok(space.range.equals(r));
      assert.ok(space.addressAt(0).equals(r.network.add(1)), `${range}: first address handed out is +1`);
      assert.equal(space.indexOf(r.network), undefined);
      assert.ok(inPrefix(d.serviceRangeV6, space.addressAt(0)));
    }
    assert.equal(plan.rrV6.indexOf(IpAddress.parse('fdff:1000::1')), undefined);
    assert.equal(plan.closestV6.indexOf(IpAddress.parse('fdff:2000::1')), undefined);
  });

  it('knows which addresses are semantic (intercepted by ProxyTUN)', () => {
    for (const a of ['10.30.0.1', '10.30.255.254', 'fdff::1', 'fdff:2000::1', 'fdff:ffff::1']) {
      assert.equal(plan.isSemantic(IpAddress.parse(a)), true, a);
    }
    for (const a of ['10.16.0.2', '10.31.0.1', 'fc00::2', 'fdfe::1', '::ffff:10.30.0.1']) {
      assert.equal(plan.isSemantic(IpAddress.parse(a)), false, a);
    }
  });
});

describe('AddressPlan worker subnetworks: gateway and namespace slots', () => {
  const plan = new AddressPlan();
  const hostBitsV4 = 32 - plan.config.workerPrefixV4;

  it('has namespace slots 2..62 in a /26', () => {
    assert.equal(FIRST_NAMESPACE_SLOT, 2);
    assert.equal(plan.lastNamespaceSlot, 2 ** hostBitsV4 - 2);
    assert.equal(plan.lastNamespaceSlot, 62);
  });

  it('puts the gateway at +1 and namespace k at +k in both families, never on network or broadcast', () => {
    const services = Cidr.parse(plan.config.serviceRangeV4);
    const aroundGap = plan.workerV4.indexOf(services.network.add(-1))!;
    for (const index of [0, 1, 2, aroundGap, aroundGap + 1, plan.workerCapacity - 1]) {
      const { v4, v6 } = plan.workerSubnet(index);
      assert.equal(v4.prefix, plan.config.workerPrefixV4);
      assert.equal(v6.prefix, plan.config.workerPrefixV6);
      for (const subnet of [v4, v6]) {
        const gw = gatewayAddress(subnet);
        assert.equal(subnet.offsetOf(gw), 1n);
        const seen = new Set<string>([subnet.network.toString(), gw.toString()]);
        for (let k = FIRST_NAMESPACE_SLOT; k <= plan.lastNamespaceSlot; k++) {
          const ns = namespaceAddress(subnet, k);
          assert.equal(subnet.offsetOf(ns), BigInt(k), `worker ${index} slot ${k}`);
          assert.ok(!seen.has(ns.toString()), `slot ${k} has its own address`);
          seen.add(ns.toString());
        }
        assert.equal(seen.size, plan.lastNamespaceSlot + 1);
      }
      // the IPv4 broadcast address is the one after the last slot
      assert.ok(namespaceAddress(v4, plan.lastNamespaceSlot).add(1).equals(v4.last));
      assert.ok(!inPrefix(plan.config.serviceRangeV4, namespaceAddress(v4, FIRST_NAMESPACE_SLOT)));
    }
  });

  it('refuses slots outside the subnetwork', () => {
    const { v4 } = plan.workerSubnet(0);
    assert.throws(() => namespaceAddress(v4, 2 ** hostBitsV4), Error);
    assert.throws(() => namespaceAddress(v4, -1), Error);
  });
});

describe('AddressPlan custom ranges', () => {
  it('cuts a small worker range into its /26 blocks', () => {
    const plan = new AddressPlan({ workerRangeV4: '10.200.0.0/24' });
    const range = Cidr.parse('10.200.0.0/24');
    assert.equal(plan.workerCapacity, blocks(range.prefix, 26));
    for (let i = 0; i < plan.workerCapacity; i++) {
      const { v4, v6 } = plan.workerSubnet(i);
      assert.equal(v4.network.value, range.network.value + BigInt(i * 2 ** (32 - 26)));
      assert.equal(v4.prefix, 26);
      assert.ok(range.covers(v4));
      assert.equal(v6.network.value, Cidr.parse('fc00::/7').network.value + (BigInt(i) << 8n));
    }
    assert.throws(() => plan.workerSubnet(plan.workerCapacity), Error);
    // unchanged fields keep their defaults
    assert.equal(plan.config.serviceRangeV4, DEFAULT_ADDRESS_PLAN.serviceRangeV4);
  });

  it('derives block size and slots from workerPrefixV4', () => {
    const plan = new AddressPlan({ workerRangeV4: '10.200.0.0/24', workerPrefixV4: 28, workerPrefixV6: 124 });
    assert.equal(plan.workerCapacity, blocks(24, 28));
    assert.equal(plan.lastNamespaceSlot, 2 ** (32 - 28) - 2);
    assert.equal(plan.workerSubnet(1).v4.toString(), '10.200.0.16/28');
    assert.equal(plan.workerSubnet(1).v6.toString(), 'fc00::10/124');
  });

  it('leaves the service range out of the worker range when they overlap', () => {
    const plan = new AddressPlan({ workerRangeV4: '10.200.0.0/24', serviceRangeV4: '10.200.0.64/26' });
    assert.equal(plan.workerCapacity, blocks(24, 26) - 1);
    const subnets = Array.from({ length: plan.workerCapacity }, (_, i) => plan.workerSubnet(i).v4.toString());
    assert.deepEqual(subnets, ['10.200.0.0/26', '10.200.0.128/26', '10.200.0.192/26']);
    assert.equal(plan.serviceV4.capacity, 64 - 2);
  });

  it('takes the IPv6 worker count into account when it is the smaller one', () => {
    const plan = new AddressPlan({ workerRangeV6: 'fc00::/118' });
    assert.equal(plan.workerCapacity, blocks(118, 120));
  });

  it('uses custom service and policy ranges', () => {
    const plan = new AddressPlan({
      serviceRangeV4: '10.99.0.0/24',
      serviceRangeV6: 'fd00:99::/32',
      instanceRangeV6: 'fd00:99::/48',
      closestRangeV6: 'fd00:99:1::/48',
      rrRangeV6: 'fd00:99:2::/120',
    });
    assert.equal(plan.serviceV4.capacity, 254);
    assert.equal(plan.serviceV4.addressAt(0).toString(), '10.99.0.1');
    assert.equal(plan.rrV6.capacity, 255);
    assert.equal(plan.rrV6.addressAt(0).toString(), 'fd00:99:2::1');
    assert.equal(plan.closestV6.addressAt(0).toString(), 'fd00:99:1::1');
    assert.equal(plan.isSemantic(IpAddress.parse('fd00:99:2::1')), true);
    assert.equal(plan.isSemantic(IpAddress.parse('fdff::1')), false);
    assert.equal(plan.isSemantic(IpAddress.parse('10.30.0.1')), false);
    // the old service range is now ordinary worker space
    assert.ok(plan.workerCapacity > new AddressPlan().workerCapacity);
  });

  it('refuses invalid configurations with InvalidInputError', () => {
    const bad: Array<[string, Partial<AddressPlanConfig>]> = [
      ['policy block outside serviceRangeV6', { rrRangeV6: 'fdfe:2000::/21' }],
      ['policy block larger than serviceRangeV6', { instanceRangeV6: 'fd00::/8' }],
      ['policy blocks overlap', { closestRangeV6: 'fdff:2000::/22' }],
      ['policy blocks overlap (nested)', { instanceRangeV6: 'fdff::/16' }],
      ['policy block of the wrong family', { rrRangeV6: '10.30.0.0/16' }],
      ['worker range v4 of the wrong family', { workerRangeV4: 'fc00::/7' }],
      ['worker range v6 of the wrong family', { workerRangeV6: '10.0.0.0/8' }],
      ['service range v4 of the wrong family', { serviceRangeV4: 'fdff::/16' }],
      ['service range v6 of the wrong family', { serviceRangeV6: '10.30.0.0/16' }],
      ['reserved range of the wrong family', { reservedV6: ['10.0.0.0/8'] }],
      ['host bits set', { serviceRangeV4: '10.30.0.1/16' }],
      ['not a prefix', { workerRangeV4: '10.16.0.0' }],
      ['worker block with no room for a namespace', { workerPrefixV4: 31 }],
      ['IPv6 worker block smaller than the IPv4 one', { workerPrefixV6: 127 }],
      [
        'worker block larger than the worker range',
        { workerRangeV4: '10.200.0.0/24', workerPrefixV4: 20, workerPrefixV6: 100 },
      ],
      ['worker prefix beyond the family', { workerPrefixV6: 130 }],
      ['fractional worker prefix', { workerPrefixV4: 26.5 }],
      ['NaN worker prefix', { workerPrefixV4: Number.NaN }],
    ];
    for (const [what, config] of bad) {
      assert.throws(() => new AddressPlan(config), isInvalidInput, what);
    }
  });

  it('names the offending field in the message', () => {
    assert.throws(
      () => new AddressPlan({ rrRangeV6: 'fdfe:2000::/21' }),
      (err: unknown) => isInvalidInput(err) && /rrRangeV6/.test((err as Error).message),
    );
    assert.throws(
      () => new AddressPlan({ closestRangeV6: 'fdff:2000::/22' }),
      (err: unknown) => isInvalidInput(err) && /closestRangeV6/.test((err as Error).message),
    );
    assert.throws(
      () => new AddressPlan({ workerRangeV4: '10.200.0.0/24', workerPrefixV4: 20, workerPrefixV6: 100 }),
      (err: unknown) => isInvalidInput(err) && /workerPrefixV4/.test((err as Error).message),
    );
  });
});
