/**
 * @module store/private-files
 * Files that hold a role's state (the SQLite stores, the NetManager's state file, the platform's state, config
 * and logs) belong to their owner alone: created 0600, in directories created 0700, whatever the umask; an
 * existing file that group or others may use is tightened, with a warning. Explicit modes rather than a
 * process umask: a umask would also reach what a role starts (workloads, socat) and would not fix a file that
 * an older version left readable.
 *
 * Directories that exist already are never changed: a path such as `--store ./x.db` or `--state-dir /tmp`
 * names a directory that is not oaknet's to restrict.
 */
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Logger } from 'pino';

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Where a tightened mode is reported; without one it becomes a process warning (stderr). */
export type ModeLog = Pick<Logger, 'warn'>;

const octal = (mode: number) => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

function reportTightened(log: ModeLog | undefined, path: string, was: number, now: number): void {
  if (log) {
    log.warn({ path, was: octal(was), now: octal(now) }, 'tightened the mode of a file others could use');
  } else {
    process.emitWarning(`tightened ${path} from ${octal(was)} to ${octal(now)}: others could use it`, {
      code: 'OAKNET_FILE_MODE',
    });
  }
}

/**
 * Creates `dir` and its missing parents, each one it created 0700 (chmod after mkdir, so the umask cannot
 * loosen or narrow it); directories that exist are left alone.
 */
export function makePrivateDir(dir: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  if (first === undefined) return;
  const top = resolve(first);
  for (let d = resolve(dir); ; d = dirname(d)) {
    chmodSync(d, PRIVATE_DIR_MODE);
    if (d === top || dirname(d) === d) return;
  }
}

/**
 * Takes group and other permissions off an existing file (0644 becomes 0600), reporting it; true when it
 * changed something, false when the file was private already or is absent.
 */
export function tightenFile(path: string, log?: ModeLog): boolean {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  if ((mode & 0o077) === 0) return false;
  const now = mode & 0o700;
  chmodSync(path, now);
  reportTightened(log, path, mode, now);
  return true;
}

/**
 * What an open file of mode `mode` needs to be exactly 0600: a chmod unless it is, and a report when group or
 * others had permissions on it (a mode the umask narrowed, 0400, is only corrected).
 */
function modeFix(mode: number): { chmod: boolean; report: boolean } {
  return { chmod: (mode & 0o777) !== PRIVATE_FILE_MODE, report: (mode & 0o077) !== 0 };
}

/**
 * Opens `path` (flags as for fs.openSync), creating it 0600; an existing file is made 0600. Returns the fd,
 * which the caller closes.
 */
export function openPrivateSync(path: string, flags: string | number, log?: ModeLog): number {
  const fd = openSync(path, flags, PRIVATE_FILE_MODE);
  try {
    const { mode } = fstatSync(fd);
    const fix = modeFix(mode);
    if (fix.chmod) fchmodSync(fd, PRIVATE_FILE_MODE);
    if (fix.report) reportTightened(log, path, mode, PRIVATE_FILE_MODE);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}

/** openPrivateSync for a FileHandle. */
export async function openPrivate(path: string, flags: string | number, log?: ModeLog): Promise<FileHandle> {
  const fh = await open(path, flags, PRIVATE_FILE_MODE);
  try {
    const { mode } = await fh.stat();
    const fix = modeFix(mode);
    if (fix.chmod) await fh.chmod(PRIVATE_FILE_MODE);
    if (fix.report) reportTightened(log, path, mode, PRIVATE_FILE_MODE);
  } catch (err) {
    await fh.close();
    throw err;
  }
  return fh;
}

/**
 * Replaces `path` with `text` atomically (a 0600 temporary file beside it, renamed over it), so a reader sees
 * the old or the new content and the result is 0600 even when a stale temporary file was looser.
 */
export function writePrivateFileSync(
  path: string,
  text: string,
  options: { fsync?: boolean; log?: ModeLog } = {},
): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openPrivateSync(tmp, 'w', options.log);
  try {
    writeFileSync(fd, text);
    if (options.fsync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
