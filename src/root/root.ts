/**
 * @module root/root
 * Wiring of the root service manager: store -> registry -> notifier -> HTTP API; in secure mode the platform
 * CA, the root's own certificate (re-issued every 10 days), tokens and cluster enrollment.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AddressPlan } from '../addressing/plan.ts';
import { rotateServerTls, type ServerTls } from '../protocol/http-server.ts';
import { caPin, type CertificateAuthority } from '../security/pki.ts';
import { TokenStore } from '../security/tokens.ts';
import type { RateLimits } from '../protocol/http-limits.ts';
import type { Store } from '../store/store.ts';
import { VERSION } from '../version.ts';
import { buildRootApi } from './api.ts';
import { Enrollment } from './enrollment.ts';
import { Notifier, type NotifierOptions } from './notifier.ts';
import { quotaWarnings, type Quotas } from './quotas.ts';
import { Registry } from './registry.ts';

export interface RootOptions {
  store: Store;
  log: Logger;
  /** TCP port (0: any free port). */
  port: number;
  /** Listen address (default all interfaces, IPv4 and IPv6). */
  host?: string;
  plan?: AddressPlan;
  notifier?: NotifierOptions;
  /**
   * The platform CA: every API is https (TLS 1.3) and authenticated (secure). Without it, plain http and
   * no authentication (insecure: `oaknet root --insecure`).
   */
  ca?: CertificateAuthority;
  /** Secure mode: where an operator token is written at the first start (0600), if the file is missing. */
  adminTokenFile?: string;
  /** Quotas on services, instances and worker subnetworks (root/quotas.ts has the defaults). */
  quotas?: Partial<Quotas>;
  /** Per-caller rate limits of the HTTP API (protocol/http-limits.ts has the defaults). */
  rateLimits?: Partial<RateLimits>;
  /** The clock of enrollment decisions (how long ago a certificate expired); tests move it. */
  clock?: () => Date;
}

export interface RunningRoot {
  /** Base URL, e.g. https://127.0.0.1:10010. */
  url: string;
  port: number;
  registry: Registry;
  /** Secure mode: the token store (undefined when insecure). */
  tokens: TokenStore | undefined;
  /** Stops accepting requests, stops notification retries and closes the store. */
  close(): Promise<void>;
}

/** Days the root's own certificate is valid; it is re-issued every third of that. */
const ROOT_CERT_DAYS = 30;

export async function startRoot(opts: RootOptions): Promise<RunningRoot> {
  const plan = opts.plan ?? new AddressPlan();
  const registry = new Registry(opts.store, plan, opts.quotas ? { quotas: opts.quotas } : {});
  for (const warning of quotaWarnings(registry.quotas, plan)) opts.log.warn(warning);
  const ca = opts.ca;
  const tokens = ca ? new TokenStore(opts.store, caPin(ca.cert)) : undefined;
  let own = ca ? await ca.issueKeyAndChain({ kind: 'root' }, ROOT_CERT_DAYS) : undefined;
  const serverTls = (): ServerTls | undefined =>
    ca && own ? { key: own.key, cert: own.chain + ca.certPem, ca: ca.certPem } : undefined;
  const notifier = new Notifier(registry, opts.log.child({ component: 'notifier' }), {
    ...opts.notifier,
    ...(ca ? { tls: () => ({ ca: ca.certPem, key: own!.key, cert: own!.chain }) } : {}),
  });
  registry.onNotify((clusters) => {
    for (const c of clusters) notifier.kick(c);
  });
  const tls = serverTls();
  const app = await buildRootApi({
    registry,
    notifier,
    log: opts.log,
    bootId: randomUUID(),
    version: VERSION,
    ...(tls ? { tls } : {}),
    ...(ca && tokens
      ? { security: { ca, tokens, enrollment: new Enrollment(opts.store, ca, tokens, opts.clock) } }
      : {}),
    ...(opts.rateLimits ? { rateLimits: opts.rateLimits } : {}),
  });
  await app.listen({ port: opts.port, host: opts.host ?? '::' });
  const port = (app.server.address() as AddressInfo).port;
  notifier.start();
  if (tokens && opts.adminTokenFile) writeAdminToken(tokens, opts.adminTokenFile, opts.log);
  let renewal: NodeJS.Timeout | undefined;
  if (ca) {
    renewal = setInterval(
      () => {
        void ca.issueKeyAndChain({ kind: 'root' }, ROOT_CERT_DAYS).then((next) => {
          own = next;
          rotateServerTls(app.server, serverTls()!);
          opts.log.info('root certificate renewed');
        });
      },
      (ROOT_CERT_DAYS / 3) * 86_400_000,
    );
    renewal.unref();
  } else {
    opts.log.warn(
      'INSECURE: plain http, no authentication: anyone who reaches this port can allocate, read and change everything',
    );
  }
  opts.log.info({ port, secure: ca !== undefined }, 'root service manager listening');
  return {
    url: `${ca ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    registry,
    tokens,
    async close() {
      clearInterval(renewal);
      await notifier.close();
      await app.close();
      opts.store.close();
    },
  };
}

/** Creates an operator token and writes it to `file` (0600) unless the file exists. */
function writeAdminToken(tokens: TokenStore, file: string, log: Logger): void {
  if (existsSync(file)) return;
  const { token, info } = tokens.create('operator', { description: 'admin token made at the first start' });
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, token + '\n', { mode: 0o600, flag: 'wx' });
  log.info({ file, token: info.id }, 'operator token written (use it for `oaknet token create`)');
}
