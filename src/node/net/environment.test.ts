/**
 * NodeEnvironment on a real kernel (root, iproute2, nftables). The whole body runs in a child process inside a
 * throwaway network namespace `oktest-env-<random>` (environment.netns.ts), because the environment changes
 * the namespace of its own process: /proc/sys writes, the bridge, the nft table. The child makes its
 * "containers" and an "outside" host as further namespaces whose names this file chooses, so this file can
 * remove all of them (and kill any process still inside them, by PID) whatever happened to the child.
 * Never skipped: CI runs as root, and a machine that cannot run it must fail loudly.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const suffix = randomBytes(3).toString('hex');
const names = {
  env: `oktest-env-${suffix}`,
  container: `oktest-c-${suffix}`,
  container2: `oktest-c2-${suffix}`,
  outside: `oktest-o-${suffix}`,
};
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const childFile = fileURLToPath(new URL('./environment.netns.ts', import.meta.url));

async function existingNetns(): Promise<Set<string>> {
  const { stdout } = await execFileAsync('ip', ['netns', 'list']);
  return new Set(stdout.split('\n').map((l) => l.split(' ')[0] ?? ''));
}

/** Kills every process left in our namespaces (by PID) and deletes the namespaces. */
async function removeNamespaces(): Promise<string[]> {
  const present = await existingNetns();
  const removed: string[] = [];
  for (const ns of Object.values(names)) {
    if (!present.has(ns)) continue;
    const { stdout } = await execFileAsync('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }));
    for (const pid of stdout.split('\n').filter((l) => /^\d+$/.test(l))) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await execFileAsync('ip', ['netns', 'del', ns]);
    removed.push(ns);
  }
  return removed;
}

/** Our environment without NODE_TEST_CONTEXT, which would make the child's test runner defer to ours. */
function childEnv(): NodeJS.ProcessEnv {
  const copy = { ...process.env };
  delete copy['NODE_TEST_CONTEXT'];
  return copy;
}

describe('NodeEnvironment on a real kernel', () => {
  after(async () => {
    await removeNamespaces();
    const left = [...(await existingNetns())].filter((n) => n.endsWith(suffix));
    assert.deepEqual(left, [], 'test namespaces left behind');
  });

  it('sets up, attaches, maps ports, detaches and tears down inside a throwaway namespace', async (t) => {
    assert.equal(process.getuid?.(), 0, 'these tests need root (CI runs as root)');
    await execFileAsync('ip', ['netns', 'add', names.env]);
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        names.env,
        process.execPath,
        '--import',
        'tsx',
        '--test',
        '--test-reporter=tap',
        childFile,
      ],
      {
        cwd: repoRoot,
        env: {
          ...childEnv(),
          OKTEST_CONTAINER_NS: names.container,
          OKTEST_CONTAINER2_NS: names.container2,
          OKTEST_OUTSIDE_NS: names.outside,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    clearTimeout(timer);
    for (const line of output.split('\n')) {
      const m = /^\s*# (timing: .*|tests \d+|pass \d+|fail \d+)$/.exec(line);
      if (m?.[1]) t.diagnostic(m[1]);
    }
    assert.equal(code, 0, output);
    assert.match(output, /^# fail 0$/m, output);
    assert.match(output, /^# skipped 0$/m, output);
    assert.match(output, /^# pass [1-9]\d*$/m, output);
  });
});
