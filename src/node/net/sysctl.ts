/**
 * @module node/net/sysctl
 * Kernel parameters written straight to /proc/sys. Upstream ran `echo 0 > ...` through exec without a shell,
 * so the `>` was a literal argument and nothing was written (reference 4.1, 7.2). Writing the file ourselves
 * costs no spawn and cannot silently do nothing: every write is read back and compared.
 *
 * /proc/sys/net shows the network namespace of the process that opens it, so a NodeEnvironment always changes
 * its own namespace (tests run it in a child process inside a throwaway namespace for that reason).
 * Keys are slash paths below /proc/sys (`net/ipv4/conf/<dev>/rp_filter`), which stay unambiguous for
 * interface names that contain dots.
 */
import { readFile, writeFile, readdir } from 'node:fs/promises';
import { SystemError, errorMessage } from '../../errors.ts';

/** Reads and writes kernel parameters. */
export interface Sysctl {
  /** The trimmed value of `key` (e.g. "net/ipv4/ip_forward"), or undefined when the key does not exist. */
  read(key: string): Promise<string | undefined>;
  /** Sets `key` to `value`; throws SystemError when it cannot be written or does not read back as `value`. */
  write(key: string, value: string): Promise<void>;
  /** Names directly under directory `key` (e.g. the interfaces under "net/ipv6/conf"); [] when it does not exist. */
  list(key: string): Promise<string[]>;
}

function checkKey(key: string): void {
  if (!/^[A-Za-z0-9_.\-/]+$/.test(key) || key.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new Error(`bad sysctl key ${JSON.stringify(key)}`);
  }
}

/** The real Sysctl: files under `root` (default /proc/sys) of the calling process's namespaces. */
export class ProcSysctl implements Sysctl {
  constructor(private readonly root = '/proc/sys') {}

  /** Reads `root/key`; undefined when it does not exist. */
  async read(key: string): Promise<string | undefined> {
    checkKey(key);
    try {
      return (await readFile(`${this.root}/${key}`, 'utf8')).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new SystemError(`cannot read sysctl ${key}: ${errorMessage(err)}`, { cause: err });
    }
  }

  async list(key: string): Promise<string[]> {
    checkKey(key);
    try {
      return await readdir(`${this.root}/${key}`);
    } catch {
      return [];
    }
  }

  /** Writes `root/key` and verifies it by reading it back. */
  async write(key: string, value: string): Promise<void> {
    checkKey(key);
    const path = `${this.root}/${key}`;
    try {
      await writeFile(path, `${value}\n`);
    } catch (err) {
      throw new SystemError(`cannot write sysctl ${key}=${value} (${path}): ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const now = await this.read(key);
    if (now !== value) throw new SystemError(`sysctl ${key} reads ${String(now)} after writing ${value}`);
  }
}

/** An in-memory Sysctl for unit tests: keys that were never set do not exist (read gives undefined). */
export class MemorySysctl implements Sysctl {
  /** The current values. */
  readonly values = new Map<string, string>();
  /** Keys whose write must fail as if the file did not exist (e.g. a device that is missing). */
  readonly missing = new Set<string>();

  constructor(initial: Record<string, string> = {}) {
    for (const [k, v] of Object.entries(initial)) this.values.set(k, v);
  }

  /** Names of the stored keys one level below `key`. */
  list(key: string): Promise<string[]> {
    checkKey(key);
    const prefix = `${key}/`;
    const names = new Set<string>();
    for (const k of this.values.keys())
      if (k.startsWith(prefix)) names.add(k.slice(prefix.length).split('/')[0]!);
    return Promise.resolve([...names]);
  }

  /** The stored value or undefined. */
  read(key: string): Promise<string | undefined> {
    checkKey(key);
    return Promise.resolve(this.values.get(key));
  }

  /** Stores the value; rejects with SystemError for keys in `missing`. */
  write(key: string, value: string): Promise<void> {
    checkKey(key);
    if (this.missing.has(key)) return Promise.reject(new SystemError(`cannot write sysctl ${key}: ENOENT`));
    this.values.set(key, value);
    return Promise.resolve();
  }
}
