/**
 * Tests of the addon's own rules (argument checks, poller lifetime) on UDP sockets, so they need no root.
 * Rules visible only from outside a process run in `native.child.ts`, judged by its exit.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Collector, runTsChild } from './fixtures.ts';
import { type NativeIo, loadNativeIo, nativeIoAvailable } from './native.ts';

// Never skipped: the addon is built by npm install; without it these tests fail.
if (!nativeIoAvailable())
  throw new Error('native addon not built: run npm install (or npm run build:native)');
const CHILD = fileURLToPath(new URL('./native.child.ts', import.meta.url));
/** How long a child may take to exit by itself (startup of node + tsx included). */
const EXIT_WITHIN_MS = 8000;

function loopbackTo(port: number): Buffer {
  const to = Buffer.alloc(18);
  to[15] = 1; // ::1
  to.writeUInt16BE(port, 16);
  return to;
}

function poll(io: NativeIo, fd: number, onBatch: (count: number) => void): number {
  return io.startPoll(
    fd,
    'recvmmsg',
    Buffer.alloc(4 * 256),
    256,
    0,
    4,
    new Uint32Array(4),
    Buffer.alloc(72),
    onBatch,
  );
}

describe('native addon', () => {
  it('rejects bad arguments with TypeError or RangeError and never crashes', () => {
    const io = loadNativeIo();
    const s = io.udpOpen(0);
    try {
      const buf = Buffer.alloc(1024);
      const lens = new Uint32Array(4);
      const addrs = Buffer.alloc(72);
      const cb = (): void => {};
      const bad: Array<[() => unknown, typeof TypeError | typeof RangeError]> = [
        [() => io.udpOpen(70000), RangeError],
        [() => io.udpOpen(1.5), RangeError],
        [() => io.udpOpen('80' as unknown as number), TypeError],
        [() => io.openTun('x'.repeat(16), false), RangeError],
        [() => io.startPoll(s.fd, 'recv' as 'read', buf, 256, 0, 4, lens, addrs, cb), TypeError],
        [() => io.startPoll(s.fd, 'recvmmsg', buf, 256, 256, 4, lens, addrs, cb), RangeError],
        [() => io.startPoll(s.fd, 'recvmmsg', buf, 512, 0, 4, lens, addrs, cb), RangeError],
        [() => io.startPoll(s.fd, 'recvmmsg', buf, 256, 0, 4, new Uint32Array(3), addrs, cb), RangeError],
        [() => io.startPoll(s.fd, 'recvmmsg', buf, 256, 0, 4, lens, Buffer.alloc(71), cb), RangeError],
        [() => io.startPoll(s.fd, 'recvmmsg', buf, 256, 0, 4, lens, null, cb), TypeError],
        [
          () => io.startPoll(s.fd, 'read', buf, 256, 0, 4, lens, null, 'cb' as unknown as () => void),
          TypeError,
        ],
        [() => io.startPoll(s.fd, 'read', buf, 256, 0, 2000, lens, null, cb), RangeError],
        [() => io.writePackets(s.fd, buf, Uint32Array.of(1000), Uint32Array.of(25), 1), RangeError],
        [() => io.writePackets(s.fd, buf, Uint32Array.of(0), Uint32Array.of(1), 2), RangeError],
        [() => io.writePackets(s.fd, buf, new Int32Array(1) as unknown as Uint32Array, lens, 1), TypeError],
        [
          () => io.writePackets(s.fd, buf, Uint32Array.of(0), Uint32Array.of(1), 1, new Uint32Array(1)),
          RangeError,
        ],
        [
          () => io.sendPackets(s.fd, buf, Uint32Array.of(0), Uint32Array.of(1), Buffer.alloc(17), 1),
          RangeError,
        ],
      ];
      for (const [call, type] of bad) assert.throws(call, type, String(call));
    } finally {
      io.closeFd(s.fd);
    }
  });

  it('turns system call failures into Errors with code, errno and syscall', () => {
    const io = loadNativeIo();
    const s = io.udpOpen(0);
    try {
      assert.throws(() => io.udpOpen(s.port), { code: 'EADDRINUSE', syscall: 'bind' });
    } finally {
      io.closeFd(s.fd);
    }
    assert.throws(() => io.closeFd(s.fd), { code: 'EBADF', errno: 9, syscall: 'close' });
    assert.throws(() => io.writePackets(s.fd, Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), 1), {
      code: 'EBADF',
    });
    assert.throws(
      () => io.sendPackets(s.fd, Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), loopbackTo(9), 1),
      {
        code: 'EBADF',
      },
    );
  });

  it('refuses to poll an fd twice, and stopPoll is true once then false', () => {
    const io = loadNativeIo();
    const s = io.udpOpen(0);
    try {
      const handle = poll(io, s.fd, () => {});
      assert.throws(() => poll(io, s.fd, () => {}), { code: 'EEXIST' });
      assert.equal(io.stopPoll(handle), true);
      assert.equal(io.stopPoll(handle), false);
      assert.equal(io.stopPoll(123456), false);
      io.stopPoll(poll(io, s.fd, () => {})); // the fd can be polled again once stopped
    } finally {
      io.closeFd(s.fd);
    }
  });

  it('delivers full batches first, then the remainder', async () => {
    const io = loadNativeIo();
    const rx = io.udpOpen(0);
    const tx = io.udpOpen(0);
    const counts = new Collector<number>();
    const handle = poll(io, rx.fd, (n) => counts.push(n));
    try {
      const payload = Buffer.from('0123456789');
      const n = 10; // more than one batch of 4
      const sent = io.sendPackets(
        tx.fd,
        payload,
        new Uint32Array(n),
        new Uint32Array(n).fill(payload.length),
        Buffer.concat(Array.from({ length: n }, () => loopbackTo(rx.port))),
        n,
      );
      assert.equal(sent, n);
      assert.deepEqual(await counts.take(3), [4, 4, 2]);
    } finally {
      io.stopPoll(handle);
      io.closeFd(rx.fd);
      io.closeFd(tx.fd);
    }
  });

  describe('poller lifetime, seen from a child process', () => {
    const run = (mode: string) => runTsChild(CHILD, [mode], { timeoutMs: EXIT_WITHIN_MS });

    it('exits by itself after stopPoll inside onBatch', async () => {
      const r = await run('stop-in-callback');
      assert.equal(r.timedOut, false, `still running after ${EXIT_WITHIN_MS} ms:\n${r.output}`);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /stopped true false/);
    });

    it('exits by itself after stopping a poller that never read', async () => {
      const r = await run('stop-idle');
      assert.equal(r.timedOut, false, r.output);
      assert.equal(r.code, 0, r.output);
    });

    it('exits by itself after closeFd on a polled fd', async () => {
      const r = await run('close-fd');
      assert.equal(r.timedOut, false, r.output);
      assert.equal(r.code, 0, r.output);
    });

    it('surfaces an exception thrown by onBatch as an uncaught exception', async () => {
      const r = await run('throw');
      assert.equal(r.timedOut, false, r.output);
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, /boom from onBatch/);
    });

    it('keeps delivering after an exception that an uncaughtException handler took', async () => {
      const r = await run('throw-handled');
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /handled=1 batches=2/);
    });

    it('tears down cleanly on process.exit with a running poller', async () => {
      const r = await run('exit-while-polling');
      assert.equal(r.code, 0, r.output);
      assert.equal(r.signal, null);
    });

    it('tears down cleanly when a worker with a running poller is terminated', async () => {
      const r = await run('worker-terminate');
      assert.equal(r.timedOut, false, r.output);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /worker terminated 1/);
    });
  });
});
