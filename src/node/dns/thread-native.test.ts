/**
 * The node's DNS server in its own thread, as oaknet node runs it (batched UDP through the addon): the whole
 * suite, then what only the thread adds: a server that cannot bind rejects the start with why, its log records
 * reach the NetManager's logger, it runs at nice 10, and counters after the end are an error, not a hang.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { dnsServerCases } from './server.case.ts';
import { DnsThread } from './thread.ts';

dnsServerCases('its own thread', async (o) => {
  const thread = await DnsThread.start({ ...o, native: true });
  return {
    setZone: (zone) => thread.setZone(zone),
    counters: () => thread.counters(),
    port: thread.addresses[0]!.port,
    close: () => thread.close(),
  };
});

describe('the DNS thread', () => {
  const ask = () => Promise.resolve('unknown' as const);

  it('rejects its start with the address it cannot bind', async () => {
    const log = pino({ level: 'silent' });
    await assert.rejects(
      DnsThread.start({
        listen: [{ host: '192.0.2.1', port: 0 }],
        allowedSources: [],
        ask,
        log,
        native: true,
      }),
      /cannot listen on udp 192\.0\.2\.1:0/,
    );
  });

  it("runs below the NetManager's thread (nice 10), which keeps its own priority", async () => {
    const thread = await DnsThread.start({
      listen: [{ host: '127.0.0.1', port: 0 }],
      allowedSources: [],
      ask,
      log: pino({ level: 'silent' }),
      native: true,
    });
    try {
      // field 19 of /proc/<pid>/task/<tid>/stat (after the parenthesised name) is the thread's nice value
      const nice = (tid: string) =>
        Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
      const tasks = readdirSync('/proc/self/task');
      assert.equal(nice(String(process.pid)), 0, 'the main thread');
      assert.equal(tasks.filter((t) => nice(t) === 10).length, 1, 'one thread at nice 10: the DNS thread');
    } finally {
      await thread.close();
    }
  });

  it("writes its log records through the NetManager's logger and ends cleanly", async () => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (l: string) => lines.push(l) }).child({ component: 'dns' });
    const thread = await DnsThread.start({
      listen: [{ host: '127.0.0.1', port: 0 }],
      allowedSources: [],
      ask,
      log,
      native: false,
    });
    assert.equal((await thread.counters()).queries, 0);
    const listening = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((r) => r['msg'] === 'DNS thread listening');
    assert.ok(listening, `the thread's record in the NetManager's log: ${lines.join('')}`);
    assert.equal(listening['component'], 'dns');
    assert.equal(listening['level'], 20);
    await thread.close();
    await assert.rejects(thread.counters(), /exited/);
  });
});
