/**
 * Debian's mosquitto as an external broker for tests: a private config on a free loopback port (or a
 * config the test was given), started as a child process and stopped (by its PID) when the test ends.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.ts';

export const MOSQUITTO_BIN = '/usr/sbin/mosquitto';

export interface Mosquitto {
  url: string;
  /** The broker's process ID. */
  pid: number;
  /** What mosquitto logged so far. */
  output(): string;
  stop(): Promise<void>;
}

/** An anonymous plain-TCP broker with a throwaway config. */
export async function startMosquitto(): Promise<Mosquitto> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-mosquitto-'));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nmax_keepalive 65535\n`,
  );
  const m = await runMosquitto(conf, port, 'mqtt');
  return {
    ...m,
    async stop() {
      await m.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** mosquitto -c conf (-v: every log type), ready once 127.0.0.1:port accepts connections. */
export async function runMosquitto(conf: string, port: number, scheme = 'mqtts'): Promise<Mosquitto> {
  const child = spawn(MOSQUITTO_BIN, ['-c', conf, '-v'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited: ${out}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`mosquitto did not listen on ${port}: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `${scheme}://127.0.0.1:${port}`, pid: child.pid!, output: () => out, stop };
}
