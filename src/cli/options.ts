/**
 * @module cli/options
 * Flag parsers shared by the commands: each validates at the edge and says what is wrong.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { InvalidInputError, PermissionError } from '../errors.ts';
import { IpAddress } from '../addressing/ip.ts';
import { isId, isJobName } from '../protocol/names.ts';
import { makePrivateDir, type ModeLog } from '../store/private-files.ts';
import { SqliteStore } from '../store/sqlite.ts';
import type { Store } from '../store/store.ts';
import { MemoryStore } from '../store/memory.ts';
import { readState } from '../platform/state.ts';

export function parsePort(text: string): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text) || n > 65535) throw new InvalidArgumentError('expected a port number 0-65535');
  return n;
}

/** A count of at least 1 (a quota). */
export function parsePositive(text: string): number {
  const n = Number(text);
  if (!/^\d{1,9}$/.test(text) || n < 1)
    throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}

/** Window of the rate limits set by flags. */
export const RATE_WINDOW_MS = 10_000;

/** A rate limit: requests per caller per 10 s, 0 for none. */
export function parseRate(text: string): number {
  if (!/^\d{1,9}$/.test(text))
    throw new InvalidArgumentError('expected requests per 10 s: a whole number, 0 for no limit');
  return Number(text);
}

export function parseUrl(text: string): string {
  try {
    const u = new URL(text);
    if (
      u.protocol !== 'http:' &&
      u.protocol !== 'https:' &&
      u.protocol !== 'mqtt:' &&
      u.protocol !== 'mqtts:' &&
      u.protocol !== 'tcp:'
    ) {
      throw new Error('protocol');
    }
    return text.replace(/\/+$/, '');
  } catch {
    throw new InvalidArgumentError('expected a URL such as http://10.0.0.1:10010');
  }
}

export function parseIp(text: string): string {
  const ip = IpAddress.tryParse(text);
  if (!ip) throw new InvalidArgumentError('expected an IPv4 or IPv6 address');
  return ip.toString();
}

export function parseId(text: string): string {
  if (!isId(text)) throw new InvalidArgumentError("expected 1-128 of letters, digits, '_', '.', '-'");
  return text;
}

export function parseJobName(text: string): string {
  if (!isJobName(text)) {
    throw new InvalidArgumentError('expected app.appns.service.servicens (each part 1-30 letters or digits)');
  }
  return text;
}

/** Where state files go by default: /var/lib/oaknet for root (daemons), else $XDG_STATE_HOME/oaknet. */
export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/oaknet';
  return join(process.env['XDG_STATE_HOME'] ?? join(homedir(), '.local', 'state'), 'oaknet');
}

/**
 * Opens a store: ':memory:' for a throwaway one, else an SQLite file, 0600 with its -wal and -shm files (its
 * directory is created 0700 when missing; a file others could read is tightened and reported to `log`).
 */
export function openStore(path: string, log?: ModeLog): Store {
  if (path === ':memory:') return new MemoryStore();
  makePrivateDir(dirname(path));
  return new SqliteStore(path, { log });
}

/**
 * The root URL: the flag, else $OAKNET_ROOT, else the root of the local platform (oaknet up: this user's, else
 * the one `sudo oaknet up` made in /var/lib/oaknet, whose state file is 0600, so only root finds it), else
 * :10010.
 */
export function rootUrlFrom(flag: string | undefined, secure = true): string {
  if (flag ?? process.env['OAKNET_ROOT']) return (flag ?? process.env['OAKNET_ROOT'])!;
  const dirs = process.env['OAKNET_STATE_DIR']
    ? [process.env['OAKNET_STATE_DIR']]
    : [join(defaultStateDir(), 'platform'), '/var/lib/oaknet/platform'];
  for (const dir of dirs) {
    try {
      const state = readState(dir);
      if (state) return `${state.insecure ? 'http' : 'https'}://127.0.0.1:${state.root.hostPort}`;
    } catch {
      // no readable platform state here
    }
  }
  return `${secure ? 'https' : 'http'}://127.0.0.1:10010`;
}

/** A token from --token, else the file --token-file names, else $OAKNET_TOKEN; undefined when none. */
export function tokenFrom(opts: { token?: string; tokenFile?: string }): string | undefined {
  if (opts.token !== undefined) return opts.token.trim();
  if (opts.tokenFile !== undefined) {
    try {
      return readFileSync(opts.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new InvalidInputError(`cannot read the token file ${opts.tokenFile}: ${(err as Error).message}`);
    }
  }
  const env = process.env['OAKNET_TOKEN'];
  return env ? env.trim() : undefined;
}

/** Fails with a clear message unless this process runs as root (what touches namespaces, devices, nftables). */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0)
    throw new PermissionError(
      `${what} needs root: run it with sudo (it creates network namespaces and devices)`,
    );
}
