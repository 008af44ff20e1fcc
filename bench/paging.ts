/**
 * Paged lists with 30,000 services (the size of the attack run that froze the root when the list came
 * whole): a root process on a store filled through the registry (one transaction), its default rate limits,
 * and sequential HTTP clients here. Measured: the first page of 100, every page of 100 walked by the Link
 * header (pages deep in the list cost what the first does: nothing before the cursor is read), pages of
 * 1,000, and the health check's latency while 40 clients walk the whole list at once.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AddressPlan } from '../src/addressing/plan.ts';
import { Registry } from '../src/root/registry.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import { startRootProcess, type OaknetProcess } from '../test/support/oaknet-process.ts';
import { freePort } from '../test/support/ports.ts';
import { percentile, type BenchResult } from './report.ts';

export const PAGING_SERVICES = 30_000;

/** GET base + target; the time to the whole body, and the next page's target from the Link header. */
async function get(base: string, target: string): Promise<{ ms: number; next: string | undefined }> {
  const t = performance.now();
  const res = await fetch(base + target);
  await res.arrayBuffer();
  const ms = performance.now() - t;
  if (!res.ok) throw new Error(`GET ${target}: ${res.status}`);
  const link = res.headers.get('link');
  return { ms, next: link === null ? undefined : /^<([^>]+)>; rel="next"$/.exec(link)?.[1] };
}

/** Every page of a walk from target; the time of each. */
async function walk(base: string, target: string): Promise<number[]> {
  const times: number[] = [];
  for (let next: string | undefined = target; next !== undefined;) {
    const page = await get(base, next);
    times.push(page.ms);
    next = page.next;
  }
  return times;
}

export async function measurePaging(
  dir: string,
  procs: OaknetProcess[],
  progress: (what: string) => void,
): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const pageDir = join(dir, 'paging');
  mkdirSync(pageDir, { recursive: true });
  const quotas = { maxServices: PAGING_SERVICES };
  {
    const store = new SqliteStore(join(pageDir, 'root.db'));
    const registry = new Registry(store, new AddressPlan(), { quotas });
    store.transact(() => {
      for (let i = 0; i < PAGING_SERVICES; i++) {
        registry.deployService(`page${String(i).padStart(5, '0')}`, {
          app_name: 'paging',
          app_ns: 'bench',
          service_name: `s${i}`,
          service_ns: 'v1',
        });
      }
    });
    store.close();
  }
  progress(`${PAGING_SERVICES} services stored`);
  // insecure: the list's own cost (the secure one is measured by test/e2e/attacker.test.ts)
  const { proc, url } = await startRootProcess(pageDir, await freePort(), {
    insecure: true,
    flags: ['--max-services', String(PAGING_SERVICES)],
  });
  procs.push(proc);
  const row = (name: string, xs: number[], target?: string): void => {
    results.push({ section: 'control plane', name: `${name} p50`, value: percentile(xs, 50), unit: 'ms' });
    results.push({
      section: 'control plane',
      name: `${name} p99`,
      value: percentile(xs, 99),
      unit: 'ms',
      target,
    });
  };
  const of = `of ${PAGING_SERVICES.toLocaleString('en-US')} services`;

  for (let i = 0; i < 50; i++) await get(url, '/api/net/service'); // warm
  const first: number[] = [];
  for (let i = 0; i < 500; i++) first.push((await get(url, '/api/net/service?limit=100')).ms);
  row(`GET /api/net/service, first page of 100 ${of}`, first, '< 100 ms');

  const every = await walk(url, '/api/net/service?limit=100');
  if (every.length !== PAGING_SERVICES / 100) throw new Error(`walked ${every.length} pages of 100`);
  row(`GET /api/net/service, each of the ${every.length} pages of 100 (Link walk)`, every, '< 100 ms');

  const big = [
    ...(await walk(url, '/api/net/service?limit=1000')),
    ...(await walk(url, '/api/net/service?limit=1000')),
  ];
  row(`GET /api/net/service, pages of 1,000 ${of}`, big);
  progress('paged lists');

  // the attack run's shape: 40 clients at once, each reading the whole list (as pages of 1,000 now)
  const health: number[] = [];
  let walking = true;
  const prober = (async () => {
    while (walking) health.push((await get(url, '/api/net/health')).ms);
  })();
  await Promise.all(Array.from({ length: 40 }, () => walk(url, '/api/net/service?limit=1000')));
  walking = false;
  await prober;
  row('GET /api/net/health while 40 clients walk the whole list', health);
  progress('health under 40 list walkers');
  return results;
}
