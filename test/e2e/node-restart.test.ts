/**
 * A NetManager restart changes nothing visible: the node keeps its subnetwork (it asks the cluster for none),
 * its running instances keep their namespace addresses, and traffic to them works again.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createPlatform, type Platform } from '../../src/platform/platform.ts';
import { FIXTURES, inNetns } from '../support/workloads.ts';

describe('NetManager restart', { timeout: 300_000 }, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-restart-e2e-'));
  let platform: Platform;

  before(async () => {
    platform = await createPlatform({ stateDir, nodes: 2 }, pino({ level: 'warn' }));
    await platform.startWorkload({
      name: 'web',
      node: 'n2',
      service: 'e2e.restart.web.v1',
      instance: 0,
      command: ['python3', join(FIXTURES, 'server.py'), 'W0'],
      readyLine: 'W0 ready',
    });
    await platform.startWorkload({
      name: 'cli',
      node: 'n1',
      service: 'e2e.restart.cli.v1',
      instance: 0,
      command: ['sleep', 'infinity'],
    });
  });
  after(async () => {
    await platform?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('keeps the subnetwork and the instance addresses, and serves again', async () => {
    const job = async () => platform.rootClient().jobByName('e2e.restart.web.v1');
    const rr = (await job()).service_ip_list.find((s) => s.IpType === 'RR')!.Address!;
    const cli = platform.workloads.find((w) => w.name === 'cli')!.netns;
    assert.match(await inNetns(cli, ['curl', '-s', '-m', '5', `http://${rr}/`]), /^W0 /);
    const before = await platform.nodeClient('n2').status();
    const workersBefore = await platform.rootClient().workers();

    await platform.restartNode('n2');

    const after = await platform.nodeClient('n2').status();
    assert.equal(after.subnet, before.subnet, 'same subnetwork');
    assert.equal(after.subnet_v6, before.subnet_v6);
    assert.deepEqual(
      after.instances.map((i) => [i.service, i.instance, i.ns_address, i.ns_address_v6]),
      before.instances.map((i) => [i.service, i.instance, i.ns_address, i.ns_address_v6]),
      'the instance kept its namespace addresses',
    );
    const workersAfter = await platform.rootClient().workers();
    assert.deepEqual(workersAfter, workersBefore, 'no new subnetwork was allocated');
    assert.equal((await job()).instance_list[0]?.namespace_ip, before.instances[0]?.ns_address);
    // traffic works again (the restarted node re-announced the instance and rebuilt its wiring)
    const deadline = Date.now() + 10_000;
    let answer = '';
    while (Date.now() < deadline) {
      answer = await inNetns(cli, ['curl', '-s', '-m', '2', `http://${rr}/`]).catch(() => '');
      if (answer.startsWith('W0 ')) break;
    }
    assert.match(answer, /^W0 /);
    // the node engine registering again: the same ID is fine, another one is refused as upstream does (400)
    await platform.nodeClient('n2').register(after.worker_id!);
    await assert.rejects(platform.nodeClient('n2').register('aaaaaaaaaaaaaaaaaaaaaaaa'), (err: unknown) => {
      const e = err as { code?: string; message?: string };
      return e.code === 'E_INVALID_INPUT' && /already registered as/.test(e.message ?? '');
    });
  });
});
