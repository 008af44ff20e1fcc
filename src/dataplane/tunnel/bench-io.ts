/**
 * One-off packet-rate figures for the device layers (a script, not a test):
 *   1. TUN read: another process floods 1400-byte UDP datagrams at an address routed into a LinuxTun, inside a
 *      throwaway network namespace; the reader counts packets per second.
 *   2. UdpTunnel over loopback: one process sends 1400-byte datagrams flat out with sendmmsg (batches of 64),
 *      another receives with recvmmsg; both count.
 * Sender and receiver are separate processes, as in docs/dependencies.md section 3; each counts over a window of
 * the given length that opens after a short warm-up. Needs root for part 1.
 *
 * Usage: node --import tsx src/dataplane/tunnel/bench-io.ts [seconds]
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { LinuxTun } from '../tun/linux.ts';
import { REPO_ROOT, canUseNetns, createTestNetns } from '../tun/fixtures.ts';
import { OutboundBatch, endpoint } from './tunnel.ts';
import { UdpTunnel } from './udp.ts';

const PACKET_BYTES = 1400;
const BATCH = 64;
const SELF = fileURLToPath(import.meta.url);

interface Report {
  /** Which role measured this. */
  role: string;
  /** Packets counted in the window. */
  packets: number;
  /** Length of the window in seconds. */
  seconds: number;
  /** Receive callbacks in the window (receivers only). */
  batches?: number;
  /** Datagrams the kernel refused as busy in the window (senders only). */
  busy?: number;
}

/** Prints one JSON line for the orchestrator. */
function report(r: Report): void {
  console.log(JSON.stringify(r));
}

// ---------------------------------------------------------------------------------------------------------
// Roles (each runs in its own process)
// ---------------------------------------------------------------------------------------------------------

/** Seconds each side runs before its measuring window opens (JIT warm-up, the other side starting). */
const WARMUP_S = 0.5;

/**
 * Counts packets in a window that opens WARMUP_S after the first packet and lasts `seconds`, then reports
 * and calls `stop` to release the device or socket.
 */
function countWindow(role: string, seconds: number, stop: () => void): (n: number) => void {
  let opened: bigint | undefined;
  let packets = 0;
  let batches = 0;
  let first = true;
  return (n) => {
    if (first) {
      first = false;
      setTimeout(() => {
        opened = process.hrtime.bigint();
        setTimeout(() => {
          const elapsed = Number(process.hrtime.bigint() - (opened ?? 0n)) / 1e9;
          report({ role, packets, seconds: elapsed, batches });
          stop();
        }, seconds * 1000);
      }, WARMUP_S * 1000);
    }
    if (opened === undefined) return;
    packets += n;
    batches++;
  };
}

async function tunReader(seconds: number): Promise<void> {
  const tun = await LinuxTun.open({ name: 'okbench0', mtu: 1500 });
  const { execFileSync } = await import('node:child_process');
  execFileSync('ip', ['addr', 'add', '10.78.0.1/24', 'dev', 'okbench0']);
  const count = countWindow('tun-read', seconds, () => tun.close());
  tun.start((batch) => count(batch.count));
  console.log('ready');
}

function udpReceiver(seconds: number): void {
  const t = UdpTunnel.open({ batchSize: BATCH });
  const count = countWindow('udp-recv', seconds, () => t.close());
  t.start((batch) => count(batch.count));
  console.log(`ready ${t.port}`);
}

/**
 * Sends 1400-byte datagrams to host:port flat out (16 sendmmsg calls of 64 per event-loop turn) for
 * WARMUP_S + seconds + 1 s, counting only the window [WARMUP_S, WARMUP_S + seconds].
 */
