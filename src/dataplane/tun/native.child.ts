/**
 * Child process for `native.test.ts`: each mode exercises one lifetime rule of the addon's poller that can
 * only be seen from outside the process (does it exit by itself, does an exception surface, does teardown of
 * a worker or of the process with a running poller stay clean). Usage: node --import tsx native.child.ts MODE
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { type NativeIo, loadNativeIo } from './native.ts';

const ADDON = fileURLToPath(new URL('../../../native/build/Release/oaknet_native.node', import.meta.url));

/** A UDP socket polled with recvmmsg, and a way to send it datagrams from a second socket. */
function udpPoller(
  io: NativeIo,
  onBatch: (count: number) => void,
): { handle: number; fd: number; poke: () => void } {
  const rx = io.udpOpen(0);
  const tx = io.udpOpen(0);
  const handle = io.startPoll(
    rx.fd,
    'recvmmsg',
    {
      buffer: Buffer.alloc(8 * 2048),
      slotSize: 2048,
      headroom: 0,
      maxBatch: 8,
      lengths: new Uint32Array(8),
      addrs: Buffer.alloc(8 * 18),
    },
    onBatch,
  );
  const to = Buffer.alloc(18);
  to[15] = 1; // ::1
  to.writeUInt16BE(rx.port, 16);
  const payload = Buffer.from('poke');
  return {
    handle,
    fd: rx.fd,
    poke: () => {
      io.sendPackets(tx.fd, tx.family, {
        buffer: payload,
        offsets: Uint32Array.of(0),
        lengths: Uint32Array.of(payload.length),
        count: 1,
        endpoints: to,
      });
    },
  };
}

const io = loadNativeIo();
const mode = process.argv[2];

switch (mode) {
  // Stops the poller from inside its callback: nothing else keeps the loop alive, so the process exits.
  case 'stop-in-callback': {
    const p = udpPoller(io, () => {
      console.log('stopped', io.stopPoll(p.handle), io.stopPoll(p.handle));
    });
    p.poke();
    break;
  }
  // Starts and immediately stops a poller that never saw data.
  case 'stop-idle': {
    const p = udpPoller(io, () => {});
    console.log('stopped', io.stopPoll(p.handle));
    break;
  }
  // closeFd on a polled fd stops its poller too.
  case 'close-fd': {
    const p = udpPoller(io, () => {});
    io.closeFd(p.fd);
    console.log('closed');
    break;
  }
  // An exception thrown by onBatch is an uncaught exception: with no handler the process dies with it.
  case 'throw': {
    const p = udpPoller(io, () => {
      throw new Error('boom from onBatch');
    });
    p.poke();
    break;
  }
  // With an uncaughtException handler, the poller keeps delivering after the exception.
  case 'throw-handled': {
    let handled = 0;
    let batches = 0;
    process.on('uncaughtException', (err) => {
      handled++;
      console.log('handled', err.message);
      p.poke();
    });
    const p = udpPoller(io, () => {
      batches++;
      if (batches === 1) throw new Error('first batch fails');
      io.stopPoll(p.handle);
      console.log(`handled=${handled} batches=${batches}`);
    });
    p.poke();
    break;
  }
  // process.exit() while a poller runs: the environment teardown hook closes it without a crash.
  case 'exit-while-polling': {
    udpPoller(io, () => {});
    setImmediate(() => process.exit(0));
    break;
  }
  // A worker thread with a running poller is terminated: its environment is torn down, the process lives on.
  case 'worker-terminate': {
    const source = `
      const { parentPort } = require('node:worker_threads');
      const io = require(${JSON.stringify(ADDON)});
      const rx = io.udpOpen(0);
      const ring = {
        buffer: Buffer.alloc(8 * 2048), slotSize: 2048, headroom: 0, maxBatch: 8,
        lengths: new Uint32Array(8), addrs: Buffer.alloc(8 * 18),
      };
      io.startPoll(rx.fd, 'recvmmsg', ring, () => {});
      parentPort.postMessage('polling');
    `;
    const worker = new Worker(source, { eval: true });
    worker.once('message', () => {
      void worker.terminate().then((code) => console.log('worker terminated', code));
    });
    break;
  }
  default:
    console.error(`unknown mode ${mode}`);
    process.exitCode = 2;
}
