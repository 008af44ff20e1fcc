/**
 * The control plane against real brokers (the embedded aedes and Debian's mosquitto), driven by a plain
 * MQTT client that plays upstream's NetManager byte for byte (reference section 2.2 payloads), with the
 * root called as upstream's system manager and cluster manager call it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Cidr } from '../../src/addressing/cidr.ts';
import { IpAddress } from '../../src/addressing/ip.ts';
import { startCluster, type RunningCluster } from '../../src/cluster/cluster.ts';
import type { TableQueryResult } from '../../src/protocol/mqtt.ts';
import type { JobDocument } from '../../src/protocol/root-api.ts';
import { startRoot, type RunningRoot } from '../../src/root/root.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { FakeNetManager } from '../support/fake-netmanager.ts';
import { startMosquitto, type Mosquitto } from '../support/mosquitto.ts';

const log = pino({ level: 'silent' });
const JOB = 'shop.prod.cart.v1';
const JOB_ID = '64a1f0c2e4b0a1b2c3d4e5f6';
const CLUSTER = 'cluster-protocol';
const WORKER_A = '5f8d0a9b1c2d3e4f5a6b7c8d';
const WORKER_B = 'edge-node-2';

async function post(url: string, body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

async function rootJob(root: RunningRoot): Promise<JobDocument> {
  const res = await fetch(`${root.url}/api/net/service/${JOB.replaceAll('.', '_')}/instances`);
  assert.equal(res.status, 200);
  return (await res.json()) as JobDocument;
}

function deployedPayload(instance: number, nsip: string, nsipv6: string, hostIp: string): string {
  // field order and types of upstream's Go struct (host_port is a string)
  return `{"appname":"${JOB}","status":"DEPLOYED","instance_number":${instance},"nsip":"${nsip}","nsipv6":"${nsipv6}","host_port":"50103","host_ip":"${hostIp}"}`;
}

for (const brokerKind of ['embedded aedes', 'Debian mosquitto'] as const) {
  describe(`control plane protocol over ${brokerKind}`, () => {
    let dir: string;
    let root: RunningRoot;
    let cluster: RunningCluster;
    let mosquitto: Mosquitto | undefined;
    let a: FakeNetManager;
    let b: FakeNetManager;
    const subnets = new Map<string, { v4: string; v6: string }>();

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'oaknet-proto-'));
      root = await startRoot({
        store: new SqliteStore(join(dir, 'root.db')),
        log,
        port: 0,
        host: '127.0.0.1',
      });
      if (brokerKind === 'Debian mosquitto') mosquitto = await startMosquitto();
      cluster = await startCluster({
        rootUrl: root.url,
        store: new SqliteStore(join(dir, 'cluster.db')),
        log,
        port: 0,
        host: '127.0.0.1',
        mqttPort: 0,
        ...(mosquitto ? { mqttUrl: mosquitto.url } : {}),
        clusterId: CLUSTER,
        advertiseAddress: '127.0.0.1',
      });
      // the system manager creates the service and schedules two instances on this cluster
      const deploy = await post(`${root.url}/api/net/service/deploy`, {
        _id: JOB_ID,
        deployment_descriptor: {
          app_name: 'shop',
          app_ns: 'prod',
          service_name: 'cart',
          service_ns: 'v1',
          microservice_name: 'cart',
          microservice_namespace: 'v1',
          image: 'docker.io/library/nginx:latest',
        },
      });
      assert.deepEqual(deploy, { status: 200, text: 'Instance info added' });
      for (const n of [0, 1]) {
        assert.equal(
          (
            await post(`${root.url}/api/net/instance/deploy`, {
              _id: JOB_ID,
              instance_number: n,
              cluster_id: CLUSTER,
            })
          ).status,
          200,
        );
      }
      // the cluster manager announces the job before publishing it to the nodes
      assert.deepEqual(await post(`${cluster.url}/api/net/deployment`, { job_name: JOB }), {
        status: 200,
        text: 'job stored succesfully',
      });
      const url = mosquitto?.url ?? cluster.mqttUrl;
      a = await FakeNetManager.connect(url, WORKER_A);
      b = await FakeNetManager.connect(url, WORKER_B);
    });

    after(async () => {
      await a?.close();
      await b?.close();
      await cluster?.close();
      await root?.close();
      await mosquitto?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('answers a subnet request with a /26 and a /120 of the worker, the same ones on every request', async () => {
      for (const nm of [a, b]) {
        await nm.publish('subnet', '{"METHOD":"GET"}');
        const reply = (await nm.next(`nodes/${nm.worker}/net/subnetwork/result`)) as {
          address: string;
          addressv6: string;
        };
        assert.deepEqual(Object.keys(reply).sort(), ['address', 'addressv6']);
        const v4 = Cidr.of(IpAddress.parse(reply.address), 26);
        const v6 = Cidr.of(IpAddress.parse(reply.addressv6), 120);
        assert.ok(Cidr.parse('10.16.0.0/12').covers(v4), `${v4.toString()} inside 10.16.0.0/12`);
        assert.ok(!Cidr.parse('10.30.0.0/16').covers(v4), `${v4.toString()} outside 10.30.0.0/16`);
        assert.ok(Cidr.parse('fc00::/7').covers(v6) && !Cidr.parse('fdff::/16').covers(v6));
        subnets.set(nm.worker, { v4: reply.address, v6: reply.addressv6 });
        // a restarting NetManager asks again and keeps its subnetwork
        await nm.publish('subnet', '{"METHOD":"GET"}');
        assert.deepEqual(await nm.next(`nodes/${nm.worker}/net/subnetwork/result`), reply);
      }
      assert.notEqual(subnets.get(WORKER_A)?.v4, subnets.get(WORKER_B)?.v4);
      const workers = (await (
        await fetch(`${root.url}/api/net/workers?cluster_id=${CLUSTER}`)
      ).json()) as Array<{ worker_id: string }>;
      assert.deepEqual(workers.map((w) => w.worker_id).sort(), [WORKER_A, WORKER_B].sort());
    });

    it('relays a deployment to the root and answers table queries by name, ServiceIP and instance IP', async () => {
      const sa = subnets.get(WORKER_A)!;
      const nsip = IpAddress.parse(sa.v4).add(2).toString();
      const nsipv6 = IpAddress.parse(sa.v6).add(2).toString();
      await a.subscribe(`jobs/${JOB}/updates_available`);
      await a.publish('service/deployed', deployedPayload(0, nsip, nsipv6, '192.168.1.10'));
      // first from the cluster at once, then again when the root, having stored the report, notifies the cluster
      assert.deepEqual(await a.next(`jobs/${JOB}/updates_available`), { type: 'DEPLOYMENT' });
      assert.deepEqual(await a.next(`jobs/${JOB}/updates_available`), { type: 'DEPLOYMENT' });

      const doc = await rootJob(root);
      const rr = doc.service_ip_list.find((s) => s.IpType === 'RR')!;
      const closest = doc.service_ip_list.find((s) => s.IpType === 'Closest')!;
      const inst0 = doc.instance_list.find((i) => i.instance_number === 0)!;
      // the root learnt where instance 0 runs (through the cluster's net_deploy_status)
      const deployedAtRoot = (await rootJob(root)).instance_list.find((i) => i.instance_number === 0)!;
      assert.equal(deployedAtRoot.namespace_ip, nsip);
      assert.equal(deployedAtRoot.host_ip, '192.168.1.10');
      assert.equal(deployedAtRoot.host_port, 50103);

      const queries: Array<[string, string]> = [
        [`{"sname":"${JOB}","sip":""}`, JOB],
        [`{"sname":"","sip":"${rr.Address!}"}`, rr.Address!],
        [`{"sname":"","sip":"${rr.Address_v6!}"}`, rr.Address_v6!],
        [`{"sname":"","sip":"${closest.Address!}"}`, closest.Address!],
        [`{"sname":"","sip":"${inst0.instance_ip}"}`, inst0.instance_ip],
      ];
      for (const [request, key] of queries) {
        await b.publish('tablequery/request', request);
        const result = (await b.next(`nodes/${WORKER_B}/net/tablequery/result`)) as TableQueryResult;
        assert.equal(result.app_name, JOB);
        assert.equal(result.query_key, key);
        // instance 1 is scheduled but not deployed: not routable, so not listed
        assert.equal(result.instance_list.length, 1);
        const entry = result.instance_list[0]!;
        assert.equal(entry.instance_number, 0);
        assert.equal(entry.namespace_ip, nsip);
        assert.equal(entry.namespace_ip_v6, nsipv6);
        assert.equal(entry.host_ip, '192.168.1.10');
        assert.equal(typeof entry.host_port, 'number');
        assert.equal(entry.host_port, 50103);
        assert.deepEqual(
          entry.service_ip.map((s) => [s.IpType, s.Address, s.Address_v6]),
          [
            ['RR', rr.Address, rr.Address_v6],
            ['Closest', closest.Address, closest.Address_v6],
            ['instance_ip', inst0.instance_ip, inst0.instance_ip_v6],
          ],
        );
      }
      // an address nobody owns gets an empty answer, not silence
      await b.publish('tablequery/request', '{"sname":"","sip":"10.30.255.254"}');
      assert.deepEqual(await b.next(`nodes/${WORKER_B}/net/tablequery/result`), {
        app_name: '',
        instance_list: [],
        query_key: '10.30.255.254',
      });
    });

    it('fans out updates_available when an instance comes and goes', async () => {
      const sb = subnets.get(WORKER_B)!;
      await b.subscribe(`jobs/${JOB}/updates_available`);
      await b.publish(
        'service/deployed',
        deployedPayload(
          1,
          IpAddress.parse(sb.v4).add(2).toString(),
          IpAddress.parse(sb.v6).add(2).toString(),
          '192.168.1.11',
        ),
      );
      assert.deepEqual(await a.next(`jobs/${JOB}/updates_available`), { type: 'DEPLOYMENT' });
      assert.deepEqual(await b.next(`jobs/${JOB}/updates_available`), { type: 'DEPLOYMENT' });
      await a.publish('tablequery/request', `{"sname":"${JOB}","sip":""}`);
      let table = (await a.next(`nodes/${WORKER_A}/net/tablequery/result`)) as TableQueryResult;
      assert.deepEqual(table.instance_list.map((i) => i.instance_number).sort(), [0, 1]);

      // the orchestrator removes instance 1 at the root: the root notifies the cluster, the cluster the nodes
      const res = await fetch(`${root.url}/api/net/${JOB_ID}/1`, { method: 'DELETE' });
      assert.equal(await res.text(), 'Instance info cleared');
      // drain DEPLOYMENT echoes of the root's own notification, then expect the UNDEPLOYMENT
      let update: unknown;
      do update = await a.next(`jobs/${JOB}/updates_available`);
      while ((update as { type: string }).type === 'DEPLOYMENT');
      assert.deepEqual(update, { type: 'UNDEPLOYMENT' });
      await a.publish('tablequery/request', `{"sname":"${JOB}","sip":""}`);
      table = (await a.next(`nodes/${WORKER_A}/net/tablequery/result`)) as TableQueryResult;
      assert.deepEqual(
        table.instance_list.map((i) => i.instance_number),
        [0],
      );
    });

    it('ignores malformed payloads and unsafe worker IDs without crashing or corrupting its cache', async () => {
      const before = cluster.channel.counters.invalid;
      const bad: Array<[string, string]> = [
        ['subnet', 'not json'],
        ['subnet', '{"METHOD":"PUT"}'],
        ['tablequery/request', '{"sname":42,"sip":[]}'],
        ['tablequery/request', '[]'],
        ['service/deployed', '{"appname":"x","status":"DEPLOYED"}'],
        ['service/deployed', deployedPayload(0, 'not-an-ip', '::1', '1.2.3.4')],
        ['interest/remove', '{"appname":7}'],
        ['service/address-changed', '{}'],
      ];
      for (const [suffix, payload] of bad) await a.publish(suffix, payload);
      await a.client.publishAsync('nodes/bad$id/net/subnet', '{"METHOD":"GET"}', { qos: 1 });
      // still answers, and the table is unchanged
      await a.publish('tablequery/request', `{"sname":"${JOB}","sip":""}`);
      const table = (await a.next(`nodes/${WORKER_A}/net/tablequery/result`)) as TableQueryResult;
      assert.deepEqual(
        table.instance_list.map((i) => [i.instance_number, i.host_ip]),
        [[0, '192.168.1.10']],
      );
      assert.ok(cluster.channel.counters.invalid >= before + bad.length, 'malformed messages were counted');
    });
  });
}