function flood(role: string, seconds: number, host: string, port: number): void {
  const t = UdpTunnel.open();
  const out = new OutboundBatch(BATCH);
  out.reset(Buffer.alloc(PACKET_BYTES, 0x5a));
  const to = endpoint(host, port);
  for (let i = 0; i < BATCH; i++) out.pushTo(0, PACKET_BYTES, to);
  const start = process.hrtime.bigint();
  const ns = (s: number): bigint => start + BigInt(Math.round(s * 1e9));
  const [open, close, end] = [ns(WARMUP_S), ns(WARMUP_S + seconds), ns(WARMUP_S + seconds + 1)];
  let sent = 0;
  let busy = 0;
  const turn = (): void => {
    const now = process.hrtime.bigint();
    const counting = now >= open && now < close;
    for (let k = 0; k < 16; k++) {
      const n = out.sendThrough(t);
      if (counting) {
        sent += n;
        busy += BATCH - n;
      }
    }
    if (now < end) {
      setImmediate(turn);
      return;
    }
    report({ role, packets: sent, seconds, busy });
    t.close();
  };
  turn();
}

// ---------------------------------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------------------------------

interface Child {
  /** Resolves with the first stdout line that starts with `ready`. */
  ready: Promise<string>;
  /** Resolves with the child's JSON report when it exits. */
  done: Promise<Report>;
}

function startRole(args: string[], netns?: string): Child {
  const nodeArgs = ['--import', 'tsx', SELF, ...args];
  const child = netns
    ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...nodeArgs], { cwd: REPO_ROOT })
    : spawn(process.execPath, nodeArgs, { cwd: REPO_ROOT });
  child.stderr.pipe(process.stderr);
  const lines = createInterface({ input: child.stdout });
  let report: Report | undefined;
  const ready = new Promise<string>((resolve) => {
    lines.on('line', (line) => {
      if (line.startsWith('ready')) resolve(line);
      else if (line.startsWith('{')) report = JSON.parse(line) as Report;
    });
  });
  const done = new Promise<Report>((resolve, reject) => {
    child.on('close', (code) => {
      if (code === 0 && report) resolve(report);
      else reject(new Error(`${args.join(' ')} exited with ${code}`));
    });
  });
  return { ready, done };
}

function pps(r: Report): string {
  const rate = r.packets / r.seconds;
  const gbit = (rate * PACKET_BYTES * 8) / 1e9;
  const perBatch = r.batches ? `, ${(r.packets / r.batches).toFixed(1)} packets per batch` : '';
  return `${Math.round(rate / 1000)}k packets/s (${gbit.toFixed(2)} Gbit/s of payload${perBatch})`;
}

async function benchTunRead(seconds: number): Promise<void> {
  if (!canUseNetns()) {
    console.log('TUN read: skipped (needs root, /dev/net/tun and iproute2)');
    return;
  }
  const ns = await createTestNetns();
  try {
    const reader = startRole(['tun-read', String(seconds)], ns.name);
    await reader.ready;
    const sender = startRole(['flood', String(seconds), '10.78.0.2', '9000'], ns.name);
    const [got, sent] = await Promise.all([reader.done, sender.done]);
    console.log(`TUN read:        ${pps(got)}`);
    console.log(`  flooder sent   ${pps(sent)}, ${sent.busy ?? 0} refused as busy`);
  } finally {
    await ns.delete();
  }
}

async function benchUdp(seconds: number): Promise<void> {
  const receiver = startRole(['udp-recv', String(seconds)]);
  const port = (await receiver.ready).split(' ')[1] ?? '0';
  const sender = startRole(['flood', String(seconds), '127.0.0.1', port]);
  const [got, sent] = await Promise.all([receiver.done, sender.done]);
  const loss = 1 - got.packets / got.seconds / (sent.packets / sent.seconds);
  console.log(`UdpTunnel send:  ${pps(sent)}, ${sent.busy ?? 0} refused as busy`);
  console.log(
    `UdpTunnel recv:  ${pps(got)}; ${(Math.max(0, loss) * 100).toFixed(1)} % of the sent rate lost`,
  );
}

const [first = '3', second, third, fourth] = process.argv.slice(2);
switch (first) {
  case 'tun-read':
    await tunReader(Number(second));
    break;
  case 'udp-recv':
    udpReceiver(Number(second));
    break;
  case 'flood':
    flood('flood', Number(second), third ?? '127.0.0.1', Number(fourth));
    break;
  default: {
    const seconds = Number(first);
    console.log(
      `${PACKET_BYTES}-byte packets, ${seconds} s windows, sender and receiver in separate processes`,
    );
    await benchTunRead(seconds);
    await benchUdp(seconds);
  }
}
