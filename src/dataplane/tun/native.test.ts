/**
 * Tests of the addon's own rules (argument checks, poller lifetime) on UDP sockets, so they need no root.
 * Rules visible only from outside a process run in `native.child.ts`, judged by its exit.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Collector, runTsChild } from './fixtures.ts';
import {
  GRO_MAX_SEGMENTS,
  type NativeIo,
  type PollMode,
  type PollRing,
  loadNativeIo,
  loadNativeTestIo,
  nativeIoAvailable,
} from './native.ts';

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
    {
      buffer: Buffer.alloc(4 * 256),
      slotSize: 256,
      headroom: 0,
      maxBatch: 4,
      lengths: new Uint32Array(4),
      addrs: Buffer.alloc(72),
    },
    onBatch,
  );
}

/** A batch of `count` packets at these offsets and lengths in buffer. */
function batch(buffer: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number) {
  return { buffer, offsets, lengths, count };
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
      /** startPoll with the ring's arguments in the order they used to be passed one by one. */
      const start = (
        mode: PollMode,
        buffer: Buffer,
        slotSize: number,
        headroom: number,
        maxBatch: number,
        lengths: Uint32Array,
        addrs: Buffer | null,
        onBatch: () => void,
        extra?: Uint32Array,
      ): number => {
        const ring: PollRing = { buffer, slotSize, headroom, maxBatch, lengths, addrs, extra: extra ?? null };
        return io.startPoll(s.fd, mode, ring, onBatch);
      };
      const bad: Array<[() => unknown, typeof TypeError | typeof RangeError]> = [
        [() => io.udpOpen(70000), RangeError],
        [() => io.udpOpen(1.5), RangeError],
        [() => io.udpOpen('80' as unknown as number), TypeError],
        [() => io.openTun('x'.repeat(16), false), RangeError],
        [() => start('recv' as 'read', buf, 256, 0, 4, lens, addrs, cb), TypeError],
        [() => start('recvmmsg', buf, 256, 256, 4, lens, addrs, cb), RangeError],
        [() => start('recvmmsg', buf, 512, 0, 4, lens, addrs, cb), RangeError],
        [() => start('recvmmsg', buf, 256, 0, 4, new Uint32Array(3), addrs, cb), RangeError],
        [() => start('recvmmsg', buf, 256, 0, 4, lens, Buffer.alloc(71), cb), RangeError],
        [() => start('recvmmsg', buf, 256, 0, 4, lens, null, cb), TypeError],
        [() => start('read', buf, 256, 0, 4, lens, null, 'cb' as unknown as () => void), TypeError],
        [() => start('read', buf, 256, 0, 2000, lens, null, cb), RangeError],
        [
          // recvmmsg-gro: GRO_MAX_SEGMENTS (128) entries per slot; 64 are not enough
          () =>
            start(
              'recvmmsg-gro',
              buf,
              256,
              0,
              4,
              new Uint32Array(4 * 64),
              Buffer.alloc(4 * 128 * 18),
              cb,
              new Uint32Array(4 * 128),
            ),
          RangeError,
        ],
        [() => io.writePackets(s.fd, batch(buf, Uint32Array.of(1000), Uint32Array.of(25), 1)), RangeError],
        [() => io.writePackets(s.fd, batch(buf, Uint32Array.of(0), Uint32Array.of(1), 2)), RangeError],
        [
          () => io.writePackets(s.fd, batch(buf, new Int32Array(1) as unknown as Uint32Array, lens, 1)),
          TypeError,
        ],
        [
          () =>
            io.writePackets(s.fd, batch(buf, Uint32Array.of(0), Uint32Array.of(1), 1), new Uint32Array(1)),
          RangeError,
        ],
        [
          () =>
            io.sendPackets(s.fd, 6, {
              ...batch(buf, Uint32Array.of(0), Uint32Array.of(1), 1),
              endpoints: Buffer.alloc(17),
            }),
          RangeError,
        ],
        [() => io.writePackets(s.fd, null as unknown as ReturnType<typeof batch>), TypeError],
        [
          () =>
            io.sendPackets(s.fd, 5 as 6, {
              ...batch(buf, Uint32Array.of(0), Uint32Array.of(1), 1),
              endpoints: Buffer.alloc(18),
            }),
          RangeError,
        ],
        [
          () =>
            io.writeVnetPackets(s.fd, {
              ...batch(buf, Uint32Array.of(0), Uint32Array.of(1), 2),
              offsets: new Uint32Array(2),
              lengths: new Uint32Array(2),
              gso: new Uint32Array(1),
            }),
          RangeError,
        ],
      ];
      for (const [call, type] of bad) assert.throws(call, type, String(call));
    } finally {
      io.closeFd(s.fd);
    }
  });

  it('exports the test-only functions from its test build alone', () => {
    const production = loadNativeIo() as unknown as Record<string, unknown>;
    const test = loadNativeTestIo() as unknown as Record<string, unknown>;
    for (const name of ['segmentPackets', 'coalescePackets']) {
      assert.equal(name in production, false, `the production addon exports ${name}`);
      assert.equal(typeof test[name], 'function', `the test build lacks ${name}`);
    }
    assert.deepEqual(
      Object.keys(production).sort(),
      Object.keys(test)
        .filter((name) => name !== 'segmentPackets' && name !== 'coalescePackets')
        .sort(),
      'both builds share everything else',
    );
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
    assert.throws(
      () => io.writePackets(s.fd, batch(Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), 1)),
      {
        code: 'EBADF',
      },
    );
    assert.throws(
      () =>
        io.sendPackets(s.fd, s.family, {
          ...batch(Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), 1),
          endpoints: loopbackTo(9),
        }),
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
      const sent = io.sendPackets(tx.fd, tx.family, {
        ...batch(payload, new Uint32Array(n), new Uint32Array(n).fill(payload.length), n),
        endpoints: Buffer.concat(Array.from({ length: n }, () => loopbackTo(rx.port))),
      });
      assert.equal(sent, n);
      assert.deepEqual(await counts.take(3), [4, 4, 2]);
    } finally {
      io.stopPoll(handle);
      io.closeFd(rx.fd);
      io.closeFd(tx.fd);
    }
  });

  it('sizes recvmmsg-gro entries for 128 datagrams per slot', () => {
    assert.equal(GRO_MAX_SEGMENTS, 128);
    const io = loadNativeIo();
    const s = io.udpOpen(0);
    try {
      const entries = 4 * GRO_MAX_SEGMENTS;
      const handle = io.startPoll(
        s.fd,
        'recvmmsg-gro',
        {
          buffer: Buffer.alloc(4 * 256),
          slotSize: 256,
          headroom: 0,
          maxBatch: 4,
          lengths: new Uint32Array(entries),
          addrs: Buffer.alloc(entries * 18),
          extra: new Uint32Array(entries),
        },
        () => {},
      );
      assert.equal(io.stopPoll(handle), true);
    } finally {
      io.closeFd(s.fd);
    }
  });

  // /dev/kmsg fails a read too small for its next record with EINVAL and keeps the record, so every read of
  // a poller with tiny slots fails that way: what a TUN's read does, once per packet, for a packet it cannot
  // describe in a virtio header. Reading /dev/kmsg takes root (CAP_SYSLOG), which the tests have (CI runs them as
  // root on Linux, where /dev/kmsg always exists: no skip).
  it('in read-vnet mode takes an EINVAL read as one dropped packet (length 0) and ends a batch after 64 in a row', async () => {
    const io = loadNativeIo();
    const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const maxBatch = 100;
    const lengths = new Uint32Array(maxBatch).fill(7);
    const gso = new Uint32Array(maxBatch).fill(7);
    const batches = new Collector<{ count: number; lengths: number[]; gso: number[] }>();
    let seen = 0;
    let handle = 0;
    try {
      handle = io.startPoll(
        fd,
        'read-vnet',
        { buffer: Buffer.alloc(maxBatch * 16), slotSize: 16, headroom: 0, maxBatch, lengths, extra: gso },
        (count) => {
          const n = Math.max(count, 0);
          batches.push({
            count,
            lengths: Array.from(lengths.subarray(0, n)),
            gso: Array.from(gso.subarray(0, n)),
          });
          lengths.fill(7);
          gso.fill(7);
          if (++seen === 2 || count < 0) io.stopPoll(handle);
        },
      );
      const got = await batches.take(2);
      for (const b of got) {
        assert.deepEqual(b, {
          count: 64,
          lengths: Array<number>(64).fill(0),
          gso: Array<number>(64).fill(0),
        });
      }
    } finally {
      io.stopPoll(handle);
      fs.closeSync(fd);
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
