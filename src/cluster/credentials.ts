/**
 * @module cluster/credentials
 * A cluster's identity: its TLS key and certificate (urn:oaknet:cluster:<id>), its node CA (with which it
 * signs its NetManagers' certificates) and the platform CA, kept in one file of its PKI directory
 * (identity.json, 0600, in a 0700 directory).
 * At the first start a cluster token enrolls it at the root (the token's CA pin checks the root first);
 * afterwards the files are the identity, and the token is no longer needed. Certificates renew after two
 * thirds of their life; a renewal that fails (the root is away) is retried every 30 s, also after the
 * certificate expired, and nothing waits for it: the outbox keeps the reports the root did not get.
 */
import { createPrivateKey } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InvalidInputError } from '../errors.ts';
import { RenewalTimer } from '../security/renewal.ts';
import { authPaths, ClusterCertificates } from '../protocol/auth-api.ts';
import { HttpTransport } from '../protocol/http-client.ts';
import { replyText } from '../protocol/root-client.ts';
import { parser } from '../protocol/validate.ts';
import { ensurePrivateDir, readIfExists, writePrivateFile } from '../security/files.ts';
import { discoverCa } from '../security/join.ts';
import {
  CertificateAuthority,
  createCsr,
  firstCertificate,
  generateKeyPair,
  identityOf,
  verifyChain,
} from '../security/pki.ts';

const certificates = parser(ClusterCertificates);

export interface ClusterIdentity {
  clusterId: string;
  ca: string;
  key: string;
  cert: string;
  nodeCa: CertificateAuthority;
  /** The node CA's key (kept across renewals: the NetManagers' certificates it signed stay valid). */
  nodeCaKey: string;
}

export class ClusterCredentials {
  private readonly renewal: RenewalTimer;
  private readonly listeners: Array<(id: ClusterIdentity) => void> = [];

  private constructor(
    private readonly dir: string,
    private readonly rootUrl: string,
    private id: ClusterIdentity,
    private readonly log: Logger,
  ) {
    this.renewal = new RenewalTimer({
      certificate: () => this.id.cert,
      renew: () => this.renew(),
      log: this.log,
    });
  }

  /**
   * The identity in `dir`, or a new one enrolled with `token` at the root. A stored identity of another
   * cluster ID is refused (one PKI directory per cluster).
   */
  static async open(o: {
    dir: string;
    rootUrl: string;
    clusterId: string;
    token?: string;
    log: Logger;
  }): Promise<ClusterCredentials> {
    ensurePrivateDir(o.dir);
    const stored = await load(o.dir);
    if (stored) {
      if (stored.clusterId !== o.clusterId)
        throw new InvalidInputError(
          `${o.dir} holds the identity of cluster ${stored.clusterId}, not ${o.clusterId}: use its ID or another --pki-dir`,
        );
      return new ClusterCredentials(o.dir, o.rootUrl, stored, o.log);
    }
    if (o.token === undefined)
      throw new InvalidInputError(
        `cluster ${o.clusterId} has no identity in ${o.dir} yet: start it once with --token <cluster token> (oaknet token create --role cluster)`,
      );
    const ca = await discoverCa(o.rootUrl, o.token, { kind: 'root' });
    const keys = { tls: generateKeyPair().privateKey, nodeCa: generateKeyPair().privateKey };
    const body = {
      token: o.token,
      cluster_id: o.clusterId,
      csr: await createCsr(keys.tls, { kind: 'cluster', clusterId: o.clusterId }),
      ca_csr: await createCsr(keys.nodeCa, { kind: 'cluster-ca', clusterId: o.clusterId }),
    };
    const transport = new HttpTransport(o.rootUrl, { tls: { ca, expect: { kind: 'root' } } });
    try {
      const res = await transport.request('POST', authPaths.enrollCluster, { body, timeoutMs: 15_000 });
      const certs = certificates.parse(JSON.parse(replyText(res, 'root enrollment')), 'enrollment reply');
      const id = await save(o.dir, keys, certs);
      o.log.info({ cluster: o.clusterId, dir: o.dir }, 'enrolled at the root');
      return new ClusterCredentials(o.dir, o.rootUrl, id, o.log);
    } finally {
      transport.close();
    }
  }

