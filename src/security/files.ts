/**
 * @module security/files
 * Where identities live on disk: one directory per process (0700), keys and certificates in it (0600),
 * each written atomically (temp file, fsync, rename) so a crash leaves the old file or the new one.
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InvalidInputError } from '../errors.ts';
import { CertificateAuthority } from './pki.ts';

/** Creates `dir` 0700 (and tightens it when it exists looser). */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** Writes `text` to `path` with mode 0600, atomically. */
export function writePrivateFile(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function readIfExists(path: string): string | undefined {
  return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
}

/**
 * The platform CA in `dir` (ca.crt, ca.key), created on the first start; or the one given (copied in, so
 * the root keeps using it). A key file readable by others is refused: it would let them mint identities.
 */
export async function loadOrCreateCa(
  dir: string,
  log: Logger,
  given?: { cert: string; key: string },
): Promise<CertificateAuthority> {
  ensurePrivateDir(dir);
  const certPath = join(dir, 'ca.crt');
  const keyPath = join(dir, 'ca.key');
  if (given) {
    const ca = await CertificateAuthority.load(given.cert, given.key);
    writePrivateFile(certPath, ca.certPem);
    writePrivateFile(keyPath, given.key);
    return ca;
  }
  const cert = readIfExists(certPath);
  const key = readIfExists(keyPath);
  if (cert !== undefined && key !== undefined) {
    if ((statSync(keyPath).mode & 0o077) !== 0)
      throw new InvalidInputError(`${keyPath} is readable by others: chmod 600 it (and check who copied it)`);
    return CertificateAuthority.load(cert, key);
  }
  if (cert !== undefined || key !== undefined)
    throw new InvalidInputError(`${dir} has only one of ca.crt and ca.key: restore the other or remove both`);
  const made = await CertificateAuthority.create();
  writePrivateFile(keyPath, made.key);
  writePrivateFile(certPath, made.ca.certPem);
  log.info({ dir }, 'platform CA created');
  return made.ca;
}
