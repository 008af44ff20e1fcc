/**
 * Durability under a crash: `kill -9` the root process in the middle of an allocation storm (worker
 * subnetworks and services from 16 concurrent clients), restart it on the same store, and check that every
 * allocation it acknowledged is still there and that no address was handed out twice, before or after.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RootClient } from '../../src/protocol/root-client.ts';
import { startRootProcess, type OaknetProcess } from '../support/oaknet-process.ts';
import { freePort } from '../support/ports.ts';

const CLUSTER = 'crash-cluster';
const LANES = 16;

describe('root service manager killed with SIGKILL during an allocation storm', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-crash-'));
  const running: OaknetProcess[] = [];
  after(async () => {
    for (const p of running) await p.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(port: number): Promise<{ proc: OaknetProcess; url: string }> {
    // durability, not authentication, is under test here: plain http keeps the storm simple
    const started = await startRootProcess(dir, port, { insecure: true });
    running.push(started.proc);
    return started;
  }

  const post = (url: string, body: unknown) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('keeps every acknowledged allocation and never hands out an address twice', async () => {
    const port = await freePort();
    let { proc, url } = await start(port);
    assert.equal(
      (
        await post(`${url}/api/net/cluster`, {
          cluster_id: CLUSTER,
          cluster_address: '127.0.0.1',
          cluster_port: 9,
        })
      ).status,
      200,
    );

    const ackedWorkers = new Map<string, string>(); // worker -> subnet it was told
    const ackedServices = new Set<string>(); // job names whose creation was acknowledged
    const killAfter = 200 + Math.floor(Math.random() * 400);
    let reached!: () => void;
    const enough = new Promise<void>((r) => (reached = r));
    const acked = () => {
      if (ackedWorkers.size + ackedServices.size >= killAfter) reached();
    };
    const lane = async (n: number) => {
      for (let i = 0; ; i++) {
        try {
          if (i % 2 === 0) {
            const worker = `w${n}-${i}`;
            const res = await fetch(`${url}/api/net/subnet?cluster_id=${CLUSTER}&worker_id=${worker}`);
            if (!res.ok) return;
            ackedWorkers.set(worker, ((await res.json()) as { subnet_addr: string }).subnet_addr);
          } else {
            const svc = `s${n}x${i}`;
            const res = await post(`${url}/api/net/service/deploy`, {
              _id: `job-${svc}`,
              deployment_descriptor: {
                app_name: 'crash',
                app_ns: 'test',
                service_name: svc,
                service_ns: 'v1',
              },
            });
            if (!res.ok) return;
            await res.text();
            ackedServices.add(`crash.test.${svc}.v1`);
          }
          acked();
        } catch {
          return; // the root is gone
        }
      }
    };
    const lanes = Array.from({ length: LANES }, (_, n) => lane(n));
    await enough;
    proc.child.kill('SIGKILL');
    assert.equal(await proc.exited, 'SIGKILL');
    await Promise.all(lanes);

    ({ proc, url } = await start(port));
    // every page of the lists (there are more than one page's worth)
    const workers = await new RootClient(url).workers();
    const jobs = await new RootClient(url).services();

    // every acknowledged allocation survived, unchanged
    const byWorker = new Map(workers.map((w) => [w.worker_id, w.subnet.split('/')[0]]));
    for (const [worker, subnet] of ackedWorkers)
      assert.equal(byWorker.get(worker), subnet, `worker ${worker} kept ${subnet}`);
    const names = new Set(jobs.map((j) => j.job_name));
    for (const name of ackedServices) assert.ok(names.has(name), `service ${name} survived`);

    // nothing was handed out twice, and allocation goes on without collisions
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${url}/api/net/subnet?cluster_id=${CLUSTER}&worker_id=after-${i}`);
      assert.equal(res.status, 200);
      const svc = await post(`${url}/api/net/service/deploy`, {
        _id: `job-after-${i}`,
        deployment_descriptor: {
          app_name: 'crash',
          app_ns: 'test',
          service_name: `after${i}`,
          service_ns: 'v1',
        },
      });
      assert.equal(svc.status, 200);
    }
    const allWorkers = await new RootClient(url).workers();
    const subnets = allWorkers.flatMap((w) => [w.subnet, w.subnet_v6]);
    assert.equal(new Set(subnets).size, subnets.length, 'no subnetwork handed out twice');
    const allJobs = await new RootClient(url).services();
    const ips = allJobs.flatMap((j) => j.service_ip_list.flatMap((s) => [s.Address, s.Address_v6]));
    assert.equal(new Set(ips).size, ips.length, 'no ServiceIP handed out twice');
    assert.ok(ackedWorkers.size > 0 && ackedServices.size > 0);
    assert.equal(await proc.stop(), 0, 'the root stops cleanly on SIGTERM');
  });
});
