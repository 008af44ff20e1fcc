/**
 * The operator CLI as a user runs it: `oaknet root` as a process, `oaknet service ...` against it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Cidr } from '../../src/addressing/cidr.ts';
import { IpAddress } from '../../src/addressing/ip.ts';
import { pino } from 'pino';
import { ClusterCredentials } from '../../src/cluster/credentials.ts';
import { HttpTransport } from '../../src/protocol/http-client.ts';
import type { JobDocument } from '../../src/protocol/root-api.ts';
import { OAKNET_BIN, startRootProcess, type OaknetProcess } from '../support/oaknet-process.ts';
import { freePort } from '../support/ports.ts';

const exec = promisify(execFile);

describe('oaknet service, worker and token commands against a secure root', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-cli-'));
  let root: OaknetProcess;
  let url: string;
  let ca: string;
  let adminFile: string;
  let orchestrator: string;

  const run = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
    try {
      const { stdout, stderr } = await exec(process.execPath, [OAKNET_BIN, ...args, '--root', url], {
        // no platform of this machine's user is consulted for tokens
        env: { ...process.env, OAKNET_STATE_DIR: join(dir, 'no-platform'), ...env },
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  /** As an orchestrator (the token in $OAKNET_TOKEN). */
  const oaknet = (...args: string[]) => run(args, { OAKNET_TOKEN: orchestrator });

  before(async () => {
    const port = await freePort();
    const started = await startRootProcess(dir, port);
    ({ proc: root, url } = started);
    ca = started.ca!;
    adminFile = join(dir, 'pki', 'admin.token');
    const made = await run(['token', 'create', '--role', 'orchestrator', '--token-file', adminFile]);
    assert.equal(made.code, 0, made.stderr);
    orchestrator = made.stdout.trim();
  });
  after(async () => {
    await root.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates a service and prints its ServiceIPs', async () => {
    const r = await oaknet('service', 'create', 'web.prod.api.v1');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /created service web\.prod\.api\.v1/);
    const rr = /^RR\s+(\S+)\s+(\S+)$/m.exec(r.stdout);
    const closest = /^Closest\s+(\S+)\s+(\S+)$/m.exec(r.stdout);
    assert.ok(rr && closest, r.stdout);
    assert.ok(Cidr.parse('10.30.0.0/16').contains(IpAddress.parse(rr[1]!)));
    assert.ok(Cidr.parse('fdff:2000::/21').contains(IpAddress.parse(rr[2]!)));
    assert.ok(Cidr.parse('fdff:1000::/21').contains(IpAddress.parse(closest[2]!)));
  });

  it('honours a chosen RR_IP and refuses one in use with a clear message', async () => {
    const ok = await oaknet('service', 'create', 'web.prod.db.v1', '--rr-ip', '10.30.42.42', '--json');
    assert.equal(ok.code, 0, ok.stderr);
    const job = JSON.parse(ok.stdout) as JobDocument;
    assert.equal(job.service_ip_list.find((s) => s.IpType === 'RR')?.Address, '10.30.42.42');
    const taken = await oaknet('service', 'create', 'web.prod.cache.v1', '--rr-ip', '10.30.42.42');
    assert.notEqual(taken.code, 0);
    assert.match(taken.stderr, /10\.30\.42\.42 is already used by job web\.prod\.db\.v1.*E_ADDRESS_IN_USE/);
    const outside = await oaknet('service', 'create', 'web.prod.cache.v1', '--rr-ip', '192.168.1.1');
    assert.match(outside.stderr, /outside 10\.30\.0\.0\/16/);
    const badName = await oaknet('service', 'create', 'not-a-job-name');
    assert.notEqual(badName.code, 0);
    assert.match(badName.stderr, /app\.appns\.service\.servicens/);
  });

  it('lists and shows services, as tables and as JSON', async () => {
    const list = await oaknet('service', 'list');
    assert.match(list.stdout, /^SERVICE\s+RR_IP\s+CLOSEST_IP/m);
    assert.match(list.stdout, /^web\.prod\.api\.v1\s+10\.30\./m);
    assert.match(list.stdout, /^web\.prod\.db\.v1\s+10\.30\.42\.42/m);
    const json = JSON.parse((await oaknet('service', 'list', '--json')).stdout) as JobDocument[];
    assert.deepEqual(json.map((j) => j.job_name).sort(), ['web.prod.api.v1', 'web.prod.db.v1']);
    const show = await oaknet('service', 'show', 'web.prod.db.v1');
    assert.match(show.stdout, /service web\.prod\.db\.v1/);
    assert.match(show.stdout, /no instances/);
    const missing = await oaknet('service', 'show', 'web.prod.nope.v1');
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no service named web\.prod\.nope\.v1/);
  });

  it('deletes a service and releases its ServiceIPs', async () => {
    const del = await oaknet('service', 'delete', 'web.prod.db.v1');
    assert.equal(del.code, 0, del.stderr);
    const again = await oaknet('service', 'create', 'web.prod.other.v1', '--rr-ip', '10.30.42.42');
    assert.equal(again.code, 0, 'the released RR_IP can be chosen again');
    const list = JSON.parse((await oaknet('service', 'list', '--json')).stdout) as JobDocument[];
    assert.ok(!list.some((j) => j.job_name === 'web.prod.db.v1'));
  });

  it('without a token a write says what it needs; tokens are listed and revoked', async () => {
    const none = await run(['service', 'create', 'web.prod.anon.v1']);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /needs a token with the role orchestrator: pass --token/);
    const op = await run(['service', 'create', 'web.prod.anon.v1', '--token-file', adminFile]);
    assert.match(op.stderr, /operator\) may not make this call.*E_FORBIDDEN/);
    const reader = (
      await run(['token', 'create', '--role', 'read-only', '--token-file', adminFile, '--json'])
    ).stdout;
    const { token, info } = JSON.parse(reader) as { token: string; info: { id: string } };
    assert.equal((await run(['service', 'list', '--token', token])).code, 0);
    const list = await run(['token', 'list', '--token-file', adminFile]);
    assert.match(list.stdout, new RegExp(`^${info.id}\\s+read-only\\s+never`, 'm'));
    assert.match(
      (await run(['token', 'revoke', info.id, '--token-file', adminFile])).stdout,
      /revoked token/,
    );
    const after = await run(['service', 'list', '--token', token]);
    assert.match(after.stderr, /was revoked.*E_UNAUTHENTICATED/);
    const join = await run(['token', 'create', '--role', 'cluster', '--token-file', adminFile, '--json']);
    const joinInfo = (JSON.parse(join.stdout) as { info: { expires: string } }).info;
    const hours = (Date.parse(joinInfo.expires) - Date.now()) / 3_600_000;
    assert.ok(hours > 23.9 && hours <= 24, 'join tokens expire after 24 h by default');
  });

  it('lists workers and releases the subnetworks of one an operator removed', async () => {
    // a cluster enrolls with a token and allocates a worker's subnetwork with its certificate
    const joinToken = (
      await run(['token', 'create', '--role', 'cluster', '--token-file', adminFile])
    ).stdout.trim();
    const creds = await ClusterCredentials.open({
      dir: join(dir, 'edge-pki'),
      rootUrl: url,
      clusterId: 'edge',
      token: joinToken,
      log: pino({ level: 'silent' }),
    });
    const asEdge = new HttpTransport(url, {
      tls: { ca, key: creds.current.key, cert: creds.current.cert, expect: { kind: 'root' } },
    });
    const reg = await asEdge.request('POST', '/api/net/cluster', {
      body: { cluster_id: 'edge', cluster_address: '127.0.0.1', cluster_port: 9 },
    });
    assert.equal(reg.status, 200, reg.text);
    const got = JSON.parse((await asEdge.request('GET', '/api/net/subnet?worker_id=gone-node')).text) as {
      subnet_addr: string;
    };
    asEdge.close();
    const list = await oaknet('worker', 'list');
    assert.match(
      list.stdout,
      new RegExp(`^edge\\s+gone-node\\s+${got.subnet_addr.replaceAll('.', '\\.')}/26`, 'm'),
    );
    const notOperator = await oaknet('worker', 'remove', 'gone-node', '--cluster-id', 'edge');
    assert.match(notOperator.stderr, /E_FORBIDDEN/);
    const removed = await run([
      'worker',
      'remove',
      'gone-node',
      '--cluster-id',
      'edge',
      '--token-file',
      adminFile,
    ]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /released .* of worker gone-node/);
    assert.equal((await oaknet('worker', 'list')).stdout.trim(), 'no workers');
    const again = await run([
      'worker',
      'remove',
      'gone-node',
      '--cluster-id',
      'edge',
      '--token-file',
      adminFile,
    ]);
    assert.match(again.stderr, /cluster edge has no worker gone-node/);
  });

  it('reports an unreachable root plainly', async () => {
    const r = await exec(process.execPath, [
      OAKNET_BIN,
      'service',
      'list',
      '--root',
      'http://127.0.0.1:9',
    ]).catch((e: { code: number; stderr: string }) => e);
    assert.notEqual((r as { code?: number }).code ?? 0, 0);
    assert.match((r as { stderr: string }).stderr, /root http:\/\/127\.0\.0\.1:9 unreachable/);
  });
});

