/**
 * The reference paths of the data-plane bench, built inside the node namespaces of a local platform (n1, n2
 * on one routed underlay) with extra "pod" namespaces attached to the nodes by veth pairs:
 *
 *   direct  client in n1 itself -> n2's underlay address (no pods): the limit of the underlay
 *   hostgw  pod 10.244.1.2 -> n1 routes 10.244.2.0/24 via n2's underlay IP -> pod 10.244.2.2 (flannel
 *           host-gw style; the underlay switch namespace routes, so it gets the pod routes too, as a
 *           routed fabric would)
 *   vxlan   pod 10.246.1.2 -> vxlan device in n1 (VNI 42, UDP 4789, remote = n2) -> pod 10.246.2.2; pods at
 *           MTU 1450 (VXLAN adds 50)
 *   socat   pod 10.248.1.2 -> TUN of a socat in n1, UDP port 4790 -> socat in n2 -> pod 10.248.2.2; pods
 *           and TUNs at MTU 1472 (IPv4 + UDP add 28)
 *
 * Everything is named after the platform id; pods are deleted by name, socat processes stopped by PID.
 * Devices made inside the node namespaces go when the platform removes those.
 */
import { waitWireguardGo, wireguardGoArgv } from '../test/support/wireguard-go.ts';
import { onCleanup, run, spawnOwned, type OwnedProcess } from './cleanup.ts';
import { inNs } from './dp-measure.ts';

export interface NodeInfo {
  name: string;
  netns: string;
  ip: string;
}

export const SOCAT_PORT = 4790;

/** `ip -n NS -batch -` */
export async function ipBatch(ns: string, lines: readonly string[]): Promise<void> {
  await run(['ip', '-n', ns, '-batch', '-'], 30_000, lines.join('\n') + '\n');
}

async function sysctl(ns: string, settings: Record<string, string>): Promise<void> {
  await run(inNs(ns, ['sysctl', '-q', '-w', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)]));
}

/** Creates namespace `name` (deleted by name on cleanup). */
export async function addNetns(name: string): Promise<void> {
  await run(['ip', 'netns', 'add', name]);
  onCleanup(`delete netns ${name}`, () => run(['ip', 'netns', 'del', name]).catch(() => undefined));
  await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
}

/**
 * A pod: namespace `pod` with eth0 = `addr`/24 (gateway .1), default route via the node, MTU `mtu`; the
 * node end `hostIf` gets the .1 address.
 */
export async function addPod(
  node: NodeInfo,
  pod: string,
  hostIf: string,
  addr: string,
  mtu: number,
): Promise<void> {
  await addNetns(pod);
  const gw = addr.replace(/\.\d+$/, '.1');
  await ipBatch(node.netns, [
    `link add ${hostIf} mtu ${mtu} type veth peer name eth0 netns ${pod}`,
    `addr add ${gw}/24 dev ${hostIf}`,
    `link set ${hostIf} up`,
  ]);
  await ipBatch(pod, [
    `link set eth0 mtu ${mtu}`,
    `addr add ${addr}/24 dev eth0`,
    'link set eth0 up',
    `route add default via ${gw}`,
  ]);
  await sysctl(node.netns, { [`net.ipv4.conf.${hostIf}.rp_filter`]: '0' });
}

export interface RefPath {
  key: string;
  client: string;
  server: string;
  address: string;
  mtu: number;
  /** Processes that do the forwarding (socat); none for kernel paths. */
  forwarders: OwnedProcess[];
}

/** hostgw: pods 10.244.{1,2}.2, routed via the other node's underlay address. */
export async function setUpHostGw(
  id: string,
  n1: NodeInfo,
  n2: NodeInfo,
  switchNs: string,
): Promise<RefPath> {
  await addPod(n1, `${id}-hg1`, 'bench-hg', '10.244.1.2', 1500);
  await addPod(n2, `${id}-hg2`, 'bench-hg', '10.244.2.2', 1500);
  await ipBatch(n1.netns, [`route add 10.244.2.0/24 via ${n2.ip} dev eth0`]);
  await ipBatch(n2.netns, [`route add 10.244.1.0/24 via ${n1.ip} dev eth0`]);
  await ipBatch(switchNs, [
    `route add 10.244.1.0/24 via ${n1.ip} dev ${n1.netns} onlink`,
    `route add 10.244.2.0/24 via ${n2.ip} dev ${n2.netns} onlink`,
  ]);
  return {
    key: 'hostgw',
    client: `${id}-hg1`,
    server: `${id}-hg2`,
    address: '10.244.2.2',
    mtu: 1500,
    forwarders: [],
  };
}

/** vxlan: VNI 42 on UDP 4789 between the underlay addresses; overlay 10.245.0.{1,2}; pods 10.246.{1,2}.2. */
export async function setUpVxlan(id: string, n1: NodeInfo, n2: NodeInfo): Promise<RefPath> {
  const mtu = 1450;
  for (const [me, peer, k] of [
    [n1, n2, 1],
    [n2, n1, 2],
  ] as const) {
    await ipBatch(me.netns, [
      `link add bench-vx42 mtu ${mtu} type vxlan id 42 dstport 4789 local ${me.ip} remote ${peer.ip} dev eth0`,
      `addr add 10.245.0.${k}/24 dev bench-vx42`,
      'link set bench-vx42 up',
    ]);
    await addPod(me, `${id}-vx${k}`, 'bench-vx', `10.246.${k}.2`, mtu);
    await ipBatch(me.netns, [`route add 10.246.${3 - k}.0/24 via 10.245.0.${3 - k} dev bench-vx42`]);
    await sysctl(me.netns, { 'net.ipv4.conf.bench-vx42.rp_filter': '0' });
  }
  return {
    key: 'vxlan',
    client: `${id}-vx1`,
    server: `${id}-vx2`,
    address: '10.246.2.2',
    mtu,
    forwarders: [],
  };
}

