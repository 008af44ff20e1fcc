/**
 * @module cli/main
 * The oaknet command line: the only composition root. It parses flags, builds the concrete
 * implementations (stores, brokers, devices) and starts the roles.
 */
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { errorMessage, OakNetError } from '../errors.ts';
import { DEFAULT_RATE_LIMITS } from '../protocol/http-limits.ts';
import { DEFAULT_QUOTAS } from '../root/quotas.ts';
import { VERSION } from '../version.ts';
import { createLogger, LOG_LEVELS } from './log.ts';
import {
  defaultStateDir,
  openStore,
  parseId,
  parsePort,
  parsePositive,
  parseRate,
  parseUrl,
  RATE_WINDOW_MS,
  rootUrlFrom,
} from './options.ts';
import { registerNodeCommands } from './node-command.ts';
import { registerPlatformCommands } from './platform-command.ts';
import { registerServiceCommands, registerWorkerCommands } from './service-command.ts';
import { closeOnSignals } from './signals.ts';

const out = (text: string) => process.stdout.write(text.endsWith('\n') ? text : text + '\n');

const program = new Command('oaknet')
  .description('oaknet: the networking layer of an edge orchestrator (Oakestra-compatible)')
  .version(VERSION)
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: false });

const logLevel = () => new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info');

program
  .command('root')
  .description('run the root service manager: registers clusters and allocates every address')
  .option('--port <port>', 'HTTP port', parsePort, 10010)
  .option('--host <address>', 'listen address', '::')
  .option(
    '--store <path>',
    "SQLite file of the root's state (':memory:' for a throwaway one)",
    join(defaultStateDir(), 'root.db'),
  )
  .option(
    '--max-services <n>',
    `services the root holds at most (default ${DEFAULT_QUOTAS.maxServices}; each holds 2 of the 65534 IPv4 ServiceIPs)`,
    parsePositive,
  )
  .option(
    '--max-instances-per-service <n>',
    `instances of one service at most (default ${DEFAULT_QUOTAS.maxInstancesPerService})`,
    parsePositive,
  )
  .option(
    '--max-workers-per-cluster <n>',
    `worker subnetworks of one cluster at most; requests without ?cluster_id= count as one cluster (default ${DEFAULT_QUOTAS.maxWorkersPerCluster})`,
    parsePositive,
  )
  .option(
    '--rate-limit <n>',
    `requests per caller per 10 s to the other routes, together (default ${DEFAULT_RATE_LIMITS.general.max}; 0: none)`,
    parseRate,
  )
  .option(
    '--allocation-rate-limit <n>',
    `requests per caller per 10 s to each allocating route: subnets, services, instances (default ${DEFAULT_RATE_LIMITS.allocation.max}; 0: none of its own)`,
    parseRate,
  )
  .addOption(logLevel())
  .action(
    async (opts: {
      port: number;
      host: string;
      store: string;
      logLevel: string;
      maxServices?: number;
      maxInstancesPerService?: number;
      maxWorkersPerCluster?: number;
      rateLimit?: number;
      allocationRateLimit?: number;
    }) => {
      const { startRoot } = await import('../root/root.ts');
      const log = createLogger('oaknet-root', opts.logLevel);
      const root = await startRoot({
        store: openStore(opts.store),
        log,
        port: opts.port,
        host: opts.host,
        quotas: {
          ...(opts.maxServices !== undefined ? { maxServices: opts.maxServices } : {}),
          ...(opts.maxInstancesPerService !== undefined
            ? { maxInstancesPerService: opts.maxInstancesPerService }
            : {}),
          ...(opts.maxWorkersPerCluster !== undefined
            ? { maxWorkersPerCluster: opts.maxWorkersPerCluster }
            : {}),
        },
        rateLimits: {
          ...(opts.rateLimit !== undefined
            ? { general: { max: opts.rateLimit, windowMs: RATE_WINDOW_MS } }
            : {}),
          ...(opts.allocationRateLimit !== undefined
            ? { allocation: { max: opts.allocationRateLimit, windowMs: RATE_WINDOW_MS } }
            : {}),
        },
      });
      log.info({ store: opts.store, url: `http://<this host>:${root.port}` }, 'root ready');
      closeOnSignals(log, () => root.close());
    },
  );

program
  .command('cluster')
  .description('run a cluster service manager: the MQTT interface of the nodes of one cluster')
  .option(
    '--root <url>',
    "root service manager URL (default $OAKNET_ROOT, else the local platform's root, else http://127.0.0.1:10010)",
    parseUrl,
  )
  .option('--port <port>', 'HTTP port', parsePort, 10110)
  .option('--host <address>', 'listen address of HTTP and the embedded broker', '::')
  .option('--mqtt-port <port>', 'port of the embedded MQTT broker', parsePort, 10003)
  .option(
    '--mqtt <url>',
    'use an external MQTT broker (e.g. mqtt://127.0.0.1:1883) instead of the embedded one',
    parseUrl,
  )
  .option('--store <path>', "SQLite file of the cluster's state (default <state dir>/cluster-<port>.db)")
  .option('--cluster-id <id>', 'cluster ID (default: kept in the store, random at first start)', parseId)
  .option(
    '--advertise-address <address>',
    'address the root calls back (default: this host on the route to the root)',
  )
  .option(
    '--rate-limit <n>',
    `requests per caller per 10 s (default ${DEFAULT_RATE_LIMITS.general.max}; 0: none)`,
    parseRate,
  )
  .addOption(logLevel())
  .action(
    async (opts: {
      root?: string;
      port: number;
      host: string;
      mqttPort: number;
      mqtt?: string;
      store?: string;
      clusterId?: string;
      advertiseAddress?: string;
      rateLimit?: number;
      logLevel: string;
    }) => {
      const { startCluster } = await import('../cluster/cluster.ts');
      const log = createLogger('oaknet-cluster', opts.logLevel);
      const cluster = await startCluster({
        rootUrl: rootUrlFrom(opts.root),
        store: openStore(opts.store ?? join(defaultStateDir(), `cluster-${opts.port}.db`)),
        log,
        port: opts.port,
        host: opts.host,
        mqttPort: opts.mqttPort,
        ...(opts.mqtt !== undefined ? { mqttUrl: opts.mqtt } : {}),
        ...(opts.clusterId !== undefined ? { clusterId: opts.clusterId } : {}),
        ...(opts.advertiseAddress !== undefined ? { advertiseAddress: opts.advertiseAddress } : {}),
        ...(opts.rateLimit !== undefined
          ? { rateLimits: { general: { max: opts.rateLimit, windowMs: RATE_WINDOW_MS } } }
          : {}),
      });
      closeOnSignals(log, () => cluster.close());
    },
  );

registerNodeCommands(program);
registerServiceCommands(program, out);
registerWorkerCommands(program, out);
registerPlatformCommands(program, out);

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = err instanceof OakNetError ? ` [${err.code}]` : '';
  process.stderr.write(`oaknet: ${errorMessage(err)}${code}\n`);
  process.exit(1);
});
