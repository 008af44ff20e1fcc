import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  makePrivateDir,
  openPrivate,
  openPrivateSync,
  tightenFile,
  writePrivateFileSync,
  type ModeLog,
} from './private-files.ts';

const modeOf = (path: string) => statSync(path).mode & 0o777;

/** A ModeLog that records what it is told. */
function recorder() {
  const warnings: Array<Record<string, unknown>> = [];
  const log = { warn: (obj: Record<string, unknown>) => warnings.push(obj) } as unknown as ModeLog;
  return { log, warnings };
}

describe('private files and directories, with the usual umask 022', () => {
  let dir: string;
  let umask: number;
  before(() => {
    umask = process.umask(0o022);
    dir = mkdtempSync(join(tmpdir(), 'oaknet-private-'));
  });
  after(() => {
    process.umask(umask);
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates every missing directory 0700 and leaves existing ones alone', () => {
    const existing = join(dir, 'shared');
    mkdirSync(existing, { mode: 0o755 });
    makePrivateDir(join(existing, 'a', 'b', 'c'));
    assert.equal(modeOf(existing), 0o755);
    for (const d of ['a', 'a/b', 'a/b/c']) assert.equal(modeOf(join(existing, d)), 0o700, d);
    makePrivateDir(existing); // exists: nothing to do
    assert.equal(modeOf(existing), 0o755);
  });

  it('gives created directories exactly 0700 even under a umask that takes owner bits', () => {
    process.umask(0o277);
    try {
      makePrivateDir(join(dir, 'narrow', 'x'));
    } finally {
      process.umask(0o022);
    }
    assert.equal(modeOf(join(dir, 'narrow')), 0o700);
    assert.equal(modeOf(join(dir, 'narrow', 'x')), 0o700);
  });

  it('creates files 0600, makes an existing looser one 0600 and says so', async () => {
    const { log, warnings } = recorder();
    const fresh = join(dir, 'fresh.log');
    closeSync(openPrivateSync(fresh, 'a', log));
    assert.equal(modeOf(fresh), 0o600);
    assert.equal(warnings.length, 0);

    const loose = join(dir, 'loose.log');
    writeFileSync(loose, 'old\n');
    chmodSync(loose, 0o644);
    closeSync(openPrivateSync(loose, 'a', log));
    assert.equal(modeOf(loose), 0o600);
    assert.deepEqual(warnings, [{ path: loose, was: '0644', now: '0600' }]);

    const looseAsync = join(dir, 'loose-async');
    writeFileSync(looseAsync, '');
    chmodSync(looseAsync, 0o666);
    const fh = await openPrivate(looseAsync, 'w', log);
    await fh.close();
    assert.equal(modeOf(looseAsync), 0o600);
    assert.equal(warnings.length, 2);
  });

  it('tightens an existing file by taking group and other bits off; an absent one is no error', () => {
    const { log, warnings } = recorder();
    const p = join(dir, 'side');
    writeFileSync(p, 'x');
    chmodSync(p, 0o664);
    assert.equal(tightenFile(p, log), true);
    assert.equal(modeOf(p), 0o600);
    assert.equal(tightenFile(p, log), false);
    assert.equal(tightenFile(join(dir, 'absent'), log), false);
    assert.equal(warnings.length, 1);
  });

  it('replaces a file atomically with a 0600 one, even over a stale looser temporary file', () => {
    const p = join(dir, 'state.json');
    writeFileSync(p, 'old');
    chmodSync(p, 0o644);
    const tmp = `${p}.tmp-${process.pid}`;
    writeFileSync(tmp, 'stale');
    chmodSync(tmp, 0o666);
    const { log } = recorder();
    writePrivateFileSync(p, 'new', { fsync: true, log });
    assert.equal(readFileSync(p, 'utf8'), 'new');
    assert.equal(modeOf(p), 0o600);
    assert.throws(() => statSync(tmp), { code: 'ENOENT' });
  });
});
