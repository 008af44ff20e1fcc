// Runs as root (as CI does): builds real platforms of namespaces and oaknet processes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { InvalidInputError, SystemError } from '../errors.ts';
import { ExecRunner } from '../node/net/runner.ts';
import { isAlive, readProcStat } from '../system/proc.ts';
import { listNetns } from './netns.ts';
import { planPlatform, randomPlatformId, rootLimitFlags } from './plan.ts';
import { createPlatform, loadPlatform, type Platform } from './platform.ts';
import { waitFor } from './processes.ts';
import { readState, statePath } from './state.ts';
import { destroyPlatform, findLeftovers, type Leftovers } from './teardown.ts';

const run = promisify(execFile);
const log = pino({ level: process.env['OAKNET_TEST_LOG'] ?? 'silent' });
const dirs: string[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-platform-'));
  dirs.push(dir);
  return dir;
}

after(async () => {
  for (const dir of dirs) {
    await destroyPlatform(dir, log).catch(() => undefined); // after a failed assertion
    rmSync(dir, { recursive: true, force: true });
  }
});

/** min and avg round-trip time in ms of `count` pings from node `from` to `ip`. */
async function pingRtt(
  p: Platform,
  from: string,
  ip: string,
  count: number,
): Promise<{ min: number; avg: number }> {
  const { stdout } = await run('ip', [
    'netns',
    'exec',
    p.node(from).netns,
    'ping',
    '-n',
    '-q',
    '-c',
    String(count),
    '-i',
    '0.2',
    '-W',
    '2',
    ip,
  ]);
  const m = /= ([\d.]+)\/([\d.]+)\//.exec(stdout);
  assert.ok(m, `no rtt in ping output: ${stdout}`);
  return { min: Number(m[1]), avg: Number(m[2]) };
}

const nothingLeft: Omit<Leftovers, 'ports'> = { namespaces: [], links: [], processes: [] };

describe('planPlatform', () => {
  it('derives names that fit and addresses inside 198.18.0.0/15', () => {
    const st = planPlatform({ stateDir: '/tmp/x', nodes: 200, clusters: 9, id: 'abcdef' });
    assert.equal(st.nodes.length, 200);
    for (const name of [...st.namespaces, ...st.links.map((l) => l.name), `${st.id}-dly`]) {
      assert.ok(name.length <= 15, name);
    }
    assert.match(st.subnet, /^198\.(18|19)\.\d+\.0\/24$/);
    assert.equal(st.nodes[199]?.ip, `${st.subnet.split('.').slice(0, 3).join('.')}.210`);
    assert.deepEqual(st.clusters.map((c) => [c.port, c.mqttPort]).slice(0, 2), [
      [10111, 10001],
      [10112, 10002],
    ]);
    assert.deepEqual(
      st.nodes.slice(0, 10).map((n) => n.cluster),
      ['c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8', 'c9', 'c1'],
    );
  });

  it('rejects bad specs', () => {
    assert.throws(() => planPlatform({ stateDir: '/tmp/x', nodes: 0 }), InvalidInputError);
    assert.throws(() => planPlatform({ stateDir: '/tmp/x', nodes: 201 }), InvalidInputError);
    assert.throws(() => planPlatform({ stateDir: '/tmp/x', nodes: 1, clusters: 10 }), InvalidInputError);
    assert.throws(() => planPlatform({ stateDir: '/tmp/x', nodes: 1, id: 'Too-Long-Id' }), InvalidInputError);
    assert.throws(
      () => planPlatform({ stateDir: '/tmp/x', nodes: 1, sites: { a: ['n2'] } }),
      /unknown node n2/,
    );
    assert.throws(
      () => planPlatform({ stateDir: '/tmp/x', nodes: 1, latency: { interSiteMs: -1 } }),
      InvalidInputError,
    );
    assert.throws(
      () => planPlatform({ stateDir: '/tmp/x', nodes: 1, rootLimits: { maxServices: 0 } }),
      InvalidInputError,
    );
  });

  it("keeps the root's limits (defaults unless given) for its starts", () => {
    assert.equal(planPlatform({ stateDir: '/tmp/x', nodes: 1 }).root.limits, undefined);
    assert.deepEqual(rootLimitFlags(undefined), []);
    const st = planPlatform({
      stateDir: '/tmp/x',
      nodes: 1,
      rootLimits: { maxServices: 30_000, allocationRateLimit: 0 },
    });
    assert.deepEqual(rootLimitFlags(st.root.limits), [
      '--max-services',
      '30000',
      '--allocation-rate-limit',
      '0',
    ]);
  });
});

