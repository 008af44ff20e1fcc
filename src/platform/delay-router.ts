/**
 * @module platform/delay-router
 * The userspace latency backend (see `latency.ts` for why it exists): a TUN device in the switch namespace
 * receives only the packets of delayed (source, destination) pairs, policy-routed there by `ip rule`s; this
 * router holds each packet for its pair's one-way delay and writes it back into the TUN, from where the
 * kernel routes it on to its destination. Packets of pairs it does not know go back at once.
 *
 * One FIFO per distinct delay value keeps the order of every pair's packets (a pair has one delay, and the
 * due times within one FIFO only grow); each FIFO has at most one timer. Memory is bounded: beyond
 * `maxQueued` packets held in total, new ones are dropped and counted.
 *
 * This file is the logic and its control plane (config file, ip rules); `delay-router.main.ts` is the process.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { PacketBatch, Tun } from '../dataplane/tun/tun.ts';
import { BatchBuilder } from '../dataplane/tun/tun.ts';
import type { CommandRunner } from '../node/net/runner.ts';
import { InvalidInputError } from '../errors.ts';
import { writePrivateFileSync } from '../store/private-files.ts';
import type { PairDelay } from './latency.ts';
import { ipIn, ipJsonIn } from './netns.ts';

/** Routing table of the switch namespace that sends delayed pairs into the router's TUN. */
export const DELAY_TABLE = 100;
/** Priority of the first delay rule; rule i gets RULE_PREF_BASE + i. */
const RULE_PREF_BASE = 1000;
/** Rules of the delay router have priorities below this. */
const RULE_PREF_LIMIT = 32_000;
/** Largest packet the router handles (the underlay MTU). */
export const DELAY_MTU = 1500;

/** What the router process reads: the delays to apply, and a generation it acknowledges once applied. */
export interface DelayConfig {
  /** Increases with every change; echoed in the applied file. */
  generation: number;
  /** Delayed pairs. */
  delays: PairDelay[];
}

/** Counters of a DelayRouter. */
export interface DelayCounters {
  /** Packets written back at once (pair not delayed). */
  passed: number;
  /** Packets written back after their delay. */
  delayed: number;
  /** Packets dropped: queue full, truncated, or refused by the device. */
  dropped: number;
}

function ipv4ToU32(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new InvalidInputError(`bad IPv4 address ${JSON.stringify(ip)}`);
  }
  return (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) >>> 0;
}

class DelayLine {
  packets: Buffer[] = [];
  due: number[] = [];
  head = 0;
  timer: NodeJS.Timeout | undefined;

  get size(): number {
    return this.packets.length - this.head;
  }

  compact(): void {
    if (this.head > 1024 && this.head * 2 > this.packets.length) {
      this.packets = this.packets.slice(this.head);
      this.due = this.due.slice(this.head);
      this.head = 0;
    }
  }
}

/** Holds packets read from a TUN for their pair's delay, then writes them back. */
export class DelayRouter {
  /** Counters since start. */
  readonly counters: DelayCounters = { passed: 0, delayed: 0, dropped: 0 };
  private table = new Map<number, Map<number, number>>();
  private readonly lines = new Map<number, DelayLine>();
  private readonly immediate = new BatchBuilder(1024);
  private readonly out: BatchBuilder;
  private readonly scratch: Buffer;
  private queued = 0;
  private closed = false;

  constructor(
    private readonly tun: Tun,
    private readonly maxQueued = 100_000,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.out = new BatchBuilder(64);
    this.scratch = Buffer.alloc(64 * 2048);
    this.out.reset(this.scratch);
  }

  /** Replaces the delays; packets already held keep their due time. */
  setDelays(delays: readonly PairDelay[]): void {
    const table = new Map<number, Map<number, number>>();
    for (const d of delays) {
      const src = ipv4ToU32(d.src);
      let row = table.get(src);
      if (!row) table.set(src, (row = new Map<number, number>()));
      row.set(ipv4ToU32(d.dst), d.ms);
    }
    this.table = table;
  }

  /** Starts reading the TUN. */
  start(onError?: (err: Error) => void): void {
    this.tun.start((batch) => this.onBatch(batch), onError);
  }

