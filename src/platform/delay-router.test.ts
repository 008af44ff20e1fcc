import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { FakeTun } from '../dataplane/tun/fake.ts';
import { FakeRunner } from '../node/net/runner.ts';
import {
  applyDelayRules,
  DelayRouter,
  readAppliedGeneration,
  readDelayConfig,
  writeDelayConfig,
} from './delay-router.ts';

const A = '198.18.0.11';
const B = '198.18.0.12';
const C = '198.18.0.13';

/** A 20-byte IPv4 header from `src` to `dst` whose identification field carries `id`. */
function packet(src: string, dst: string, id: number): Buffer {
  const p = Buffer.alloc(28);
  p[0] = 0x45;
  p.writeUInt16BE(28, 2);
  p.writeUInt16BE(id, 4);
  p[8] = 64;
  p[9] = 17;
  Buffer.from(src.split('.').map(Number)).copy(p, 12);
  Buffer.from(dst.split('.').map(Number)).copy(p, 16);
  return p;
}

/** Resolves with the ids and arrival times (ms after `t0`) of the first `n` packets the router writes. */
function collect(tun: FakeTun, n: number, t0: number): Promise<{ id: number; at: number }[]> {
  const got: { id: number; at: number }[] = [];
  return new Promise((resolve) => {
    tun.onWrite = (p) => {
      got.push({ id: p.readUInt16BE(4), at: performance.now() - t0 });
      if (got.length === n) resolve(got);
    };
  });
}

describe('DelayRouter', () => {
  it('passes unknown pairs at once and holds delayed ones for their delay, in order', async () => {
    const tun = new FakeTun();
    const router = new DelayRouter(tun);
    router.setDelays([{ src: A, dst: B, ms: 30 }]);
    router.start();
    try {
      const t0 = performance.now();
      const done = collect(tun, 4, t0);
      tun.inject(packet(A, B, 1));
      tun.inject(packet(A, C, 2)); // not delayed
      tun.inject(packet(A, B, 3));
      tun.inject(packet(B, A, 4)); // the other direction is not delayed either
      const got = await done;
      assert.deepEqual(
        got.map((g) => g.id),
        [2, 4, 1, 3],
      );
      for (const g of got.slice(2)) assert.ok(g.at >= 29, `held ${g.at} ms`);
      assert.deepEqual(router.counters, { passed: 2, delayed: 2, dropped: 0 });
    } finally {
      router.close();
    }
  });

  it('takes new delays at once and drops beyond its bound', async () => {
    const tun = new FakeTun();
    const router = new DelayRouter(tun, 2);
    router.setDelays([{ src: A, dst: B, ms: 20 }]);
    router.start();
    try {
      const t0 = performance.now();
      let done = collect(tun, 2, t0);
      for (let i = 1; i <= 3; i++) tun.inject(packet(A, B, i)); // the third exceeds maxQueued
      assert.deepEqual(
        (await done).map((g) => g.id),
        [1, 2],
      );
      assert.equal(router.counters.dropped, 1);
      router.setDelays([]);
      done = collect(tun, 1, performance.now());
      tun.inject(packet(A, B, 9));
      const [late] = await done;
      assert.equal(late?.id, 9);
      assert.ok((late?.at ?? 99) < 15, `passed after ${late?.at} ms`);
    } finally {
      router.close();
    }
  });
});

describe('delay router control', () => {
  it('round-trips the config file and reads the applied generation', () => {
    const dir = mkdtempSync(join(tmpdir(), 'oaknet-delay-'));
    try {
      const path = join(dir, 'config.json');
      writeDelayConfig(path, { generation: 3, delays: [{ src: A, dst: B, ms: 5 }] });
      assert.deepEqual(readDelayConfig(path), { generation: 3, delays: [{ src: A, dst: B, ms: 5 }] });
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.equal(readAppliedGeneration(join(dir, 'missing.json')), undefined);
      assert.equal(readAppliedGeneration(path), 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('replaces the previous rules: return path first, then one rule per pair', async () => {
    const runner = new FakeRunner((call) =>
      call.args.includes('rule') && call.args.includes('list')
        ? { stdout: '[{"priority":0,"table":"local"},{"priority":999},{"priority":1000},{"priority":32766}]' }
        : undefined,
    );
    await applyDelayRules(runner, 'x-sw', 'x-dly', [
      { src: A, dst: B, ms: 5 },
      { src: B, dst: A, ms: 5 },
    ]);
    const batch = runner.calls.find((c) => c.args.includes('-batch'));
    assert.deepEqual(batch?.input?.trim().split('\n'), [
      'rule del pref 999',
      'rule del pref 1000',
      'route replace default dev x-dly table 100',
      'rule add pref 999 iif x-dly lookup main',
      `rule add pref 1000 from ${A}/32 to ${B}/32 table 100`,
      `rule add pref 1001 from ${B}/32 to ${A}/32 table 100`,
    ]);
  });
});
