/**
 * @module platform/roles
 * The oaknet roles of a platform, each started in its namespace and waited for until it is ready: the root
 * (GET /api/net/health through its host forwarder), a cluster (health, and a status naming its cluster ID)
 * and a node's NetManager (registered, with a subnetwork). Root and clusters run in the control namespace,
 * a NetManager in its node's namespace.
 */
import { join } from 'node:path';
import type { CommandRunner } from '../node/net/runner.ts';
import { NodeClient } from '../protocol/node-client.ts';
import { hostForwarder } from './forwarders.ts';
import type { Launcher } from './launcher.ts';
import {
  makePlatformTokens,
  pkiDir,
  platformClusterClient,
  platformTls,
  scheme,
  tokenFile,
} from './credentials.ts';
import { rootLimitFlags } from './plan.ts';
import { httpOk } from './processes.ts';
import type { ClusterState, NodeState, PlatformState } from './state.ts';

/** Root URL as seen from the node and control namespaces. */
export function rootUnderlayUrl(st: PlatformState): string {
  return `${scheme(st)}://${st.ctlIp}:${st.root.port}`;
}

/** Starts the root (and its host forwarder unless it runs) and waits until it answers on the host. */
export async function startRoot(
  l: Launcher,
  runner: CommandRunner,
  logLevel: string,
  timeoutMs: number,
): Promise<void> {
  const st = l.st;
  const rec = await l.spawn(
    'root',
    l.oaknetArgv(st.ctlNs, [
      'root',
      '--port',
      String(st.root.port),
      '--store',
      join(st.stateDir, 'root.db'),
      '--log-level',
      logLevel,
      ...(st.insecure ? ['--insecure'] : ['--pki-dir', pkiDir(st)]),
      ...rootLimitFlags(st.root.limits),
    ]),
  );
  const fwd = await hostForwarder(l, runner, 'fwd-root', st.root.port, st.root.hostPort);
  st.root.hostPort = fwd.hostPort;
  l.save();
  await l.waitReady(
    rec,
    `GET /api/net/health via 127.0.0.1:${fwd.hostPort}`,
    async () => {
      const tls = platformTls(st, { kind: 'root' });
      if (!st.insecure && !tls) return undefined; // the CA is not written yet
      const url = `${scheme(st)}://127.0.0.1:${st.root.hostPort}/api/net/health`;
      return (await httpOk(url, 2000, tls)) ? true : undefined;
    },
    timeoutMs,
  );
  await makePlatformTokens(st);
}

/** Starts cluster `c` (and its host forwarder unless it runs) and waits until it answers as itself. */
export async function startCluster(
  l: Launcher,
  runner: CommandRunner,
  c: ClusterState,
  logLevel: string,
  timeoutMs: number,
): Promise<void> {
  const st = l.st;
  const rec = await l.spawn(
    c.name,
    l.oaknetArgv(st.ctlNs, [
      'cluster',
      '--root',
      rootUnderlayUrl(st),
      '--cluster-id',
      c.clusterId,
      '--advertise-address',
      st.ctlIp,
      '--mqtt-port',
      String(c.mqttPort),
      '--port',
      String(c.port),
      '--store',
      join(st.stateDir, `${c.name}.db`),
      '--log-level',
      logLevel,
      ...(st.plaintextTunnel ? ['--allow-plaintext-peers'] : []),
      ...(st.insecure
        ? ['--insecure']
        : ['--pki-dir', join(st.stateDir, `${c.name}-pki`), '--token-file', tokenFile(st, `join-${c.name}`)]),
    ]),
  );
  const fwd = await hostForwarder(l, runner, `fwd-${c.name}`, c.port, c.hostPort);
  c.hostPort = fwd.hostPort;
  l.save();
  const url = `${scheme(st)}://127.0.0.1:${c.hostPort}`;
  const tls = platformTls(st, { kind: 'cluster', clusterId: c.clusterId });
  await l.waitReady(
    rec,
    `GET /api/net/health and /api/net/status via 127.0.0.1:${c.hostPort}`,
    async () => {
      if (!(await httpOk(`${url}/api/net/health`, 2000, tls))) return undefined;
      const status = await platformClusterClient(st, c)
        .status()
        .catch(() => undefined);
      return status?.cluster_id === c.clusterId ? true : undefined;
    },
    timeoutMs,
  );
}

/** Starts node `n`'s NetManager and waits until it is registered with a subnetwork. */
export async function startNode(
  l: Launcher,
  n: NodeState,
  logLevel: string,
  timeoutMs: number,
): Promise<void> {
  const st = l.st;
  const cluster = st.clusters.find((c) => c.name === n.cluster);
  if (!cluster) throw new Error(`node ${n.name}: no cluster ${n.cluster}`);
  const rec = await l.spawn(
    n.name,
    l.oaknetArgv(n.netns, [
      'node',
      '--cluster',
      `${st.ctlIp}:${cluster.mqttPort}`,
      '--node-id',
      n.workerId,
      '--api-socket',
      n.socket,
      '--state-dir',
      n.stateDir,
      '--public-address',
      n.ip,
      '--log-level',
      logLevel,
      ...(st.plaintextTunnel ? ['--plaintext-tunnel'] : []),
      ...(st.insecure
        ? ['--insecure']
        : [
            '--token-file',
            tokenFile(st, 'join-nodes'),
            '--cluster-api',
            `https://${st.ctlIp}:${cluster.port}`,
          ]),
    ]),
  );
  const client = new NodeClient(n.socket, 2000);
  await l.waitReady(
    rec,
    `GET /status on ${n.socket} says registered`,
    async () => {
      const s = await client.status();
      return s.registered && s.subnet !== null ? s : undefined;
    },
    timeoutMs,
  );
}
