import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, statSync } from 'node:fs';
import { describe, it } from 'node:test';
import { bootId, isAlive, netnsInode, readProcStat } from './proc.ts';

describe('process identity', () => {
  it('reads its own start time and tells a reused PID from the original', () => {
    const me = readProcStat(process.pid);
    assert.ok(me && me.startTime > 0);
    assert.equal(isAlive({ pid: process.pid, startTime: me.startTime }), true);
    assert.equal(isAlive({ pid: process.pid, startTime: me.startTime + 1 }), false);
    assert.equal(readProcStat(2 ** 22 + 1), undefined);
  });

  it('keeps a start time for the life of the process, and a dead process is not alive', async () => {
    const first = readProcStat(process.pid);
    const second = readProcStat(process.pid);
    assert.ok(first && second);
    assert.equal(second.startTime, first.startTime);

    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    await once(child, 'spawn');
    assert.ok(child.pid !== undefined);
    const stat = readProcStat(child.pid);
    assert.ok(stat);
    const identity = { pid: child.pid, startTime: stat.startTime };
    assert.equal(isAlive(identity), true);
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited; // reaped: the PID is gone
    assert.equal(isAlive(identity), false);
    assert.equal(netnsInode(child.pid), undefined);
  });

  it('reads its network namespace and the boot ID', () => {
    assert.equal(netnsInode(process.pid), statSync('/proc/self/ns/net').ino);
    const id = bootId();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(id, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    assert.equal(bootId(), id);
  });
});
