/**
 * Several processes, each with its own SqliteStore on the same file, allocate from one pool at the same time.
 *
 * SQLite's busy handler sleeps while another connection holds the write lock, and a process that commits in a
 * tight loop takes the lock again at once, so free-running processes mostly take turns. To make every
 * transaction contended, the processes run in lock-step rounds: in each round every process gets "go" at the
 * same moment and allocates a batch, and the next round starts when all have answered.
 *
 * This file is also the child script: run with CHILD_FLAG it opens the store, allocates a batch for every "go"
 * line on stdin and answers with the indices as a JSON line; it closes the store when stdin ends.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../store/sqlite.ts';
import { PoolAllocator } from './allocator.ts';
import { AddressPlan } from './plan.ts';

const CHILD_FLAG = '--allocator-child';
const PROCESSES = 4;
const PER_PROCESS = 500;
const BATCH = 5;
const ROUNDS = PER_PROCESS / BATCH;

function workerPool(): PoolAllocator {
  return new PoolAllocator('worker', new AddressPlan().workerCapacity);
}

function runChild(path: string, label: string): void {
  const store = new SqliteStore(path);
  const pool = workerPool();
  let n = 0;
  const lines = createInterface({ input: process.stdin });
  lines.on('line', () => {
    const indices: number[] = [];
    for (let i = 0; i < BATCH; i++)
      indices.push(store.transact((tx) => pool.allocate(tx, `${label}#${n++}`)));
    process.stdout.write(JSON.stringify(indices) + '\n');
  });
  lines.on('close', () => store.close());
  process.stdout.write('ready\n');
}

/** A child process driven one round at a time. */
class Child {
  private readonly waiting: Array<{ resolve: (line: string) => void; reject: (err: Error) => void }> = [];
  private stderr = '';
  private exited?: Error;
  readonly exit: Promise<number | null>;
  private readonly proc;

  constructor(
    path: string,
    readonly label: string,
  ) {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    this.proc = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(import.meta.url), CHILD_FLAG, path, label],
      { env, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.proc.stderr.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    createInterface({ input: this.proc.stdout }).on('line', (line) => this.waiting.shift()?.resolve(line));
    this.exit = new Promise((resolve) => {
      this.proc.once('exit', (code) => {
        this.exited = new Error(`child ${label} exited (${code}): ${this.stderr}`);
        for (const w of this.waiting.splice(0)) w.reject(this.exited);
        resolve(code);
      });
    });
  }

  /** The next line the child prints. */
  private next(): Promise<string> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  async ready(): Promise<void> {
    assert.equal(await this.next(), 'ready');
  }

  /** Lets the child allocate one batch; resolves with its indices. */
  round(): Promise<number[]> {
    const answer = this.next();
    this.proc.stdin.write('go\n');
    return answer.then((line) => JSON.parse(line) as number[]);
  }

  /** Stops the child if it still runs (cleanup after a failed test). */
  kill(): void {
    if (!this.exited) this.proc.kill();
  }

  async end(): Promise<void> {
    this.proc.stdin.end();
    assert.equal(await this.exit, 0, `child ${this.label} exit code (stderr: ${this.stderr})`);
  }
}

if (process.argv[2] === CHILD_FLAG) {
  const [, , , path, label] = process.argv;
  runChild(path!, label!);
} else {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-concurrency-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('PoolAllocator on one SQLite file shared by several processes', () => {
    it(`${PROCESSES} processes x ${PER_PROCESS} concurrent allocations: no index handed out twice`, async () => {
      const path = join(dir, 'shared.db');
      new SqliteStore(path).close(); // the file exists (WAL mode, table) before the processes race

      const children = Array.from({ length: PROCESSES }, (_, i) => new Child(path, `p${i}`));
      try {
        await Promise.all(children.map((c) => c.ready()));
        const got = new Map<string, number[]>(children.map((c) => [c.label, []]));
        for (let r = 0; r < ROUNDS; r++) {
          const batches = await Promise.all(children.map((c) => c.round()));
          batches.forEach((b, i) => got.get(children[i]!.label)!.push(...b));
          // nothing is released, so round r hands out exactly the next PROCESSES * BATCH indices
          const round = batches.flat().sort((a, b) => a - b);
          const first = r * PROCESSES * BATCH;
          assert.deepEqual(
            round,
            Array.from({ length: PROCESSES * BATCH }, (_, i) => first + i),
            `round ${r}`,
          );
        }
        await Promise.all(children.map((c) => c.end()));

        const all = [...got.values()].flat();
        assert.equal(all.length, PROCESSES * PER_PROCESS);
        assert.equal(new Set(all).size, all.length, 'every index was handed out once');

        // the store agrees: every index has the owner of the process that got it
        const store = new SqliteStore(path);
        const allocated = store.transact((tx) => workerPool().allocated(tx));
        store.close();
        assert.equal(allocated.length, all.length);
        const ownerOf = new Map(allocated.map((a) => [a.index, a.owner]));
        for (const [label, indices] of got) {
          assert.equal(indices.length, PER_PROCESS);
          indices.forEach((index, n) => assert.equal(ownerOf.get(index), `${label}#${n}`));
        }
      } finally {
        for (const c of children) c.kill();
      }
    });
  });
}
