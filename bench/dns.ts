/**
 * The node's DNS server (issue 13) against Debian's dnsmasq, in one run on a local platform: both serve the
 * same names (dnsmasq from a hosts file holding what the node answered), from the same node namespace, to
 * Debian's dnsperf in a client instance on that node. The node's server answers on the bridge gateway's port
 * 53, dnsmasq on port 5353 of the same address.
 *
 * Per round (the order of the two servers alternates): the highest rate (`dnsperf -c 4 -q 400`, 10 s, queries
 * for the service's A and AAAA names: default, rr, closest, both instances); latency at 10,000 queries/s
 * (`-Q 10000 -v`, percentiles over every answered query); TCP round trips (64 B on one connection, through
 * ProxyTUN and the WireGuard tunnel to an echo instance on the other node) idle, while the node's server is
 * flooded, while dnsmasq is flooded (the same CPU contention without the NetManager doing the DNS work), and
 * while the node's server answers 10,000 queries/s. Figures are medians over the rounds.
 *
 * Environment: BENCH_DNS_ROUNDS (default 3), BENCH_DNS_SECONDS (default 10, the flood's length).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { PLATFORM_ENV } from '../src/platform/plan.ts';
import { createPlatform } from '../src/platform/platform.ts';
import { destroyPlatform } from '../src/platform/teardown.ts';
import { onCleanup, ownedWorkload, requireTools, run, spawnOwned, waitOutput } from './cleanup.ts';
import { capture, inNs, pingpong, PINGPONG, processCpuSeconds, type LatencyStats } from './dp-measure.ts';
import { median, percentile, type BenchResult } from './report.ts';

const SECTION = 'DNS';
const ROUNDS = Number(process.env['BENCH_DNS_ROUNDS'] ?? 3);
const FLOOD_SECONDS = Number(process.env['BENCH_DNS_SECONDS'] ?? 10);
const PACED_QPS = 10_000;
const PACED_SECONDS = 5;
const RR_COUNT = 3000;
const MSG = 64;
const DNSMASQ_PORT = 5353;
const ECHO_SERVICE = 'bench.dns.echo.v1';
const CLIENT_SERVICE = 'bench.dns.client.v1';
/** The echo service's names (zone.ts): the default, the two policies, both instances. */
const NAMES = [
  'echo.v1.bench.dns.oakestra',
  'echo.v1.bench.dns.rr.oakestra',
  'echo.v1.bench.dns.closest.oakestra',
  '0.instance.echo.v1.bench.dns.oakestra',
  '1.instance.echo.v1.bench.dns.oakestra',
];

interface PerfRun {
  qps: number;
  sent: number;
  completed: number;
  lost: number;
  /** Microseconds, over every answered query (only with -v). */
  latency?: { p50: number; p99: number; max: number; n: number };
}

type Server = 'oaknet' | 'dnsmasq';
type Timed = PerfRun & { cpu: number };
interface UnderLoad {
  rr: LatencyStats;
  perf: PerfRun;
}
/** One round's measurements. */
interface Round {
  rrIdle: LatencyStats;
  flood: Record<Server, Timed>;
  paced: Record<Server, Timed>;
  rrFlood: Record<Server, UnderLoad>;
  rrPaced: UnderLoad;
}

