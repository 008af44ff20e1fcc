/**
 * The local platform as a user meets it: the README's quick-start command from a clean clone, `oaknet status`,
 * a request from the demo client, `oaknet down`; and a NetManager killed with SIGKILL while it runs.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { findLeftovers } from '../../src/platform/teardown.ts';
import type { PlatformState } from '../../src/platform/state.ts';

const exec = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));

interface StatusJson {
  platform: {
    id: string;
    nodes: Array<{
      name: string;
      up: boolean;
      netmanager?: {
        registered: boolean;
        subnet: string | null;
        proxy?: { peers?: Array<{ node: string; rtt_ms: number | null; reachable: boolean }> } | null;
      };
    }>;
  };
  services: Array<{
    job_name: string;
    service_ip_list: Array<{ IpType: string; Address: string }>;
    instance_list: Array<{ namespace_ip?: string }>;
  }>;
}

/** The commands of the README's quick start, in order. */
function quickStart(): string[] {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const block = /<!-- quick-start -->\s*```sh\n([\s\S]*?)```\s*<!-- \/quick-start -->/.exec(readme);
  assert.ok(block, 'the README has a quick-start block');
  return block[1]!
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter(Boolean);
}

/** The environment oaknet runs in here: the platform in `stateDir`, and not a test runner's child. */
function oaknetEnv(stateDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OAKNET_STATE_DIR: stateDir };
  delete env['NODE_TEST_CONTEXT'];
  return env;
}

async function oaknet(dir: string, stateDir: string, args: string[], timeout = 300_000) {
  return exec(join(dir, 'oaknet'), args, { cwd: dir, env: oaknetEnv(stateDir), timeout, maxBuffer: 1 << 24 });
}

/** The demo web service's RR_IP in a status. */
function demoRr(status: StatusJson): string | undefined {
  return status.services
    .find((s) => s.job_name === 'demo.oaknet.web.v1')
    ?.service_ip_list.find((s) => s.IpType === 'RR')?.Address;
}

/** `count` requests from the demo client to `address`, each allowed `seconds`: one answer line each ("failed" for none). */
async function demoRequests(dir: string, stateDir: string, address: string, count: number, seconds: number) {
  const loop = `for i in $(seq ${count}); do curl -s -m ${seconds} http://${address}/ || echo failed; done`;
  const { stdout } = await oaknet(dir, stateDir, ['exec', 'demo-client', '--', 'sh', '-c', loop]);
  return stdout.trim().split('\n');
}

