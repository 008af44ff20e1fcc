/**
 * @module platform/credentials
 * The local platform's identities (secure unless `oaknet up --insecure`): the root creates the platform CA
 * and an operator token in <stateDir>/pki; the platform then makes a join token per cluster and an API
 * token per role in <stateDir>/tokens (0700, files 0600), which its clusters, workloads, status and the
 * CLI on this machine use.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterClient } from '../protocol/cluster-client.ts';
import type { ClientTls, Credentials } from '../protocol/http-client.ts';
import { RootClient } from '../protocol/root-client.ts';
import { ensurePrivateDir, writePrivateFile } from '../security/files.ts';
import type { Identity } from '../security/pki.ts';
import type { Role } from '../security/tokens.ts';
import type { ClusterState, PlatformState } from './state.ts';

export function pkiDir(st: PlatformState): string {
  return join(st.stateDir, 'pki');
}

export function tokensDir(st: PlatformState): string {
  return join(st.stateDir, 'tokens');
}

/** The file of an API role's token, or of a cluster's join token (`join-<cluster name>`). */
export function tokenFile(st: PlatformState, name: Role | `join-${string}`): string {
  return join(tokensDir(st), `${name}.token`);
}

/** The platform CA, once the root made it (undefined for an insecure platform). */
export function platformCa(st: PlatformState): string | undefined {
  if (st.insecure) return undefined;
  const file = join(pkiDir(st), 'ca.crt');
  return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
}

/** TLS towards `expect` (undefined for an insecure platform or before the CA exists). */
export function platformTls(st: PlatformState, expect: Identity): ClientTls | undefined {
  const ca = platformCa(st);
  return ca === undefined ? undefined : { ca, expect };
}

export function platformToken(st: PlatformState, role: Role): string | undefined {
  const file = tokenFile(st, role);
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

function credentials(st: PlatformState, expect: Identity, role: Role): Credentials {
  const tls = platformTls(st, expect);
  const token = platformToken(st, role);
  return { ...(tls ? { tls } : {}), ...(token !== undefined ? { token } : {}) };
}

export function scheme(st: PlatformState): 'http' | 'https' {
  return st.insecure ? 'http' : 'https';
}

/** A client of the root on the host, with the platform's token of `role`. */
export function platformRootClient(
  st: PlatformState,
  role: Role = 'read-only',
  timeoutMs = 5000,
): RootClient {
  return new RootClient(`${scheme(st)}://127.0.0.1:${st.root.hostPort}`, {
    timeoutMs,
    credentials: credentials(st, { kind: 'root' }, role),
  });
}

/** A client of cluster `c` on the host, with the platform's token of `role`. */
export function platformClusterClient(
  st: PlatformState,
  c: ClusterState,
  role: Role = 'read-only',
): ClusterClient {
  return new ClusterClient(
    `${scheme(st)}://127.0.0.1:${c.hostPort}`,
    5000,
    credentials(st, { kind: 'cluster', clusterId: c.clusterId }, role),
  );
}

/**
 * After the root's first start: the operator token it wrote, copied to tokens/, and the platform's other
 * tokens made with it (each only once: a restarted platform keeps its tokens).
 */
export async function makePlatformTokens(st: PlatformState): Promise<void> {
  if (st.insecure) return;
  ensurePrivateDir(tokensDir(st));
  if (!existsSync(tokenFile(st, 'operator')))
    writePrivateFile(tokenFile(st, 'operator'), readFileSync(join(pkiDir(st), 'admin.token'), 'utf8'));
  const root = platformRootClient(st, 'operator');
  try {
    for (const role of ['orchestrator', 'read-only'] as const) {
      if (existsSync(tokenFile(st, role))) continue;
      const { token } = await root.createToken(role, 0, `oaknet up: platform ${st.id}`);
      writePrivateFile(tokenFile(st, role), token + '\n');
    }
    if (!existsSync(tokenFile(st, 'join-nodes'))) {
      // the nodes' join token: each NetManager needs it once, at its first registration
      const { token } = await root.createToken('node', 3600, `oaknet up: nodes of platform ${st.id}`);
      writePrivateFile(tokenFile(st, 'join-nodes'), token + '\n');
    }
    for (const c of st.clusters) {
      const file = tokenFile(st, `join-${c.name}`);
      if (existsSync(file)) continue;
      // a cluster needs its join token once; later starts use the identity it got
      const { token } = await root.createToken('cluster', 3600, `oaknet up: cluster ${c.name}`);
      writePrivateFile(file, token + '\n');
    }
  } finally {
    root.close();
  }
}