/**
 * socat: `socat TUN:10.247.0.K/24,tun-name=bench-sc,iff-up,iff-no-pi UDP-DATAGRAM:<peer>:4790,bind=<me>:4790`
 * in each node. UDP-DATAGRAM (sendto, unconnected) rather than `UDP:<peer>:<port>,sourceport=`: a connected
 * UDP socket gets the ICMP port-unreachable of the first packet sent before the peer's socat is up (IPv6
 * router solicitations of the new TUN are enough), and socat exits on that "Connection refused".
 */
export async function setUpSocat(
  id: string,
  n1: NodeInfo,
  n2: NodeInfo,
  env: NodeJS.ProcessEnv,
): Promise<RefPath> {
  const mtu = 1472;
  const forwarders: OwnedProcess[] = [];
  for (const [me, peer, k] of [
    [n1, n2, 1],
    [n2, n1, 2],
  ] as const) {
    const p = spawnOwned(
      `socat-${me.name}`,
      inNs(me.netns, [
        'socat',
        `TUN:10.247.0.${k}/24,tun-name=bench-sc,iff-up,iff-no-pi`,
        `UDP-DATAGRAM:${peer.ip}:${SOCAT_PORT},bind=${me.ip}:${SOCAT_PORT}`,
      ]),
      { env },
    );
    forwarders.push(p);
    await waitLink(me.netns, 'bench-sc', p);
    await ipBatch(me.netns, [`link set bench-sc mtu ${mtu}`]);
    await sysctl(me.netns, { 'net.ipv4.conf.bench-sc.rp_filter': '0' });
    await addPod(me, `${id}-sc${k}`, 'bench-sc-p', `10.248.${k}.2`, mtu);
    await ipBatch(me.netns, [`route add 10.248.${3 - k}.0/24 via 10.247.0.${3 - k} dev bench-sc`]);
  }
  return { key: 'socat', client: `${id}-sc1`, server: `${id}-sc2`, address: '10.248.2.2', mtu, forwarders };
}

async function waitLink(ns: string, dev: string, p: OwnedProcess): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const ok = await run(['ip', '-n', ns, 'link', 'show', 'dev', dev]).then(
      () => true,
      () => false,
    );
    if (ok) return;
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw new Error(`${p.name} exited: ${p.output().trim().slice(-300)}`);
    if (Date.now() > deadline) throw new Error(`${dev} did not appear in ${ns}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * wireguard: Debian's wireguard-go (a userspace WireGuard anyone would pick instead) in each node: TUN
 * bench-wgK with 10.249.0.K/24, UDP port 4791 to the other node, keys from `wg genkey`; pods 10.250.{1,2}.2 at
 * MTU 1420 (WireGuard's default: 1500 - 80). wireguard-go is started and awaited (until its UAPI socket
 * answers) as in the interop tests, by test/support/wireguard-go.ts.
 */
export async function setUpWireguardGo(
  id: string,
  n1: NodeInfo,
  n2: NodeInfo,
  env: NodeJS.ProcessEnv,
): Promise<RefPath> {
  const mtu = 1420;
  const port = 4791;
  const forwarders: OwnedProcess[] = [];
  const keys = [];
  for (let k = 0; k < 2; k++) {
    const priv = (await run(['wg', 'genkey'])).trim();
    const pub = (await run(['wg', 'pubkey'], 10_000, `${priv}\n`)).trim();
    keys.push({ priv, pub });
  }
  for (const [me, peer, k] of [
    [n1, n2, 1],
    [n2, n1, 2],
  ] as const) {
    // wireguard-go's control socket (/var/run/wireguard/<name>.sock) is shared by all namespaces: one name each
    const dev = `bench-wg${k}`;
    const p = spawnOwned(`wireguard-go-${me.name}`, wireguardGoArgv(me.netns, dev), { env });
    forwarders.push(p);
    // its TUN appears before its UAPI socket does: `wg set` needs the socket
    await waitWireguardGo(
      me.netns,
      dev,
      () => p.child.exitCode !== null || p.child.signalCode !== null,
      () => p.output().trim().slice(-300),
    );
    const keyFile = `/tmp/${id}-wg${k}.key`;
    await run(['sh', '-c', `umask 077; cat > ${keyFile}`], 10_000, `${keys[k - 1]!.priv}\n`);
    onCleanup(`delete ${keyFile}`, () => run(['rm', '-f', keyFile]).catch(() => undefined));
    await run(
      inNs(me.netns, [
        'wg',
        'set',
        dev,
        'private-key',
        keyFile,
        'listen-port',
        String(port),
        'peer',
        keys[2 - k]!.pub,
        'endpoint',
        `${peer.ip}:${port}`,
        'allowed-ips',
        `10.249.0.${3 - k}/32,10.250.${3 - k}.0/24`,
      ]),
    );
    await ipBatch(me.netns, [
      `link set ${dev} mtu ${mtu}`,
      `addr add 10.249.0.${k}/24 dev ${dev}`,
      `link set ${dev} up`,
    ]);
    await sysctl(me.netns, { [`net.ipv4.conf.${dev}.rp_filter`]: '0' });
    await addPod(me, `${id}-wg${k}`, 'bench-wg-p', `10.250.${k}.2`, mtu);
    await ipBatch(me.netns, [`route add 10.250.${3 - k}.0/24 via 10.249.0.${3 - k} dev ${dev}`]);
  }
  return {
    key: 'wireguard-go',
    client: `${id}-wg1`,
    server: `${id}-wg2`,
    address: '10.250.2.2',
    mtu,
    forwarders,
  };
}
