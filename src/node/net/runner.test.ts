import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SystemError } from '../../errors.ts';
import {
  CommandFailedError,
  ExecRunner,
  FakeRunner,
  ipBatch,
  ipJson,
  isAlreadyGone,
  nft,
  nftJson,
} from './runner.ts';

describe('ExecRunner', () => {
  const runner = new ExecRunner({ timeoutMs: 5000 });

  it('returns stdout and passes input on stdin, without a shell', async () => {
    const { stdout } = await runner.run('cat', [], 'hello $HOME > /tmp/x\n');
    assert.equal(stdout, 'hello $HOME > /tmp/x\n');
    const echoed = await runner.run('echo', ['a;b', '$(id)']);
    assert.equal(echoed.stdout, 'a;b $(id)\n');
  });

  it('turns a non-zero exit into a SystemError with the command and stderr', async () => {
    await assert.rejects(
      runner.run('ls', ['/definitely/not/here']),
      (err: unknown) =>
        err instanceof CommandFailedError &&
        err instanceof SystemError &&
        err.code === 'E_SYSTEM' &&
        err.exitCode === 2 &&
        err.message.includes('ls /definitely/not/here') &&
        /No such file or directory/.test(err.stderr),
    );
  });

  it('reports a command that cannot be started', async () => {
    await assert.rejects(runner.run('oaknet-no-such-command', []), (err: unknown) => {
      return err instanceof CommandFailedError && err.exitCode === undefined && /ENOENT/.test(err.message);
    });
  });

  it('kills a command that outlives the timeout', async () => {
    const quick = new ExecRunner({ timeoutMs: 200 });
    const t0 = Date.now();
    await assert.rejects(
      quick.run('sleep', ['10']),
      (err: unknown) => err instanceof CommandFailedError && /timeout 200 ms/.test(err.message),
    );
    assert.ok(Date.now() - t0 < 5000);
  });

  it('names the failing line of an ip batch', async () => {
    await assert.rejects(
      ipBatch(runner, ['link show dev lo', 'link show dev oaknet-nonexistent0']),
      (err: unknown) =>
        err instanceof CommandFailedError &&
        err.failedLine === 2 &&
        err.message.includes('[input line 2: link show dev oaknet-nonexistent0]') &&
        isAlreadyGone(err),
    );
  });

  it('reads ip -j output', async () => {
    const links = await ipJson(runner, ['link', 'show', 'dev', 'lo']);
    assert.equal(links.length, 1);
    assert.equal((links[0] as { ifname?: string }).ifname, 'lo');
  });
});

describe('ip and nft helpers (FakeRunner)', () => {
  it('ipBatch runs one ip -batch - with the lines on stdin', async () => {
    const fake = new FakeRunner();
    await ipBatch(fake, ['link set dev lo up', 'addr add 10.0.0.1/24 dev lo']);
    assert.deepEqual(fake.calls, [
      { cmd: 'ip', args: ['-batch', '-'], input: 'link set dev lo up\naddr add 10.0.0.1/24 dev lo\n' },
    ]);
  });

  it('ipBatch enters the network namespace of a pid with nsenter, and -force when asked', async () => {
    const fake = new FakeRunner();
    await ipBatch(fake, ['link set dev lo up'], 4242, { force: true });
    assert.deepEqual(fake.commandLines(), ['nsenter -t 4242 -n ip -force -batch -']);
  });

  it('ipBatch spawns nothing for no lines and refuses a line with a newline', async () => {
    const fake = new FakeRunner();
    await ipBatch(fake, []);
    assert.equal(fake.calls.length, 0);
    await assert.rejects(ipBatch(fake, ['link show\nlink del dev eth0']), /newline/);
    assert.equal(fake.calls.length, 0);
  });

  it('nft applies a script with nft -f - and nftJson reads nft -j', async () => {
    const fake = new FakeRunner((call) =>
      call.args[0] === '-j'
        ? { stdout: '{"nftables": [{"metainfo": {}}, {"table": {"name": "x"}}]}' }
        : undefined,
    );
    await nft(fake, 'table inet x {}\n');
    const list = await nftJson(fake, ['list', 'tables']);
    assert.deepEqual(fake.calls[0], { cmd: 'nft', args: ['-f', '-'], input: 'table inet x {}\n' });
    assert.deepEqual(fake.commandLines()[1], 'nft -j list tables');
    assert.equal(list.length, 2);
  });

  it('FakeRunner fails on request with a CommandFailedError', async () => {
    const fake = new FakeRunner(() => ({ fail: 'RTNETLINK answers: File exists\nCommand failed -:1\n' }));
    await assert.rejects(
      ipBatch(fake, ['link add x type dummy']),
      (err: unknown) => err instanceof CommandFailedError && err.failedLine === 1 && !isAlreadyGone(err),
    );
  });

  it('rejects JSON that is not what the tool prints', async () => {
    const fake = new FakeRunner(() => ({ stdout: '{"not": "an array"}' }));
    await assert.rejects(ipJson(fake, ['link']), SystemError);
    await assert.rejects(nftJson(fake, ['list', 'tables']), SystemError);
    const garbage = new FakeRunner(() => ({ stdout: 'nope' }));
    await assert.rejects(ipJson(garbage, ['link']), /invalid JSON/);
  });
});
