/**
 * @module dataplane/tun/fixtures
 * Test helpers for the device layers (never imported by production code): a hand-built IPv4/UDP packet with
 * real checksums and its parser, an in-place reply swap, a collector that waits for items with a deadline
 * (tests wait for events, never sleep), throwaway network namespaces and child processes that are always
 * cleaned up. (The addon's segmenter for tests is in test-segmenter.ts.)
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The repository root, so child processes resolve `--import tsx` from the project. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

// ---------------------------------------------------------------------------------------------------------
// IPv4/UDP packets
// ---------------------------------------------------------------------------------------------------------

function writeIpv4(text: string, out: Buffer, offset: number): void {
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${text}`);
  }
  for (let i = 0; i < 4; i++) out[offset + i] = parts[i] ?? 0;
}

function readIpv4(buf: Buffer, offset: number): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** One's-complement sum of 16-bit big-endian words (a trailing odd byte is padded with zero). */
function sum16(buf: Buffer, start: number, end: number, initial = 0): number {
  let sum = initial;
  for (let i = start; i + 1 < end; i += 2) sum += buf.readUInt16BE(i);
  if ((end - start) % 2 === 1) sum += (buf[end - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** An IPv4/UDP packet from src:srcPort to dst:dstPort with correct IP and UDP checksums. */
export function buildIpv4Udp(
  src: string,
  srcPort: number,
  dst: string,
  dstPort: number,
  payload: Buffer,
): Buffer {
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45; // version 4, header length 5 words
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(0x4000, 6); // don't fragment
  p[8] = 64; // TTL
  p[9] = 17; // UDP
  writeIpv4(src, p, 12);
  writeIpv4(dst, p, 16);
  p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  p.writeUInt16BE(srcPort, 20);
  p.writeUInt16BE(dstPort, 22);
  p.writeUInt16BE(8 + payload.length, 24);
  payload.copy(p, 28);
  const pseudo = sum16(p, 12, 20, 17 + 8 + payload.length);
  const udp = ~sum16(p, 20, p.length, pseudo) & 0xffff;
  p.writeUInt16BE(udp === 0 ? 0xffff : udp, 26);
  return p;
}

export interface Ipv4Udp {
  /** Source address, dotted quad. */
  src: string;
  /** Source UDP port. */
  srcPort: number;
  /** Destination address, dotted quad. */
  dst: string;
  /** Destination UDP port. */
  dstPort: number;
  /** A copy of the UDP payload. */
  payload: Buffer;
}

/** Parses buf[offset, offset + length) as IPv4/UDP with valid checksums; undefined for anything else. */
export function parseIpv4Udp(buf: Buffer, offset = 0, length = buf.length - offset): Ipv4Udp | undefined {
  if (length < 28 || (buf[offset] ?? 0) >> 4 !== 4 || buf[offset + 9] !== 17) return undefined;
  const ihl = ((buf[offset] ?? 0) & 0xf) * 4;
  const total = buf.readUInt16BE(offset + 2);
  if (total > length || total < ihl + 8 || sum16(buf, offset, offset + ihl) !== 0xffff) return undefined;
  const udp = offset + ihl;
  const udpLength = buf.readUInt16BE(udp + 4);
  if (udpLength !== total - ihl) return undefined;
  if (buf.readUInt16BE(udp + 6) !== 0) {
    const pseudo = sum16(buf, offset + 12, offset + 20, 17 + udpLength);
    if (sum16(buf, udp, udp + udpLength, pseudo) !== 0xffff) return undefined;
  }
  return {
    src: readIpv4(buf, offset + 12),
    srcPort: buf.readUInt16BE(udp),
    dst: readIpv4(buf, offset + 16),
    dstPort: buf.readUInt16BE(udp + 2),
    payload: Buffer.from(buf.subarray(udp + 8, udp + udpLength)),
  };
}

/**
 * Turns an IPv4/UDP packet into its reply in place by swapping addresses and ports. The checksums stay valid:
 * a one's-complement sum does not depend on the order of its words.
 */
export function swapIpv4UdpInPlace(buf: Buffer, offset: number): void {
  const ihl = ((buf[offset] ?? 0) & 0xf) * 4;
  const a = buf.readUInt32BE(offset + 12);
  buf.writeUInt32BE(buf.readUInt32BE(offset + 16), offset + 12);
  buf.writeUInt32BE(a, offset + 16);
  const port = buf.readUInt16BE(offset + ihl);
  buf.writeUInt16BE(buf.readUInt16BE(offset + ihl + 2), offset + ihl);
  buf.writeUInt16BE(port, offset + ihl + 2);
}

// ---------------------------------------------------------------------------------------------------------
// Waiting for events
// ---------------------------------------------------------------------------------------------------------

/** Collects items as they arrive; `take` waits (with a deadline) until enough have come. */
export class Collector<T> {
  private readonly items: T[] = [];
  private waiter: { n: number; resolve: (items: T[]) => void } | undefined;

  /** Items received and not yet taken. */
  get length(): number {
    return this.items.length;
  }

  push(item: T): void {
    this.items.push(item);
    if (this.waiter && this.items.length >= this.waiter.n) {
      const { n, resolve } = this.waiter;
      this.waiter = undefined;
      resolve(this.items.splice(0, n));
    }
  }

  /** Resolves with the first n items (removing them); rejects if they have not all arrived within timeoutMs. */
  take(n: number, timeoutMs = 5000): Promise<T[]> {
    if (this.waiter) throw new Error('Collector.take is already waiting');
    if (this.items.length >= n) return Promise.resolve(this.items.splice(0, n));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`timed out after ${timeoutMs} ms: ${this.items.length} of ${n} items arrived`));
      }, timeoutMs);
      this.waiter = {
        n,
        resolve: (items) => {
          clearTimeout(timer);
          resolve(items);
        },
      };
    });
  }
}

