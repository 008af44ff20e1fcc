import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino, type Logger } from 'pino';
import { SystemError } from '../errors.ts';
import { isAlive, processesWithMarker, readProcStat } from '../system/proc.ts';
import { spawnDetached, stopProcesses, waitFor } from './processes.ts';

const log = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'oaknet-proc-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('detached processes', () => {
  it('spawns detached with a log, finds it by marker, stops it with SIGTERM', async () => {
    const logFile = join(dir, 'sleep.log');
    const rec = await spawnDetached({
      name: 'sleeper',
      argv: ['sleep', '60'],
      log: logFile,
      env: { OAKNET_PLATFORM: 'ptest1' },
    });
    assert.equal(isAlive(rec), true);
    assert.equal(readProcStat(rec.pid)?.pgrp, rec.pid, 'leads its own process group');
    assert.deepEqual(processesWithMarker('OAKNET_PLATFORM=ptest1'), [rec.pid]);
    assert.match(readFileSync(logFile, 'utf8'), /starting sleep 60/);
    assert.deepEqual(await stopProcesses([rec], { marker: 'OAKNET_PLATFORM=ptest1' }, log), []);
    assert.equal(isAlive(rec), false);
  });

  it('sends SIGKILL to a process that ignores SIGTERM', async () => {
    const rec = await spawnDetached({
      name: 'stubborn',
      argv: [
        process.execPath,
        '-e',
        "process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000);",
      ],
      log: join(dir, 'stubborn.log'),
      env: { OAKNET_PLATFORM: 'ptest2' },
    });
    await waitFor(
      'handler installed',
      () => (readFileSync(rec.log, 'utf8').includes('up\n') ? true : undefined),
      {
        timeoutMs: 10_000,
      },
    );
    const killed = await stopProcesses([rec], { marker: 'OAKNET_PLATFORM=ptest2', graceMs: 300 }, log);
    assert.deepEqual(killed, ['stubborn']);
    assert.equal(isAlive(rec), false);
  });

  it('never signals a process whose start time differs from the record', async () => {
    const me = readProcStat(process.pid);
    assert.ok(me);
    const stale = { name: 'stale', pid: process.pid, startTime: me.startTime - 1, argv: [], log: '' };
    assert.deepEqual(await stopProcesses([stale], { marker: 'OAKNET_PLATFORM=ptest3' }, log), []);
  });

  it('appends to a log file that is 0600: created so with umask 022, or tightened (and said so)', async (t) => {
    const umask = process.umask(0o022);
    t.after(() => process.umask(umask));
    const warned: string[] = [];
    const modeLog = { warn: (obj: { path: string }) => warned.push(obj.path) } as unknown as Logger;
    const fresh = join(dir, 'fresh.log');
    const old = join(dir, 'old.log');
    writeFileSync(old, 'from an older version\n');
    chmodSync(old, 0o644);
    for (const logFile of [fresh, old]) {
      await spawnDetached({ name: 'quick', argv: ['true'], log: logFile, modeLog });
      assert.equal(statSync(logFile).mode & 0o777, 0o600, logFile);
      assert.match(readFileSync(logFile, 'utf8'), /starting true/);
    }
    assert.deepEqual(warned, [old]);
  });

  it('reports a command that cannot start', async () => {
    await assert.rejects(
      spawnDetached({ name: 'nothing', argv: ['/nonexistent/oaknet-x'], log: join(dir, 'x.log') }),
      SystemError,
    );
  });
});

describe('waitFor', () => {
  it('returns the first value, fails at the deadline or when told to', async () => {
    let n = 0;
    assert.equal(
      await waitFor('count', () => (++n >= 3 ? n : undefined), { timeoutMs: 5000, intervalMs: 1 }),
      3,
    );
    await assert.rejects(
      waitFor('never', () => undefined, { timeoutMs: 50, intervalMs: 10 }),
      /never: not within 50 ms/,
    );
    await assert.rejects(
      waitFor('doomed', () => undefined, { timeoutMs: 5000, failIf: () => 'it died' }),
      /doomed: it died/,
    );
  });
});
