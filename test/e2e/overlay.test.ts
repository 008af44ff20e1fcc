/**
 * The overlay end to end, with real processes: an underlay of three node namespaces, root and cluster, three
 * `oaknet node` NetManagers; service A has two instances (real HTTP/UDP/iperf3 servers) on n2 and n3, and a
 * client instance on n1 calls them through A's RR_IP and instance IPs with curl, ping, iperf3 and UDP.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createPlatform, type Platform } from '../../src/platform/platform.ts';
import { findLeftovers } from '../../src/platform/teardown.ts';
import { dataPlaneOf } from '../support/status.ts';
import type { JobDocument } from '../../src/protocol/root-api.ts';
import { FIXTURES, inNetns, runWorkload, type Workload } from '../support/workloads.ts';

const A = 'e2e.test.svca.v1';
const B = 'e2e.test.svcb.v1';
const CLIENT = 'e2e.test.client.v1';

async function job(platform: Platform, name: string): Promise<JobDocument> {
  return platform.rootClient().jobByName(name);
}

function serviceIp(doc: JobDocument, type: 'RR' | 'Closest'): string {
  const ip = doc.service_ip_list.find((s) => s.IpType === type)?.Address;
  assert.ok(ip, `${doc.job_name} has a ${type} address`);
  return ip;
}

function instanceIp(doc: JobDocument, n: number): string {
  const i = doc.instance_list.find((x) => x.instance_number === n);
  assert.ok(i, `${doc.job_name} has instance ${n}`);
  return i.instance_ip;
}

describe('overlay end to end: 3 nodes, real applications', { timeout: 300_000 }, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-e2e-'));
  // bulk data the servers send and the clients upload: random, so no pattern hides a misplaced segment
  const blob = join(stateDir, 'blob');
  writeFileSync(blob, randomBytes(24 << 20));
  let platform: Platform;
  const workloads: Workload[] = [];
  let a0: Workload;
  let a1: Workload;
  let client: Workload;
  let b0: Workload;
  let rr: string;
  let clientIp: string;

  before(async () => {
    platform = await createPlatform(
      { stateDir, nodes: 3, clusters: 1, logLevel: 'info' },
      pino({ level: 'warn' }),
    );
    const server = (name: string) => ['python3', join(FIXTURES, 'server.py'), name, blob];
    const id = platform.id;
    a0 = await runWorkload(platform, 'n2', {
      service: A,
      instance: 0,
      netns: `${id}-a0`,
      command: server('A0'),
      readyLine: 'A0 ready',
    });
    workloads.push(a0);
    a1 = await runWorkload(platform, 'n3', {
      service: A,
      instance: 1,
      netns: `${id}-a1`,
      command: server('A1'),
      readyLine: 'A1 ready',
    });
    workloads.push(a1);
    client = await runWorkload(platform, 'n1', {
      service: CLIENT,
      instance: 0,
      netns: `${id}-cl`,
      command: ['sleep', 'infinity'],
    });
    workloads.push(client);
    b0 = await runWorkload(platform, 'n2', {
      service: B,
      instance: 0,
      netns: `${id}-b0`,
      command: ['sleep', 'infinity'],
    });
    workloads.push(b0);
    rr = serviceIp(await job(platform, A), 'RR');
    clientIp = instanceIp(await job(platform, CLIENT), 0);
  });

  after(async () => {
    for (const w of workloads.reverse()) await w.stop();
    const id = platform?.id;
    await platform?.destroy();
    if (id) {
      const left = await findLeftovers(id);
      assert.deepEqual(left.namespaces, [], 'no namespace left');
      assert.deepEqual(left.links, [], 'no link left');
      assert.deepEqual(left.processes, [], 'no process left');
      const runNetns = (await inNetnsList()).filter((n) => n.startsWith(`${id}-`));
      assert.deepEqual(runNetns, [], 'no workload namespace left');
    }
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('spreads 100 curl requests to the RR_IP over both instances; each sees the client instance IP', async () => {
    const out = await inNetns(client.netns, [
      'sh',
      '-c',
      `for i in $(seq 100); do curl -s -m 5 http://${rr}/; done`,
    ]);
    const lines = out.trim().split('\n');
    assert.equal(lines.length, 100, out);
    const counts = { A0: 0, A1: 0 };
    for (const line of lines) {
      const [name, source] = line.split(' ');
      assert.ok(name === 'A0' || name === 'A1', line);
      counts[name]++;
      assert.equal(source, clientIp, 'the server sees the client instance IP as source');
    }
    assert.ok(counts.A0 >= 40 && counts.A0 <= 60, JSON.stringify(counts));
    assert.ok(counts.A1 >= 40 && counts.A1 <= 60, JSON.stringify(counts));
  });

  it('reaches exactly the named instance through each instance IP', async () => {
    const doc = await job(platform, A);
    for (const [n, name] of [
      [0, 'A0'],
      [1, 'A1'],
    ] as const) {
      const out = await inNetns(client.netns, [
        'sh',
        '-c',
        `for i in 1 2 3 4 5; do curl -s -m 5 http://${instanceIp(doc, n)}/; done`,
      ]);
      assert.deepEqual(
        out
          .trim()
          .split('\n')
          .map((l) => l.split(' ')[0]),
        [name, name, name, name, name],
      );
    }
  });

  it('carries UDP across nodes, and between two instances on the same node', async () => {
    const across = await inNetns(client.netns, [
      'python3',
      join(FIXTURES, 'udp-client.py'),
      rr,
      '9000',
      'hello',
    ]);
    assert.match(across.trim(), /^A[01] hello$/);
    // B.0 and A.0 both run on n2: the packets never leave the node
    const n2Before = await dataPlaneOf(platform, 'n2');
    const same = await inNetns(b0.netns, [
      'python3',
      join(FIXTURES, 'udp-client.py'),
      instanceIp(await job(platform, A), 0),
      '9000',
      'neighbour',
    ]);
    assert.equal(same.trim(), 'A0 neighbour');
    const n2After = await dataPlaneOf(platform, 'n2');
    assert.ok(n2After.local >= n2Before.local + 2, 'request and answer were delivered on the node');
  });

  it('answers ping to the RR_IP', async () => {
    const out = await inNetns(client.netns, ['ping', '-c', '3', '-W', '2', rr]);
    assert.match(out, /3 packets transmitted, 3 received/);
    assert.match(out, new RegExp(`from ${rr.replaceAll('.', '\\.')}`));
  });

  it('answers ping to an instance IP, and carries UDP datagrams too big for one packet (IP fragments) both ways', async () => {
    const a = await job(platform, A);
    const a1 = instanceIp(a, 1); // on n3: across the tunnel
    const out = await inNetns(client.netns, ['ping', '-c', '3', '-W', '2', a1]);
    assert.match(out, /3 packets transmitted, 3 received/);
    // 4,000 bytes over a 1,450-byte MTU: three fragments there, and three back in the answer
    const big = 'f'.repeat(4000);
    const echo = await inNetns(client.netns, ['python3', join(FIXTURES, 'udp-client.py'), a1, '9000', big]);
    assert.equal(echo.trim(), `A1 ${big}`);
  });

  it('runs iperf3 TCP through the RR_IP for 5 s without error, with the offloads doing the work', async () => {
    const out = await inNetns(client.netns, ['iperf3', '-c', rr, '-t', '5', '-J'], 60_000);
    const report = JSON.parse(out) as { error?: string; end: { sum_received: { bits_per_second: number } } };
    assert.equal(report.error, undefined);
    assert.ok(
      report.end.sum_received.bits_per_second > 10e6,
      `${report.end.sum_received.bits_per_second} bit/s`,
    );
    // what `oaknet status --json` shows: the sender's TUN handed over TSO super-packets and its tunnel sent
    // UDP GSO runs; a receiver wrote coalesced segments into its TUN
    const offloads = async (name: string) => (await dataPlaneOf(platform, name)).offloads;
    const sender = await offloads('n1');
    assert.ok(sender.tun?.features.includes('tso4'), JSON.stringify(sender));
    assert.ok((sender.tun?.super_packets_read ?? 0) > 0, JSON.stringify(sender));
    assert.deepEqual(sender.tunnel && { gso: sender.tunnel.gso, gro: sender.tunnel.gro }, {
      gso: true,
      gro: true,
    });
    const receivers = [await offloads('n2'), await offloads('n3')];
    const coalesced = receivers.reduce((sum, o) => sum + (o.tun?.coalesced_packets ?? 0), 0);
    assert.ok(coalesced > 0, JSON.stringify(receivers));
  });

  it('moves 24 MiB each way byte for byte: across nodes (IPv4 and IPv6 RR_IP) and between neighbours on a node', async () => {
    const expected = createHash('sha256').update(readFileSync(blob)).digest('hex');
    const a = await job(platform, A);
    const rr6 = a.service_ip_list.find((s) => s.IpType === 'RR')?.Address_v6;
    assert.ok(rr6, 'A has an IPv6 RR_IP');
    const a0Ip = instanceIp(a, 0);
    const cases = [
      { from: client.netns, base: `http://${rr}` }, // n1 -> n2 or n3 through the tunnel
      { from: client.netns, base: `http://[${rr6}]` },
      { from: b0.netns, base: `http://${a0Ip}` }, // B.0 and A.0 are both on n2: super-packets stay on the node
    ];
    for (const { from, base } of cases) {
      // the server's file, downloaded and hashed in the client's namespace (an empty or cut body fails curl -f or the hash)
      const down = await inNetns(from, ['sh', '-c', `curl -sf -m 60 ${base}/blob | sha256sum`], 90_000);
      assert.equal(down.split(' ')[0], expected, `download from ${base}`);
      const up = await inNetns(
        from,
        [
          'curl',
          '-sf',
          '-m',
          '60',
          '-H',
          'content-type: application/octet-stream',
          '--data-binary',
          `@${blob}`,
          `${base}/sha256`,
        ],
        90_000,
      );
      assert.equal(up.trim(), expected, `upload to ${base}`);
    }
  });

  const tunnelDrops = (s: { wireguard?: { dropped: number } }) => s.wireguard?.dropped ?? 0;

  it('counts garbage on the tunnel port and malformed packets into the TUN as drops, and keeps working', async () => {
    const n1 = platform.node('n1');
    const n2 = platform.node('n2');
    const before2 = await dataPlaneOf(platform, 'n2');
    const garbage = `import os,socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(500): s.sendto(os.urandom(1+i%1400),("${n2.ip}",50103))\n`;
    await inNetns(n1.netns, ['python3', '-c', garbage]);
    const before1 = await dataPlaneOf(platform, 'n1');
    const sent = await inNetns(n1.netns, ['python3', join(FIXTURES, 'raw-garbage.py'), rr, '300']);
    assert.equal(sent.trim(), '300');
    // they were read and dropped (the counters say so), and service goes on
    const deadline = Date.now() + 10_000;
    let after2 = before2;
    let after1 = before1;
    while (Date.now() < deadline) {
      after2 = await dataPlaneOf(platform, 'n2');
      after1 = await dataPlaneOf(platform, 'n1');
      if (tunnelDrops(after2) >= tunnelDrops(before2) + 500 && after1.dropped >= before1.dropped + 300) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // the WireGuard side drops them before the proxy sees them: they come from no peer the tables know
    assert.ok(
      (after2.wireguard?.drops['unknown_peer'] ?? 0) >= (before2.wireguard?.drops['unknown_peer'] ?? 0) + 500,
      `n2 counted the garbage datagrams as drops from an unknown peer: ${JSON.stringify(after2.wireguard)}`,
    );
    assert.ok(
      after1.dropped >= before1.dropped + 300,
      `n1 counted the malformed packets: ${JSON.stringify(after1)}`,
    );
    const out = await inNetns(client.netns, ['curl', '-s', '-m', '5', `http://${rr}/`]);
    assert.match(out, /^A[01] /);
  });

  it("lets nothing from the underlay reach an instance's namespace address but through the proxy; counts it", async (t) => {
    // n1 plays a host on the underlay (IPv4 only) that routes n2's instance subnet via n2, bypassing its proxy
    // (and so does the underlay's router, the switch namespace); IPv6 has the same rules
    // (src/node/net/environment.netns.ts tries both families).
    const n1 = platform.node('n1');
    const n2 = platform.node('n2');
    const status = await platform.nodeClient('n2').status();
    const inst = status.instances.find((i) => i.service === A && i.instance === 0);
    assert.ok(inst && status.subnet, 'n2 reports a0 and its subnet');
    const subnet = status.subnet;
    const sw = platform.state.switchNs;
    await inNetns(n1.netns, ['ip', 'route', 'replace', subnet, 'via', n2.ip]);
    await inNetns(sw, ['ip', 'route', 'replace', subnet, 'via', n2.ip, 'dev', n2.netns]);
    t.after(async () => {
      await inNetns(n1.netns, ['ip', 'route', 'del', subnet]).catch(() => '');
      await inNetns(sw, ['ip', 'route', 'del', subnet]).catch(() => '');
    });
    const dropped0 = status.forward_dropped;
    assert.equal(typeof dropped0, 'number', 'GET /status reports forward_dropped');
    const out = await inNetns(n1.netns, [
      'sh',
      '-c',
      `seq 100 | xargs -P 100 -I{} curl -s -o /dev/null -m 2 -w '%{http_code}\\n' 'http://${inst.ns_address}/'; true`,
    ]);
    const codes = out.trim().split('\n');
    assert.equal(codes.length, 100, 'curl ran 100 times');
    assert.deepEqual(
      codes.filter((c) => c !== '000'),
      [],
      'no HTTP answer from a0',
    );
    const dropped = ((await platform.nodeClient('n2').status()).forward_dropped ?? 0) - (dropped0 ?? 0);
    t.diagnostic(`n2 forward_dropped +${dropped} for 100 attempts`);
    assert.ok(dropped >= 100, `n2 counted every attempt: +${dropped}`);
    // Through the proxy (a0's instance IP from the client on n1), and from n2 itself, a0 still answers.
    const a0Ip = instanceIp(await job(platform, A), 0);
    assert.match(await inNetns(client.netns, ['curl', '-s', '-m', '5', `http://${a0Ip}/`]), /^A0 /);
    assert.match(await inNetns(n2.netns, ['curl', '-s', '-m', '5', `http://${inst.ns_address}/`]), /^A0 /);
  });

  it('moves every new request to the remaining instance within 2 s of an undeploy, failing none', async () => {
    const loop = inNetns(client.netns, ['python3', join(FIXTURES, 'http-loop.py'), rr, '6', '0.05'], 60_000);
    await new Promise((r) => setTimeout(r, 1500)); // requests are flowing to both instances
    const undeployedAt = Date.now();
    const stopped = a1.stop();
    const lines = (await loop)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { start: number; end: number; ok: boolean; body: string });
    await stopped;
    const failed = lines.filter((l) => !l.ok);
    const inFlight = (l: { start: number; end: number }) =>
      l.start <= undeployedAt + 2000 && l.end >= undeployedAt;
    assert.ok(
      failed.every(inFlight),
      `only requests in flight at the undeploy may fail: ${JSON.stringify(failed)}`,
    );
    assert.ok(failed.length <= 1, `${failed.length} requests failed`);
    const late = lines.filter((l) => l.start > undeployedAt + 2000);
    assert.ok(late.length > 10, 'requests went on after the undeploy');
    assert.ok(
      late.every((l) => l.ok && l.body.startsWith('A0 ')),
      'every request 2 s after the undeploy reached A0',
    );
    assert.ok(
      lines.some((l) => l.start < undeployedAt && l.body.startsWith('A1 ')),
      'A1 served before',
    );
  });
});

async function inNetnsList(): Promise<string[]> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { stdout } = await promisify(execFile)('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}
