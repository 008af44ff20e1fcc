/**
 * Names (issue 13), from inside instances with real resolvers and clients: dig (UDP and TCP), glibc's
 * getent, Python's getaddrinfo and curl, for every name form, A and AAAA, across nodes and clusters. Three
 * nodes in two clusters; service W runs on n2 (instance 0) and n3 (instance 1), clients on n1 and n2. Then an
 * undeployed service's name turns NXDOMAIN on every node, and with root and clusters killed the names already
 * known keep resolving and answering.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { sleepImage, startContainer } from '../../src/node/dns/fixtures.ts';
import { createPlatform, type Platform } from '../../src/platform/platform.ts';
import type { JobDocument } from '../../src/protocol/root-api.ts';
import { FIXTURES, inNetns } from '../support/workloads.ts';

const execFileP = promisify(execFile);
const W = 'e2e.dns.web.v1';
/** W's names: the default (its RR_IP), the policy names and the instance names. */
const NAMES = {
  default: 'web.v1.e2e.dns.oakestra',
  rr: 'web.v1.e2e.dns.rr.oakestra',
  closest: 'web.v1.e2e.dns.closest.oakestra',
  i0: '0.instance.web.v1.e2e.dns.oakestra',
  i1: '1.instance.web.v1.e2e.dns.oakestra',
};

