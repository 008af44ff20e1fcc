/**
 * @module platform/netns
 * Named network namespaces and the links between them, through iproute2 (`ip netns`, `ip -n NS -batch -`),
 * never through a shell. The local platform builds its underlay from these: every object is created directly
 * inside the namespace it belongs to (`ip link add ... peer name ... netns NS`), so nothing appears in the
 * host namespace, not even for a moment, and deleting a namespace removes everything inside it.
 *
 * Why named namespaces (not unshare'd ones held by a process): a name survives the process that made it, so
 * `oaknet down` or a test can remove a platform after its creator crashed, by name alone.
 */
import { rmSync } from 'node:fs';
import { isAlreadyGone, type CommandRunner } from '../node/net/runner.ts';
import { InvalidInputError } from '../errors.ts';

/** Longest interface name the kernel accepts (IFNAMSIZ - 1). */
export const MAX_IFNAME = 15;

const NETNS_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
const IFNAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$/;

/** Throws InvalidInputError unless `name` is a namespace name this module creates (lowercase, digits, '-'). */
export function checkNetnsName(name: string): void {
  if (!NETNS_NAME.test(name))
    throw new InvalidInputError(`bad network namespace name ${JSON.stringify(name)}`);
}

/** Throws InvalidInputError unless `name` is a valid interface name (at most 15 characters). */
export function checkIfName(name: string): void {
  if (!IFNAME.test(name))
    throw new InvalidInputError(`bad interface name ${JSON.stringify(name)} (1-15 chars)`);
}

/** The argv that runs `argv` inside namespace `ns` (`ip netns exec` execs it, so its PID is the command's). */
export function netnsExecArgv(ns: string, argv: readonly string[]): string[] {
  checkNetnsName(ns);
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** Names of the named network namespaces of this host (`ip -j netns list`). */
export async function listNetns(runner: CommandRunner): Promise<string[]> {
  const { stdout } = await runner.run('ip', ['-j', 'netns', 'list']);
  const text = stdout.trim();
  if (text === '') return [];
  const parsed = JSON.parse(text) as unknown;
  if (!Array.isArray(parsed)) return [];
  return parsed
    .map((e: unknown) => (typeof e === 'object' && e !== null ? (e as { name?: unknown }).name : undefined))
    .filter((n): n is string => typeof n === 'string');
}

/** Creates namespace `name` with its loopback up; fails if it exists. */
export async function createNetns(runner: CommandRunner, name: string): Promise<void> {
  checkNetnsName(name);
  await runner.run('ip', ['netns', 'add', name]);
  await runner.run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Deletes namespace `name` (its interfaces go with it); true if it existed. Processes still inside keep it alive unnamed. */
export async function deleteNetns(runner: CommandRunner, name: string): Promise<boolean> {
  checkNetnsName(name);
  // what `oaknet run` left for `ip netns exec` (its resolv.conf), when it could not clean up itself
  rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
  try {
    await runner.run('ip', ['netns', 'del', name]);
    return true;
  } catch (err) {
    if (isAlreadyGone(err)) return false;
    throw err;
  }
}

/** Runs iproute2 commands (one per line, without the leading `ip`) as one `ip -n NS -batch -`; stops at the first failure. */
export async function ipIn(runner: CommandRunner, ns: string, lines: readonly string[]): Promise<void> {
  checkNetnsName(ns);
  if (lines.length === 0) return;
  for (const line of lines) {
    if (/[\n\r]/.test(line)) throw new Error(`ip batch line contains a newline: ${JSON.stringify(line)}`);
  }
  await runner.run('ip', ['-n', ns, '-batch', '-'], lines.join('\n') + '\n');
}

/** Runs `ip -n NS -j ARGS` and returns the parsed JSON array. */
export async function ipJsonIn(
  runner: CommandRunner,
  ns: string,
  args: readonly string[],
): Promise<unknown[]> {
  checkNetnsName(ns);
  const { stdout } = await runner.run('ip', ['-n', ns, '-j', ...args]);
  const text = stdout.trim();
  if (text === '') return [];
  const parsed = JSON.parse(text) as unknown;
  return Array.isArray(parsed) ? (parsed as unknown[]) : [];
}

/** Sets sysctls (e.g. `net.ipv4.ip_forward`) inside namespace `ns`. */
export async function sysctlIn(
  runner: CommandRunner,
  ns: string,
  settings: Record<string, string>,
): Promise<void> {
  const args = Object.entries(settings).map(([k, v]) => {
    if (!/^[a-z0-9_.-]+$/i.test(k) || !/^[a-z0-9_.-]+$/i.test(v)) throw new Error(`bad sysctl ${k}=${v}`);
    return `${k}=${v}`;
  });
  if (args.length === 0) return;
  checkNetnsName(ns);
  await runner.run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...args]);
}

/** One veth pair: `name` inside `ns`, `peerName` inside `peerNs`. */
export interface VethSpec {
  /** Namespace of the first end. */
  ns: string;
  /** Interface name of the first end (at most 15 characters). */
  name: string;
  /** Namespace of the peer end. */
  peerNs: string;
  /** Interface name of the peer end. */
  peerName: string;
}

/** Creates a veth pair with each end directly in its namespace (both ends stay down). */
export async function addVeth(runner: CommandRunner, veth: VethSpec): Promise<void> {
  checkIfName(veth.name);
  checkIfName(veth.peerName);
  checkNetnsName(veth.peerNs);
  await ipIn(runner, veth.ns, [
    `link add ${veth.name} type veth peer name ${veth.peerName} netns ${veth.peerNs}`,
  ]);
}

/** True if interface `dev` exists in namespace `ns` (false also when the namespace does not exist). */
export async function linkExists(runner: CommandRunner, ns: string, dev: string): Promise<boolean> {
  try {
    const links = await ipJsonIn(runner, ns, ['link', 'show', 'dev', dev]);
    return links.length > 0;
  } catch {
    return false;
  }
}