describe('oaknet root with limits, and lists longer than a page', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-cli-limits-'));
  let root: OaknetProcess;
  let url: string;
  const post = (path: string, body: unknown) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const deploy = (i: number) =>
    post('/api/net/service/deploy', {
      _id: `job${i}`,
      deployment_descriptor: { app_name: 'many', app_ns: 'x', service_name: `s${i}`, service_ns: 'y' },
    });

  before(async () => {
    const port = await freePort();
    ({ proc: root, url } = await startRootProcess(dir, port, {
      insecure: true,
      flags: [
        '--max-services',
        '250',
        '--max-workers-per-cluster',
        '3',
        '--rate-limit',
        '0',
        '--allocation-rate-limit',
        '300',
      ],
    }));
  });
  after(async () => {
    await root.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes the quota and rate flags: 403 E_QUOTA beyond them, 429 beyond the allocation limit', async () => {
    for (let i = 0; i < 250; i++) assert.equal((await deploy(i)).status, 200);
    const over = await deploy(250);
    assert.equal(over.status, 403);
    assert.equal(((await over.json()) as { error: string }).error, 'E_QUOTA');
    for (let i = 0; i < 3; i++) assert.equal((await fetch(`${url}/api/net/subnet`)).status, 200);
    assert.equal((await fetch(`${url}/api/net/subnet`)).status, 403);
    // 250 + 1 deployments and 4 subnets: the allocation limit (300 per route) is not reached; it counts per route
    for (let i = 0; i < 300 - 4; i++)
      await fetch(`${url}/api/net/subnet?worker_id=x`).then((r) => r.arrayBuffer());
    assert.equal((await fetch(`${url}/api/net/subnet`)).status, 429);
    const status = (await (await fetch(`${url}/api/net/status`)).json()) as {
      rate_limited: number;
      services: number;
      quotas: Record<string, number>;
    };
    assert.deepEqual(status.quotas, {
      max_services: 250,
      max_instances_per_service: 1000,
      max_workers_per_cluster: 3,
    });
    assert.equal(status.services, 250);
    assert.equal(status.rate_limited, 1);
  });

  it('oaknet service list shows every service, page after page', async () => {
    const { stdout } = await exec(process.execPath, [OAKNET_BIN, 'service', 'list', '--json', '--root', url]);
    const jobs = JSON.parse(stdout) as JobDocument[];
    assert.equal(jobs.length, 250);
    assert.equal(new Set(jobs.map((j) => j.job_name)).size, 250);
    const first = (await (await fetch(`${url}/api/net/service`)).json()) as JobDocument[];
    assert.equal(first.length, 100, 'one page of the default size over HTTP');
  });

  it('refuses quota and rate flags that are not numbers', async () => {
    for (const args of [
      ['--max-services', '0'],
      ['--max-workers-per-cluster', 'many'],
      ['--rate-limit', '-1'],
    ]) {
      const r = await exec(process.execPath, [
        OAKNET_BIN,
        'root',
        '--store',
        ':memory:',
        '--port',
        '0',
        ...args,
      ]).catch((e: { code: number; stderr: string }) => e);
      assert.notEqual((r as { code?: number }).code ?? 0, 0, args.join(' '));
      assert.match((r as { stderr: string }).stderr, /expected/, args.join(' '));
    }
  });
});

describe('oaknet commands that touch the network stack', () => {
  it('say they need root when another user runs them', async () => {
    // the process believes it runs as uid 1000 (a real other user could not read a clone under /root)
    const asUser = 'data:text/javascript,process.getuid=()=>1000;process.geteuid=()=>1000;';
    const home = mkdtempSync(join(tmpdir(), 'oaknet-user-'));
    try {
      for (const args of [
        ['up'],
        ['status'],
        ['exec', 'n1', '--', 'true'],
        ['down'],
        ['node', '--cluster', '127.0.0.1'],
        ['run', '--service', 'a.b.c.d', '--instance', '0', '--', 'true'],
      ]) {
        const failure = await exec(process.execPath, ['--import', asUser, OAKNET_BIN, ...args], {
          env: { ...process.env, XDG_STATE_HOME: join(home, 'state') },
        }).then(
          () => undefined,
          (err: unknown) => err as { code: number; stderr: string },
        );
        assert.ok(failure, `oaknet ${args[0]} failed`);
        assert.equal(failure.code, 1);
        assert.match(
          failure.stderr,
          new RegExp(`oaknet ${args[0]} needs root: run it with sudo.*\\[E_PERMISSION\\]`),
        );
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
