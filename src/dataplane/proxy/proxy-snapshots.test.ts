/**
 * What a new snapshot does to flows: instances that disappear, clients that leave, refreshes that change nothing (conntrack.ts reconcile).
 * The test bed (nodes, jobs, instances, packet helpers) is in proxy.fixtures.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IP_TYPE } from '../../protocol/mqtt.ts';
import { TcpFlag } from '../packet/index.ts';
import { Drop } from './counters.ts';
import {
  type InstanceSpec,
  type JobSpec,
  CLIENT,
  CLI,
  SERVER,
  X0,
  X1,
  tableOf,
  FAMILIES,
  cluster,
  line,
  seqAck,
  assertChecksums,
  udp,
  tcp,
  br,
  across,
} from './proxy.fixtures.ts';

// ---- instances that disappear -------------------------------------------------------------------------------

describe('ProxyTUN when an instance disappears', () => {
  for (const f of FAMILIES) {
    it(`${f.name}: TCP flows get a RST, UDP flows move to the remaining instance, new flows avoid it`, async (t) => {
      const { n1, n2, n3 } = cluster(t, [X0, X1]);
      const S = f.rr(SERVER);
      const nsC = f.ns(CLI);
      const iC = f.ip(CLI);
      const { Syn, Ack, Psh } = TcpFlag;
      // flow 1 (TCP) -> x0, flow 2 (UDP) -> x1, flow 3 (UDP) -> x0
      await across(n1, n2, tcp(nsC, 8001, S, 80, Syn, 100));
      await across(n2, n1, tcp(f.ns(X0), 80, iC, 8001, Syn | Ack, 5000, 101));
      await across(n1, n2, tcp(nsC, 8001, S, 80, Ack, 101, 5001));
      await across(n1, n2, tcp(nsC, 8001, S, 80, Psh | Ack, 101, 5001, 'hello'));
      await across(n2, n1, tcp(f.ns(X0), 80, iC, 8001, Psh | Ack, 5001, 106, 'world!'));
      await across(n1, n2, tcp(nsC, 8001, S, 80, Ack, 106, 5007));
      const u2 = await across(n1, n3, udp(nsC, 8002, S, 53));
      assert.equal(u2.wire.to, n3.endpoint);
      const u3 = await across(n1, n2, udp(nsC, 8003, S, 53));
      assert.equal(u3.wire.to, n2.endpoint);

      n1.learn(SERVER, [X1]); // x0 left the table

      const [rst] = await n1.written.take(1);
      assert.ok(rst);
      assert.equal(line(rst), `tcp ${br(f, S)}:80 > ${br(f, nsC)}:8001 [R]`);
      assert.equal(seqAck(rst).seq, 5007, "the RST's sequence number is the client's last ACK");
      assertChecksums(rst, 'RST');
      assert.equal(n1.proxy.counters.resetsSent, 1);

      const moved = await across(n1, n3, udp(nsC, 8003, S, 53, 'moved'));
      assert.equal(moved.wire.to, n3.endpoint);
      assert.equal(line(moved.wire.packet), `udp ${br(f, iC)}:8003 > ${br(f, f.ns(X1))}:53`);
      const back = await across(n3, n1, udp(f.ns(X1), 53, iC, 8003));
      assert.equal(line(back.delivered), `udp ${br(f, S)}:53 > ${br(f, nsC)}:8003`);
      for (let i = 0; i < 3; i++) {
        const fresh = await across(n1, n3, udp(nsC, 8100 + i, S, 53));
        assert.equal(fresh.wire.to, n3.endpoint);
      }
      assert.equal(n2.written.length, 0, 'nothing more for the vanished instance');
    });
  }

  it("a service with no instance of the packet's family: a SYN is refused with a RST, counted", async (t) => {
    const { n1 } = cluster(t, [X0]);
    // x0 without IPv6 addresses: the RR's IPv6 address is known, but no instance can take an IPv6 flow
    const v4only = tableOf(SERVER, [X0]).map((i) => {
      const { namespace_ip_v6: _ns6, instance_ip_v6: _ip6, ...rest } = i;
      return {
        ...rest,
        service_ip: rest.service_ip.map((s) =>
          s.IpType === IP_TYPE.instance ? { ...s, Address_v6: null } : s,
        ),
      };
    });
    n1.table.apply(SERVER.name, v4only);
    n1.send(tcp(CLI.ns6, 8200, SERVER.rr6, 80, TcpFlag.Syn, 700));
    const [rst] = await n1.written.take(1);
    assert.ok(rst);
    assert.equal(line(rst), `tcp [${SERVER.rr6}]:80 > [${CLI.ns6}]:8200 [R.]`);
    assert.deepEqual(seqAck(rst), { seq: 0, ack: 701 });
    assertChecksums(rst);
    assert.equal(n1.drops(Drop.NoInstance), 1);
    assert.equal(n1.tunnel.log.length, 0);
    assert.deepEqual(n1.dir.questions, []);
  });

  it('a local client that left takes its flows along, but not those of a new instance at its recycled address', async (t) => {
    const { n1, n2, n3 } = cluster(t, [X0, X1]);
    const NEWJOB: JobSpec = {
      name: 'app.ns.newer.ns',
      services: [{ IpType: IP_TYPE.roundRobin, Address: '10.30.0.40', Address_v6: 'fdff:2000::40' }],
      rr4: '10.30.0.40',
      rr6: 'fdff:2000::40',
    };
    // the client's flow first
    await across(n1, n2, udp(CLI.ns4, 1000, SERVER.rr4, 53)); // x0
    // the client is undeployed here; the node hands its namespace address to a new instance of another job,
    // whose entry arrives before the cluster's update about the client
    const NEW0: InstanceSpec = { ...CLI, ip4: '10.30.0.41', ip6: 'fdff::41' };
    n1.learn(NEWJOB, [NEW0]);
    const first = await across(n1, n3, tcp(NEW0.ns4, 2000, SERVER.rr4, 80, TcpFlag.Syn, 1)); // x1
    assert.equal(line(first.wire.packet), `tcp 10.30.0.41:2000 > ${X1.ns4}:80 [S]`);
    assert.equal(n1.proxy.status().flows, 2);
    n1.learn(CLIENT, []); // the update: the client left
    await n1.settled();
    assert.equal(n1.proxy.status().flows, 1, "the old client's flow is gone");
    const again = await across(n1, n3, tcp(NEW0.ns4, 2000, SERVER.rr4, 80, TcpFlag.Ack, 2, 1));
    assert.equal(line(again.wire.packet), `tcp 10.30.0.41:2000 > ${X1.ns4}:80 [.]`, 'the new flow stays put');
  });

  it('refreshing a job with the same answer keeps flows and their instances', async (t) => {
    const { n1, n2 } = cluster(t, [X0, X1]);
    await across(n1, n2, tcp(CLI.ns4, 8300, SERVER.rr4, 80, TcpFlag.Syn, 1));
    const before = [...n1.table.instancesOf(SERVER.name), ...n1.table.instancesOf(CLIENT.name)];
    n1.learn(SERVER, [X0, X1]);
    n1.learn(CLIENT, [CLI]);
    await n1.settled();
    const after = [...n1.table.instancesOf(SERVER.name), ...n1.table.instancesOf(CLIENT.name)];
    assert.ok(
      before.every((r, i) => r === after[i]),
      'the same instance records: for the data plane nothing changed',
    );
    const again = await across(n1, n2, tcp(CLI.ns4, 8300, SERVER.rr4, 80, TcpFlag.Ack, 2, 1));
    assert.equal(again.wire.to, n2.endpoint);
    assert.equal(n1.proxy.counters.resetsSent, 0);
    assert.equal(n1.proxy.status().flows, 1);
  });
});
