/**
 * @module root/root
 * Wiring of the root service manager: store -> registry -> notifier -> HTTP API.
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AddressPlan } from '../addressing/plan.ts';
import type { RateLimits } from '../protocol/http-limits.ts';
import type { Store } from '../store/store.ts';
import { VERSION } from '../version.ts';
import { buildRootApi } from './api.ts';
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
  /** Quotas on services, instances and worker subnetworks (root/quotas.ts has the defaults). */
  quotas?: Partial<Quotas>;
  /** Per-caller rate limits of the HTTP API (protocol/http-limits.ts has the defaults). */
  rateLimits?: Partial<RateLimits>;
}

export interface RunningRoot {
  /** Base URL, e.g. http://127.0.0.1:10010. */
  url: string;
  port: number;
  registry: Registry;
  /** Stops accepting requests, stops notification retries and closes the store. */
  close(): Promise<void>;
}

export async function startRoot(opts: RootOptions): Promise<RunningRoot> {
  const plan = opts.plan ?? new AddressPlan();
  const registry = new Registry(opts.store, plan, opts.quotas ? { quotas: opts.quotas } : {});
  for (const warning of quotaWarnings(registry.quotas, plan)) opts.log.warn(warning);
  const notifier = new Notifier(registry, opts.log.child({ component: 'notifier' }), opts.notifier);
  registry.onNotify((clusters) => {
    for (const c of clusters) notifier.kick(c);
  });
  const app = await buildRootApi({
    registry,
    notifier,
    log: opts.log,
    bootId: randomUUID(),
    version: VERSION,
    ...(opts.rateLimits ? { rateLimits: opts.rateLimits } : {}),
  });
  await app.listen({ port: opts.port, host: opts.host ?? '::' });
  const port = (app.server.address() as AddressInfo).port;
  notifier.start();
  opts.log.info({ port }, 'root service manager listening');
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    registry,
    async close() {
      await notifier.close();
      await app.close();
      opts.store.close();
    },
  };
}
