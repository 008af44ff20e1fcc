/**
 * NodeEnvironment and nft-script against a FakeRunner and a MemorySysctl: the exact commands, their order
 * and count, rollback and tolerance paths that are hard to provoke on a real kernel. The real kernel is
 * exercised by environment.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Logger, pino } from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { ConflictError, InvalidInputError, SystemError } from '../../errors.ts';
import {
  type Attachment,
  type NodeEnvironmentConfig,
  NodeEnvironment,
  attachmentFromJson,
} from './environment.ts';
import {
  addElementsScript,
  deleteElementsScript,
  deleteTableScript,
  elementsFor,
  parseMapElements,
  tableScript,
} from './nft-script.ts';
import { FakeRunner, type FakeResponse, type RecordedCall } from './runner.ts';
import { MemorySysctl } from './sysctl.ts';

const config: NodeEnvironmentConfig = {
  bridge: 'okbr0',
  tun: 'oktun0',
  mtu: 1450,
  subnetV4: Cidr.parse('10.18.0.0/26'),
  subnetV6: Cidr.parse('fc00::/120'),
  tunRoutes: [Cidr.parse('10.16.0.0/12'), Cidr.parse('fc00::/7')],
  nftTable: 'oaknet',
};

function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger: Logger = pino(
    { level: 'debug' },
    { write: (msg: string) => void lines.push(JSON.parse(msg) as Record<string, unknown>) },
  );
  return { logger, lines };
}

function sysctlWithDefaults(): MemorySysctl {
  return new MemorySysctl({
    'net/ipv6/conf/all/disable_ipv6': '0',
    'net/ipv6/conf/all/forwarding': '0',
    'net/ipv4/ip_forward': '0',
    'net/ipv4/conf/all/rp_filter': '0',
    // an uplink configured by SLAAC
    'net/ipv6/conf/uplink0/accept_ra': '1',
  });
}

function setup(respond?: (call: RecordedCall) => FakeResponse | undefined): {
  env: NodeEnvironment;
  fake: FakeRunner;
  sysctl: MemorySysctl;
  lines: Record<string, unknown>[];
} {
  const fake = new FakeRunner(respond);
  const sysctl = sysctlWithDefaults();
  const { logger, lines } = capturingLogger();
  return { env: new NodeEnvironment(config, { runner: fake, logger, sysctl }), fake, sysctl, lines };
}

const linksJson = JSON.stringify([
  { ifname: 'lo' },
  { ifname: 'eth0' },
  { ifname: 'okbr0' },
  { ifname: 'oakva1', master: 'okbr0' },
  { ifname: 'oakvb2', master: 'okbr0' },
  { ifname: 'vethother', master: 'docker0' },
  { ifname: 'oktun0' },
]);

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
      'link del dev oakva1\nlink del dev oakvb2\nlink del dev okbr0\nlink add name okbr0 mtu 1450 type bridge\n',
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

const request = {
  pid: 4242,
  id: 'x1',
  nsip: IpAddress.parse('10.18.0.2'),
  nsipv6: IpAddress.parse('fc00::2'),
  portMappings: '8080:80;53/udp',
};

describe('NodeEnvironment.attach (fake)', () => {
  it('uses two ip batches and one nft script, and returns a JSON record', async () => {
    const { env, fake } = setup();
    const att = await env.attach(request);
    assert.deepEqual(fake.commandLines(), ['ip -batch -', 'nsenter -t 4242 -n ip -batch -', 'nft -f -']);
    assert.equal(
      fake.calls[0]?.input,
      [
        'link add oakvx1 mtu 1450 type veth peer name eth0 mtu 1450 netns 4242',
        'link set dev oakvx1 master okbr0',
        'link set dev oakvx1 type bridge_slave hairpin on',
        'link set dev oakvx1 up',
        '',
      ].join('\n'),
    );
    assert.equal(
      fake.calls[1]?.input,
      [
        'link set dev lo up',
        'addr add 10.18.0.2/26 dev eth0',
        'addr add fc00::2/120 dev eth0 nodad',
        'link set dev eth0 up',
        'route replace 0.0.0.0/0 via 10.18.0.1 dev eth0',
        'route replace ::/0 via fc00::1 dev eth0',
        '',
      ].join('\n'),
    );
    assert.equal(
      fake.calls[2]?.input,
      'add element inet oaknet pm4 { tcp . 8080 : 10.18.0.2 . 80, udp . 53 : 10.18.0.2 . 53 }\n' +
        'add element inet oaknet pm6 { tcp . 8080 : fc00::2 . 80, udp . 53 : fc00::2 . 53 }\n',
    );
    const expected: Attachment = {
      id: 'x1',
      pid: 4242,
      hostVeth: 'oakvx1',
      containerVeth: 'eth0',
      nsip: '10.18.0.2',
      nsipv6: 'fc00::2',
      portMappings: [
        { protocol: 'tcp', hostPort: 8080, containerPort: 80 },
        { protocol: 'udp', hostPort: 53, containerPort: 53 },
      ],
    };
    assert.deepEqual(att, expected);
    assert.deepEqual(attachmentFromJson(JSON.parse(JSON.stringify(att))), expected);
  });

  it('without IPv6 or mappings: IPv4 only, two spawns', async () => {
    const { env, fake } = setup();
    const att = await env.attach({ ...request, nsipv6: undefined, portMappings: '' });
    assert.deepEqual(fake.commandLines(), ['ip -batch -', 'nsenter -t 4242 -n ip -batch -']);
    assert.doesNotMatch(fake.calls[1]?.input ?? '', /fc00|::\/0/);
    assert.equal('nsipv6' in att, false);
  });

  it('keeps the peer name when eth0 exists in the namespace', async () => {
    let first = true;
    const { env, fake } = setup((call) => {
      if (call.input?.includes('peer name eth0') && first) {
        first = false;
        return { fail: 'RTNETLINK answers: File exists\nCommand failed -:1' };
      }
      return undefined;
    });
    const att = await env.attach({ ...request, portMappings: '' });
    assert.equal(att.containerVeth, 'oakcx1');
    assert.match(fake.calls[1]?.input ?? '', /peer name oakcx1 mtu 1450 netns 4242/);
    assert.match(fake.calls[2]?.input ?? '', /addr add 10\.18\.0\.2\/26 dev oakcx1/);
  });

  it('rolls back the veth when the namespace step fails', async () => {
    const { env, fake } = setup((call) =>
      call.cmd === 'nsenter'
        ? { fail: 'RTNETLINK answers: Network is unreachable\nCommand failed -:5' }
        : undefined,
    );
    await assert.rejects(
      env.attach(request),
      (err: unknown) => err instanceof SystemError && /line 5/.test(err.message),
    );
    assert.deepEqual(fake.commandLines(), [
      'ip -batch -',
      'nsenter -t 4242 -n ip -batch -',
      'ip link del dev oakvx1',
    ]);
  });

  it('does not delete anything when the veth could not be created', async () => {
    const { env, fake } = setup(() => ({ fail: 'Invalid "netns" value\nCommand failed -:1' }));
    await assert.rejects(env.attach(request), SystemError);
    assert.deepEqual(fake.commandLines(), ['ip -batch -']);
  });

  it('reports a host port taken by another instance as ConflictError and rolls back', async () => {
    const { env, fake } = setup((call) =>
      call.cmd === 'nft' ? { fail: 'Error: Could not process rule: File exists' } : undefined,
    );
    await assert.rejects(
      env.attach(request),
      (err: unknown) => err instanceof ConflictError && /tcp\/8080/.test(err.message),
    );
    assert.equal(fake.commandLines().at(-1), 'ip link del dev oakvx1');
  });

  for (const [why, patch] of [
    ['an id that makes a name over 15 characters', { id: 'abcdefghijkl' }],
    ['an id with a space', { id: 'a b' }],
    ['pid 0', { pid: 0 }],
    ['the gateway as nsip', { nsip: IpAddress.parse('10.18.0.1') }],
    ['the broadcast address as nsip', { nsip: IpAddress.parse('10.18.0.63') }],
    ['an nsip outside the subnet', { nsip: IpAddress.parse('10.18.1.2') }],
    ['an IPv6 nsip', { nsip: IpAddress.parse('fc00::5') }],
    ['an nsipv6 outside the subnet', { nsipv6: IpAddress.parse('fc00::1:2') }],
    ['bad port mappings', { portMappings: '80:hello' }],
  ] as const) {
    it(`rejects ${why} with InvalidInputError before touching anything`, async () => {
      const { env, fake } = setup();
      await assert.rejects(env.attach({ ...request, ...patch }), InvalidInputError);
      assert.equal(fake.calls.length, 0);
    });
  }
});

describe('NodeEnvironment.detach (fake)', () => {
  const att: Attachment = {
    id: 'x1',
    pid: 4242,
    hostVeth: 'oakvx1',
    containerVeth: 'eth0',
    nsip: '10.18.0.2',
    nsipv6: 'fc00::2',
    portMappings: [
      { protocol: 'tcp', hostPort: 8080, containerPort: 80 },
      { protocol: 'udp', hostPort: 53, containerPort: 53 },
    ],
  };
  const listing = JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6' } },
      { table: { family: 'inet', name: 'oaknet' } },
      {
        map: {
          family: 'inet',
          name: 'pm4',
          table: 'oaknet',
          elem: [
            [{ concat: ['tcp', 8080] }, { concat: ['10.18.0.2', 80] }],
            // udp/53 was re-used by another instance: must be left alone
            [{ concat: ['udp', 53] }, { concat: ['10.18.0.9', 53] }],
          ],
        },
      },
      {
        map: {
          family: 'inet',
          name: 'pm6',
          table: 'oaknet',
          elem: [[{ concat: ['udp', 53] }, { concat: ['fc00::2', 53] }]],
        },
      },
    ],
  });

  it('deletes only the elements that still lead to this instance, and the veth', async () => {
    const { env, fake, lines } = setup((call) => (call.args[0] === '-j' ? { stdout: listing } : undefined));
    await env.detach(att);
    // the mapping removal and the veth removal run side by side
    assert.deepEqual(fake.commandLines().sort(), [
      'ip link del dev oakvx1',
      'nft -f -',
      'nft -j list table inet oaknet',
    ]);
    assert.equal(
      fake.calls.find((c) => c.args[0] === '-f')?.input,
      'delete element inet oaknet pm4 { tcp . 8080 }\ndelete element inet oaknet pm6 { udp . 53 }\n',
    );
    assert.ok(lines.some((l) => String(l['msg']).includes('leads elsewhere')));
  });

  it('tolerates a missing table and a missing veth', async () => {
    const { env, fake } = setup((call) =>
      call.args[0] === '-j'
        ? { fail: 'Error: No such file or directory\nlist table inet oaknet' }
        : call.args[0] === 'link'
          ? { fail: 'Cannot find device "oakvx1"' }
          : undefined,
    );
    await env.detach(att);
    assert.deepEqual(fake.commandLines().sort(), ['ip link del dev oakvx1', 'nft -j list table inet oaknet']);
  });

  it('still removes the veth when the mappings cannot be removed, then throws SystemError', async () => {
    const { env, fake } = setup((call) =>
      call.args[0] === '-j' ? { fail: 'Error: Operation not permitted' } : undefined,
    );
    await assert.rejects(
      env.detach(att),
      (err: unknown) => err instanceof SystemError && /incomplete/.test(err.message),
    );
    assert.ok(fake.commandLines().includes('ip link del dev oakvx1'));
  });

  it('rejects a record that is not an attachment', async () => {
    const { env, fake } = setup();
    for (const bad of [
      { ...att, hostVeth: 'eth0' },
      { ...att, pid: -1 },
      { ...att, nsip: 'fc00::2' },
      { ...att, portMappings: [{ protocol: 'tcp', hostPort: 0, containerPort: 1 }] },
    ]) {
      await assert.rejects(env.detach(bad as Attachment), InvalidInputError);
    }
    assert.equal(fake.calls.length, 0);
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
