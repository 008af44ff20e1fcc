/**
 * @module node/dns/worker
 * The DNS thread's entry (thread.ts starts it): runs the node's DNS server with the configuration it was
 * given, asks the NetManager's thread what only it knows (jobs the zone does not hold, names in use), and
 * sends its log records there.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { pino } from 'pino';
import { DnsServer, type AskResult } from './server.ts';
import type { DnsThreadConfig, FromThread, ToThread } from './thread.ts';

/** The DNS thread's nice value: the NetManager's own thread (0) forwards packets first. */
const DNS_THREAD_NICE = 10;

if (!parentPort) throw new Error('node/dns/worker runs as a worker thread (node/dns/thread.ts starts it)');
const port: MessagePort = parentPort;
const config = workerData as DnsThreadConfig;
const send = (m: FromThread) => port.postMessage(m);
const log = pino(
  { level: config.level, base: null, timestamp: false },
  { write: (line: string) => send({ t: 'log', line }) },
);
const asks = new Map<number, (r: AskResult) => void>();
let nextAsk = 1;

async function main(): Promise<void> {
  const io = config.native ? (await import('../../dataplane/tun/native.ts')).loadNativeIo() : undefined;
  // below the NetManager's thread: under a flood of queries the kernel runs packet forwarding first
  if (io) io.setThreadNice(DNS_THREAD_NICE);
  const { native: _native, level: _level, ...options } = config;
  let server: DnsServer;
  try {
    server = await DnsServer.start({
      ...options,
      ...(io ? { io } : {}),
      log,
      ask: (job) =>
        new Promise((resolve) => {
          const id = nextAsk++;
          asks.set(id, resolve);
          send({ t: 'ask', id, job });
        }),
      used: (jobs) => send({ t: 'used', jobs }),
    });
  } catch (err) {
    send({ t: 'failed', message: err instanceof Error ? err.message : String(err) });
    return;
  }
  port.on('message', (m: ToThread) => {
    switch (m.t) {
      case 'zone':
        server.setZone(m.zone);
        break;
      case 'asked':
        asks.get(m.id)?.(m.result);
        asks.delete(m.id);
        break;
      case 'counters':
        send({ t: 'counters', id: m.id, counters: { ...server.counters } });
        break;
      case 'close':
        void server.close().then(() => port.close());
        break;
    }
  });
  log.debug({ addresses: server.addresses() }, 'DNS thread listening');
  send({ t: 'ready', addresses: server.addresses() });
}

void main();
