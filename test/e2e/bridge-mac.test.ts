/**
 * The node's bridge keeps its MAC address when an instance goes, so the other instances on the node keep
 * reaching their gateway. Two instances on n1, a server on n2: the instance whose host-side veth has the
 * lowest MAC (the one a bridge without a MAC of its own would have taken) is withdrawn, and the other one's
 * new connections through the gateway must work at once, IPv4 and IPv6, many in a row. A NetManager
 * restart re-creates the bridge with the same MAC.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Cidr } from '../../src/addressing/cidr.ts';
import { createPlatform, type Platform } from '../../src/platform/platform.ts';
import { findLeftovers } from '../../src/platform/teardown.ts';
import { FIXTURES, inNetns, runWorkload, type Workload } from '../support/workloads.ts';

const exec = promisify(execFile);
const SERVER = 'e2e.brmac.web.v1';
const CLIENT = 'e2e.brmac.cli.v1';
/** `oaknet node`'s default bridge name. */
const BRIDGE = 'oaknet0';

interface Link {
  ifindex: number;
  ifname: string;
  address: string;
  link_index?: number;
}

async function links(netns: string, args: string[]): Promise<Link[]> {
  return JSON.parse(await inNetns(netns, ['ip', '-j', 'link', 'show', ...args])) as Link[];
}

async function bridgeMac(platform: Platform): Promise<string> {
  const [bridge] = await links(platform.node('n1').netns, ['dev', BRIDGE]);
  assert.ok(bridge, `n1 has ${BRIDGE}`);
  return bridge.address;
}

/** The gateway MAC that an instance's namespace holds, if any. */
async function neighbourMac(netns: string, gateway: string): Promise<string | undefined> {
  const [entry] = JSON.parse(await inNetns(netns, ['ip', '-j', 'neigh', 'show', gateway])) as {
    lladdr?: string;
  }[];
  return entry?.lladdr;
}

/** `curl` from `netns` with a `seconds` deadline: the body, or undefined when it failed. */
async function curl(netns: string, url: string, seconds: number): Promise<string | undefined> {
  return inNetns(netns, ['curl', '-sf', '-m', String(seconds), url]).catch(() => undefined);
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100)); // poll interval, not a synchronisation
  }
}

