/**
 * Data-plane benchmarks: oaknet's ProxyTUN against reference paths between the same two nodes, all built in
 * ONE run on a local platform (2 node namespaces on a routed underlay, real root, cluster and NetManagers)
 * and measured interleaved over several rounds; figures are medians over the rounds, compared with the
 * kernel VXLAN path of the same run.
 *
 * Paths (client -> server): direct (n1 -> n2's underlay address), hostgw, vxlan, socat (see dp-paths.ts), and
 * oaknet: a client instance on n1 (`oaknet run`) to a server instance on n2 through the server's RR_IP
 * (oaknet-rr) and its instance IP (oaknet-inst).
 *
 * Per path and round: iperf3 TCP 1 and 4 streams (5 s each; 64 streams for oaknet-rr and vxlan), TCP
 * ping-pong latency (2,000 round trips of 64 B on one connection; 300 connection-per-request), the highest UDP
 * rate of 1400-byte datagrams with < 1 % loss (coarse iperf3 -u search), CPU per GB moved (during TCP 1
 * stream). After the rounds: first-connection latency to ServiceIPs the client's node never saw.
 *
 * Environment: BENCH_ROUNDS (default 3), BENCH_TCP_SECONDS (default 5), BENCH_PATHS=<key,...> (only these
 * paths: direct, hostgw, vxlan, socat, oaknet-rr, oaknet-inst), BENCH_NM_NODE_OPTIONS (added to the
 * NODE_OPTIONS of the platform's oaknet processes, e.g. --perf-basic-prof to profile the NetManagers with
 * `perf record -p <pid>`; Node 20 does not accept --cpu-prof there).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { PLATFORM_ENV } from '../src/platform/plan.ts';
import { createPlatform, type Platform } from '../src/platform/platform.ts';
import { destroyPlatform } from '../src/platform/teardown.ts';
import type { JobDocument } from '../src/protocol/root-api.ts';
import type { runWorkload, Workload } from '../test/support/workloads.ts';
import {
  onCleanup,
  ownedWorkload,
  requireTools,
  runCleanups,
  spawnOwned,
  waitOutput,
  wasInterrupted,
  type OwnedProcess,
} from './cleanup.ts';
import {
  capture,
  firstConnections,
  inNs,
  iperfTcp,
  iperfUdp,
  IPERF_PORT,
  pingpong,
  PINGPONG,
  PINGPONG_PORT,
  processCpuSeconds,
  systemCpu,
  udpSearch,
  waitQuiet,
  type FirstPacket,
  type LatencyStats,
  type TcpRun,
  type UdpProbe,
} from './dp-measure.ts';
import { setUpHostGw, setUpSocat, setUpVxlan, setUpWireguardGo, type NodeInfo } from './dp-paths.ts';
import { median, type BenchResult } from './report.ts';

const SECTION = 'data plane';
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const TCP_SECONDS = Number(process.env['BENCH_TCP_SECONDS'] ?? 5);
const ONLY_PATHS = process.env['BENCH_PATHS']?.split(',').map((x) => x.trim());
const wanted = (key: string) => !ONLY_PATHS || ONLY_PATHS.includes(key);
const RR_COUNT = 2000;
const CRR_COUNT = 300;
const MSG = 64;
const UDP_SIZE = 1400;
const UDP_SECONDS = 1;
const FIRST_PACKET_SERVICES = 10;
const SERVER_SERVICE = 'bench.dp.server.v1';
const CLIENT_SERVICE = 'bench.dp.client.v1';

interface Path {
  key: string;
  label: string;
  client: string;
  server: string;
  address: string;
  mtu: number;
  /** How forwarding CPU is counted: the forwarders' own CPU time, or the kernel's (system-wide). */
  cpu: 'process' | 'kernel';
  forwarderPids: () => number[];
  /** Set when the path could not be built or stopped working. */
  failed?: string;
  /** oaknet paths: the tunnel mode the platform must be in to measure it (switched by restarts). */
  tunnel?: 'wireguard' | 'plaintext';
  /** Whether a DF packet of `mtu` bytes passes (and one of mtu + 1 does not). */
  mtuCheck?: { fits: boolean; oneMoreFails: boolean };
}

interface Sample {
  round: number;
  value: number;
}

