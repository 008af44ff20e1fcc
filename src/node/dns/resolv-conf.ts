/**
 * @module node/dns/resolv-conf
 * An instance's resolv.conf: the text (the node's DNS server, its application's domains to search), and
 * putting it into a container's own root filesystem for upstream's /container/deploy flow, where the node
 * engine created the container before the NetManager sees it.
 *
 * The file is opened inside the container's root (/proc/<pid>/root) with openat2's RESOLVE_IN_ROOT (the
 * addon's openInRoot), so a symlink in the image resolves inside the image and never to a host file, and with
 * RESOLVE_NO_XDEV, so a resolv.conf the runtime mounted there (containerd's WithHostResolvconf binds the host's
 * own, read-only) is left as the runtime made it. A process that shares the NetManager's root (`oaknet run`,
 * whose resolv.conf `ip netns exec` mounts) is not touched either.
 */
import { closeSync, fstatSync, ftruncateSync, statSync, writeSync } from 'node:fs';
import { errorMessage, SystemError } from '../../errors.ts';
import { searchDomains } from './zone.ts';

/**
 * The resolv.conf of an instance of `job`: the node's DNS server, and its application's domains to search, so
 * `curl http://web/` reaches the sibling service `web` (in the instance's own service namespace, then by
 * `web.<servicens>` in any). ndots:2 sends `web.ns` through the search list before asking it as it is.
 */
export function resolvConf(servers: readonly string[], job: string, writer: string): string {
  return [
    `# written by ${writer} for ${job}: the NetManager's DNS server`,
    ...servers.map((s) => `nameserver ${s}`),
    `search ${searchDomains(job).join(' ')}`,
    'options ndots:2 timeout:1 attempts:2',
    '',
  ].join('\n');
}

/** What became of a container's resolv.conf. */
export type ResolvConfOutcome =
  /** written into the container's own root */
  | 'written'
  /** the process shares the NetManager's root: not a container with a filesystem of its own */
  | 'shared-root'
  /** the runtime mounted a file there (or the path crosses a mount): left as it is */
  | 'runtime-mounted'
  /** the container's root is read-only there */
  | 'read-only';

/** The addon's openat2 (NativeIo.openInRoot). */
export type OpenInRoot = (root: string, path: string) => number;

const errnoOf = (err: unknown): string | undefined =>
  err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;

/**
 * Writes `text` as etc/resolv.conf under `root` (a container's root: /proc/<pid>/root), as that root sees it;
 * see the module comment for what is left alone. Throws SystemError for anything else (no such root,
 * etc/resolv.conf is not a regular file, a symlink at its end, ...).
 */
export function installResolvConf(openInRoot: OpenInRoot, root: string, text: string): ResolvConfOutcome {
  let own: { dev: number; ino: number };
  let theirs: { dev: number; ino: number };
  try {
    own = statSync('/');
    theirs = statSync(root);
  } catch (cause) {
    throw new SystemError(`cannot look at root ${root}: ${errorMessage(cause)}`, { cause });
  }
  if (own.dev === theirs.dev && own.ino === theirs.ino) return 'shared-root';
  let fd: number;
  try {
    fd = openInRoot(root, 'etc/resolv.conf');
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'EXDEV') return 'runtime-mounted';
    if (code === 'EROFS') return 'read-only';
    throw new SystemError(`cannot open etc/resolv.conf in ${root}: ${errorMessage(err)}`, { cause: err });
  }
  try {
    if (!fstatSync(fd).isFile())
      throw new SystemError(`etc/resolv.conf in ${root} is not a regular file; left alone`);
    ftruncateSync(fd, 0);
    const data = Buffer.from(text);
    for (let at = 0; at < data.length;) at += writeSync(fd, data, at);
    return 'written';
  } finally {
    closeSync(fd);
  }
}