describe('the local platform, as the README says', { timeout: 900_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'oaknet-quickstart-'));
  const cleanups: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('quick start from a clean clone: up, status, a request through the RR_IP, down leaves nothing', async () => {
    const commands = quickStart();
    assert.equal(commands.length, 2, 'exactly two commands');
    const up = commands[0]!;
    assert.match(up, /^(sudo )?\.\/oaknet up$/);
    assert.match(commands[1]!, /^(sudo )?npm test$/);

    const clone = join(tmp, 'oaknet');
    await exec('git', ['clone', '--quiet', REPO, clone]);
    const stateDir = join(tmp, 'state');
    cleanups.push(() => oaknet(clone, stateDir, ['down']));
    const env = oaknetEnv(stateDir);
    const started = Date.now();
    const { stdout } = await exec('sh', ['-c', process.getuid?.() === 0 ? up.replace(/^sudo /, '') : up], {
      cwd: clone,
      env,
      timeout: 600_000,
      maxBuffer: 1 << 24,
    });
    assert.match(stdout, /oaknet platform \w+ is up in/);
    assert.match(stdout, /Try:/);
    process.stderr.write(
      `# quick start (install included) took ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
    );

    const status = JSON.parse((await oaknet(clone, stateDir, ['status', '--json'])).stdout) as StatusJson;
    assert.equal(status.platform.nodes.length, 3);
    for (const n of status.platform.nodes) {
      assert.ok(n.up && n.netmanager?.registered, `${n.name} is up and registered`);
      assert.match(n.netmanager.subnet ?? '', /^10\.\d+\.\d+\.\d+\/26$/);
    }
    const web = status.services.find((s) => s.job_name === 'demo.oaknet.web.v1');
    assert.ok(web, 'the demo service exists');
    assert.equal(web.instance_list.filter((i) => i.namespace_ip).length, 2, 'two deployed instances');
    const [answer] = await demoRequests(clone, stateDir, demoRr(status)!, 1, 5);
    assert.match(answer ?? '', /^hello from demo\.oaknet\.web\.v1 instance [01] on node n[23]/);

    const down = await oaknet(clone, stateDir, ['down']);
    assert.match(down.stdout, /is down/);
    // the next `up` starts from empty stores: only the logs stay
    assert.deepEqual(readdirSync(stateDir), ['logs']);
    const left = await findLeftovers(status.platform.id);
    assert.deepEqual(left, { namespaces: [], links: [], processes: [], ports: [] });
    assert.match((await oaknet(clone, stateDir, ['down'])).stdout, /no platform/, 'down again is a no-op');
  });

  it('a NetManager killed with SIGKILL: shown down, the RR_IP keeps answering from the other node, down removes everything (an oaknet run too)', async () => {
    const stateDir = join(tmp, 'crash');
    cleanups.push(() => oaknet(REPO, stateDir, ['down']));
    await oaknet(REPO, stateDir, ['up']);
    const state = JSON.parse(readFileSync(join(stateDir, 'platform.json'), 'utf8')) as PlatformState;
    const statusJson = async () =>
      JSON.parse((await oaknet(REPO, stateDir, ['status', '--json'])).stdout) as StatusJson;
    const n1Peers = (s: StatusJson) =>
      s.platform.nodes.find((n) => n.name === 'n1')?.netmanager?.proxy?.peers ?? [];
    // the demo client on n1 calls the RR_IP every few seconds, so n1 measures both server nodes
    let before = await statusJson();
    for (const deadline = Date.now() + 20_000; n1Peers(before).filter((p) => p.rtt_ms !== null).length < 2;) {
      assert.ok(Date.now() < deadline, `n1 measured both server nodes: ${JSON.stringify(n1Peers(before))}`);
      await new Promise((r) => setTimeout(r, 200));
      before = await statusJson();
    }
    const rr = demoRr(before)!;
    const n2 = state.processes.find((p) => p.name === 'n2');
    assert.ok(n2, 'n2 runs');
    process.kill(n2.pid, 'SIGKILL');
    let status: StatusJson | undefined;
    const deadline = Date.now() + 10_000;
    do {
      status = await statusJson();
      if (status.platform.nodes.find((n) => n.name === 'n2')?.up === false) break;
      await new Promise((r) => setTimeout(r, 200));
    } while (Date.now() < deadline);
    const byName = new Map(status.platform.nodes.map((n) => [n.name, n]));
    assert.equal(byName.get('n2')?.up, false, 'n2 is shown down');
    assert.equal(byName.get('n1')?.up, true);
    assert.equal(byName.get('n3')?.up, true);
    const text = (await oaknet(REPO, stateDir, ['status'])).stdout;
    assert.match(text, /^n2\s+down\s/m);

    // n1 stops hearing n2's probes and sends new connections only to the instance on n3: within 30 s a round
    // of 10 requests all succeed (before, about half wait for the dead node until curl gives up)
    let answers: string[] = [];
    for (const deadline = Date.now() + 30_000; ;) {
      answers = await demoRequests(REPO, stateDir, rr, 10, 1);
      if (answers.length === 10 && answers.every((a) => / on node n3/.test(a))) break;
      assert.ok(Date.now() < deadline, `requests after n2 died: ${JSON.stringify(answers)}`);
    }
    assert.match((await oaknet(REPO, stateDir, ['status'])).stdout, /n1 -> .*n2 unreachable/);
    const lost = n1Peers(await statusJson()).filter((p) => !p.reachable);
    assert.equal(
      lost.length,
      1,
      `n1 shows one peer unreachable: ${JSON.stringify(n1Peers(await statusJson()))}`,
    );

    // `oaknet restart n2` brings the NetManager back with its subnetwork and instance: the RR_IP answers
    // from both nodes again once n1 hears n2's probes
    const restarted = await oaknet(REPO, stateDir, ['restart', 'n2']);
    assert.match(restarted.stdout, /^n2: restarted and ready in/);
    const seen = new Set<string>();
    for (const deadline = Date.now() + 30_000; seen.size < 2;) {
      assert.ok(Date.now() < deadline, `both instances answer after the restart: ${[...seen].join(', ')}`);
      for (const line of await demoRequests(REPO, stateDir, rr, 6, 1)) {
        const node = / on node (n\d)/.exec(line)?.[1];
        if (node) seen.add(node);
      }
    }
    const after = await statusJson();
    assert.ok(after.platform.nodes.find((n) => n.name === 'n2')?.up, 'n2 is shown up again');

    // the root and the cluster restart too, keeping their stores: the service, its addresses and the
    // overlay are all still there
    const services = await oaknet(REPO, stateDir, ['restart', 'root', 'c1']);
    assert.match(services.stdout, /^root: restarted and ready in .*\nc1: restarted and ready in/);
    assert.equal(demoRr(await statusJson()), rr, 'the root kept the service and its RR_IP');
    const [answer] = await demoRequests(REPO, stateDir, rr, 1, 5);
    assert.match(answer ?? '', /^hello from demo\.oaknet\.web\.v1 instance [01]/);

    // an instance a user started with `oaknet run --node` (still running) goes with the platform too
    const run = spawn(
      join(REPO, 'oaknet'),
      ['run', '--node', 'n3', '--service', 'e2e.run.mine.v1', '--instance', '0', '--', 'sleep', 'infinity'],
      { cwd: REPO, env: oaknetEnv(stateDir), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    cleanups.push(() => Promise.resolve(run.kill('SIGKILL')));
    const exited = new Promise<void>((resolve) => run.once('exit', () => resolve()));
    let runNs: string[] = [];
    for (const deadline = Date.now() + 30_000; runNs.length === 0;) {
      assert.ok(Date.now() < deadline, 'oaknet run made its namespace');
      await new Promise((r) => setTimeout(r, 200));
      const { stdout } = await exec('ip', ['netns', 'list']);
      runNs = stdout.split('\n').filter((l) => l.startsWith(`${state.id}-r`));
    }

    await oaknet(REPO, stateDir, ['down']);
    await exited;
    assert.deepEqual(await findLeftovers(state.id), { namespaces: [], links: [], processes: [], ports: [] });
  });
});