/** Resolves after the event loop has gone round `turns` times (for "nothing more happened" checks). */
export async function loopTurns(turns = 2): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------------------
// Namespaces and child processes
// ---------------------------------------------------------------------------------------------------------

/** Whether this process may create namespaces and TUN devices (root, /dev/net/tun, iproute2). */
export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    execFileSync('test', ['-c', '/dev/net/tun']);
    return true;
  } catch {
    return false;
  }
}

export interface TestNetns {
  /** The namespace's name (oktest-PID-RANDOM). */
  readonly name: string;
  /** Runs `ip -n NAME ARGS...` and returns its stdout. */
  ip(args: string[]): Promise<string>;
  /** Deletes the namespace (and every device in it); idempotent. */
  delete(): Promise<void>;
}

/** Creates a network namespace with lo up. It is deleted by delete(), or at the latest when this process exits. */
export async function createTestNetns(): Promise<TestNetns> {
  const name = `oktest-${process.pid}-${randomBytes(3).toString('hex')}`;
  let deleted = false;
  const deleteOnExit = (): void => {
    if (!deleted) execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  };
  await execFileAsync('ip', ['netns', 'add', name]);
  process.once('exit', deleteOnExit);
  const ns: TestNetns = {
    name,
    ip: async (args) => (await execFileAsync('ip', ['-n', name, ...args])).stdout,
    delete: async () => {
      if (deleted) return;
      deleted = true;
      process.removeListener('exit', deleteOnExit);
      await execFileAsync('ip', ['netns', 'del', name]);
    },
  };
  try {
    await ns.ip(['link', 'set', 'lo', 'up']);
  } catch (err) {
    await ns.delete();
    throw err;
  }
  return ns;
}

export interface ChildResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  /** The signal that ended the child, or null when it exited. */
  signal: NodeJS.Signals | null;
  /** stdout and stderr, interleaved. */
  output: string;
  /** True when the child had to be killed because it outlived timeoutMs. */
  timedOut: boolean;
}

/**
 * Runs a TypeScript file with `node --import tsx` (inside `netns` when given) and resolves when it exits.
 * A child that outlives timeoutMs is killed (SIGKILL), so a hang fails the test instead of stalling it.
 */
export function runTsChild(
  file: string,
  args: string[] = [],
  options: { netns?: string; timeoutMs?: number } = {},
): Promise<ChildResult> {
  const nodeArgs = ['--import', 'tsx', file, ...args];
  const [command, commandArgs] = options.netns
    ? ['ip', ['netns', 'exec', options.netns, process.execPath, ...nodeArgs]]
    : [process.execPath, nodeArgs];
  // Under `node --test` this variable makes node:test in the child speak the runner's binary protocol.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return new Promise((resolve, reject) => {
    const child = spawn(command, commandArgs, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let timedOut = false;
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, timedOut });
    });
  });
}
