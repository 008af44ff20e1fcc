/** Test fixtures of the DNS tests: a remote instance as the zone sees it in a table, and a minimal container. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { IpAddress } from '../../addressing/ip.ts';
import type { Instance } from '../../dataplane/snapshot.ts';
import { endpoint } from '../../dataplane/tunnel/tunnel.ts';

/** An address's bytes. */
export const bytes = (text: string): Uint8Array => IpAddress.parse(text).toBytes();

/** Instance `n` of `job` on a remote node (192.0.2.1) of cluster c1, with its instance and namespace addresses. */
export function remoteInstance(
  job: string,
  n: number,
  ip4: string,
  ip6: string,
  ns4: string,
  ns6: string,
): Instance {
  return {
    job,
    number: n,
    nsip4: bytes(ns4),
    nsip6: bytes(ns6),
    instanceIp4: bytes(ip4),
    instanceIp6: bytes(ip6),
    endpoint: endpoint('192.0.2.1', 50103),
    key: null,
    local: false,
    cluster: 'c1',
  };
}

/**
 * Makes `root` a minimal container image: the host's `sleep` and the libraries it loads, and an empty etc/.
 * Returns sleep's path (the same inside the image).
 */
export function sleepImage(root: string): string {
  const sleep = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim();
  const ldd = execFileSync('ldd', [sleep], { encoding: 'utf8' });
  const libs = [...ldd.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]!);
  for (const f of [sleep, ...libs]) {
    mkdirSync(join(root, dirname(f)), { recursive: true });
    copyFileSync(f, join(root, f));
  }
  mkdirSync(join(root, 'etc'), { recursive: true });
  return sleep;
}

/**
 * Starts `sleep infinity` chrooted into `image` (sleepImage) in new mount and network namespaces, as a
 * container runtime's task; resolves with the child (kill it to end the container) and the container's pid.
 */
export async function startContainer(
  image: string,
  sleep: string,
): Promise<{ child: ChildProcess; pid: number }> {
  const child = spawn('unshare', ['--mount', '--net', '--fork', 'chroot', image, sleep, 'infinity'], {
    stdio: 'ignore',
  });
  // unshare --fork: the chrooted sleep is its child; wait until it has exec'd in the new root
  for (let tries = 0; tries < 250; tries++) {
    await new Promise((r) => setTimeout(r, 20));
    const found = Number(
      execFileSync('ps', ['-o', 'pid=', '--ppid', String(child.pid)], { encoding: 'utf8' }).trim() || 0,
    );
    if (found > 0 && readFileSync(`/proc/${found}/cmdline`, 'latin1').startsWith(sleep))
      return { child, pid: found };
  }
  child.kill('SIGKILL');
  throw new Error(`the container in ${image} did not start`);
}
