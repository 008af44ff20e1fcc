/**
 * Measurement tools of the data-plane bench, each run inside a network namespace: iperf3 TCP and UDP
 * (JSON output), the Python ping-pong client, and CPU accounting from /proc.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './cleanup.ts';

export const PINGPONG = fileURLToPath(new URL('./pingpong.py', import.meta.url));
export const IPERF_PORT = 5201;
export const PINGPONG_PORT = 7000;

/** argv that runs `argv` inside namespace `ns` (ip execs it: the PID is the command's). */
export function inNs(ns: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

export interface Captured {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs argv to its end (killed after timeoutMs, and on a bench cleanup), capturing both outputs. */
export function capture(
  argv: readonly string[],
  timeoutMs: number,
  env?: NodeJS.ProcessEnv,
): Promise<Captured> {
  const [cmd, ...args] = argv;
  return new Promise((resolve) => {
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const kill = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    const timer = setTimeout(kill, timeoutMs);
    const unregister = onCleanup(`kill ${argv.slice(0, 6).join(' ')}`, kill);
    child.once('error', (err) => {
      stderr += err.message;
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      void unregister();
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// ---- CPU ------------------------------------------------------------------------------------------------

/** Clock ticks per second of /proc times (USER_HZ; 100 on every Linux this runs on). */
export const CLK_TCK = 100;

/** utime + stime of a process (all its threads), in seconds; 0 when it is gone. */
export function processCpuSeconds(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // after the command: state(3) ... utime is field 14, stime 15 (1-based) -> indices 11, 12 here
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

export interface SystemCpu {
  /** Kernel time: system + irq + softirq, all CPUs (s). */
  kernel: number;
  /** Everything but idle and iowait, all CPUs (s). */
  busy: number;
}

export function systemCpu(): SystemCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).map(Number);
  const [user, nice, system, irq, softirq, steal] = [1, 2, 3, 6, 7, 8].map((i) => f[i] ?? 0);
  return {
    kernel: (system! + irq! + softirq!) / CLK_TCK,
    busy: (user! + nice! + system! + irq! + softirq! + steal!) / CLK_TCK,
  };
}

/**
 * Waits until the machine is quiet (less than `thresholdCores` busy over a 200 ms sample), at most
 * `maxWaitMs`: the machine may be shared, and a burst of someone else's work would land in a measurement.
 * Returns how long it waited and the load of the last sample (cores).
 */
export async function waitQuiet(
  maxWaitMs = 20_000,
  thresholdCores = 0.3,
): Promise<{ waitedMs: number; busyCores: number }> {
  const start = Date.now();
  for (;;) {
    const a = systemCpu();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 200));
    const b = systemCpu();
    const busyCores = (b.busy - a.busy) / ((performance.now() - t0) / 1000);
    if (busyCores < thresholdCores || Date.now() - start >= maxWaitMs)
      return { waitedMs: Date.now() - start, busyCores };
  }
}

// ---- iperf3 ---------------------------------------------------------------------------------------------

export interface TcpRun {
  bitsPerSecond: number;
  bytes: number;
  seconds: number;
  retransmits: number;
  streams: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bytes: number; bits_per_second: number; retransmits?: number; seconds: number };
    sum_received?: {
      bytes: number;
      bits_per_second: number;
      seconds: number;
      packets?: number;
      lost_packets?: number;
      lost_percent?: number;
    };
    sum?: { bytes: number; seconds: number; packets?: number; lost_packets?: number; lost_percent?: number };
  };
}

function parseIperf(r: Captured, what: string): IperfJson {
  let doc: IperfJson;
  try {
    doc = JSON.parse(r.stdout) as IperfJson;
  } catch {
    throw new Error(
      `${what}: no JSON (exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`,
    );
  }
  if (doc.error) throw new Error(`${what}: ${doc.error}`);
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code ?? r.signal}`);
  return doc;
}

export async function iperfTcp(
  ns: string,
  address: string,
  seconds: number,
  streams: number,
): Promise<TcpRun> {
  const argv = [
    'iperf3',
    '-c',
    address,
    '-p',
    String(IPERF_PORT),
    '-t',
    String(seconds),
    '-J',
    '--connect-timeout',
    '3000',
  ];
  if (streams > 1) argv.push('-P', String(streams));
  const r = await capture(inNs(ns, argv), (seconds + 20) * 1000);
  const doc = parseIperf(r, `iperf3 TCP -P ${streams} to ${address}`);
  const rx = doc.end?.sum_received;
  if (!rx) throw new Error(`iperf3 TCP to ${address}: no sum_received`);
  return {
    bitsPerSecond: rx.bits_per_second,
    bytes: rx.bytes,
    seconds: rx.seconds,
    retransmits: doc.end?.sum_sent?.retransmits ?? 0,
    streams,
  };
}

export interface UdpProbe {
  /** Offered rate (packets/s of `size`-byte payloads). */
  offeredPps: number;
  /** Packets that arrived per second. */
  receivedPps: number;
  lostPercent: number;
}

export async function iperfUdp(
  ns: string,
  address: string,
  pps: number,
  size: number,
  seconds: number,
): Promise<UdpProbe> {
  const bps = Math.round(pps * size * 8);
  const argv = [
    'iperf3',
    '-c',
    address,
    '-p',
    String(IPERF_PORT),
    '-u',
    '-l',
    String(size),
    '-b',
    String(bps),
    // 4 MB socket buffers at both ends: with the default ~200 KB, a plain veth already loses 2-3 % at
    // 80 kpps whenever the receiving iperf3 is descheduled for a moment, which is not the path's doing
    '-w',
    '4M',
    '-t',
    String(seconds),
    '-J',
    '--connect-timeout',
    '3000',
  ];
  const r = await capture(inNs(ns, argv), (seconds + 20) * 1000);
  const doc = parseIperf(r, `iperf3 UDP to ${address} at ${Math.round(pps)} pps`);
  const rx = doc.end?.sum_received ?? doc.end?.sum;
  if (!rx || rx.packets === undefined || rx.lost_packets === undefined)
    throw new Error(`iperf3 UDP to ${address}: no receiver summary`);
  const got = Math.max(0, rx.packets - rx.lost_packets);
  return {
    offeredPps: pps,
    receivedPps: got / rx.seconds,
    lostPercent: rx.packets > 0 ? (100 * rx.lost_packets) / rx.packets : 100,
  };
}

/**
 * The highest rate with < maxLoss % loss, coarsely: from `start`, multiply the offered rate by `factor` while
 * probes pass (or divide while they fail), then bisect (geometrically) the last bracket; at most `maxProbes`
 * probes. The best probe is the passing one that delivered the most packets/s. When a passing probe delivers
 * clearly less than offered, the sender (iperf3) is the limit: the search stops there (senderLimited).
 */
export async function udpSearch(
  probe: (pps: number) => Promise<UdpProbe>,
  start: number,
  opts: { maxProbes: number; factor: number; maxLoss: number; floor: number },
): Promise<{ best: UdpProbe | undefined; probes: UdpProbe[]; senderLimited: boolean }> {
  const probes: UdpProbe[] = [];
  let best: UdpProbe | undefined;
  let goodPps: number | undefined;
  let badPps: number | undefined;
  let senderLimited = false;
  let next = start;
  while (probes.length < opts.maxProbes) {
    const p = await probe(next);
    probes.push(p);
    if (p.lostPercent < opts.maxLoss) {
      if (!best || p.receivedPps > best.receivedPps) best = p;
      if (goodPps === undefined || p.offeredPps > goodPps) goodPps = p.offeredPps;
      if (p.receivedPps < 0.85 * p.offeredPps) {
        senderLimited = true;
        break;
      }
    } else if (badPps === undefined || p.offeredPps < badPps) badPps = p.offeredPps;
    if (goodPps !== undefined && badPps !== undefined) {
      if (badPps / goodPps < 1.08) break; // bracket narrow enough
      next = Math.sqrt(goodPps * badPps);
    } else if (goodPps !== undefined) next = goodPps * opts.factor;
    else {
      next = badPps! / opts.factor;
      if (next < opts.floor) break;
    }
  }
  return { best, probes, senderLimited };
}

// ---- ping-pong ------------------------------------------------------------------------------------------

export interface LatencyStats {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
  every10th?: number[];
}

export async function pingpong(
  ns: string,
  mode: 'rr' | 'crr',
  address: string,
  n: number,
  size: number,
): Promise<LatencyStats> {
  const r = await capture(
    inNs(ns, ['python3', PINGPONG, mode, address, String(PINGPONG_PORT), String(n), String(size)]),
    60_000,
  );
  if (r.code !== 0)
    throw new Error(
      `pingpong ${mode} to ${address}: exit ${r.code ?? r.signal}: ${r.stderr.trim().slice(-300)}`,
    );
  return JSON.parse(r.stdout) as LatencyStats;
}

export interface FirstPacket {
  ip: string;
  first_connect_us?: number;
  first_echo_us?: number;
  warm_connect_us?: number[];
  warm_echo_us?: number[];
  error?: string;
}

export async function firstConnections(
  ns: string,
  ips: readonly string[],
  warm: number,
): Promise<FirstPacket[]> {
  const r = await capture(
    inNs(ns, ['python3', PINGPONG, 'first', String(PINGPONG_PORT), String(warm), ...ips]),
    120_000,
  );
  if (r.code !== 0)
    throw new Error(`pingpong first: exit ${r.code ?? r.signal}: ${r.stderr.trim().slice(-300)}`);
  return JSON.parse(r.stdout) as FirstPacket[];
}