  get current(): ClusterIdentity {
    return this.id;
  }

  /** When the cluster certificate expires. */
  get expires(): Date {
    return new Date(firstCertificate(this.id.cert).validTo);
  }

  onRenewed(fn: (id: ClusterIdentity) => void): void {
    this.listeners.push(fn);
  }

  /** Renews now (with the current certificate, even an expired one). */
  async renew(): Promise<void> {
    const keys = { tls: generateKeyPair().privateKey, nodeCa: this.id.nodeCaKey };
    const { clusterId } = this.id;
    const body = {
      csr: await createCsr(keys.tls, { kind: 'cluster', clusterId }),
      ca_csr: await createCsr(keys.nodeCa, { kind: 'cluster-ca', clusterId }),
    };
    const transport = new HttpTransport(this.rootUrl, {
      tls: { ca: this.id.ca, key: this.id.key, cert: this.id.cert, expect: { kind: 'root' } },
    });
    try {
      const res = await transport.request('POST', authPaths.renewCluster, { body, timeoutMs: 15_000 });
      const certs = certificates.parse(JSON.parse(replyText(res, 'root renewal')), 'renewal reply');
      this.id = await save(this.dir, keys, certs);
    } finally {
      transport.close();
    }
    this.log.info({ expires: this.expires.toISOString() }, 'cluster certificate renewed');
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

/** The whole identity in one file, so that it is replaced atomically (never new keys with old certificates). */
const FILE = 'identity.json';

interface StoredIdentity {
  ca: string;
  key: string;
  cert: string;
  node_ca_key: string;
  node_ca_cert: string;
}

async function load(dir: string): Promise<ClusterIdentity | undefined> {
  const text = readIfExists(join(dir, FILE));
  if (text === undefined) return undefined;
  let s: StoredIdentity;
  try {
    s = JSON.parse(text) as StoredIdentity;
  } catch (cause) {
    throw new InvalidInputError(`${join(dir, FILE)} is not JSON: restore it or remove it`, { cause });
  }
  const leaf = verifyChain(s.cert, s.ca, { ignoreTime: true });
  const id = identityOf(leaf);
  if (id?.kind !== 'cluster') throw new InvalidInputError(`${join(dir, FILE)} holds no cluster certificate`);
  if (!leaf.checkPrivateKey(createPrivateKey(s.key)))
    throw new InvalidInputError(`${join(dir, FILE)}: the key does not belong to the certificate`);
  verifyChain(s.node_ca_cert, s.ca, { ignoreTime: true });
  return {
    clusterId: id.clusterId,
    ca: s.ca,
    key: s.key,
    cert: s.cert,
    nodeCa: await CertificateAuthority.load(s.node_ca_cert, s.node_ca_key, s.node_ca_cert),
    nodeCaKey: s.node_ca_key,
  };
}

async function save(
  dir: string,
  keys: { tls: string; nodeCa: string },
  certs: ClusterCertificates,
): Promise<ClusterIdentity> {
  const leaf = verifyChain(certs.cert, certs.ca);
  const id = identityOf(leaf);
  if (id?.kind !== 'cluster') throw new InvalidInputError('the root sent no cluster certificate');
  const nodeCa = await CertificateAuthority.load(certs.node_ca, keys.nodeCa, certs.node_ca);
  const stored: StoredIdentity = {
    ca: certs.ca,
    key: keys.tls,
    cert: certs.cert,
    node_ca_key: keys.nodeCa,
    node_ca_cert: certs.node_ca,
  };
  writePrivateFile(join(dir, FILE), JSON.stringify(stored, null, 1));
  return {
    clusterId: id.clusterId,
    ca: certs.ca,
    key: keys.tls,
    cert: certs.cert,
    nodeCa,
    nodeCaKey: keys.nodeCa,
  };
}
