/**
 * The body of the NodeEnvironment integration test. environment.test.ts runs this file with
 * `ip netns exec oktest-env-<random> node --import tsx --test`, so this process, its /proc/sys and everything
 * NodeEnvironment creates live in a throwaway namespace that plays the node. It builds around it:
 * - "containers": namespaces (names from the parent) each held by a `sleep` process whose PID is attached;
 * - an "outside" host: a namespace behind a veth uplink (node 192.0.2.1 / 2001:db8::1, outside .2 / ::2) with
 *   no route back to the instance subnets, so only masquerade lets instances reach it;
 * - the TUN: `ip tuntap add` (the real one comes from the native addon).
 * Assertions are what a user would check: ping the gateways, addresses and routes in the container, HTTP and
 * UDP through port mappings from the node, from outside and from the container itself, removal afterwards.
 * Waits are conditions with deadlines, never fixed sleeps. The tools (commands, processes, probes) are in
 * netns-harness.ts.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { type Logger, pino } from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { ConflictError, SystemError } from '../../errors.ts';
import {
  type Attachment,
  NodeEnvironment,
  type NodeEnvironmentConfig,
  attachmentFromJson,
} from './environment.ts';
import {
  addressesOf,
  connectError,
  httpAnswers,
  httpGet,
  inNs,
  linkMac,
  linkNames,
  mapElementCount,
  neighbourMac,
  nftTables,
  routeDev,
  runner,
  sh,
  startHolder,
  startServer,
  stopStarted,
  sysctl,
  timed,
  udpEcho,
} from './netns-harness.ts';
import { ipJson, isRecord } from './runner.ts';
import { LinuxTun } from '../../dataplane/tun/linux.ts';
import { buildIpv4Udp, Collector, parseIpv4Udp, type Ipv4Udp } from '../../dataplane/tun/fixtures.ts';

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this file through environment.test.ts`);
  return value;
}

const containerNs = requiredEnv('OKTEST_CONTAINER_NS');
const container2Ns = requiredEnv('OKTEST_CONTAINER2_NS');
const outsideNs = requiredEnv('OKTEST_OUTSIDE_NS');

const logLines: Record<string, unknown>[] = [];
const logger: Logger = pino(
  { level: 'debug' },
  { write: (msg: string) => void logLines.push(JSON.parse(msg) as Record<string, unknown>) },
);

const config: NodeEnvironmentConfig = {
  bridge: 'okbr0',
  tun: 'oktun0',
  mtu: 1450,
  subnetV4: Cidr.parse('10.18.0.0/26'),
  subnetV6: Cidr.parse('fc00::/120'),
  tunRoutes: [Cidr.parse('10.16.0.0/12'), Cidr.parse('fc00::/7')],
  nftTable: 'oaktest',
};
const env = new NodeEnvironment(config, { runner, logger });

const NODE4 = '192.0.2.1';
const NODE6 = '2001:db8::1';
const OUTSIDE4 = '192.0.2.2';
const OUTSIDE6 = '2001:db8::2';
const HTTP_PORT = 18080;
const UDP_PORT = 15353;

const containerServer = `
const http = require('node:http'), dgram = require('node:dgram');
let n = 0;
const done = () => { if (++n === 2) console.log('ready'); };
http.createServer((q, s) => s.end('container sees ' + q.socket.remoteAddress)).listen(8080, '::', done);
const u = dgram.createSocket({ type: 'udp6', ipv6Only: false });
u.on('message', (m, r) => u.send(Buffer.concat([Buffer.from('echo '), m]), r.port, r.address));
u.bind(5353, '::', done);
`;
const outsideServer = `
require('node:http').createServer((q, s) => s.end('outside sees ' + q.socket.remoteAddress))
  .listen(9000, '::', () => console.log('ready'));
`;

describe('NodeEnvironment in a network namespace', () => {
  let holder = 0;
  let holder2 = 0;
  let attachment: Attachment | undefined;

  before(async () => {
    await sh('ip', ['link', 'set', 'dev', 'lo', 'up']);
    await sh('ip', ['netns', 'add', containerNs]);
    await sh('ip', ['netns', 'add', container2Ns]);
    await sh('ip', ['netns', 'add', outsideNs]);
    await sh('ip', ['link', 'add', 'okup0', 'type', 'veth', 'peer', 'name', 'okup1', 'netns', outsideNs]);
    await sh('ip', ['addr', 'add', `${NODE4}/24`, 'dev', 'okup0']);
    await sh('ip', ['addr', 'add', `${NODE6}/64`, 'dev', 'okup0', 'nodad']);
    await sh('ip', ['link', 'set', 'dev', 'okup0', 'up']);
    await inNs(outsideNs, 'ip', ['link', 'set', 'dev', 'lo', 'up']);
    await inNs(outsideNs, 'ip', ['addr', 'add', `${OUTSIDE4}/24`, 'dev', 'okup1']);
    await inNs(outsideNs, 'ip', ['addr', 'add', `${OUTSIDE6}/64`, 'dev', 'okup1', 'nodad']);
    await inNs(outsideNs, 'ip', ['link', 'set', 'dev', 'okup1', 'up']);
    // The second container already has an eth0, as a container with another network would.
    await inNs(container2Ns, 'ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    await sh('ip', ['tuntap', 'add', 'dev', config.tun, 'mode', 'tun']);
    holder = await startHolder(containerNs);
    holder2 = await startHolder(container2Ns);
    await startServer(outsideNs, outsideServer);
  });

  after(async () => {
    stopStarted();
    await env.tearDown().catch(() => {});
    for (const ns of [containerNs, container2Ns, outsideNs]) {
      await sh('ip', ['netns', 'del', ns]).catch(() => {});
    }
    await sh('ip', ['link', 'del', 'dev', config.tun]).catch(() => {});
  });

  it('setUp builds the bridge, turns on forwarding and creates the table; warns about foreign drops', async (t) => {
    // A firewall of someone else's with a drop policy: setUp must say that it will drop our traffic.
    await sh('nft', ['add', 'table', 'ip', 'okforeign']);
    await sh('nft', ['add chain ip okforeign FORWARD { type filter hook forward priority 0; policy drop; }']);
    const { ms } = await timed(() => env.setUp());
    t.diagnostic(`timing: setUp ${ms.toFixed(1)} ms`);
    await sh('nft', ['delete', 'table', 'ip', 'okforeign']);
    const warning = logLines.find((l) => Array.isArray(l['chains']));
    assert.deepEqual(warning?.['chains'], ['ip okforeign FORWARD']);

    const [bridge] = (await ipJson(runner, ['link', 'show', 'dev', config.bridge])).filter(isRecord);
    assert.equal(bridge?.['mtu'], 1450);
    assert.ok((bridge?.['flags'] as string[]).includes('UP'));
    assert.equal(bridge?.['address'], env.bridgeMac, 'the bridge has its own MAC');
    assert.deepEqual((await addressesOf(config.bridge)).filter((a) => !a.startsWith('fe80')).sort(), [
      '10.18.0.1/26',
      'fc00::1/120',
    ]);
    assert.equal(await sysctl('net/ipv4/ip_forward'), '1');
    assert.equal(await sysctl('net/ipv6/conf/all/forwarding'), '1');
    assert.equal(await sysctl(`net/ipv6/conf/${config.bridge}/disable_ipv6`), '0');
    assert.ok((await nftTables()).includes('inet oaktest'));
  });

  it('addTunRoutes sends the other subnets to the TUN and keeps the node subnet on the bridge', async () => {
    await sh('ip', ['link', 'set', 'dev', config.tun, 'mtu', '1500']);
    await writeFile(`/proc/sys/net/ipv4/conf/${config.tun}/rp_filter`, '1\n');
    await env.addTunRoutes();
    await env.addTunRoutes(); // idempotent
    assert.equal(await routeDev('10.20.0.5'), config.tun);
    assert.equal(await routeDev('10.30.1.1'), config.tun);
    assert.equal(await routeDev('fc00::1:5'), config.tun);
    assert.equal(await routeDev('fd12::1'), config.tun);
    assert.equal(await routeDev('10.18.0.5'), config.bridge);
    assert.equal(await routeDev('fc00::5'), config.bridge);
    const all = await sysctl('net/ipv4/conf/all/rp_filter');
    assert.equal(await sysctl(`net/ipv4/conf/${config.tun}/rp_filter`), all === '0' ? '0' : '2');
    assert.equal(await sysctl(`net/ipv6/conf/${config.tun}/disable_ipv6`), '0');
    const [tun] = (await ipJson(runner, ['link', 'show', 'dev', config.tun])).filter(isRecord);
    assert.equal(tun?.['mtu'], 1450);
    assert.ok((tun?.['flags'] as string[]).includes('UP'));
  });

  it('attach gives the container eth0, its addresses, default routes and the gateways', async (t) => {
    const { value, ms } = await timed(() =>
      env.attach({
        pid: holder,
        id: 'main',
        nsip: IpAddress.parse('10.18.0.2'),
        nsipv6: IpAddress.parse('fc00::2'),
        portMappings: `${HTTP_PORT}:8080;${UDP_PORT}:5353/udp`,
      }),
    );
    t.diagnostic(`timing: attach (v4+v6, 2 mappings) ${ms.toFixed(1)} ms`);
    attachment = attachmentFromJson(JSON.parse(JSON.stringify(value)));
    assert.equal(attachment.containerVeth, 'eth0');
    assert.ok((await linkNames()).includes('oakvmain'));
    assert.deepEqual((await linkNames(containerNs)).sort(), ['eth0', 'lo']);
    assert.deepEqual((await addressesOf('eth0', containerNs)).filter((a) => !a.startsWith('fe80')).sort(), [
      '10.18.0.2/26',
      'fc00::2/120',
    ]);
    const v4 = JSON.parse(await inNs(containerNs, 'ip', ['-j', 'route', 'show', 'default'])) as unknown[];
    const v6 = JSON.parse(
      await inNs(containerNs, 'ip', ['-j', '-6', 'route', 'show', 'default']),
    ) as unknown[];
    assert.equal((v4[0] as { gateway?: string }).gateway, '10.18.0.1');
    assert.equal((v6[0] as { gateway?: string }).gateway, 'fc00::1');
    const [eth0] = JSON.parse(await inNs(containerNs, 'ip', ['-j', 'link', 'show', 'dev', 'eth0'])) as {
      mtu: number;
    }[];
    assert.equal(eth0?.mtu, 1450);
    await inNs(containerNs, 'ping', ['-c1', '-w5', '10.18.0.1']);
    await inNs(containerNs, 'ping', ['-6', '-c1', '-w5', 'fc00::1']);
    assert.equal(await linkMac(config.bridge), env.bridgeMac, 'a port joining does not change it');
    assert.equal(await neighbourMac(containerNs, '10.18.0.1'), env.bridgeMac);
    assert.equal(await neighbourMac(containerNs, 'fc00::1'), env.bridgeMac);
  });

  it('the bridge keeps its MAC when a port with a lower MAC joins and leaves', async () => {
    // a Linux bridge without a MAC of its own would take this port's (the lowest) and lose it again
    await sh('ip', [
      'link',
      'add',
      'oklow0',
      'address',
      '02:00:00:00:00:01',
      'type',
      'veth',
      'peer',
      'oklow1',
    ]);
    await sh('ip', ['link', 'set', 'dev', 'oklow0', 'master', config.bridge]);
    await sh('ip', ['link', 'set', 'dev', 'oklow0', 'up']);
    assert.equal(await linkMac(config.bridge), env.bridgeMac);
    await sh('ip', ['link', 'del', 'dev', 'oklow0']);
    assert.equal(await linkMac(config.bridge), env.bridgeMac);
    // the container's cached gateway MAC is still right: a new connection works at once
    assert.equal(await neighbourMac(containerNs, '10.18.0.1'), env.bridgeMac);
    await inNs(containerNs, 'ping', ['-c1', '-w2', '10.18.0.1']);
  });

  it('port mappings reach the container from the node, from outside, and from the container itself', async () => {
    await startServer(containerNs, containerServer);
    // From the node (output hook), on its uplink addresses and on the bridge gateway.
    assert.match(await httpGet(`http://${NODE4}:${HTTP_PORT}/`), /^container sees /);
    assert.match(await httpGet(`http://[${NODE6}]:${HTTP_PORT}/`), /^container sees /);
    assert.match(await httpGet(`http://10.18.0.1:${HTTP_PORT}/`), /^container sees /);
    assert.equal(await udpEcho(NODE4, UDP_PORT, 'v4'), 'echo v4');
    assert.equal(await udpEcho(NODE6, UDP_PORT, 'v6'), 'echo v6');
    // From another host (prerouting): the container sees the real client.
    assert.equal(
      await inNs(outsideNs, 'curl', ['-sS', '-m5', `http://${NODE4}:${HTTP_PORT}/`]),
      `container sees ::ffff:${OUTSIDE4}`,
    );
    assert.equal(
      await inNs(outsideNs, 'curl', ['-sS', '-m5', `http://[${NODE6}]:${HTTP_PORT}/`]),
      `container sees ${OUTSIDE6}`,
    );
    // Hairpin: the container through the node's address to itself.
    assert.match(
      await inNs(containerNs, 'curl', ['-sS', '-m5', `http://${NODE4}:${HTTP_PORT}/`]),
      /^container sees/,
    );
    assert.match(
      await inNs(containerNs, 'curl', ['-sS', '-m5', `http://[${NODE6}]:${HTTP_PORT}/`]),
      /^container sees/,
    );
    // Loopback is deliberately not mapped (see environment.ts): nothing listens there on the node.
    assert.equal(await connectError(`http://127.0.0.1:${HTTP_PORT}/`), 'ECONNREFUSED');
  });

  it('the container reaches the outside world through masquerade', async () => {
    assert.equal(
      await inNs(containerNs, 'curl', ['-sS', '-m5', `http://${OUTSIDE4}:9000/`]),
      `outside sees ::ffff:${NODE4}`,
    );
    assert.equal(
      await inNs(containerNs, 'curl', ['-sS', '-m5', `http://[${OUTSIDE6}]:9000/`]),
      `outside sees ${NODE6}`,
    );
  });

  it('the forward boundary: from the underlay only the port mappings reach the container; the node, the TUN and replies do', async (t) => {
    // The attacker is the outside host: it routes the node's instance subnets via the node's uplink address.
    await inNs(outsideNs, 'ip', ['route', 'add', config.subnetV4.toString(), 'via', NODE4]);
    await inNs(outsideNs, 'ip', ['-6', 'route', 'add', config.subnetV6.toString(), 'via', NODE6]);
    t.after(async () => {
      await inNs(outsideNs, 'ip', ['route', 'del', config.subnetV4.toString()]).catch(() => {});
      await inNs(outsideNs, 'ip', ['-6', 'route', 'del', config.subnetV6.toString()]).catch(() => {});
    });
    const before = (await env.forwardDrops()).packets;

    // Published port mappings still answer from the underlay, every time, in both families.
    assert.equal(await httpAnswers(outsideNs, `http://${NODE4}:${HTTP_PORT}/`, 100, 5000), 100);
    assert.equal(await httpAnswers(outsideNs, `http://[${NODE6}]:${HTTP_PORT}/`, 100, 5000), 100);
    // The node itself reaches the container directly (output hook: not forwarded).
    assert.equal(await httpGet('http://10.18.0.2:8080/'), 'container sees ::ffff:10.18.0.1');
    assert.equal(await httpGet('http://[fc00::2]:8080/'), 'container sees fc00::1');
    // The container's own connections get their replies (masquerade): checked again after the rules.
    assert.equal(
      await inNs(containerNs, 'curl', ['-sS', '-m5', `http://${OUTSIDE4}:9000/`]),
      `outside sees ::ffff:${NODE4}`,
    );
    // Through the TUN (as the proxy delivers): a datagram from another node's instance address gets in,
    // and the container's answer goes back into the TUN.
    const tun = await LinuxTun.open({ name: config.tun, mtu: config.mtu });
    t.after(async () => {
      tun.close();
      // with a reader the TUN got a carrier and with it the kernel's link-local route: not one of ours
      await sh('ip', ['-6', 'route', 'del', 'fe80::/64', 'dev', config.tun]).catch(() => {});
    });
    const got = new Collector<Ipv4Udp>();
    tun.start((batch) => {
      for (let i = 0; i < batch.count; i++) {
        const p = parseIpv4Udp(batch.buffer, batch.offsets[i], batch.lengths[i]);
        if (p && p.srcPort === 5353) got.push(p);
      }
    });
    const packet = buildIpv4Udp('10.20.0.5', 40000, '10.18.0.2', 5353, Buffer.from('via tun'));
    assert.equal(
      tun.write({
        buffer: packet,
        offsets: Uint32Array.of(0),
        lengths: Uint32Array.of(packet.length),
        count: 1,
      }),
      1,
    );
    const [answer] = await got.take(1);
    assert.deepEqual(
      { src: answer?.src, dst: answer?.dst, dstPort: answer?.dstPort, payload: answer?.payload.toString() },
      { src: '10.18.0.2', dst: '10.20.0.5', dstPort: 40000, payload: 'echo via tun' },
    );
    assert.equal((await env.forwardDrops()).packets, before, 'nothing legitimate was dropped');

    // Straight to the container's addresses from the underlay: 100 tries a family, not one answer.
    assert.equal(await httpAnswers(outsideNs, 'http://10.18.0.2:8080/', 100, 1500), 0);
    assert.equal(await httpAnswers(outsideNs, 'http://[fc00::2]:8080/', 100, 1500), 0);
    const dropped = (await env.forwardDrops()).packets - before;
    t.diagnostic(`forward boundary: ${dropped} packets dropped for 200 connection attempts`);
    assert.ok(dropped >= 200, `the counter shows every attempt (${dropped})`);
    const listed = await sh('nft', ['list', 'counter', 'inet', config.nftTable, 'bridge_in_dropped']);
    assert.match(listed, new RegExp(`packets ${before + dropped} `));
  });

  it('a taken host port is a ConflictError and leaves nothing behind', async () => {
    await assert.rejects(
      env.attach({
        pid: holder2,
        id: 'dup',
        nsip: IpAddress.parse('10.18.0.3'),
        portMappings: String(HTTP_PORT),
      }),
      ConflictError,
    );
    assert.ok(!(await linkNames()).includes('oakvdup'));
    assert.deepEqual((await linkNames(container2Ns)).sort(), ['eth0', 'eth0peer', 'lo']);
    assert.equal(await mapElementCount(config.nftTable), 4);
  });

  it('attach into a namespace that has eth0 keeps the peer name, and instances talk directly', async () => {
    const att = await env.attach({
      pid: holder2,
      id: 'two',
      nsip: IpAddress.parse('10.18.0.3'),
      nsipv6: IpAddress.parse('fc00::3'),
      portMappings: [],
    });
    assert.equal(att.containerVeth, 'oakctwo');
    assert.deepEqual(
      (await addressesOf('oakctwo', container2Ns)).filter((a) => !a.startsWith('fe80')).sort(),
      ['10.18.0.3/26', 'fc00::3/120'],
    );
    assert.equal(
      await inNs(container2Ns, 'curl', ['-sS', '-m5', 'http://10.18.0.2:8080/']),
      'container sees ::ffff:10.18.0.3',
    );
    assert.equal(
      await inNs(container2Ns, 'curl', ['-sS', '-m5', 'http://[fc00::2]:8080/']),
      'container sees fc00::3',
    );
    await env.detach(att);
    assert.deepEqual((await linkNames(container2Ns)).sort(), ['eth0', 'eth0peer', 'lo']);
  });

  it('attach rolls back when the process does not exist', async () => {
    await assert.rejects(
      env.attach({ pid: 2 ** 22 + 7, id: 'ghost', nsip: IpAddress.parse('10.18.0.4'), portMappings: '9999' }),
      SystemError,
    );
    assert.ok(!(await linkNames()).includes('oakvghost'));
    assert.equal(await mapElementCount(config.nftTable), 4);
  });

  it('detach removes the veth and the mappings; a second detach is fine', async (t) => {
    const att = attachment;
    assert.ok(att);
    const { ms } = await timed(() => env.detach(att));
    t.diagnostic(`timing: detach (2 mappings, v4+v6) ${ms.toFixed(1)} ms`);
    assert.ok(!(await linkNames()).includes('oakvmain'));
    assert.deepEqual(await linkNames(containerNs), ['lo']);
    assert.equal(await mapElementCount(config.nftTable), 0);
    assert.equal(await connectError(`http://${NODE4}:${HTTP_PORT}/`), 'ECONNREFUSED');
    assert.notEqual(
      await inNs(outsideNs, 'curl', ['-sS', '-m2', `http://${NODE4}:${HTTP_PORT}/`]).catch(() => 'failed'),
      `container sees ::ffff:${OUTSIDE4}`,
    );
    await env.detach(att);
  });

  it('setUp again after a crash removes leftovers and works', async () => {
    await env.attach({
      pid: holder,
      id: 'crash',
      nsip: IpAddress.parse('10.18.0.5'),
      portMappings: '18082:8080',
    });
    await env.setUp(); // as a restarted NetManager would, without detaching
    assert.ok(!(await linkNames()).includes('oakvcrash'));
    assert.equal(await linkMac(config.bridge), env.bridgeMac, 'the re-created bridge has the same MAC');
    assert.deepEqual(await linkNames(containerNs), ['lo']);
    assert.equal(await mapElementCount(config.nftTable), 0);
    await env.setUp(); // and once more in a row
    const again = await env.attach({
      pid: holder,
      id: 'again',
      nsip: IpAddress.parse('10.18.0.5'),
      nsipv6: IpAddress.parse('fc00::5'),
      portMappings: '18082:8080',
    });
    assert.equal(again.containerVeth, 'eth0');
    await inNs(containerNs, 'ping', ['-c1', '-w5', '10.18.0.1']);
    assert.match(await httpGet(`http://${NODE4}:18082/`), /^container sees /);
    await env.detach(again);
  });

  it('attach/detach cycles', async (t) => {
    const attachMs: number[] = [];
    const detachMs: number[] = [];
    for (let i = 0; i < 10; i++) {
      const a = await timed(() =>
        env.attach({
          pid: holder,
          id: `cyc${i}`,
          nsip: IpAddress.parse('10.18.0.6'),
          nsipv6: IpAddress.parse('fc00::6'),
          portMappings: '18083:8080',
        }),
      );
      attachMs.push(a.ms);
      detachMs.push((await timed(() => env.detach(a.value))).ms);
    }
    const median = (xs: number[]): string => [...xs].sort((a, b) => a - b)[xs.length >> 1]!.toFixed(1);
    t.diagnostic(
      `timing: attach median ${median(attachMs)} ms, detach median ${median(detachMs)} ms (10 cycles)`,
    );
    assert.deepEqual(await linkNames(containerNs), ['lo']);
  });

  it('tearDown removes the bridge, its veths, the table and the TUN routes; twice is fine', async () => {
    await env.attach({ pid: holder, id: 'td', nsip: IpAddress.parse('10.18.0.7'), portMappings: '18084' });
    await env.tearDown();
    const links = await linkNames();
    assert.ok(!links.includes(config.bridge));
    assert.ok(!links.some((l) => l.startsWith('oakv')));
    assert.ok(!(await nftTables()).includes('inet oaktest'));
    assert.deepEqual(await ipJson(runner, ['route', 'show', 'dev', config.tun]), []);
    assert.deepEqual(await ipJson(runner, ['-6', 'route', 'show', 'dev', config.tun]), []);
    assert.deepEqual(await linkNames(containerNs), ['lo']);
    await env.tearDown();
  });
});
