/**
 * Closest_IP by measured round-trip time, IPv6 dual stack and a service across clusters, on one platform:
 * four nodes in two clusters (n1, n3 in c1; n2, n4 in c2) at two sites 40 ms apart (2 ms inside a site).
 * Service S runs in cluster 2 only (S.0 on n2 at site a, S.1 on n4 at site b); clients in cluster 1 call it
 * from n1 (site a) and n3 (site b).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createPlatform, type Platform } from '../../src/platform/platform.ts';
import type { JobDocument } from '../../src/protocol/root-api.ts';
import { FIXTURES, inNetns } from '../support/workloads.ts';

const S = 'e2e.near.svc.v1';
const LATENCY = { intraSiteMs: 2, interSiteMs: 40 };

describe('Closest_IP, IPv6 and two clusters', { timeout: 600_000 }, () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'oaknet-closest-'));
  let platform: Platform;
  let doc: JobDocument;
  const ns = (w: string) => platform.workloads.find((x) => x.name === w)!.netns;

  const addr = (type: 'RR' | 'Closest', v6 = false) => {
    const e = doc.service_ip_list.find((s) => s.IpType === type)!;
    return (v6 ? e.Address_v6 : e.Address)!;
  };
  const refresh = async () => {
    doc = await platform.rootClient().jobByName(S);
  };
  /** n new connections (one curl each) from a client; how many each instance answered. */
  const spread = async (client: string, target: string, n: number): Promise<Record<string, number>> => {
    const url = target.includes(':') ? `http://[${target}]/` : `http://${target}/`;
    const out = await inNetns(
      ns(client),
      ['sh', '-c', `for i in $(seq ${n}); do curl -s -m 5 ${url}; echo; done`],
      300_000,
    );
    const counts: Record<string, number> = {};
    for (const line of out.split('\n').filter(Boolean)) {
      const name = line.split(' ')[0]!;
      counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  };
  /** Waits until client's node has RTT measurements to every peer it needs (its Closest choices are informed). */
  const measured = async (node: string, peers: number) => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const st = await platform.nodeClient(node).status();
      const list = (st.proxy?.peers ?? []).filter((p) => p.rtt_ms !== null);
      if (list.length >= peers) return;
      if (Date.now() > deadline) throw new Error(`${node} measured ${list.length} of ${peers} peers`);
      await inNetns(ns(node === 'n1' ? 'ca' : 'cb'), [
        'curl',
        '-s',
        '-m',
        '5',
        `http://${addr('Closest')}/`,
      ]).catch(() => '');
    }
  };

  before(async () => {
    platform = await createPlatform(
      { stateDir, nodes: 4, clusters: 2, sites: { a: ['n1', 'n2'], b: ['n3', 'n4'] }, latency: LATENCY },
      pino({ level: 'warn' }),
    );
    const server = (name: string) => ['python3', join(FIXTURES, 'server.py'), name];
    await platform.startWorkload({
      name: 's0',
      node: 'n2',
      service: S,
      instance: 0,
      command: server('S0'),
      readyLine: 'S0 ready',
    });
    await platform.startWorkload({
      name: 's1',
      node: 'n4',
      service: S,
      instance: 1,
      command: server('S1'),
      readyLine: 'S1 ready',
    });
    await platform.startWorkload({
      name: 'ca',
      node: 'n1',
      service: 'e2e.near.cla.v1',
      instance: 0,
      command: ['sleep', 'infinity'],
    });
    await platform.startWorkload({
      name: 'cb',
      node: 'n3',
      service: 'e2e.near.clb.v1',
      instance: 0,
      command: ['sleep', 'infinity'],
    });
    await refresh();
    assert.deepEqual(
      doc.instance_list.map((i) => i.cluster_id).sort(),
      [`${platform.id}-c2`, `${platform.id}-c2`],
      'every instance of S runs in cluster 2',
    );
  });

  after(async () => {
    await platform?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("sends >= 95% of new flows to the Closest_IP to the instance at the client's own site (across clusters)", async () => {
    await measured('n1', 2);
    await measured('n3', 2);
    const a = await spread('ca', addr('Closest'), 100);
    const b = await spread('cb', addr('Closest'), 100);
    assert.ok((a['S0'] ?? 0) >= 95, `site a client: ${JSON.stringify(a)}`);
    assert.ok((b['S1'] ?? 0) >= 95, `site b client: ${JSON.stringify(b)}`);
    const rr = await spread('ca', addr('RR'), 100);
    assert.ok((rr['S0'] ?? 0) >= 40 && (rr['S0'] ?? 0) <= 60, `RR_IP still spreads: ${JSON.stringify(rr)}`);
  });

  it('follows a latency swap within 10 s, from a client at each site', async () => {
    // n1 and n4 become one site, n2 and n3 the other: for the client on n1, S.1 is near now; for the one on
    // n3, S.0
    const swapped = Date.now();
    await platform.setLatency(LATENCY, { a: ['n1', 'n4'], b: ['n2', 'n3'] });
    const switchTime = async (client: string, near: string) => {
      while (Date.now() - swapped < 15_000) {
        const batch = await spread(client, addr('Closest'), 10);
        if ((batch[near] ?? 0) >= 10) return Date.now() - swapped;
      }
      return Infinity;
    };
    const switchedA = await switchTime('ca', 'S1');
    const switchedB = await switchTime('cb', 'S0');
    assert.ok(switchedA <= 10_000, `client on n1 switched after ${switchedA} ms`);
    assert.ok(switchedB <= 10_000, `client on n3 switched after ${switchedB} ms`);
    const a = await spread('ca', addr('Closest'), 100);
    assert.ok((a['S1'] ?? 0) >= 95, `client on n1: ${JSON.stringify(a)}`);
    const b = await spread('cb', addr('Closest'), 100);
    assert.ok((b['S0'] ?? 0) >= 95, `client on n3: ${JSON.stringify(b)}`);
    process.stderr.write(`# Closest_IP switched ${switchedA} / ${switchedB} ms after the latency swap\n`);
  });

  it('speaks IPv6: curl -6 to the RR_IP and Closest_IP, ping -6 an instance IP, UDP over IPv6', async () => {
    const rr6 = await spread('ca', addr('RR', true), 10);
    assert.equal((rr6['S0'] ?? 0) + (rr6['S1'] ?? 0), 10, JSON.stringify(rr6));
    assert.ok((rr6['S0'] ?? 0) >= 4 && (rr6['S1'] ?? 0) >= 4, `IPv6 RR_IP spreads: ${JSON.stringify(rr6)}`);
    const closest6 = await spread('cb', addr('Closest', true), 10);
    const peers = (await platform.nodeClient('n3').status()).proxy?.peers;
    assert.equal(
      closest6['S0'],
      10,
      `IPv6 Closest_IP from n3 (near n2 now): ${JSON.stringify(closest6)}; n3 measured ${JSON.stringify(peers)}`,
    );
    const instance6 = doc.instance_list.find((i) => i.instance_number === 1)!.instance_ip_v6;
    const ping = await inNetns(ns('ca'), ['ping', '-6', '-c', '3', '-W', '3', instance6]);
    assert.match(ping, /3 packets transmitted, 3 received/);
    const udp = await inNetns(ns('cb'), [
      'python3',
      join(FIXTURES, 'udp-client.py'),
      instance6,
      '9000',
      'six',
    ]);
    assert.equal(udp.trim(), 'S1 six');
    const who = (await inNetns(ns('ca'), ['curl', '-s', '-m', '5', `http://[${instance6}]/`])).trim();
    const clientV6 = await platform.rootClient().jobByName('e2e.near.cla.v1');
    assert.equal(
      who,
      `S1 ${clientV6.instance_list[0]!.instance_ip_v6}`,
      'the server sees the client IPv6 instance IP',
    );
  });

  it("picks a new instance in the client's own cluster (on its node) within 10 s", async () => {
    await platform.startWorkload({
      name: 's2',
      node: 'n1',
      service: S,
      instance: 2,
      command: ['python3', join(FIXTURES, 'server.py'), 'S2'],
      readyLine: 'S2 ready',
    });
    const added = Date.now();
    let pickedAfter = Infinity;
    while (Date.now() - added < 15_000) {
      const batch = await spread('ca', addr('Closest'), 5);
      if ((batch['S2'] ?? 0) === 5) {
        pickedAfter = Date.now() - added;
        break;
      }
    }
    assert.ok(pickedAfter <= 10_000, `picked after ${pickedAfter} ms`);
    await refresh();
    assert.equal(doc.instance_list.find((i) => i.instance_number === 2)?.cluster_id, `${platform.id}-c1`);
  });
});