describe('bridge MAC across an undeploy and a NetManager restart', { timeout: 300_000 }, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-brmac-e2e-'));
  let platform: Platform;
  const workloads: Workload[] = [];
  let urls: string[] = [];
  let gateways: string[] = [];
  let remaining: Workload | undefined;
  let macBefore = '';

  before(async () => {
    platform = await createPlatform({ stateDir, nodes: 2 }, pino({ level: 'warn' }));
    const id = platform.id;
    workloads.push(
      await runWorkload(platform, 'n2', {
        service: SERVER,
        instance: 0,
        netns: `${id}-web`,
        command: ['python3', join(FIXTURES, 'server.py'), 'W0'],
        readyLine: 'W0 ready',
      }),
    );
    for (const n of [0, 1]) {
      workloads.push(
        await runWorkload(platform, 'n1', {
          service: CLIENT,
          instance: n,
          netns: `${id}-c${n}`,
          command: ['sleep', 'infinity'],
        }),
      );
    }
    const rr = (await platform.rootClient().jobByName(SERVER)).service_ip_list.find((s) => s.IpType === 'RR');
    assert.ok(rr?.Address && rr.Address_v6, `${SERVER} has RR_IPs`);
    urls = [`http://${rr.Address}/`, `http://[${rr.Address_v6}]/`];
    const status = await platform.nodeClient('n1').status();
    assert.ok(status.subnet && status.subnet_v6, 'n1 has its subnetworks');
    // the gateways (the bridge's addresses) are the first host addresses of the node's subnetworks
    gateways = [status.subnet, status.subnet_v6].map((cidr) => Cidr.parse(cidr).at(1).toString());
  });

  after(async () => {
    for (const w of workloads.reverse()) await w.stop();
    const id = platform?.id;
    await platform?.destroy();
    if (id) {
      const left = await findLeftovers(id);
      assert.deepEqual(left.namespaces, [], 'no namespace left');
      assert.deepEqual(left.links, [], 'no link left');
      assert.deepEqual(left.processes, [], 'no process left');
      const { stdout } = await exec('ip', ['netns', 'list']);
      const ours = stdout.split('\n').filter((l) => l.startsWith(`${id}-`));
      assert.deepEqual(ours, [], 'no workload namespace left');
    }
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('keeps the MAC when the instance with the lowest veth MAC goes; the other connects at once', async (t) => {
    const clients = workloads.filter((w) => w.service === CLIENT);
    // both instances talk through the gateway, so both hold its MAC in their neighbour tables
    for (const c of clients) {
      for (const url of urls) {
        await waitFor(`${c.netns} to reach ${url}`, () => curl(c.netns, url, 2), 90_000);
      }
    }
    macBefore = await bridgeMac(platform);
    for (const c of clients) {
      for (const gw of gateways) assert.equal(await neighbourMac(c.netns, gw), macBefore, `${c.netns} ${gw}`);
    }
    // each instance's eth0 is the peer of one port of the bridge (its link_index is the port's ifindex)
    const n1 = platform.node('n1').netns;
    const ports = await links(n1, ['master', BRIDGE]);
    const portOf = async (c: Workload): Promise<Link> => {
      const [eth0] = await links(c.netns, ['dev', 'eth0']);
      const port = ports.find((p) => p.ifindex === eth0?.link_index);
      assert.ok(port, `the bridge port of ${c.netns}`);
      return port;
    };
    const withPorts = await Promise.all(clients.map(async (c) => ({ c, port: await portOf(c) })));
    withPorts.sort((a, b) => (a.port.address < b.port.address ? -1 : 1));
    const [lowest, other] = withPorts;
    assert.ok(lowest && other);
    t.diagnostic(
      `bridge ${macBefore}; ports ${lowest.port.ifname} ${lowest.port.address} (${lowest.c.netns}), ` +
        `${other.port.ifname} ${other.port.address} (${other.c.netns})`,
    );
    remaining = other.c;

    await lowest.c.stop(); // oaknet run withdraws the instance, stops its command and undeploys it
    workloads.splice(workloads.indexOf(lowest.c), 1);
    assert.deepEqual(
      (await platform.nodeClient('n1').status()).instances.map((i) => [i.service, i.instance]),
      [[other.c.service, other.c.instance]],
      'n1 runs only the other instance',
    );
    assert.deepEqual(
      (await links(n1, ['master', BRIDGE])).map((p) => p.ifname),
      [other.port.ifname],
      'its veth is gone from the bridge',
    );
    // new connections from the remaining instance, IPv4 and IPv6 by turns, each with a 2 s deadline
    const results: { url: string; ok: boolean; ms: number }[] = [];
    for (let i = 0; i < 20; i++) {
      const url = urls[i % urls.length]!;
      const t0 = Date.now();
      const body = await curl(other.c.netns, url, 2);
      results.push({ url, ok: body?.startsWith('W0 ') === true, ms: Date.now() - t0 });
    }
    const macAfter = await bridgeMac(platform);
    t.diagnostic(`bridge after the undeploy ${macAfter}; ${results.filter((r) => r.ok).length}/20 curls ok`);
    assert.equal(macAfter, macBefore, 'the bridge kept its MAC across the undeploy');
    assert.deepEqual(
      results.filter((r) => !r.ok),
      [],
      'every new connection of the remaining instance worked within 2 s',
    );
    for (const gw of gateways) assert.equal(await neighbourMac(other.c.netns, gw), macBefore, gw);
  });

  it('has the same MAC after a NetManager restart, and the remaining instance connects again', async () => {
    assert.ok(remaining && macBefore, 'the first test ran');
    await platform.restartNode('n1');
    assert.equal(await bridgeMac(platform), macBefore, 'the re-created bridge has the same MAC');
    const c = remaining;
    for (const url of urls) {
      await waitFor(`${c.netns} to reach ${url} after the restart`, () => curl(c.netns, url, 2), 10_000);
    }
  });
});
