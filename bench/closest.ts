/**
 * Closest_IP's reaction to a latency change: a client on n1 calls a service with one instance on n2 and one
 * on n3; n1 shares a site (2 ms) with one of them and is 40 ms from the other. Each round swaps the sites and
 * measures how long until new flows to the Closest_IP go to the instance that is near now (10 new flows in a
 * row), polled with one new connection every 100 ms.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createPlatform } from '../src/platform/platform.ts';
import { destroyPlatform } from '../src/platform/teardown.ts';
import { onCleanup, run } from './cleanup.ts';
import { median, type BenchResult } from './report.ts';

const SERVICE = 'bench.near.web.v1';
const WEB = new URL('../src/platform/demo/web.py', import.meta.url).pathname;
const LATENCY = { intraSiteMs: 2, interSiteMs: 40 };

export async function runClosestBench(rounds = 4): Promise<{ results: BenchResult[]; raw: unknown }> {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-bench-closest-'));
  const log = pino({ level: 'warn' });
  const removeDir = onCleanup(`remove ${stateDir}`, () => rmSync(stateDir, { recursive: true, force: true }));
  const destroy = onCleanup('destroy the Closest_IP platform', () => destroyPlatform(stateDir, log));
  try {
    const platform = await createPlatform(
      { stateDir, nodes: 3, sites: { a: ['n1', 'n2'], b: ['n3'] }, latency: LATENCY, logLevel: 'warn' },
      log,
    );
    for (const [i, node] of [
      [0, 'n2'],
      [1, 'n3'],
    ] as const) {
      await platform.startWorkload({
        name: `web${i}`,
        node,
        service: SERVICE,
        instance: i,
        command: ['python3', WEB, SERVICE, String(i), node],
        readyLine: `demo web ${SERVICE}.${i} ready`,
      });
    }
    await platform.startWorkload({
      name: 'cli',
      node: 'n1',
      service: 'bench.near.cli.v1',
      instance: 0,
      command: ['sleep', 'infinity'],
    });
    const doc = await platform.rootClient().jobByName(SERVICE);
    const closest = doc.service_ip_list.find((s) => s.IpType === 'Closest')!.Address!;
    const netns = platform.workloads.find((w) => w.name === 'cli')!.netns;
    const ask = async (): Promise<string> =>
      (
        await run(
          ['ip', 'netns', 'exec', netns, 'curl', '-s', '-m', '3', `http://${closest}/`],
          10_000,
        ).catch(() => '')
      ).replace(/^hello from \S+ instance (\d+).*\s*$/s, '$1');
    // until n1 measured both peers, Closest cannot know
    await untilNear(ask, '0', 30_000);
    const switches: number[] = [];
    let near = '0';
    for (let r = 0; r < rounds; r++) {
      const next = near === '0' ? '1' : '0';
      const sites = next === '1' ? { a: ['n1', 'n3'], b: ['n2'] } : { a: ['n1', 'n2'], b: ['n3'] };
      const t0 = Date.now();
      await platform.setLatency(LATENCY, sites);
      switches.push((await untilNear(ask, next, 30_000)) - t0);
      near = next;
    }
    return {
      results: [
        {
          section: 'Closest_IP',
          name: 'latency change -> new flows to the now-near instance, median',
          value: median(switches),
          unit: 'ms',
          target: '< 10000 ms',
        },
        {
          section: 'Closest_IP',
          name: 'latency change -> new flows to the now-near instance, max',
          value: Math.max(...switches),
          unit: 'ms',
        },
      ],
      raw: { switches, latency: LATENCY },
    };
  } finally {
    await destroy();
    await removeDir();
  }
}

/** Resolves with the time at which 10 new flows in a row went to instance `want`. */
async function untilNear(ask: () => Promise<string>, want: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let streak = 0;
  let first = 0;
  while (Date.now() < deadline) {
    const at = Date.now();
    if ((await ask()) === want) {
      if (streak++ === 0) first = at;
      if (streak >= 10) return first;
    } else streak = 0;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Closest_IP did not settle on instance ${want} within ${timeoutMs} ms`);
}
