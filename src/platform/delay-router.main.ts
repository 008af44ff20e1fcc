/**
 * @module platform/delay-router.main
 * The delay router process (run by the platform inside its switch namespace):
 *   node --import tsx delay-router.main.ts --tun NAME --config FILE --applied FILE
 * It opens the TUN, applies the config, and acknowledges each applied generation by writing the applied
 * file; SIGHUP re-reads the config, SIGTERM/SIGINT close the TUN and exit. Logs are pino JSON on stdout.
 */
import { pino } from 'pino';
import { LinuxTun } from '../dataplane/tun/linux.ts';
import { errorMessage } from '../errors.ts';
import { writePrivateFileSync } from '../store/private-files.ts';
import { DELAY_MTU, DelayRouter, readDelayConfig } from './delay-router.ts';

function flag(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? process.argv[i + 1] : undefined;
  if (value === undefined) {
    process.stderr.write(`delay-router: missing --${name}\n`);
    process.exit(2);
  }
  return value;
}

const log = pino({ name: 'oaknet-delay-router', base: { pid: process.pid } });
const tunName = flag('tun');
const configPath = flag('config');
const appliedPath = flag('applied');

function apply(router: DelayRouter): void {
  const config = readDelayConfig(configPath);
  router.setDelays(config.delays);
  writePrivateFileSync(appliedPath, JSON.stringify({ generation: config.generation }) + '\n', { log });
  log.info({ generation: config.generation, pairs: config.delays.length }, 'delays applied');
}

try {
  const tun = await LinuxTun.open({ name: tunName, mtu: DELAY_MTU, batchSize: 128 });
  const router = new DelayRouter(tun);
  router.start((err) => {
    log.error({ err: errorMessage(err) }, 'TUN read failed');
    process.exit(1);
  });
  apply(router);
  process.on('SIGHUP', () => {
    try {
      apply(router);
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'cannot apply the new config; keeping the old one');
    }
  });
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal, counters: router.counters }, 'stopping');
    router.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (err) {
  log.fatal({ err: errorMessage(err) }, 'delay router failed to start');
  process.exit(1);
}
