/**
 * NodeEnvironment.attach and detach against a FakeRunner: the exact ip/nsenter/nft commands for one
 * instance, the Attachment record, roll-back, conflicts and what detach tolerates.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpAddress } from '../../addressing/ip.ts';
import { ConflictError, InvalidInputError, SystemError } from '../../errors.ts';
import { request, setup } from './environment.fixtures.ts';
import { type Attachment, attachmentFromJson } from './environment.ts';

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