describe('names from the node DNS server', { timeout: 600_000 }, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-dns-'));
  let platform: Platform;
  let doc: JobDocument;
  const ns = (w: string) => platform.workloads.find((x) => x.name === w)!.netns;
  const sip = (type: 'RR' | 'Closest', v6 = false) => {
    const e = doc.service_ip_list.find((s) => s.IpType === type)!;
    return (v6 ? e.Address_v6 : e.Address)!;
  };
  const iip = (n: number, v6 = false) => {
    const i = doc.instance_list.find((x) => x.instance_number === n)!;
    return v6 ? i.instance_ip_v6 : i.instance_ip;
  };
  const dig = async (client: string, args: string[]) =>
    (await inNetns(ns(client), ['dig', '+time=2', '+tries=1', ...args])).trim();
  const short = async (client: string, name: string, type = 'A', tcp = false) =>
    (await dig(client, ['+short', ...(tcp ? ['+tcp'] : []), name, type])).split('\n').filter(Boolean);
  const status = async (client: string, name: string) =>
    /status: ([A-Z]+)/.exec(await dig(client, ['+noall', '+comments', name, 'A']))?.[1];

  before(async () => {
    platform = await createPlatform({ stateDir, nodes: 3, clusters: 2 }, pino({ level: 'warn' }));
    const server = (name: string) => ['python3', join(FIXTURES, 'server.py'), name];
    await platform.startWorkload({
      name: 'w0',
      node: 'n2',
      service: W,
      instance: 0,
      command: server('W0'),
      readyLine: 'W0 ready',
    });
    await platform.startWorkload({
      name: 'w1',
      node: 'n3',
      service: W,
      instance: 1,
      command: server('W1'),
      readyLine: 'W1 ready',
    });
    for (const [name, node] of [
      ['c1', 'n1'],
      ['c2', 'n2'],
    ] as const)
      await platform.startWorkload({
        name,
        node,
        service: `e2e.dns.${name}.v1`,
        instance: 0,
        command: ['sleep', 'infinity'],
      });
    doc = await platform.rootClient().jobByName(W);
    assert.equal(new Set(doc.instance_list.map((i) => i.cluster_id)).size, 2, 'W runs in both clusters');
  });

  after(async () => {
    await platform?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("gives every instance a resolv.conf with its node's DNS server and its application's domains", async () => {
    const conf = await inNetns(ns('c1'), ['cat', '/etc/resolv.conf']);
    const n1 = await platform.nodeClient('n1').status();
    assert.ok(n1.dns, 'n1 runs a DNS server');
    for (const s of n1.dns.servers)
      assert.match(conf, new RegExp(`^nameserver ${s.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(conf, /^search v1\.e2e\.dns\.oakestra e2e\.dns\.oakestra$/m);
    // oaknet exec sees the same file as the workload
    const { stdout } = await execFileP(process.execPath, [
      join(platform.state.repo, 'bin', 'oaknet.mjs'),
      'exec',
      '--state-dir',
      stateDir,
      'c1',
      '--',
      'cat',
      '/etc/resolv.conf',
    ]);
    assert.equal(stdout, conf);
  });

  it("gives a container deployed through /container/deploy (upstream's node engine) a resolv.conf in its own root", async () => {
    // what an Oakestra node engine does: schedule at the root, tell the cluster, create the container (its own
    // root and namespaces), call /container/deploy with its pid before starting it
    const job = 'e2e.dns.ctr.v1';
    const root = platform.rootClient('orchestrator');
    await root.createService(job);
    const ctr = await root.jobByName(job);
    const cluster = platform.clusterClient(platform.node('n1').cluster, 'orchestrator');
    await root.deployInstance(ctr._id, 0, (await cluster.status()).cluster_id);
    await cluster.announceDeployment(job);
    const image = join(stateDir, 'ctr-image');
    const { child, pid } = await startContainer(image, sleepImage(image));
    const node = platform.nodeClient('n1');
    try {
      const reply = await node.deploy({ pid, serviceName: job, instanceNumber: 0, portMappings: '' });
      assert.equal(reply.resolvConf, 'written');
      const conf = readFileSync(join(image, 'etc', 'resolv.conf'), 'utf8');
      const n1 = await node.status();
      for (const s of n1.dns!.servers)
        assert.match(conf, new RegExp(`^nameserver ${s.replace(/\./g, '\\.')}$`, 'm'));
      assert.match(conf, /^search v1\.e2e\.dns\.oakestra e2e\.dns\.oakestra$/m);
      // from the container's network namespace, the server its resolv.conf names answers W's name
      const server = /^nameserver (\S+)$/m.exec(conf)![1]!;
      const { stdout } = await execFileP('nsenter', [
        `--net=/proc/${pid}/ns/net`,
        'dig',
        '+short',
        '+time=2',
        '+tries=1',
        `@${server}`,
        NAMES.default,
      ]);
      assert.equal(stdout.trim(), sip('RR'));
    } finally {
      await node.undeploy(job, 0);
      child.kill('SIGKILL');
      await root.removeInstance(ctr._id, 0);
    }
  });

  it('answers every name form with A and AAAA, over UDP and TCP, on both clients (two clusters)', async () => {
    for (const client of ['c1', 'c2']) {
      for (const tcp of [false, true]) {
        const ctx = `${client}${tcp ? ' over TCP' : ''}`;
        assert.deepEqual(await short(client, NAMES.default, 'A', tcp), [sip('RR')], `${ctx}: default name`);
        assert.deepEqual(
          await short(client, NAMES.default, 'AAAA', tcp),
          [sip('RR', true)],
          `${ctx}: default AAAA`,
        );
        assert.deepEqual(await short(client, NAMES.rr, 'A', tcp), [sip('RR')], ctx);
        assert.deepEqual(await short(client, NAMES.closest, 'A', tcp), [sip('Closest')], ctx);
        assert.deepEqual(await short(client, NAMES.closest, 'AAAA', tcp), [sip('Closest', true)], ctx);
        assert.deepEqual(await short(client, NAMES.i0, 'A', tcp), [iip(0)], ctx);
        assert.deepEqual(await short(client, NAMES.i1, 'AAAA', tcp), [iip(1, true)], ctx);
      }
      // PTR: a ServiceIP and an instance IP name their names
      assert.equal(await dig(client, ['+short', '-x', sip('RR')]), `${NAMES.rr}.`);
      assert.equal(await dig(client, ['+short', '-x', iip(1)]), `${NAMES.i1}.`);
    }
  });

  it('NXDOMAIN with the SOA for a name that does not exist', async () => {
    const out = await dig('c1', ['+noall', '+comments', '+authority', 'nosuch.v1.e2e.dns.oakestra', 'A']);
    assert.match(out, /status: NXDOMAIN/);
    assert.match(out, /^oakestra\.\s+\d+\s+IN\s+SOA\s/m);
    assert.equal(await status('c1', '2.instance.web.v1.e2e.dns.oakestra'), 'NXDOMAIN');
  });

  it('resolves for glibc and Python through the search list, and curl reaches W by every name', async () => {
    const hosts = await inNetns(ns('c2'), ['getent', 'hosts', 'web']);
    assert.match(
      hosts,
      new RegExp(`^${sip('RR', true).replace(/\./g, '\\.')}|^${sip('RR').replace(/\./g, '\\.')}`),
    );
    const py = await inNetns(ns('c1'), [
      'python3',
      '-c',
      'import json,socket,sys; print(json.dumps(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, proto=socket.IPPROTO_TCP)})))',
      'web',
    ]);
    assert.deepEqual(JSON.parse(py), [sip('RR'), sip('RR', true)].sort(), 'getaddrinfo: both families');
    const curl = (client: string, url: string, v6 = false) =>
      inNetns(ns(client), ['curl', '-s', '-m', '5', ...(v6 ? ['-6'] : ['-4']), url]);
    for (const client of ['c1', 'c2']) {
      assert.match(await curl(client, 'http://web/'), /^W[01] /, `${client}: http://web/`);
      assert.match(await curl(client, 'http://web.v1/'), /^W[01] /, `${client}: http://web.v1/`);
      assert.match(await curl(client, `http://${NAMES.default}/`, true), /^W[01] /, 'over IPv6 (AAAA)');
      assert.match(await curl(client, `http://${NAMES.rr}/`), /^W[01] /);
      assert.match(await curl(client, `http://${NAMES.closest}/`), /^W[01] /);
      assert.match(await curl(client, `http://${NAMES.i0}/`), /^W0 /);
      assert.match(await curl(client, `http://${NAMES.i1}/`, true), /^W1 /);
    }
  });

  it('an undeployed service is NXDOMAIN on every node within 2 s', async () => {
    const U = 'e2e.dns.gone.v1';
    await platform.startWorkload({
      name: 'u0',
      node: 'n3',
      service: U,
      instance: 0,
      command: ['sleep', 'infinity'],
    });
    const name = 'gone.v1.e2e.dns.oakestra';
    // every node has it in its tables (asked by a client there, or its own instance)
    for (const client of ['c1', 'c2']) assert.equal(await status(client, name), 'NOERROR');
    const u = await platform.rootClient('orchestrator').jobByName(U);
    const started = Date.now();
    await platform.rootClient('orchestrator').removeService(u._id, true);
    const done = new Map<string, number>();
    while (done.size < 2 && Date.now() - started < 10_000)
      for (const client of ['c1', 'c2'])
        if (!done.has(client) && (await status(client, name)) === 'NXDOMAIN')
          done.set(client, Date.now() - started);
    for (const client of ['c1', 'c2']) {
      const ms = done.get(client);
      assert.ok(ms !== undefined && ms <= 2000, `${client}: NXDOMAIN after ${ms ?? 'more than 10,000'} ms`);
    }
  });

  it('with root and clusters killed, the names known keep resolving and their addresses keep answering', async () => {
    for (const client of ['c1', 'c2']) {
      // known: asked while the control plane is up
      assert.deepEqual(await short(client, NAMES.default), [sip('RR')]);
      assert.deepEqual(await short(client, NAMES.i1, 'AAAA'), [iip(1, true)]);
    }
    for (const name of ['root', ...platform.state.clusters.map((c) => c.name)]) {
      const p = platform.state.processes.find((x) => x.name === name);
      assert.ok(p, `${name} is a recorded process`);
      process.kill(p.pid, 'SIGKILL');
    }
    for (const client of ['c1', 'c2']) {
      assert.deepEqual(await short(client, NAMES.default), [sip('RR')], `${client}: still resolves`);
      assert.deepEqual(await short(client, NAMES.i1, 'AAAA'), [iip(1, true)]);
      const answer = await inNetns(ns(client), ['curl', '-s', '-m', '5', 'http://web/']);
      assert.match(answer, /^W[01] /, `${client}: http://web/ still answers`);
    }
  });
});
