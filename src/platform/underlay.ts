/**
 * @module platform/underlay
 * The platform's underlay: a switch namespace that joins the control namespace and one namespace per node
 * with a veth each, all on one /24.
 *
 *   <id>-n1 [eth0 198.18.X.11/24] ──veth── [<id>-n1]                 ┐
 *   <id>-n2 [eth0 198.18.X.12/24] ──veth── [<id>-n2]   <id>-sw       │ the underlay
 *   <id>-ctl [eth0 198.18.X.1/24] ──veth── [<id>-ctl]  (router, proxy ARP) ┘
 *
 * The switch namespace ROUTES between its veths (a /32 route per member, proxy ARP so the members still see
 * one flat /24) instead of bridging them: a bridged frame never passes IP routing, and routing is where the
 * userspace latency backend has to pick up the delayed pairs on kernels without sch_netem (`latency.ts`).
 * The only visible difference from a bridge is one TTL decrement.
 */
import type { CommandRunner } from '../node/net/runner.ts';
import { addVeth, createNetns, ipIn, sysctlIn } from './netns.ts';
import type { PlatformState } from './state.ts';

/** Creates the platform's namespaces, veths, addresses and switch routes (as recorded in `st`). */
export async function buildUnderlay(runner: CommandRunner, st: PlatformState): Promise<void> {
  await Promise.all(st.namespaces.map((ns) => createNetns(runner, ns)));
  await sysctlIn(runner, st.switchNs, {
    'net.ipv4.ip_forward': '1',
    'net.ipv4.conf.all.rp_filter': '0',
    'net.ipv4.conf.default.rp_filter': '0',
    'net.ipv4.conf.default.proxy_arp': '1',
  });
  const members = [{ netns: st.ctlNs, ip: st.ctlIp }, ...st.nodes.map((n) => ({ netns: n.netns, ip: n.ip }))];
  for (const link of st.links) await addVeth(runner, link);
  // proxy ARP answers are delayed by up to 0.8 s by default (proxy_delay, in jiffies): the first packet
  // between two nodes would wait that long
  await sysctlIn(
    runner,
    st.switchNs,
    Object.fromEntries(members.map((m) => [`net.ipv4.neigh.${m.netns}.proxy_delay`, '0'])),
  );
  await ipIn(
    runner,
    st.switchNs,
    members.flatMap((m) => [`link set ${m.netns} up`, `route add ${m.ip}/32 dev ${m.netns}`]),
  );
  await Promise.all(
    members.map((m) => ipIn(runner, m.netns, [`addr add ${m.ip}/24 dev eth0`, 'link set eth0 up'])),
  );
}