describe('local platform', () => {
  it('runs 3 nodes in 2 sites: underlay, latency, forwarders, registration, crash, teardown', async (t) => {
    // the usual umask, inherited by every process of the platform: what they create must still be private
    const umask = process.umask(0o022);
    t.after(() => process.umask(umask));
    const stateDir = tempDir();
    const started = Date.now();
    const p = await createPlatform(
      {
        stateDir,
        nodes: 3,
        clusters: 1,
        sites: { 'site-a': ['n1', 'n2'], 'site-b': ['n3'] },
        latency: { intraSiteMs: 1, interSiteMs: 20 },
      },
      log,
    );
    const createMs = Date.now() - started;
    t.diagnostic(`createPlatform (3 nodes, 1 cluster, latency) took ${createMs} ms`);
    assert.ok(createMs < 30_000, `createPlatform took ${createMs} ms`);

    // Namespaces.
    const namespaces = await listNetns(new ExecRunner());
    for (const n of ['n1', 'n2', 'n3', 'ctl', 'sw']) assert.ok(namespaces.includes(`${p.id}-${n}`), n);

    // The underlay connects every node to every other one and to the control namespace.
    const nodes = p.state.nodes;
    for (const a of nodes) {
      for (const b of [...nodes.filter((x) => x !== a), { ip: p.state.ctlIp }]) {
        await run('ip', ['netns', 'exec', a.netns, 'ping', '-n', '-q', '-c', '1', '-W', '2', b.ip]);
      }
    }

    // Latency: 20 ms one way between the sites (40 ms round trip), 1 ms inside a site.
    const [n1, n2, n3] = nodes;
    assert.ok(n1 && n2 && n3);
    const inter = await pingRtt(p, 'n1', n3.ip, 5);
    const intra = await pingRtt(p, 'n1', n2.ip, 5);
    t.diagnostic(
      `rtt n1-n3 (inter-site) ${inter.min}/${inter.avg} ms, n1-n2 (intra-site) ${intra.min}/${intra.avg} ms`,
    );
    assert.ok(inter.min >= 38 && inter.min < 200, `inter-site rtt ${inter.min} ms`);
    assert.ok(intra.min < 10, `intra-site rtt ${intra.min} ms`);
    assert.ok(p.state.latency?.backend === 'router' || p.state.latency?.backend === 'netem');
    t.diagnostic(
      `latency backend: ${p.state.latency.backend}` +
        (p.state.latency.netemUnavailable ? ` (netem: ${p.state.latency.netemUnavailable})` : ''),
    );

    // Root and cluster through the host forwarders.
    const health = await p.rootClient().health();
    assert.equal(health.status, 'ok');
    assert.match(p.rootUrl, /^https:/, 'secure by default');
    const anonymous = await fetch(p.rootUrl + '/api/net/service').catch((e: Error) => e);
    assert.ok(anonymous instanceof Error, 'an unpinned client does not trust the platform CA');
    const clusterStatus = await p.clusterClient('c1').status();
    assert.equal(clusterStatus.security.mode, 'tls');
    assert.equal(clusterStatus.cluster_id, `${p.id}-c1`);
    assert.deepEqual(clusterStatus.nodes.map((n) => n.worker_id).sort(), nodes.map((n) => n.workerId).sort());

    // Every NetManager registered with a /26.
    const status = await p.status();
    assert.equal(status.root.healthy, true);
    assert.deepEqual(
      status.clusters.map((c) => c.healthy),
      [true],
    );
    for (const n of status.nodes) {
      assert.equal(n.up, true, n.name);
      assert.equal(n.netmanager?.registered, true, n.name);
      assert.equal(n.netmanager?.worker_id, n.workerId);
      assert.match(n.netmanager?.subnet ?? '', /\/26$/, n.name);
      assert.equal(n.netmanager?.public_address, n.ip);
    }
    assert.ok(status.processes.every((x) => x.running));

    // platform.json describes it.
    const saved = JSON.parse(readFileSync(statePath(stateDir), 'utf8')) as ReturnType<typeof readState>;
    assert.ok(saved);
    assert.equal(saved.id, p.id);
    assert.equal(saved.phase, 'ready');
    assert.deepEqual(
      saved.nodes.map((n) => [n.name, n.site, n.cluster]),
      [
        ['n1', 'site-a', 'c1'],
        ['n2', 'site-a', 'c1'],
        ['n3', 'site-b', 'c1'],
      ],
    );
    const names = saved.processes.map((x) => x.name);
    for (const name of ['root', 'c1', 'n1', 'n2', 'n3', 'fwd-root', 'fwd-c1'])
      assert.ok(names.includes(name), name);
    for (const rec of saved.processes)
      assert.equal(readProcStat(rec.pid)?.startTime, rec.startTime, rec.name);
    assert.equal(loadPlatform(stateDir).rootUrl, p.rootUrl);

    // exec runs a command inside a node.
    const child = p.exec('n1', ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
    assert.ok(out.includes(`${n1.ip}/24`), out);

    // Latency changes at runtime: n3 joins site-a, n2 moves to site-b.
    await p.setLatency({ intraSiteMs: 1, interSiteMs: 20 }, { 'site-a': ['n1', 'n3'], 'site-b': ['n2'] });
    assert.ok((await pingRtt(p, 'n1', n3.ip, 3)).min < 10, 'n1-n3 now in one site');
    assert.ok((await pingRtt(p, 'n1', n2.ip, 3)).min >= 38, 'n1-n2 now across sites');

    // A NetManager killed with SIGKILL shows as down; the others stay up.
    const victim = p.state.processes.find((x) => x.name === 'n2');
    assert.ok(victim);
    process.kill(victim.pid, 'SIGKILL');
    await waitFor(
      'n2 to be reported down',
      async () => {
        const s = await p.status();
        return s.nodes.find((n) => n.name === 'n2')?.up === false ? s : undefined;
      },
      { timeoutMs: 10_000 },
    ).then((s) => {
      assert.deepEqual(
        s.nodes.map((n) => n.up),
        [true, false, true],
      );
      assert.equal(s.processes.find((x) => x.name === 'n2')?.running, false);
    });

    // Everything in the state dir is private: stores with their -wal/-shm, node state, platform.json, the
    // delay router's files, logs, sockets 0600; directories 0700.
    const kinds = new Set<string>();
    for (const entry of readdirSync(stateDir, { recursive: true, withFileTypes: true })) {
      const path = join(entry.parentPath, entry.name);
      const mode = lstatSync(path).mode & 0o777;
      if (entry.isDirectory()) assert.equal(mode, 0o700, path);
      else assert.equal(mode, 0o600, path);
      kinds.add(entry.name.replace(/^(?:c\d+|n\d+)/, 'X'));
    }
    const expected = [
      'root.db',
      'root.db-wal',
      'root.db-shm',
      'X.db',
      'X.db-wal',
      'X.db-shm',
      'node-state.json',
    ];
    expected.push('platform.json', 'logs', 'root.log', 'X.log', 'state', 'netmanager.sock');
    for (const kind of expected) assert.ok(kinds.has(kind), `${kind} in ${[...kinds].join(' ')}`);

    // Teardown leaves nothing, and a second one is a no-op.
    const ports = [p.state.root.hostPort, ...p.state.clusters.map((c) => c.hostPort)];
    const destroyStarted = Date.now();
    const report = await p.destroy();
    t.diagnostic(`destroy took ${Date.now() - destroyStarted} ms`);
    assert.equal(report.id, p.id);
    assert.deepEqual(report.killed, []);
    assert.equal(report.namespaces.length, 5);
    assert.deepEqual(await findLeftovers(p.id, { ports }), { ...nothingLeft, ports: [] });
    assert.equal(readState(stateDir), undefined);
    assert.deepEqual(await p.destroy(), {
      id: undefined,
      stopped: [],
      killed: [],
      namespaces: [],
      strangers: [],
    });
  });

  it('removes what it made when creation fails', async () => {
    const stateDir = tempDir();
    const id = randomPlatformId();
    await assert.rejects(
      createPlatform({ stateDir, nodes: 1, id, readyTimeoutMs: 1 }, log),
      (err: unknown) => err instanceof SystemError && /^root: GET \/api\/net\/health/.test(err.message),
    );
    assert.deepEqual(await findLeftovers(id), { ...nothingLeft, ports: [] });
    assert.equal(readState(stateDir), undefined);
  });

  it('tears down after every recorded process died, and never signals a reused PID', async () => {
    const stateDir = tempDir();
    const p = await createPlatform({ stateDir, nodes: 1 }, log);
    const recorded = [...p.state.processes];
    for (const rec of recorded) process.kill(rec.pid, 'SIGKILL');
    await waitFor(
      'all recorded processes to die',
      () => (recorded.some((r) => isAlive(r)) ? undefined : true),
      {
        timeoutMs: 10_000,
      },
    );
    // The state now also claims a process whose PID belongs to someone else (this test runner).
    const state = readState(stateDir);
    assert.ok(state);
    const me = readProcStat(process.pid);
    assert.ok(me);
    state.processes.push({
      name: 'reused',
      pid: process.pid,
      startTime: me.startTime - 1,
      argv: [],
      log: '',
    });
    writeFileSync(statePath(stateDir), JSON.stringify(state));
    const status = await loadPlatform(stateDir).status();
    assert.ok(status.processes.every((x) => !x.running));
    assert.deepEqual(
      status.nodes.map((n) => n.up),
      [false],
    );

    const report = await destroyPlatform(stateDir, log);
    assert.deepEqual(report.stopped, []);
    assert.equal(report.namespaces.length, 3);
    assert.deepEqual(await findLeftovers(p.id), { ...nothingLeft, ports: [] });
    assert.equal((await destroyPlatform(stateDir, log)).id, undefined);
  });
});
