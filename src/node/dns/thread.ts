/**
 * @module node/dns/thread
 * The node's DNS server in a worker thread of its own: its work (a flood of queries included) is scheduled by
 * the kernel beside the NetManager's packet forwarding instead of running between its batches. The thread
 * holds the server (server.ts, with the addon's batched UDP when `native`); this side hands it each new zone,
 * answers its asks (the table query by name) and its `used` reports, reads its counters, and writes its log
 * records to the NetManager's logger. Messages are plain structured-clone values (the zone is one).
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { AskResult, DnsCounters, DnsServerOptions } from './server.ts';
import type { ZoneData } from './zone.ts';

/** What the thread starts its server with: the server's options that are plain values, and how to log and read UDP. */
export type DnsThreadConfig = Omit<DnsServerOptions, 'ask' | 'used' | 'log' | 'io'> & {
  /** UDP through the native addon (loaded by the thread itself). */
  native: boolean;
  /** The logger's level: records below it are not sent over. */
  level: string;
};

export type DnsThreadOptions = Omit<DnsThreadConfig, 'level'> &
  Pick<DnsServerOptions, 'ask' | 'used' | 'log'>;

/** Messages to the thread. */
export type ToThread =
  | { t: 'zone'; zone: ZoneData }
  | { t: 'counters'; id: number }
  | { t: 'asked'; id: number; result: AskResult }
  | { t: 'close' };

/** Messages from the thread. */
export type FromThread =
  | { t: 'ready'; addresses: Array<{ host: string; port: number }> }
  | { t: 'failed'; message: string }
  | { t: 'ask'; id: number; job: string }
  | { t: 'used'; jobs: string[] }
  | { t: 'counters'; id: number; counters: DnsCounters }
  | { t: 'log'; line: string };

const FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER = new URL(FROM_SOURCE ? './worker.ts' : './worker.js', import.meta.url);
/**
 * Run from the TypeScript sources, a thread does not get the process's loader (tsx does not register itself
 * in workers): a small script registers it there first, then imports the entry.
 */
const BOOT = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER.href)}); })`;
const LEVEL_OF: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

export class DnsThread {
  private readonly counterRequests = new Map<
    number,
    { resolve: (c: DnsCounters) => void; reject: (err: Error) => void }
  >();
  private nextId = 1;
  private closing: Promise<void> | undefined;
  private exited = false;

  private constructor(
    private readonly worker: Worker,
    private readonly o: DnsThreadOptions,
    /** The bound UDP addresses (for tests that listen on port 0). */
    readonly addresses: ReadonlyArray<{ host: string; port: number }>,
  ) {}

  /** Starts the thread; resolves once its server listens on every address, rejects with why it cannot. */
  static start(o: DnsThreadOptions): Promise<DnsThread> {
    const { ask: _ask, used: _used, log, ...rest } = o;
    const config: DnsThreadConfig = { ...rest, level: log.level };
    const options = { workerData: config, name: 'oaknet-dns' };
    const worker = FROM_SOURCE ? new Worker(BOOT, { ...options, eval: true }) : new Worker(WORKER, options);
    return new Promise((resolve, reject) => {
      let thread: DnsThread | undefined;
      worker.on('message', (m: FromThread) => {
        if (m.t === 'ready') {
          thread = new DnsThread(worker, o, m.addresses);
          resolve(thread);
        } else if (m.t === 'failed') {
          reject(new Error(m.message));
          void worker.terminate();
        } else if (m.t === 'log') relay(log, m.line);
        else thread?.onMessage(m);
      });
      worker.on('error', (err) => {
        if (!thread) reject(err);
        else log.error({ err: err.message }, 'DNS thread failed; instances get no names');
      });
      worker.on('exit', (code) => {
        if (!thread) reject(new Error(`DNS thread exited (${code}) before listening`));
        else thread.onExit(code);
      });
    });
  }

  private onMessage(m: FromThread): void {
    switch (m.t) {
      case 'ask':
        this.o.ask(m.job).then(
          (result) => this.post({ t: 'asked', id: m.id, result }),
          () => this.post({ t: 'asked', id: m.id, result: 'unreachable' }),
        );
        break;
      case 'used':
        this.o.used?.(m.jobs);
        break;
      case 'counters':
        this.counterRequests.get(m.id)?.resolve(m.counters);
        this.counterRequests.delete(m.id);
        break;
      default:
        break;
    }
  }

  private onExit(code: number): void {
    this.exited = true;
    for (const r of this.counterRequests.values()) r.reject(new Error('the DNS thread has exited'));
    this.counterRequests.clear();
    if (!this.closing) this.o.log.error({ code }, 'DNS thread exited; instances get no names');
  }

  private post(m: ToThread): void {
    if (!this.exited) this.worker.postMessage(m);
  }

  setZone(zone: ZoneData): void {
    this.post({ t: 'zone', zone });
  }

  /** The server's counters, as the thread has them now. */
  counters(): Promise<DnsCounters> {
    if (this.exited) return Promise.reject(new Error('the DNS thread has exited'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.counterRequests.set(id, { resolve, reject });
      this.post({ t: 'counters', id });
    });
  }

  /** Closes the server and ends the thread (terminated if it does not end within a second). */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (this.exited) return resolve();
      const timer = setTimeout(() => void this.worker.terminate(), 1000);
      this.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.post({ t: 'close' });
    });
    return this.closing;
  }
}

/** A pino line of the thread, written through this side's logger (its level, bindings and destination). */
function relay(log: Logger, line: string): void {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return;
  }
  const { level, msg, time: _time, ...fields } = rec;
  log[LEVEL_OF[Number(level)] ?? 'info'](fields, typeof msg === 'string' ? msg : '');
}