  /** Drops what is held, stops the timers and closes the TUN; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const line of this.lines.values()) clearTimeout(line.timer);
    this.lines.clear();
    this.tun.close();
  }

  private onBatch(batch: PacketBatch): void {
    const now = this.now();
    this.immediate.reset(batch.buffer);
    for (let i = 0; i < batch.count; i++) {
      const off = batch.offsets[i] ?? 0;
      const len = batch.lengths[i] ?? 0;
      if (len === 0) {
        this.counters.dropped++;
        continue;
      }
      const buf = batch.buffer;
      const ms =
        len >= 20 && (buf[off] ?? 0) >> 4 === 4
          ? this.table.get(buf.readUInt32BE(off + 12))?.get(buf.readUInt32BE(off + 16))
          : undefined;
      if (ms === undefined || ms <= 0) {
        this.immediate.push(off, len);
        continue;
      }
      if (this.queued >= this.maxQueued) {
        this.counters.dropped++;
        continue;
      }
      this.hold(ms, Buffer.from(buf.subarray(off, off + len)), now + ms);
    }
    if (this.immediate.count > 0) {
      const n = this.tun.write(this.immediate);
      this.counters.passed += n;
      this.counters.dropped += this.immediate.count - n;
    }
  }

  private hold(ms: number, packet: Buffer, due: number): void {
    let line = this.lines.get(ms);
    if (!line) this.lines.set(ms, (line = new DelayLine()));
    line.packets.push(packet);
    line.due.push(due);
    this.queued++;
    if (line.timer === undefined) this.arm(line, ms);
  }

  private arm(line: DelayLine, wait: number): void {
    line.timer = setTimeout(() => this.release(line), Math.max(0, wait));
  }

  private release(line: DelayLine): void {
    line.timer = undefined;
    if (this.closed) return;
    const now = this.now();
    this.out.reset(this.scratch);
    let used = 0;
    while (line.size > 0 && (line.due[line.head] ?? 0) <= now + 0.5) {
      const packet = line.packets[line.head]!;
      if (this.out.count === this.out.capacity || used + packet.length > this.scratch.length) {
        this.flushOut();
        used = 0;
      }
      packet.copy(this.scratch, used);
      this.out.push(used, packet.length);
      used += packet.length;
      line.packets[line.head] = EMPTY;
      line.head++;
      this.queued--;
    }
    this.flushOut();
    line.compact();
    if (line.size > 0) this.arm(line, (line.due[line.head] ?? now) - now);
  }

  private flushOut(): void {
    if (this.out.count === 0) return;
    const n = this.tun.write(this.out);
    this.counters.delayed += n;
    this.counters.dropped += this.out.count - n;
    this.out.reset(this.scratch);
  }
}

const EMPTY = Buffer.alloc(0);

/** Writes the router's config atomically (0600 temp file + rename). */
export function writeDelayConfig(path: string, config: DelayConfig): void {
  writePrivateFileSync(path, JSON.stringify(config) + '\n');
}

/** Reads the router's config; InvalidInputError when malformed. */
export function readDelayConfig(path: string): DelayConfig {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<DelayConfig>;
  if (typeof parsed.generation !== 'number' || !Array.isArray(parsed.delays)) {
    throw new InvalidInputError(`${path}: not a delay config`);
  }
  for (const d of parsed.delays) {
    if (typeof d.src !== 'string' || typeof d.dst !== 'string' || typeof d.ms !== 'number') {
      throw new InvalidInputError(`${path}: bad delay entry ${JSON.stringify(d)}`);
    }
  }
  return { generation: parsed.generation, delays: parsed.delays };
}

/** The generation the router last applied (its applied file), or undefined before it has. */
export function readAppliedGeneration(path: string): number | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as { generation?: unknown };
    return typeof parsed.generation === 'number' ? parsed.generation : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Points the switch namespace's policy routing at the router: table DELAY_TABLE sends everything into
 * `tun`, one rule per delayed pair (replacing the previous set) selects that table, and a rule before them
 * sends what the router writes back (input interface `tun`) through the main table, so it is not looped
 * into the TUN again.
 */
export async function applyDelayRules(
  runner: CommandRunner,
  switchNs: string,
  tun: string,
  delays: readonly PairDelay[],
): Promise<void> {
  if (delays.length > RULE_PREF_LIMIT - RULE_PREF_BASE) {
    throw new InvalidInputError(
      `${delays.length} delayed node pairs: the delay router takes at most ${RULE_PREF_LIMIT - RULE_PREF_BASE}`,
    );
  }
  const existing = await ipJsonIn(runner, switchNs, ['rule', 'list']);
  const prefs = existing
    .map((r) => (typeof r === 'object' && r !== null ? (r as { priority?: unknown }).priority : undefined))
    .filter((p): p is number => typeof p === 'number' && p >= RULE_PREF_BASE - 1 && p < RULE_PREF_LIMIT);
  const lines = [
    ...prefs.map((p) => `rule del pref ${p}`),
    `route replace default dev ${tun} table ${DELAY_TABLE}`,
    `rule add pref ${RULE_PREF_BASE - 1} iif ${tun} lookup main`,
    ...delays.map(
      (d, i) => `rule add pref ${RULE_PREF_BASE + i} from ${d.src}/32 to ${d.dst}/32 table ${DELAY_TABLE}`,
    ),
  ];
  await ipIn(runner, switchNs, lines);
}
