/**
 * @module platform/forwarders
 * Host forwarders: root and clusters listen inside the control namespace, and a socat in the host namespace
 * makes each HTTP port reachable at http://127.0.0.1:<host port>, a free loopback port chosen at start. A
 * restarted service keeps its running forwarder, and with it its host port.
 */
import { createServer } from 'node:net';
import type { CommandRunner } from '../node/net/runner.ts';
import { isAlive } from '../system/proc.ts';
import type { Launcher } from './launcher.ts';
import type { ProcessRecord } from './processes.ts';

/**
 * The host forwarder `name` to port `port` of the control namespace: the running one (at `hostPort`), else a
 * new one on a free port.
 */
export async function hostForwarder(
  l: Launcher,
  runner: CommandRunner,
  name: string,
  port: number,
  hostPort: number | undefined,
): Promise<{ hostPort: number }> {
  const running = l.st.processes.find((p) => p.name === name);
  if (running && hostPort && isAlive(running)) return { hostPort };
  return startForwarder(l, runner, name, port);
}

/** Starts a forwarder 127.0.0.1:<free port> -> <ctl ip>:<port>; returns the record and host port. */
async function startForwarder(
  l: Launcher,
  runner: CommandRunner,
  name: string,
  port: number,
): Promise<{ rec: ProcessRecord; hostPort: number }> {
  const st = l.st;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const hostPort = await freeHostPort();
    const rec = await l.spawn(name, [
      'socat',
      `TCP-LISTEN:${hostPort},bind=127.0.0.1,reuseaddr,fork`,
      `EXEC:ip netns exec ${st.ctlNs} socat STDIO TCP\\:${st.ctlIp}\\:${port}`,
    ]);
    try {
      await l.waitReady(
        rec,
        `listen on 127.0.0.1:${hostPort}`,
        async () => ((await listenerPid(runner, hostPort)) === rec.pid ? true : undefined),
        5000,
      );
      return { rec, hostPort };
    } catch (err) {
      lastError = err; // most likely the port was taken meanwhile: try another one
      await l.stop(rec, 1000);
    }
  }
  throw lastError;
}

/** PID of the process listening on 127.0.0.1:port (from `ss -ltnp`), if any. */
async function listenerPid(runner: CommandRunner, port: number): Promise<number | undefined> {
  const { stdout } = await runner.run('ss', ['-Hltnp', `sport = :${port}`]);
  const m = /pid=(\d+)/.exec(stdout);
  return m ? Number(m[1]) : undefined;
}

/** A loopback port that was free a moment ago. */
function freeHostPort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}
