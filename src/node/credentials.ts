/**
 * @module node/credentials
 * A NetManager's identity: its key and certificate chain (urn:oaknet:node:<cluster>:<worker>, signed by its
 * cluster's node CA) and the platform CA, in one file of its state directory (identity.json, 0600). At the
 * first registration a node token enrolls it at its cluster's API (the token's CA pin checks the cluster
 * first); afterwards the file is the identity. The certificate renews after two thirds of its life, with the
 * current one (even one expired up to 30 days ago), retrying every 30 s.
 *
 * The cluster API is the command line's (`--cluster-api`, else https://<--cluster host>:10110), never the
 * `cluster_address` of a /register call: a local caller of the NetManager's socket cannot send the token
 * elsewhere. And the token goes only to a server that proves, in the TLS handshake, a cluster certificate
 * of the CA the token pins (any enrolled cluster: a node token is not bound to one).
 */
import { createPrivateKey } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InvalidInputError } from '../errors.ts';
import { RenewalTimer } from '../security/renewal.ts';
import { authPaths, NodeCertificates } from '../protocol/auth-api.ts';
import { HttpTransport } from '../protocol/http-client.ts';
import { replyText } from '../protocol/root-client.ts';
import { parser } from '../protocol/validate.ts';
import { ensurePrivateDir, readIfExists, writePrivateFile } from '../security/files.ts';
import { discoverServer } from '../security/join.ts';
import { createCsr, generateKeyPair, identityOf, verifyChain } from '../security/pki.ts';

const certificates = parser(NodeCertificates);
const FILE = 'identity.json';

export interface NodeIdentity {
  clusterId: string;
  workerId: string;
  key: string;
  /** The node's certificate, then its cluster's node CA. */
  chain: string;
  ca: string;
}

export interface NodeCredentialsOptions {
  stateDir: string;
  /** The cluster's HTTP API (https), where the node enrolls and renews. */
  clusterApi: string;
  /** A node token: needed only when the state directory holds no identity yet. */
  token?: string;
  log: Logger;
}

export class NodeCredentials {
  private id: NodeIdentity | undefined;
  private readonly renewal: RenewalTimer;
  private readonly listeners: Array<(id: NodeIdentity) => void> = [];

  constructor(private readonly o: NodeCredentialsOptions) {
    this.renewal = new RenewalTimer({
      certificate: () => this.id?.chain,
      renew: () => this.renew(),
      log: this.o.log,
    });
  }

  /**
   * The identity of worker `workerId`: from the state directory, else enrolled with `token` (from
   * /register) or the command line's.
   */
  async forWorker(workerId: string, token = this.o.token): Promise<NodeIdentity> {
    if (this.id) {
      if (this.id.workerId !== workerId)
        throw new InvalidInputError(`this node's identity is worker ${this.id.workerId}, not ${workerId}`);
      return this.id;
    }
    ensurePrivateDir(this.o.stateDir);
    const stored = load(this.o.stateDir);
    if (stored) {
      if (stored.workerId !== workerId)
        throw new InvalidInputError(
          `${join(this.o.stateDir, FILE)} is the identity of worker ${stored.workerId}, not ${workerId}`,
        );
      this.id = stored;
      return stored;
    }
    if (token === undefined)
      throw new InvalidInputError(
        `worker ${workerId} has no identity in ${this.o.stateDir} yet: start the node once with --token <node token> (oaknet token create --role node), or register it with one (POST /register with "token")`,
      );
    const { ca, identity } = await discoverServer(this.o.clusterApi, token);
    if (identity.kind !== 'cluster')
      throw new InvalidInputError(`${this.o.clusterApi} is not a cluster service manager`);
    const key = generateKeyPair().privateKey;
    const body = {
      token,
      worker_id: workerId,
      csr: await createCsr(key, { kind: 'node', clusterId: identity.clusterId, workerId }),
    };
    const t = new HttpTransport(this.o.clusterApi, { tls: { ca, expect: identity } }, 'cluster');
    try {
      const res = await t.request('POST', authPaths.enrollNode, { body, timeoutMs: 15_000 });
      const certs = certificates.parse(JSON.parse(replyText(res, 'cluster enrollment')), 'enrollment reply');
      this.id = save(this.o.stateDir, key, certs);
    } finally {
      t.close();
    }
    this.o.log.info({ worker: workerId, cluster: this.id.clusterId }, 'enrolled at the cluster');
    return this.id;
  }

  get current(): NodeIdentity | undefined {
    return this.id;
  }

  onRenewed(fn: (id: NodeIdentity) => void): void {
    this.listeners.push(fn);
  }

  /** Renews now with the current certificate. */
  async renew(): Promise<void> {
    const id = this.id;
    if (!id) throw new InvalidInputError('no identity to renew');
    const key = generateKeyPair().privateKey;
    const body = {
      csr: await createCsr(key, { kind: 'node', clusterId: id.clusterId, workerId: id.workerId }),
    };
    const t = new HttpTransport(
      this.o.clusterApi,
      {
        tls: { ca: id.ca, key: id.key, cert: id.chain, expect: { kind: 'cluster', clusterId: id.clusterId } },
      },
      'cluster',
    );
    try {
      const res = await t.request('POST', authPaths.renewNode, { body, timeoutMs: 15_000 });
      this.id = save(
        this.o.stateDir,
        key,
        certificates.parse(JSON.parse(replyText(res, 'renewal')), 'renewal'),
      );
    } finally {
      t.close();
    }
    this.o.log.info('node certificate renewed');
    for (const fn of this.listeners) fn(this.id);
  }

  /** Renews after two thirds of the certificate's life, retrying every 30 s on failure. */
  startRenewal(): void {
    this.renewal.start();
  }

  close(): void {
    this.renewal.stop();
  }
}

interface Stored {
  key: string;
  chain: string;
  ca: string;
}

function load(dir: string): NodeIdentity | undefined {
  const text = readIfExists(join(dir, FILE));
  if (text === undefined) return undefined;
  let s: Stored;
  try {
    s = JSON.parse(text) as Stored;
  } catch (cause) {
    throw new InvalidInputError(`${join(dir, FILE)} is not JSON: restore it or remove it`, { cause });
  }
  return check(s, { ignoreTime: true }, join(dir, FILE));
}

function save(dir: string, key: string, certs: NodeCertificates): NodeIdentity {
  const id = check({ key, chain: certs.chain, ca: certs.ca }, {}, 'the cluster reply');
  writePrivateFile(join(dir, FILE), JSON.stringify({ key, chain: certs.chain, ca: certs.ca }, null, 1));
  return id;
}

function check(s: Stored, opts: { ignoreTime?: boolean }, where: string): NodeIdentity {
  const leaf = verifyChain(s.chain, s.ca, opts);
  const id = identityOf(leaf);
  if (id?.kind !== 'node') throw new InvalidInputError(`${where} holds no node certificate`);
  if (!leaf.checkPrivateKey(createPrivateKey(s.key)))
    throw new InvalidInputError(`${where}: the key does not belong to the certificate`);
  return { clusterId: id.clusterId, workerId: id.workerId, key: s.key, chain: s.chain, ca: s.ca };
}