/** One figure over the rounds: its samples, and the errors of rounds that failed. */
class Figure {
  readonly samples: Sample[] = [];
  readonly errors: string[] = [];
  /** Rounds whose value is only a lower bound (the load generator was the limit). */
  senderLimitedRounds = 0;
  constructor(
    readonly path: string,
    readonly name: string,
    readonly unit: string,
  ) {}
  get median(): number {
    return median(this.samples.map((s) => s.value));
  }
}

export interface DataPlaneOutput {
  results: BenchResult[];
  raw: Record<string, unknown>;
}

export async function runDataPlaneBench(): Promise<DataPlaneOutput> {
  const log = pino({ level: 'warn' });
  const started = Date.now();
  const results: BenchResult[] = [];
  const raw: Record<string, unknown> = { rounds: ROUNDS, tcpSeconds: TCP_SECONDS, runs: [] as unknown[] };
  const runs = raw['runs'] as unknown[];
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-bench-dp-'));
  const id = `bd${randomBytes(3).toString('hex').slice(0, 4)}`;
  const env = { ...process.env, [PLATFORM_ENV]: id };
  onCleanup(`remove ${stateDir}`, () => rmSync(stateDir, { recursive: true, force: true }));
  onCleanup(`destroy platform ${id}`, () => destroyPlatform(stateDir, log));
  const figures = new Map<string, Figure>();
  const fig = (path: string, name: string, unit: string) => {
    const k = `${path}\0${name}`;
    let f = figures.get(k);
    if (!f) figures.set(k, (f = new Figure(path, name, unit)));
    return f;
  };
  const paths: Path[] = [];
  try {
    await requireTools(['iperf3', 'python3', 'ip']);
    // ---- platform and paths ---------------------------------------------------------------------------
    // extra NODE_OPTIONS for the platform's oaknet processes (NetManagers, root, cluster), e.g.
    // --perf-basic-prof for `perf record`; Node 20 refuses --cpu-prof in NODE_OPTIONS
    const extraNodeOptions = process.env['BENCH_NM_NODE_OPTIONS'];
    const savedNodeOptions = process.env['NODE_OPTIONS'];
    if (extraNodeOptions)
      process.env['NODE_OPTIONS'] = `${savedNodeOptions ?? ''} ${extraNodeOptions}`.trim();
    let platform: Platform;
    try {
      platform = await createPlatform({ stateDir, nodes: 2, clusters: 1, logLevel: 'warn', id }, log);
    } finally {
      if (extraNodeOptions) {
        if (savedNodeOptions === undefined) delete process.env['NODE_OPTIONS'];
        else process.env['NODE_OPTIONS'] = savedNodeOptions;
      }
    }
    const node = (name: string): NodeInfo => {
      const n = platform.node(name);
      return { name, netns: n.netns, ip: n.ip };
    };
    const n1 = node('n1');
    const n2 = node('n2');
    const nmPid = (name: string) => platform.state.processes.find((p) => p.name === name)?.pid;
    const nmPids = () => [nmPid('n1'), nmPid('n2')].filter((p): p is number => p !== undefined);
    raw['platform'] = { id, n1, n2, readyMs: Date.now() - started };

    if (wanted('direct'))
      paths.push({
        key: 'direct',
        label: 'direct veth (underlay)',
        client: n1.netns,
        server: n2.netns,
        address: n2.ip,
        mtu: 1500,
        cpu: 'kernel',
        forwarderPids: () => [],
      });
    const addReference = async (key: string, label: string, build: () => ReturnType<typeof setUpVxlan>) => {
      try {
        const p = await build();
        paths.push({
          key,
          label,
          client: p.client,
          server: p.server,
          address: p.address,
          mtu: p.mtu,
          cpu: p.forwarders.length > 0 ? 'process' : 'kernel',
          forwarderPids: () =>
            p.forwarders.map((f) => f.child.pid).filter((x): x is number => x !== undefined),
        });
      } catch (err) {
        paths.push(failedPath(key, label, `setup: ${message(err)}`));
      }
    };
    const reference = (key: string, label: string, build: () => ReturnType<typeof setUpVxlan>) =>
      wanted(key) ? addReference(key, label, build) : Promise.resolve();
    await reference('hostgw', 'kernel routing (host-gw)', () =>
      setUpHostGw(id, n1, n2, platform.state.switchNs),
    );
    await reference('vxlan', 'kernel VXLAN', () => setUpVxlan(id, n1, n2));
    await reference('socat', 'socat TUN/UDP', () => setUpSocat(id, n1, n2, env));
    await reference('wireguard-go', "Debian's wireguard-go", () => setUpWireguardGo(id, n1, n2, env));

    // oaknet: a server instance on n2, a client instance on n1, as a user runs them
    const workloads: Workload[] = [];
    const startWorkload = async (nodeName: string, spec: Parameters<typeof runWorkload>[2]) => {
      const w = await ownedWorkload(platform, nodeName, spec);
      workloads.push(w);
      return w;
    };
    if (wanted('oaknet-rr') || wanted('oaknet-inst') || wanted('oaknet-plain'))
      try {
        const server = await startWorkload('n2', {
          service: SERVER_SERVICE,
          instance: 0,
          netns: `${id}-os`,
          command: ['sleep', 'infinity'],
        });
        const client = await startWorkload('n1', {
          service: CLIENT_SERVICE,
          instance: 0,
          netns: `${id}-oc`,
          command: ['sleep', 'infinity'],
        });
        const doc = await jobDoc(platform, SERVER_SERVICE);
        const rr = doc.service_ip_list.find((s) => s.IpType === 'RR')?.Address;
        const inst = doc.instance_list.find((i) => i.instance_number === 0)?.instance_ip;
        if (!rr || !inst)
          throw new Error(`${SERVER_SERVICE} has no RR or instance IP: ${JSON.stringify(doc)}`);
        const common = {
          client: client.netns,
          server: server.netns,
          mtu: 1408, // with WireGuard (1450 in plaintext)
          cpu: 'process' as const,
          forwarderPids: nmPids,
          tunnel: 'wireguard' as const,
        };
        if (wanted('oaknet-rr'))
          paths.push({
            key: 'oaknet-rr',
            label: 'oaknet ProxyTUN, RR_IP (WireGuard)',
            address: rr,
            ...common,
          });
        if (wanted('oaknet-inst'))
          paths.push({
            key: 'oaknet-inst',
            label: 'oaknet ProxyTUN, instance IP (WireGuard)',
            address: inst,
            ...common,
          });
        if (wanted('oaknet-plain'))
          paths.push({
            key: 'oaknet-plain',
            label: 'oaknet ProxyTUN, RR_IP, plaintext tunnel',
            address: rr,
            ...common,
            mtu: 1450,
            tunnel: 'plaintext',
          });
        raw['oaknet'] = { rr, instanceIp: inst, server: server.netns, client: client.netns };
      } catch (err) {
        paths.push(failedPath('oaknet-rr', 'oaknet ProxyTUN, RR_IP', `setup: ${message(err)}`));
        paths.push(failedPath('oaknet-inst', 'oaknet ProxyTUN, instance IP', `setup: ${message(err)}`));
      }

    // servers: iperf3 and the ping-pong echo in every server namespace
    const servers = new Map<string, { iperf?: OwnedProcess; echo?: OwnedProcess }>();
    const startServers = async (ns: string, restartIperf = false) => {
      let s = servers.get(ns);
      if (!s) servers.set(ns, (s = {}));
      if (restartIperf && s.iperf) {
        await s.iperf.stop(1000);
        s.iperf = undefined;
      }
      if (!s.iperf || s.iperf.child.exitCode !== null || s.iperf.child.signalCode !== null) {
        s.iperf = spawnOwned(
          `iperf3 -s in ${ns}`,
          inNs(ns, ['iperf3', '-s', '-p', String(IPERF_PORT), '--forceflush']),
          {
            env,
          },
        );
        await waitOutput(s.iperf, 'Server listening', 5000);
      }
      if (!s.echo || s.echo.child.exitCode !== null || s.echo.child.signalCode !== null) {
        s.echo = spawnOwned(
          `echo server in ${ns}`,
          inNs(ns, ['python3', PINGPONG, 'server', String(PINGPONG_PORT)]),
          { env },
        );
        await waitOutput(s.echo, 'ready', 10_000);
      }
    };
    // oaknet's tunnel mode: one platform, switched by restarting clusters and NetManagers, so encrypted
    // and plaintext are measured in the same run (plaintext paths come last in every loop: two switches)
    let tunnelMode: 'wireguard' | 'plaintext' = 'wireguard';
    const ensureTunnel = async (p: Path) => {
      if (!p.tunnel || p.tunnel === tunnelMode) return;
      await platform.setPlaintextTunnel(p.tunnel === 'plaintext', 60_000);
      tunnelMode = p.tunnel;
      await pingpong(p.client, 'rr', p.address, 20, MSG); // handshakes and table caches before timing
    };
    const mtuProblems: string[] = [];
    for (const p of paths.filter((x) => !x.failed)) {
      try {
        await ensureTunnel(p);
        await startServers(p.server);
        // reachability, and the warm-up of caches (ARP, oaknet's table) before anything is timed
        await pingpong(p.client, 'rr', p.address, 20, MSG);
      } catch (err) {
        p.failed = `not reachable: ${message(err)}`;
        continue;
      }
      // the MTU fits: a packet of the pod's MTU passes with DF set, one byte more does not
      const df = (size: number) =>
        capture(
          inNs(p.client, ['ping', '-c', '1', '-W', '2', '-M', 'do', '-s', String(size), p.address]),
          10_000,
        ).then((r) => r.code === 0);
      p.mtuCheck = { fits: await df(p.mtu - 28), oneMoreFails: !(await df(p.mtu - 27)) };
      if (!p.mtuCheck.fits) mtuProblems.push(`${p.label}: ${p.mtu}-byte packets with DF do not pass`);
    }
    raw['paths'] = paths.map((p) => ({
      key: p.key,
      label: p.label,
      client: p.client,
      server: p.server,
      address: p.address,
      mtu: p.mtu,
      mtuCheck: p.mtuCheck,
      cpu: p.cpu,
      failed: p.failed,
    }));
    raw['setupMs'] = Date.now() - started;
    process.stderr.write(
      `bench data plane: set up in ${((Date.now() - started) / 1000).toFixed(1)} s; ${paths.filter((p) => !p.failed).length} paths work; NetManager PIDs ${nmPids().join(', ')}\n`,
    );

    // ---- rounds ---------------------------------------------------------------------------------------
    const udpEstimate = new Map<string, number>();
    const quiet: Array<{ round: number; path: string; what: string; waitedMs: number; busyCores: number }> =
      [];
    raw['quiet'] = quiet;
    const attempt = async <T>(
      p: Path,
      what: string,
      f: Figure[],
      fn: () => Promise<T>,
    ): Promise<T | undefined> => {
      try {
        // the machine may be shared: do not start a measurement while something else keeps it busy
        await ensureTunnel(p);
        const q = await waitQuiet();
        quiet.push({ round: currentRound, path: p.key, what, ...q });
        return await fn();
      } catch (err) {
        const m = `${what}: ${message(err)}`;
        for (const x of f) x.errors.push(m);
        runs.push({ path: p.key, what, error: m });
        // an iperf3 server can stay busy with a test whose client died: start a fresh one
        await startServers(p.server, true).catch(() => undefined);
        return undefined;
      }
    };
    let currentRound = 0;
    for (let round = 0; round < ROUNDS && !wasInterrupted(); round++) {
      currentRound = round;
      const t0 = Date.now();
      const live = paths.filter((p) => !p.failed && p.tunnel !== 'plaintext');
      const order = [
        ...live.map((_, i) => live[(i + round) % live.length]!),
        ...paths.filter((p) => !p.failed && p.tunnel === 'plaintext'),
      ];
      // TCP, 1 stream (with CPU accounting)
      for (const p of order) {
        const gbps = fig(p.key, 'TCP 1 stream', 'Gbit/s');
        const fwd = fig(p.key, 'forwarding CPU per GB (TCP 1 stream)', 's/GB');
        const all = fig(p.key, 'machine CPU per GB (TCP 1 stream)', 's/GB');
        const r = await attempt(p, 'tcp1', [gbps, fwd, all], async () => {
          const pids = p.forwarderPids();
          const cpu0 = pids.map(processCpuSeconds);
          const sys0 = systemCpu();
          const t = await iperfTcp(p.client, p.address, TCP_SECONDS, 1);
          const sys1 = systemCpu();
          const cpu1 = pids.map(processCpuSeconds);
          const procCpu = cpu1.reduce((a, b, i) => a + b - cpu0[i]!, 0);
          const forwarding = p.cpu === 'process' ? procCpu : sys1.kernel - sys0.kernel;
          return {
            ...t,
            forwardingCpuS: forwarding,
            machineCpuS: sys1.busy - sys0.busy,
            forwarderPids: pids,
          };
        });
        if (!r) continue;
        const gb = r.bytes / 1e9;
        gbps.samples.push({ round, value: r.bitsPerSecond / 1e9 });
        fwd.samples.push({ round, value: r.forwardingCpuS / gb });
        all.samples.push({ round, value: r.machineCpuS / gb });
        runs.push({ round, path: p.key, what: 'tcp1', ...r });
      }
      // TCP, 4 streams
      for (const p of order) {
        const f = fig(p.key, 'TCP 4 streams', 'Gbit/s');
        const r = await attempt(p, 'tcp4', [f], () => iperfTcp(p.client, p.address, TCP_SECONDS, 4));
        if (!r) continue;
        f.samples.push({ round, value: r.bitsPerSecond / 1e9 });
        runs.push({ round, path: p.key, what: 'tcp4', ...r });
      }
      // TCP, 64 streams: ProxyTUN's flow table under many flows, and the kernel reference
      for (const p of order.filter((x) => x.key === 'oaknet-rr' || x.key === 'vxlan')) {
        const f = fig(p.key, 'TCP 64 streams', 'Gbit/s');
        const r = await attempt(p, 'tcp64', [f], () => iperfTcp(p.client, p.address, TCP_SECONDS, 64));
        if (!r) continue;
        f.samples.push({ round, value: r.bitsPerSecond / 1e9 });
        runs.push({ round, path: p.key, what: 'tcp64', ...r });
      }
      // request/response latency
      for (const p of order) {
        const p50 = fig(p.key, 'TCP round trip 64 B p50', 'µs');
        const p99 = fig(p.key, 'TCP round trip 64 B p99', 'µs');
        const c50 = fig(p.key, 'TCP connect+request+close p50', 'µs');
        const rr = await attempt(p, 'rr', [p50, p99], () =>
          pingpong(p.client, 'rr', p.address, RR_COUNT, MSG),
        );
        if (rr) {
          p50.samples.push({ round, value: rr.p50 });
          p99.samples.push({ round, value: rr.p99 });
          runs.push({ round, path: p.key, what: 'rr', ...rr });
        }
        const crr = await attempt(p, 'crr', [c50], () =>
          pingpong(p.client, 'crr', p.address, CRR_COUNT, MSG),
        );
        if (crr) {
          c50.samples.push({ round, value: crr.p50 });
          runs.push({ round, path: p.key, what: 'crr', ...crr });
        }
      }
      // UDP: highest rate with < 1 % loss
      for (const p of order) {
        const f = fig(p.key, `UDP ${UDP_SIZE} B, < 1% loss`, 'kpps');
        const est = udpEstimate.get(p.key);
        const r = await attempt(p, 'udp', [f], () =>
          udpSearch(
            (pps) => iperfUdp(p.client, p.address, pps, UDP_SIZE, UDP_SECONDS),
            est ? est * 1.1 : 30_000,
            {
              maxProbes: est ? 4 : 7,
              factor: est ? 1.3 : 2,
              maxLoss: 1,
              floor: 500,
            },
          ),
        );
        if (!r) continue;
        runs.push({
          round,
          path: p.key,
          what: 'udp',
          probes: r.probes,
          best: r.best,
          senderLimited: r.senderLimited,
        });
        if (!r.best) {
          f.errors.push(
            `round ${round}: no probe under 1% loss (lowest ${Math.round(Math.min(...r.probes.map((x) => x.offeredPps)))} pps)`,
          );
          udpEstimate.set(p.key, Math.min(...r.probes.map((x) => x.offeredPps)) / 1.3);
          continue;
        }
        udpEstimate.set(p.key, r.best.offeredPps);
        if (r.senderLimited) f.senderLimitedRounds++;
        f.samples.push({ round, value: r.best.receivedPps / 1000 });
      }
      process.stderr.write(
        `bench data plane: round ${round + 1}/${ROUNDS} in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`,
      );
    }

    // ---- first packet to a ServiceIP the client's node never saw ----------------------------------------
    const oak = paths.find((p) => p.key === 'oaknet-rr');
    if (oak && !oak.failed && !wasInterrupted()) {
      try {
        raw['firstPacket'] = await firstPacket(platform, id, oak.client, results);
      } catch (err) {
        results.push(
          failedResult('control plane', 'first connection to an uncached ServiceIP', 'ms', message(err)),
        );
      }
    }

    if (mtuProblems.length > 0)
      results.push(failedResult(SECTION, 'MTU check (DF ping of the path MTU)', '', mtuProblems.join('; ')));
    const delayed = quiet.filter((q) => q.waitedMs > 300);
    const busy = quiet.filter((q) => q.busyCores >= 0.3);
    results.push({
      section: SECTION,
      name: 'measurements that waited for other load on the machine to pass',
      value: delayed.length,
      unit: `of ${quiet.length}`,
      ...(delayed.length > 0
        ? {
            note: `waited up to ${(Math.max(...delayed.map((q) => q.waitedMs)) / 1000).toFixed(1)} s; ${busy.length} started with the machine still busy (>= 0.3 cores)`,
          }
        : {}),
    });

    // the proxies' counters after everything (drops, queue overflows...)
    raw['proxyCounters'] = {
      n1: (
        await platform
          .nodeClient('n1')
          .status()
          .catch(() => undefined)
      )?.proxy,
      n2: (
        await platform
          .nodeClient('n2')
          .status()
          .catch(() => undefined)
      )?.proxy,
    };
    // the servers first (some run inside the workloads' namespaces), then the workloads (oaknet run
    // withdraws, undeploys and deletes their namespaces), before the platform goes
    for (const srv of servers.values()) await Promise.all([srv.iperf?.stop(), srv.echo?.stop()]);
    for (const w of workloads.reverse()) await w.stop();
  } catch (err) {
    results.push(failedResult(SECTION, 'data-plane bench', '', message(err)));
  } finally {
    await runCleanups();
  }

  results.unshift(...figureResults(paths, figures));
  raw['figures'] = [...figures.values()].map((f) => ({
    path: f.path,
    name: f.name,
    unit: f.unit,
    samples: f.samples,
    errors: f.errors,
  }));
  raw['totalMs'] = Date.now() - started;
  process.stderr.write(`bench data plane: done in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  return { results, raw };
}

// ---- results ------------------------------------------------------------------------------------------

const FIGURE_ORDER = [
  'TCP 1 stream',
  'TCP 4 streams',
  'TCP 64 streams',
  'TCP round trip 64 B p50',
  'TCP round trip 64 B p99',
  'TCP connect+request+close p50',
  `UDP ${UDP_SIZE} B, < 1% loss`,
  'forwarding CPU per GB (TCP 1 stream)',
  'machine CPU per GB (TCP 1 stream)',
];

function figureResults(paths: readonly Path[], figures: Map<string, Figure>): BenchResult[] {
  const out: BenchResult[] = [];
  let kernelCpuNoted = false;
  const get = (path: string, name: string) => figures.get(`${path}\0${name}`);
  const med = (path: string, name: string) => {
    const f = get(path, name);
    return f && f.samples.length > 0 ? f.median : NaN;
  };
  for (const p of paths.filter((x) => x.failed))
    out.push(failedResult(SECTION, `path: ${p.label}`, '', p.failed!));
  for (const name of FIGURE_ORDER) {
    for (const p of paths.filter((x) => !x.failed)) {
      const f = get(p.key, name);
      if (!f) continue;
      if (name === 'TCP 64 streams' && p.key !== 'oaknet-rr' && p.key !== 'vxlan') continue;
      const unit = f?.unit ?? '';
      const label = `${name}: ${p.label}`;
      if (!f || f.samples.length === 0) {
        out.push(failedResult(SECTION, label, unit, f?.errors.at(-1) ?? 'no result'));
        continue;
      }
      const v = f.median;
      const vx = med('vxlan', name);
      let note: string | undefined;
      if (name.startsWith('forwarding CPU') && p.cpu === 'kernel' && !kernelCpuNoted) {
        kernelCpuNoted = true;
        note =
          "kernel paths: system+irq+softirq time of the whole machine (includes iperf3's own socket work); " +
          'oaknet: utime+stime of both NetManagers; socat: of both socat processes';
      }
      if (f.senderLimitedRounds > 0)
        note = `sender-limited in ${f.senderLimitedRounds} of ${f.samples.length} rounds (the one iperf3 sender could not offer more, no loss): a lower bound`;
      if (f.errors.length > 0) note = `${f.errors.length} round(s) failed: ${f.errors.at(-1)}`;
      out.push({
        section: SECTION,
        name: label,
        value: v,
        unit,
        ratio: p.key === 'vxlan' || !Number.isFinite(vx) ? undefined : `${(v / vx).toFixed(2)}x VXLAN`,
        samples: f.samples.map((s) => s.value),
        ...(note ? { note } : {}),
      });
    }
  }
  // the targets; a check whose paths were not run (BENCH_PATHS) is left out
  const ran = new Set(paths.map((p) => p.key));
  const check = (needs: string[], name: string, value: number, target: string, ok: boolean) => {
    if (!needs.every((k) => ran.has(k))) return;
    if (!Number.isFinite(value)) {
      out.push(failedResult(SECTION, name, 'x', `no result for ${needs.join(', ')}`));
      return;
    }
    out.push({ section: SECTION, name, value, unit: 'x', target: `${target} ${ok ? '(met)' : '(MISSED)'}` });
  };
  const oak1 = med('oaknet-rr', 'TCP 1 stream');
  const socat1 = med('socat', 'TCP 1 stream');
  const vx1 = med('vxlan', 'TCP 1 stream');
  check(['oaknet-rr', 'socat'], 'ProxyTUN / socat, TCP 1 stream', oak1 / socat1, '>= 2x', oak1 / socat1 >= 2);
  check(['oaknet-rr', 'vxlan'], 'ProxyTUN / VXLAN, TCP 1 stream', oak1 / vx1, '>= 0.25x', oak1 / vx1 >= 0.25);
  const direct50 = med('direct', 'TCP round trip 64 B p50');
  const added = (key: string) => med(key, 'TCP round trip 64 B p50') - direct50;
  const addedVx = added('vxlan');
  for (const [key, label] of [
    ['oaknet-rr', 'ProxyTUN (WireGuard)'],
    ['oaknet-plain', 'ProxyTUN (plaintext tunnel)'],
    ['wireguard-go', 'wireguard-go'],
    ['socat', 'socat'],
    ['vxlan', 'VXLAN'],
  ] as const) {
    const v = added(key);
    if (!ran.has('direct') || !ran.has(key) || !Number.isFinite(v)) continue;
    out.push({
      section: SECTION,
      name: `round trip p50 added over direct veth: ${label}`,
      value: v,
      unit: 'µs',
      ratio: key === 'vxlan' ? undefined : ratioTo(v, addedVx),
    });
  }
  const addedRatio = added('oaknet-rr') / added('socat');
  check(
    ['oaknet-rr', 'socat', 'direct'],
    'added round trip p50, ProxyTUN / socat',
    addedRatio,
    '<= 2x',
    addedRatio <= 2,
  );
  // issue 12: the WireGuard tunnel against oaknet in plaintext and against wireguard-go, same run
  const plain1 = med('oaknet-plain', 'TCP 1 stream');
  const wg1 = med('wireguard-go', 'TCP 1 stream');
  check(
    ['oaknet-rr', 'oaknet-plain'],
    'oaknet encrypted / oaknet plaintext, TCP 1 stream',
    oak1 / plain1,
    '>= 0.6x',
    oak1 / plain1 >= 0.6,
  );
  check(
    ['oaknet-rr', 'wireguard-go'],
    'oaknet encrypted / wireguard-go, TCP 1 stream',
    oak1 / wg1,
    '>= 1.5x',
    oak1 / wg1 >= 1.5,
  );
  const addedPlain = added('oaknet-rr') / added('oaknet-plain');
  check(
    ['oaknet-rr', 'oaknet-plain', 'direct'],
    'added round trip p50, oaknet encrypted / plaintext',
    addedPlain,
    '<= 1.3x',
    addedPlain <= 1.3,
  );
  const flows = med('oaknet-rr', 'TCP 64 streams') / med('oaknet-rr', 'TCP 4 streams');
  check(['oaknet-rr'], 'ProxyTUN TCP 64 streams / 4 streams', flows, '>= 0.8x', flows >= 0.8);
  return out;
}

function ratioTo(v: number, ref: number): string | undefined {
  return Number.isFinite(v) && Number.isFinite(ref) && ref !== 0
    ? `${(v / ref).toFixed(2)}x VXLAN`
    : undefined;
}

function failedResult(section: string, name: string, unit: string, reason: string): BenchResult {
  return { section, name, value: NaN, unit, error: reason };
}

function failedPath(key: string, label: string, reason: string): Path {
  return {
    key,
    label,
    client: '',
    server: '',
    address: '',
    mtu: 0,
    cpu: 'kernel',
    forwarderPids: () => [],
    failed: reason,
  };
}

// ---- first packet ---------------------------------------------------------------------------------------

/**
 * FIRST_PACKET_SERVICES fresh services, one instance each on n2 (an echo server), deployed before any is
 * used; then, from the client instance on n1, one connection to each RR_IP (n1 has never queried them: the
 * first SYN waits in ProxyTUN while n1 asks its cluster) followed by 5 warm connections to the same IP.
 */
async function firstPacket(
  platform: Platform,
  id: string,
  clientNs: string,
  results: BenchResult[],
): Promise<unknown> {
  const tag = randomBytes(3).toString('hex');
  const services = Array.from({ length: FIRST_PACKET_SERVICES }, (_, k) => `bench.fp${tag}.s${k}.v1`);
  const workloads: Workload[] = [];
  try {
    for (let i = 0; i < services.length; i += 5) {
      const batch = await Promise.all(
        services.slice(i, i + 5).map((service, k) =>
          ownedWorkload(platform, 'n2', {
            service,
            instance: 0,
            netns: `${id}-f${i + k}`,
            command: ['python3', PINGPONG, 'server', String(PINGPONG_PORT)],
            readyLine: 'ready',
          }),
        ),
      );
      workloads.push(...batch);
    }
    const ips: string[] = [];
    for (const s of services) {
      const rr = (await jobDoc(platform, s)).service_ip_list.find((x) => x.IpType === 'RR')?.Address;
      if (!rr) throw new Error(`${s} has no RR_IP`);
      ips.push(rr);
    }
    const out: FirstPacket[] = await firstConnections(clientNs, ips, 5);
    const ok = out.filter((o) => o.first_connect_us !== undefined && o.warm_connect_us?.length);
    const ms = (us: number) => us / 1000;
    const first = ok.map((o) => ms(o.first_connect_us!));
    const warm = ok.flatMap((o) => o.warm_connect_us!.map(ms));
    const cost = ok.map((o) => ms(o.first_connect_us! - median(o.warm_connect_us!)));
    const firstEcho = ok.map((o) => ms(o.first_echo_us!));
    const errors = out.filter((o) => o.error).map((o) => `${o.ip}: ${o.error}`);
    if (ok.length === 0) throw new Error(`no first connection succeeded: ${errors.join('; ')}`);
    const section = 'control plane';
    const note = errors.length ? `${errors.length} of ${out.length} failed: ${errors[0]}` : undefined;
    results.push({
      section,
      name: 'first connect to an uncached ServiceIP (SYN to SYN-ACK) p50',
      value: median(first),
      unit: 'ms',
      samples: first,
      ...(note ? { note } : {}),
    });
    results.push({
      section,
      name: 'first connect to an uncached ServiceIP max',
      value: Math.max(...first),
      unit: 'ms',
    });
    results.push({
      section,
      name: 'first connect + 1 B echo to an uncached ServiceIP p50',
      value: median(firstEcho),
      unit: 'ms',
      samples: firstEcho,
    });
    results.push({
      section,
      name: 'connect to the same ServiceIP, warm, p50',
      value: median(warm),
      unit: 'ms',
    });
    results.push({
      section,
      name: 'first-packet cost (first connect - warm connect) p50',
      value: median(cost),
      unit: 'ms',
      samples: cost,
    });
    results.push({
      section,
      name: 'first-packet cost (first connect - warm connect) max',
      value: Math.max(...cost),
      unit: 'ms',
    });
    return { services: services.length, connections: out };
  } finally {
    await Promise.all(workloads.map((w) => w.stop()));
  }
}

// ---- helpers --------------------------------------------------------------------------------------------

async function jobDoc(platform: Platform, name: string): Promise<JobDocument> {
  return platform.rootClient().jobByName(name);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export type { LatencyStats, TcpRun, UdpProbe };
