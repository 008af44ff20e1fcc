/**
 * @module cli/main
 * The oaknet command line: the only composition root. It parses flags, builds the concrete
 * implementations (stores, brokers, devices) and starts the roles.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, Option } from 'commander';
import { errorMessage, InvalidInputError, OakNetError } from '../errors.ts';
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
  tokenFrom,
} from './options.ts';
import { storedClusterId } from '../cluster/cluster-id.ts';
import type { ClusterCredentials } from '../cluster/credentials.ts';
import { registerNodeCommands } from './node-command.ts';
import { registerPlatformCommands } from './platform-command.ts';
import { registerServiceCommands, registerWorkerCommands } from './service-command.ts';
import { closeOnSignals } from './signals.ts';
import { registerTokenCommands } from './token-command.ts';

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
    '--pki-dir <dir>',
    'where the platform CA (ca.crt, ca.key: created at the first start) and the admin token are kept (default <store dir>/pki)',
  )
  .option('--ca-cert <file>', 'use this platform CA certificate (with --ca-key) instead of creating one')
  .option('--ca-key <file>', 'the private key of --ca-cert (PKCS#8 PEM, ECDSA P-256)')
  .option(
    '--insecure',
    'plain http and no authentication (for upstream components without TLS): anyone who reaches the port can change everything',
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
    `worker subnetworks of one cluster at most (default ${DEFAULT_QUOTAS.maxWorkersPerCluster})`,
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
      pkiDir?: string;
      caCert?: string;
      caKey?: string;
      insecure?: boolean;
      logLevel: string;
      maxServices?: number;
      maxInstancesPerService?: number;
      maxWorkersPerCluster?: number;
      rateLimit?: number;
      allocationRateLimit?: number;
    }) => {
      const { startRoot } = await import('../root/root.ts');
      const log = createLogger('oaknet-root', opts.logLevel);
      const pkiDir =
        opts.pkiDir ?? join(opts.store === ':memory:' ? defaultStateDir() : dirname(opts.store), 'pki');
      let security = {};
      if (opts.insecure) {
        if (opts.caCert || opts.caKey) throw new InvalidInputError('--insecure takes no --ca-cert/--ca-key');
      } else {
        if ((opts.caCert === undefined) !== (opts.caKey === undefined))
          throw new InvalidInputError('--ca-cert and --ca-key go together');
        const { loadOrCreateCa } = await import('../security/files.ts');
        const given =
          opts.caCert !== undefined && opts.caKey !== undefined
            ? { cert: readFileSync(opts.caCert, 'utf8'), key: readFileSync(opts.caKey, 'utf8') }
            : undefined;
        const ca = await loadOrCreateCa(pkiDir, log, given);
        security = { ca, adminTokenFile: join(pkiDir, 'admin.token') };
      }
      const root = await startRoot({
        store: openStore(opts.store),
        log,
        port: opts.port,
        host: opts.host,
        ...security,
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
      log.info(
        {
          store: opts.store,
          url: `${opts.insecure ? 'http' : 'https'}://<this host>:${root.port}`,
          ...(opts.insecure ? {} : { adminToken: join(pkiDir, 'admin.token') }),
        },
        opts.insecure ? 'root ready (INSECURE)' : 'root ready',
      );
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
    '--token <token>',
    'a cluster token (oaknet token create --role cluster): needed at the first start only',
  )
  .option('--token-file <file>', 'read the cluster token from this file')
  .option('--pki-dir <dir>', "where the cluster's identity is kept (default <store dir>/cluster-<port>-pki)")
  .option(
    '--write-mosquitto-config <dir>',
    "with --mqtt mqtts://<host>:<port>: write a mosquitto.conf, access list and this cluster's certificates for Debian's mosquitto into <dir> (0700), keep them fresh across renewals (mosquitto is reloaded with SIGHUP), and run: mosquitto -c <dir>/mosquitto.conf",
  )
  .option('--insecure', 'plain http, no authentication, anonymous MQTT (for an insecure root)')
  .option(
    '--allow-plaintext-peers',
    "let this cluster's NetManagers tunnel in plaintext to peers that have no WireGuard key (upstream NetManagers); off: those peers are unreachable",
  )
  .option(
    '--rate-limit <n>',
    `requests per caller per 10 s (default ${DEFAULT_RATE_LIMITS.general.max}; 0: none)`,
    parseRate,
  )
  .addOption(logLevel())
  .action(
    async (opts: {
      writeMosquittoConfig?: string;
      root?: string;
      port: number;
      host: string;
      mqttPort: number;
      mqtt?: string;
      store?: string;
      clusterId?: string;
      advertiseAddress?: string;
      token?: string;
      tokenFile?: string;
      pkiDir?: string;
      insecure?: boolean;
      allowPlaintextPeers?: boolean;
      rateLimit?: number;
      logLevel: string;
    }) => {
      const { startCluster } = await import('../cluster/cluster.ts');
      const log = createLogger('oaknet-cluster', opts.logLevel);
      const storePath = opts.store ?? join(defaultStateDir(), `cluster-${opts.port}.db`);
      const store = openStore(storePath);
      const rootUrl = rootUrlFrom(opts.root, !opts.insecure);
      const clusterId = opts.clusterId ?? storedClusterId(store);
      let credentials: { credentials?: ClusterCredentials } = {};
      if (!opts.insecure) {
        if (!rootUrl.startsWith('https:'))
          throw new InvalidInputError(
            `the root URL ${rootUrl} is not https: a secure cluster talks TLS to its root (or run both with --insecure)`,
          );
        const { ClusterCredentials } = await import('../cluster/credentials.ts');
        const token = tokenFrom(opts);
        credentials = {
          credentials: await ClusterCredentials.open({
            dir:
              opts.pkiDir ??
              join(
                storePath === ':memory:' ? defaultStateDir() : dirname(storePath),
                `cluster-${opts.port}-pki`,
              ),
            rootUrl,
            clusterId,
            ...(token !== undefined ? { token } : {}),
            log: log.child({ component: 'credentials' }),
          }),
        };
      }
      if (opts.writeMosquittoConfig !== undefined) {
        const { keepMosquittoConfig } = await import('../cluster/mosquitto-config.ts');
        const url = opts.mqtt !== undefined ? new URL(opts.mqtt) : undefined;
        if (url?.protocol !== 'mqtts:' || credentials.credentials === undefined)
          throw new InvalidInputError(
            '--write-mosquitto-config needs --mqtt mqtts://<host>:<port> (the address of that mosquitto) and a secure cluster',
          );
        await keepMosquittoConfig(
          credentials.credentials,
          {
            dir: opts.writeMosquittoConfig,
            port: Number(url.port || 8883),
            ...(opts.host !== '::' && opts.host !== '0.0.0.0' ? { host: opts.host } : {}),
          },
          log.child({ component: 'mosquitto' }),
        );
      }
      const cluster = await startCluster({
        rootUrl,
        store,
        clusterId,
        ...credentials,
        log,
        port: opts.port,
        host: opts.host,
        mqttPort: opts.mqttPort,
        ...(opts.mqtt !== undefined ? { mqttUrl: opts.mqtt } : {}),
        ...(opts.advertiseAddress !== undefined ? { advertiseAddress: opts.advertiseAddress } : {}),
        ...(opts.rateLimit !== undefined
          ? { rateLimits: { general: { max: opts.rateLimit, windowMs: RATE_WINDOW_MS } } }
          : {}),
        ...(opts.allowPlaintextPeers === true ? { allowPlaintextPeers: true } : {}),
      });
      if (opts.allowPlaintextPeers === true)
        log.warn('PLAINTEXT PEERS ALLOWED: NetManagers tunnel unencrypted to peers without a WireGuard key');
      closeOnSignals(log, () => cluster.close());
    },
  );

registerNodeCommands(program);
registerServiceCommands(program, out);
registerWorkerCommands(program, out);
registerPlatformCommands(program, out);
registerTokenCommands(program, out);

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = err instanceof OakNetError ? ` [${err.code}]` : '';
  process.stderr.write(`oaknet: ${errorMessage(err)}${code}\n`);
  process.exit(1);
});
