/**
 * NodeEnvironment against a FakeRunner and a MemorySysctl, node-wide operations: configuration, set-up,
 * TUN routes, tear-down. The exact commands, their order and count, rollback and tolerance paths that are
 * hard to provoke on a real kernel. Instance wiring is in veth-fake.test.ts; the real kernel is exercised
 * by environment.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { InvalidInputError, SystemError } from '../../errors.ts';
import { config, linksJson, request, setup, sysctlWithDefaults } from './environment.fixtures.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { NodeEnvironment, bridgeMacFor } from './environment.ts';
import { deleteTableScript, tableScript } from './nft-script.ts';
import { FakeRunner } from './runner.ts';
import { MemorySysctl } from './sysctl.ts';

describe('NodeEnvironment configuration', () => {
  const runner = new FakeRunner();
  const logger = pino({ level: 'silent' });
  for (const [why, patch] of [
    ['a bridge name over 15 characters', { bridge: 'oaknet-bridge-00' }],
    ['a tun name with a slash', { tun: 'a/b' }],
    ['the same bridge and tun', { tun: 'okbr0' }],
    ['an MTU below the IPv6 minimum', { mtu: 1000 }],
    ['an IPv6 subnetV4', { subnetV4: Cidr.parse('fc00::/120') }],
    ['a tun route inside the node subnet', { tunRoutes: [Cidr.parse('10.18.0.0/28')] }],
    ['a table name with a hyphen', { nftTable: 'oak-net' }],
  ] as const) {
    it(`rejects ${why}`, () => {
      assert.throws(
        () => new NodeEnvironment({ ...config, ...patch }, { runner, logger }),
        InvalidInputError,
      );
    });
  }

  it('derives the gateways from the subnets', () => {
    const env = new NodeEnvironment(config, { runner, logger });
    assert.equal(env.gatewayV4.toString(), '10.18.0.1');
    assert.equal(env.gatewayV6.toString(), 'fc00::1');
  });

  it('derives the bridge MAC from the IPv4 gateway: the same for a restart, another for another node', () => {
    const env = new NodeEnvironment(config, { runner, logger });
    assert.equal(env.bridgeMac, '02:6f:0a:12:00:01');
    const first = Number.parseInt(env.bridgeMac.slice(0, 2), 16);
    assert.equal(first & 0b11, 0b10, 'locally administered, unicast');
    assert.equal(new NodeEnvironment({ ...config }, { runner, logger }).bridgeMac, env.bridgeMac);
    const other = new NodeEnvironment(
      { ...config, subnetV4: Cidr.parse('10.16.0.64/26') },
      { runner, logger },
    );
    assert.equal(other.bridgeMac, '02:6f:0a:10:00:41');
    assert.equal(bridgeMacFor(IpAddress.parse('255.1.16.200')), '02:6f:ff:01:10:c8');
    assert.throws(() => bridgeMacFor(IpAddress.parse('fc00::1')), InvalidInputError);
  });
});

describe('NodeEnvironment.setUp (fake)', () => {
  it('removes leftovers by name, builds the bridge, writes sysctls and recreates the table in 5 spawns', async () => {
    const { env, fake, sysctl, lines } = setup((call) => {
      if (call.cmd === 'ip' && call.args[0] === '-j') return { stdout: linksJson };
      if (call.cmd === 'nft' && call.args[0] === '-j') {
        return {
          stdout: JSON.stringify({
            nftables: [
              { chain: { family: 'ip', table: 'filter', name: 'FORWARD', hook: 'forward', policy: 'drop' } },
              {
                chain: {
                  family: 'inet',
                  table: 'oaknet',
                  name: 'forward',
                  hook: 'forward',
                  policy: 'accept',
                },
              },
            ],
          }),
        };
      }
      return undefined;
    });
    await env.setUp();
    assert.deepEqual(fake.commandLines(), [
      'ip -j link show',
      'ip -batch -',
      'ip -batch -',
      'nft -f -',
      'nft -j list chains',
    ]);
    assert.equal(
      fake.calls[1]?.input,
      'link del dev oakva1\nlink del dev oakvb2\nlink del dev okbr0\n' +
        'link add name okbr0 address 02:6f:0a:12:00:01 mtu 1450 type bridge\n',
    );
    assert.equal(
      fake.calls[2]?.input,
      'addr add 10.18.0.1/26 dev okbr0\naddr add fc00::1/120 dev okbr0 nodad\nlink set dev okbr0 up\n',
    );
    assert.equal(fake.calls[3]?.input, tableScript({ ...config, table: 'oaknet' }));
    assert.equal(sysctl.values.get('net/ipv4/ip_forward'), '1');
    assert.equal(sysctl.values.get('net/ipv6/conf/all/forwarding'), '1');
    assert.equal(sysctl.values.get('net/ipv6/conf/okbr0/disable_ipv6'), '0');
    const warning = lines.find((l) => Array.isArray(l['chains']));
    assert.deepEqual(warning?.['chains'], ['ip filter FORWARD']);
    assert.equal(
      sysctl.values.get('net/ipv6/conf/uplink0/accept_ra'),
      '2',
      'SLAAC uplink keeps its router advertisements',
    );
    assert.ok(lines.some((l) => String(l['msg']).includes('accept_ra')));
  });

  it('creates the bridge with the same MAC on a clean node and again after removing leftovers', async () => {
    let links = '[{"ifname":"lo"}]';
    const { env, fake } = setup((call) =>
      call.cmd === 'ip' && call.args[0] === '-j' ? { stdout: links } : undefined,
    );
    await env.setUp();
    assert.equal(
      fake.calls[1]?.input,
      'link add name okbr0 address 02:6f:0a:12:00:01 mtu 1450 type bridge\n',
    );
    // a restarted NetManager finds the bridge and a port on it
    links = JSON.stringify([{ ifname: 'lo' }, { ifname: 'okbr0' }, { ifname: 'oakva1', master: 'okbr0' }]);
    fake.calls.length = 0;
    await new NodeEnvironment(config, {
      runner: fake,
      logger: pino({ level: 'silent' }),
      sysctl: sysctlWithDefaults(),
    }).setUp();
    assert.equal(
      fake.calls[1]?.input,
      'link del dev oakva1\nlink del dev okbr0\nlink add name okbr0 address 02:6f:0a:12:00:01 mtu 1450 type bridge\n',
    );
  });

  it('cleans up and throws SystemError when a step fails', async () => {
    const { env, fake } = setup((call) =>
      call.input?.startsWith('addr add')
        ? { fail: 'RTNETLINK answers: Permission denied\nCommand failed -:1' }
        : undefined,
    );
    await assert.rejects(env.setUp(), SystemError);
    // after the failure: list links again, delete (nothing listed), delete the table
    assert.deepEqual(fake.commandLines().slice(-2), ['ip -j link show', 'nft -f -']);
    assert.equal(fake.calls.at(-1)?.input, deleteTableScript('oaknet'));
  });

  it('refuses a kernel without IPv6', async () => {
    const fake = new FakeRunner();
    const env = new NodeEnvironment(config, {
      runner: fake,
      logger: pino({ level: 'silent' }),
      sysctl: new MemorySysctl(),
    });
    await assert.rejects(env.setUp(), /IPv6 is not available/);
    assert.equal(fake.calls.length, 0);
  });
});

describe('NodeEnvironment.addTunRoutes (fake)', () => {
  it('fails clearly when the TUN does not exist', async () => {
    const { env, fake } = setup();
    await assert.rejects(env.addTunRoutes(), /TUN device oktun0 does not exist/);
    assert.equal(fake.calls.length, 0);
  });

  it('enables IPv6, sets rp_filter loose, MTU, up and the routes in one batch', async () => {
    const { env, fake, sysctl } = setup();
    sysctl.values.set('net/ipv4/conf/oktun0/rp_filter', '1');
    sysctl.values.set('net/ipv4/conf/all/rp_filter', '1');
    await env.addTunRoutes();
    assert.equal(sysctl.values.get('net/ipv4/conf/oktun0/rp_filter'), '2');
    assert.equal(sysctl.values.get('net/ipv6/conf/oktun0/disable_ipv6'), '0');
    assert.deepEqual(fake.calls, [
      {
        cmd: 'ip',
        args: ['-batch', '-'],
        input:
          'link set dev oktun0 mtu 1450 up\nroute replace 10.16.0.0/12 dev oktun0\nroute replace fc00::/7 dev oktun0\n',
      },
    ]);
    sysctl.values.set('net/ipv4/conf/all/rp_filter', '0');
    await env.addTunRoutes();
    assert.equal(sysctl.values.get('net/ipv4/conf/oktun0/rp_filter'), '0');
  });
});

describe('NodeEnvironment.tearDown (fake)', () => {
  it('deletes the veths on the bridge, the bridge, the table and the routes via the TUN', async () => {
    const { env, fake } = setup((call) => {
      if (call.args[0] === '-j') return { stdout: linksJson };
      if (call.args[0] === '-force')
        return { fail: 'RTNETLINK answers: No such process\nCommand failed -:2' };
      return undefined;
    });
    await env.tearDown();
    assert.deepEqual(fake.commandLines(), [
      'ip -j link show',
      'ip -batch -',
      'nft -f -',
      'ip -force -batch -',
    ]);
    assert.equal(fake.calls[1]?.input, 'link del dev oakva1\nlink del dev oakvb2\nlink del dev okbr0\n');
    assert.equal(fake.calls[2]?.input, deleteTableScript('oaknet'));
    assert.equal(fake.calls[3]?.input, 'route del 10.16.0.0/12 dev oktun0\nroute del fc00::/7 dev oktun0\n');
  });

  it('with nothing there: one listing and one idempotent table delete', async () => {
    const { env, fake } = setup((call) =>
      call.args[0] === '-j' ? { stdout: '[{"ifname":"lo"}]' } : undefined,
    );
    await env.tearDown();
    assert.deepEqual(fake.commandLines(), ['ip -j link show', 'nft -f -']);
  });

  it('runs operations one at a time', async () => {
    const order: string[] = [];
    const { env } = setup((call) => {
      order.push(call.cmd + (call.args[0] === '-j' ? ' -j' : ''));
      return call.args[0] === '-j' ? { stdout: '[]' } : undefined;
    });
    await Promise.all([env.tearDown(), env.attach({ ...request, portMappings: '' }), env.tearDown()]);
    assert.deepEqual(order, ['ip -j', 'nft', 'ip', 'nsenter', 'ip -j', 'nft']);
  });
});
