/**
 * A container's resolv.conf through the addon's openat2. Directories stand in for container images, a bind
 * mount for what a runtime mounts there, and one chrooted process in a mount namespace of its own for a
 * container reached through /proc/<pid>/root. Never skipped: CI runs as root with the addon built.
 */
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadNativeIo } from '../../dataplane/tun/native.ts';
import { sleepImage, startContainer } from './fixtures.ts';
import { installResolvConf, resolvConf } from './resolv-conf.ts';

const io = loadNativeIo();
const open = (root: string, path: string) => io.openInRoot(root, path);
const TEXT = resolvConf(['10.16.0.1', 'fdff:2000::1'], 'app.ns.web.v1', 'the test');

describe('a container resolv.conf', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-resolv-'));
  const victim = join(dir, 'host-file');
  const children: ChildProcess[] = [];
  const mounts: string[] = [];
  /** An image directory with an etc/. */
  const image = (name: string) => {
    const root = join(dir, name);
    mkdirSync(join(root, 'etc'), { recursive: true });
    return root;
  };
  const conf = (root: string) => join(root, 'etc', 'resolv.conf');

  before(() => writeFileSync(victim, 'host\n'));
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    for (const m of mounts) execFileSync('umount', [m]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('replaces the file of an image, and creates it when there is none', () => {
    const root = image('plain');
    writeFileSync(conf(root), 'nameserver 192.0.2.53\n'.repeat(40));
    assert.equal(installResolvConf(open, root, TEXT), 'written');
    assert.equal(readFileSync(conf(root), 'utf8'), TEXT, 'the old, longer file is replaced');
    assert.match(TEXT, /^nameserver 10\.16\.0\.1$/m);
    assert.match(TEXT, /^search v1\.app\.ns\.oakestra app\.ns\.oakestra$/m);
    const empty = image('none');
    assert.equal(installResolvConf(open, empty, TEXT), 'written');
    assert.equal(readFileSync(conf(empty), 'utf8'), TEXT);
  });

  it("never reaches a host file through the image's symlinks", () => {
    for (const [name, target] of [
      ['absolute', victim],
      ['climbing', `../../../../../../../..${victim}`],
    ] as const) {
      const root = image(name);
      symlinkSync(target, conf(root));
      assert.throws(
        () => installResolvConf(open, root, TEXT),
        /ELOOP/,
        `${name}: a symlink at the end is not followed`,
      );
      assert.equal(readFileSync(victim, 'utf8'), 'host\n', `${name}: the host file is untouched`);
    }
    // an /etc that links to a host path resolves inside the image
    const root = join(dir, 'linked-etc');
    mkdirSync(join(root, dir), { recursive: true });
    symlinkSync(dir, join(root, 'etc'));
    assert.equal(installResolvConf(open, root, TEXT), 'written');
    assert.equal(readFileSync(join(root, dir, 'resolv.conf'), 'utf8'), TEXT, 'written inside the image');
    assert.ok(!existsSync(join(dir, 'resolv.conf')), 'not beside the host file');
  });

  it("leaves a file the runtime mounted there alone (containerd's host resolv.conf), and refuses a FIFO", () => {
    const root = image('mounted');
    writeFileSync(conf(root), '');
    execFileSync('mount', ['--bind', victim, conf(root)]);
    mounts.push(conf(root));
    assert.equal(installResolvConf(open, root, TEXT), 'runtime-mounted');
    assert.equal(readFileSync(victim, 'utf8'), 'host\n');
    const fifo = image('fifo');
    execFileSync('mkfifo', [conf(fifo)]);
    assert.throws(
      () => installResolvConf(open, fifo, TEXT),
      /ENXIO/,
      'a FIFO without a reader is not opened',
    );
  });

  it('reaches a chrooted process in its own mount namespace through /proc/<pid>/root', async () => {
    const root = image('container');
    const { child, pid } = await startContainer(root, sleepImage(root));
    children.push(child);
    assert.equal(installResolvConf(open, `/proc/${pid}/root`, TEXT), 'written');
    assert.equal(readFileSync(conf(root), 'utf8'), TEXT);
  });

  it("does not write for a process that shares the caller's root (oaknet run: ip netns exec mounts its own)", () => {
    assert.equal(installResolvConf(open, `/proc/${process.pid}/root`, TEXT), 'shared-root');
  });

  it('rejects bad arguments with a TypeError, and a missing root with its errno', () => {
    assert.throws(() => io.openInRoot('', 'etc/resolv.conf'), TypeError);
    assert.throws(() => io.openInRoot(join(dir, 'no-such-dir'), 'x'), /ENOENT/);
  });
});