export async function runDnsBench(): Promise<{ results: BenchResult[]; raw: unknown }> {
  const log = pino({ level: 'warn' });
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-bench-dns-'));
  const id = `bn${randomBytes(3).toString('hex').slice(0, 4)}`;
  const env = { ...process.env, [PLATFORM_ENV]: id };
  const removeDir = onCleanup(`remove ${stateDir}`, () => rmSync(stateDir, { recursive: true, force: true }));
  const destroy = onCleanup(`destroy platform ${id}`, () => destroyPlatform(stateDir, log));
  try {
    await requireTools(['dnsperf', 'dnsmasq', 'dig', 'python3']);
    const platform = await createPlatform({ stateDir, nodes: 2, clusters: 1, logLevel: 'warn', id }, log);
    const start = (node: string, service: string, instance: number, command: string[], ready?: string) =>
      ownedWorkload(platform, node, {
        service,
        instance,
        netns: `${id}-${node}${instance}`,
        command,
        ...(ready ? { readyLine: ready } : {}),
      });
    // the echo service: instance 0 across the tunnel on n2 (the round trips go there), instance 1 on n1
    const echo = ['python3', PINGPONG, 'server', '7000'];
    await start('n2', ECHO_SERVICE, 0, echo, 'ready');
    await start('n1', ECHO_SERVICE, 1, echo, 'ready');
    const client = (await start('n1', CLIENT_SERVICE, 0, ['sleep', 'infinity'])).netns;
    const status = await platform.nodeClient('n1').status();
    const gateway = status.dns?.servers.find((s) => !s.includes(':'));
    if (!gateway) throw new Error(`n1 runs no DNS server on an IPv4 gateway: ${JSON.stringify(status.dns)}`);
    const doc = await platform.rootClient().jobByName(ECHO_SERVICE);
    const target = doc.instance_list.find((i) => i.instance_number === 0)?.instance_ip;
    if (!target) throw new Error(`${ECHO_SERVICE} instance 0 has no address`);

    // what the node answers becomes dnsmasq's hosts file: both serve the same records
    const hosts: string[] = [];
    const queries: string[] = [];
    for (const name of NAMES)
      for (const type of ['A', 'AAAA']) {
        const out = await run(
          inNs(client, ['dig', '+short', '+time=2', '+tries=2', `@${gateway}`, name, type]),
          10_000,
        );
        const addresses = out.split('\n').filter(Boolean);
        if (addresses.length === 0) throw new Error(`the node's DNS server has no ${type} for ${name}`);
        for (const a of addresses) hosts.push(`${a} ${name}`);
        queries.push(`${name} ${type}`);
      }
    const hostsFile = join(stateDir, 'names.hosts');
    const queryFile = join(stateDir, 'queries.txt');
    writeFileSync(hostsFile, hosts.join('\n') + '\n');
    writeFileSync(queryFile, queries.join('\n') + '\n');
    const node1 = platform.node('n1').netns;
    const dnsmasq = spawnOwned(
      'dnsmasq',
      inNs(node1, [
        'dnsmasq',
        '--keep-in-foreground',
        '--user=root',
        `--port=${DNSMASQ_PORT}`,
        `--listen-address=${gateway}`,
        '--bind-interfaces',
        '--no-resolv',
        '--no-hosts',
        `--addn-hosts=${hostsFile}`,
        '--local=/oakestra/',
        '--pid-file=',
        '--log-facility=-',
      ]),
      { env },
    );
    await waitOutput(dnsmasq, 'started', 10_000);
    // dnsmasq answers what the node answers
    for (const q of queries) {
      const [name, type] = q.split(' ') as [string, string];
      const ask = (port: number) =>
        run(
          inNs(client, ['dig', '+short', '+time=2', `@${gateway}`, '-p', String(port), name, type]),
          10_000,
        );
      const [ours, theirs] = [await ask(53), await ask(DNSMASQ_PORT)];
      const set = (s: string) => s.split('\n').filter(Boolean).sort().join(',');
      if (set(ours) !== set(theirs))
        throw new Error(`${q}: node answers ${set(ours)}, dnsmasq ${set(theirs)}`);
    }

    const nmPid = platform.state.processes.find((p) => p.name === 'n1')?.pid;
    const port = (s: Server) => (s === 'oaknet' ? 53 : DNSMASQ_PORT);
    const pidOf = (s: Server) => (s === 'oaknet' ? nmPid : dnsmasq.child.pid);
    const dnsperfArgv = (s: Server, extra: string[]) =>
      // line-buffered: its status lines arrive as printed (waitOutput reads them)
      inNs(client, [
        'stdbuf',
        '-oL',
        'dnsperf',
        '-s',
        gateway,
        '-p',
        String(port(s)),
        '-d',
        queryFile,
        '-t',
        '1',
        ...extra,
      ]);
    const floodLoad = ['-c', '4', '-q', '400'];
    const pacedLoad = ['-Q', String(PACED_QPS)];
    const rr = () => pingpong(client, 'rr', target, RR_COUNT, MSG);
    await rr(); // the tunnel's handshake and the flow, before timing

    /** dnsperf to its end, with the server's CPU time over the run. */
    const perf = async (s: Server, extra: string[]): Promise<Timed> => {
      const pid = pidOf(s);
      const cpu0 = pid ? processCpuSeconds(pid) : NaN;
      const t0 = Date.now();
      const r = await capture(dnsperfArgv(s, extra), (FLOOD_SECONDS + 30) * 1000, env);
      const cpu = pid ? (processCpuSeconds(pid) - cpu0) / ((Date.now() - t0) / 1000) : NaN;
      if (r.code !== 0)
        throw new Error(`dnsperf to ${s}: exit ${r.code ?? r.signal}: ${r.stderr.slice(-300)}`);
      return { ...parsePerf(r.stdout), cpu };
    };
    /** Round trips while dnsperf runs against s (its time limit far off; interrupted when they are done). */
    const rrUnder = async (s: Server, load: string[]): Promise<UnderLoad> => {
      const p = spawnOwned(`dnsperf to ${s}`, dnsperfArgv(s, [...load, '-l', '300']), { env });
      await waitOutput(p, 'Sending queries', 10_000);
      const stats = await rr();
      if (p.child.exitCode !== null || p.child.signalCode !== null)
        throw new Error(`dnsperf to ${s} ended before the round trips did: ${p.output().slice(-300)}`);
      p.child.kill('SIGINT'); // dnsperf prints its statistics and exits
      await p.exited;
      await p.stop();
      return { rr: stats, perf: parsePerf(p.output()) };
    };

    const rounds: Round[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order: Server[] = round % 2 === 0 ? ['oaknet', 'dnsmasq'] : ['dnsmasq', 'oaknet'];
      const each = async <T>(measure: (s: Server) => Promise<T>) => {
        const out = {} as Record<Server, T>;
        for (const s of order) out[s] = await measure(s);
        return out;
      };
      const rrIdle = await rr();
      const flood = await each((s) => perf(s, [...floodLoad, '-l', String(FLOOD_SECONDS)]));
      const paced = await each((s) => perf(s, [...pacedLoad, '-l', String(PACED_SECONDS), '-v']));
      const rrFlood = await each((s) => rrUnder(s, floodLoad));
      rounds.push({ rrIdle, flood, paced, rrFlood, rrPaced: await rrUnder('oaknet', pacedLoad) });
    }

    const qps = (s: Server) => rounds.map((r) => r.flood[s].qps);
    const cpu = (s: Server) => rounds.map((r) => r.flood[s].cpu);
    const lat = (s: Server, k: 'p50' | 'p99') => rounds.map((r) => r.paced[s].latency?.[k] ?? NaN);
    const lostPct = (s: Server) => rounds.map((r) => (100 * r.paced[s].lost) / Math.max(1, r.paced[s].sent));
    const rrStat = (pick: (r: Round) => LatencyStats, k: 'p50' | 'p99') => rounds.map((r) => pick(r)[k]);
    const idle = (r: Round) => r.rrIdle;
    const underFlood = (s: Server) => (r: Round) => r.rrFlood[s].rr;
    const underPaced = (r: Round) => r.rrPaced.rr;
    const ours = median(qps('oaknet'));
    const theirs = median(qps('dnsmasq'));
    const p99 = median(lat('oaknet', 'p99'));
    const p99Theirs = median(lat('dnsmasq', 'p99'));
    const idle99 = median(rrStat(idle, 'p99'));
    const idle50 = median(rrStat(idle, 'p50'));
    const flood99 = median(rrStat(underFlood('oaknet'), 'p99'));
    const floodTheirs99 = median(rrStat(underFlood('dnsmasq'), 'p99'));
    const paced99 = median(rrStat(underPaced, 'p99'));
    const paced50 = median(rrStat(underPaced, 'p50'));
    const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
    const results: BenchResult[] = [
      {
        section: SECTION,
        name: 'cached names, highest rate: oaknet node (dnsperf -c 4 -q 400)',
        value: Math.round(ours),
        unit: 'queries/s',
        target: '>= 30000 and >= dnsmasq',
        ratio: `${x(ours, theirs)} dnsmasq`,
        samples: qps('oaknet'),
        note: `NetManager CPU during the flood: ${median(cpu('oaknet')).toFixed(2)} cores (dnsmasq's: ${median(cpu('dnsmasq')).toFixed(2)}); dnsperf shares the 2 cores`,
      },
      {
        section: SECTION,
        name: 'cached names, highest rate: dnsmasq (same names, hosts file)',
        value: Math.round(theirs),
        unit: 'queries/s',
        samples: qps('dnsmasq'),
      },
      {
        section: SECTION,
        name: `latency at ${PACED_QPS} queries/s, p99: oaknet node`,
        value: p99 / 1000,
        unit: 'ms',
        target: '< 1 ms',
        ratio: `${x(p99, p99Theirs)} dnsmasq`,
        samples: lat('oaknet', 'p99'),
        note: `p50 ${(median(lat('oaknet', 'p50')) / 1000).toFixed(3)} ms (dnsmasq ${(median(lat('dnsmasq', 'p50')) / 1000).toFixed(3)} ms); lost ${median(lostPct('oaknet')).toFixed(3)} % (dnsmasq ${median(lostPct('dnsmasq')).toFixed(3)} %)`,
      },
      {
        section: SECTION,
        name: `latency at ${PACED_QPS} queries/s, p99: dnsmasq`,
        value: p99Theirs / 1000,
        unit: 'ms',
        samples: lat('dnsmasq', 'p99'),
      },
      {
        section: SECTION,
        name: 'TCP round trip through ProxyTUN (WireGuard), idle, p99',
        value: idle99,
        unit: 'us',
        samples: rrStat(idle, 'p99'),
        note: `p50 ${idle50} us; ${RR_COUNT} round trips of ${MSG} B from the DNS clients' instance to the echo instance on the other node`,
      },
      {
        section: SECTION,
        name: `TCP round trip p99 while the node answers ${PACED_QPS} queries/s`,
        value: paced99,
        unit: 'us',
        target: 'no effect (~1x idle)',
        ratio: `${x(paced99, idle99)} idle`,
        samples: rrStat(underPaced, 'p99'),
        note: `p50 ${paced50} us (${x(paced50, idle50)} idle)`,
      },
      {
        section: SECTION,
        name: 'TCP round trip p99 while dnsperf floods the node',
        value: flood99,
        unit: 'us',
        target: '~1x flooding dnsmasq',
        ratio: `${x(flood99, floodTheirs99)} dnsmasq flood`,
        samples: rrStat(underFlood('oaknet'), 'p99'),
        note: 'a flood takes both cores (dnsperf and the server); flooding dnsmasq instead gives the same contention without the NetManager doing DNS work',
      },
      {
        section: SECTION,
        name: 'TCP round trip p99 while dnsperf floods dnsmasq',
        value: floodTheirs99,
        unit: 'us',
        samples: rrStat(underFlood('dnsmasq'), 'p99'),
      },
    ];
    await dnsmasq.stop();
    return { results, raw: { gateway, target, queries, rounds } };
  } finally {
    await destroy();
    await removeDir();
  }
}

/** dnsperf's summary, and with -v the latency of every answered query. */
function parsePerf(out: string): PerfRun {
  const num = (label: string) => {
    const m = new RegExp(`${label}:\\s+([0-9.]+)`).exec(out);
    if (!m) throw new Error(`dnsperf printed no "${label}": ${out.slice(-400)}`);
    return Number(m[1]);
  };
  const run: PerfRun = {
    qps: num('Queries per second'),
    sent: num('Queries sent'),
    completed: num('Queries completed'),
    lost: num('Queries lost'),
  };
  const us: number[] = [];
  for (const m of out.matchAll(/^> \S+ \S+ \S+ ([0-9.]+)$/gm)) us.push(Number(m[1]) * 1e6);
  if (us.length > 0)
    run.latency = {
      p50: percentile(us, 50),
      p99: percentile(us, 99),
      max: us.reduce((a, b) => Math.max(a, b), 0),
      n: us.length,
    };
  return run;
}
