/**
 * @module root/enrollment
 * Clusters join the platform: a cluster token and two certificate requests (the cluster's TLS identity and
 * its node CA) get certificates signed by the platform CA, with the cluster ID in them. A cluster ID belongs
 * to the token that first enrolled it: another token cannot take it over (the same token may enroll it
 * again, e.g. after its state was lost). A cluster renews with its current certificate, even one expired up
 * to RENEW_EXPIRED_DAYS ago (it may have been cut off from the root): the TLS handshake proved it holds the
 * key, the CA's signature that the root issued it.
 *
 * The record keeps the serials of the cluster's current certificate (and of the one before it, after a
 * renewal, while the cluster switches over): only those authenticate it (`certificateProblem`, checked on
 * every request), so enrolling again retires every older certificate. An operator can revoke a cluster:
 * its certificates stop authenticating at once and never renew, and it must enroll again with a new
 * cluster token. Records from before serials were kept admit any certificate of the cluster until its
 * next renewal or enrollment.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { ForbiddenError, InvalidInputError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import {
  RENEW_EXPIRED_DAYS,
  type ClusterCertificates,
  type ClusterEnroll,
  type ClusterRenew,
  type ClusterRevoked,
} from '../protocol/auth-api.ts';
import {
  identityOf,
  identityUri,
  readCsr,
  sameIdentity,
  verifyChain,
  type CertificateAuthority,
  type Identity,
} from '../security/pki.ts';
import type { TokenStore } from '../security/tokens.ts';
import type { Json, Store } from '../store/store.ts';

/** Days a cluster's TLS certificate is valid; it renews after two thirds of that. */
export const CLUSTER_CERT_DAYS = 30;
/** Days a cluster's node CA is valid (longer: the certificates it signs cannot outlive it). */
export const NODE_CA_DAYS = 90;
const DAY_MS = 86_400_000;

interface EnrollmentRecord {
  clusterId: string;
  tokenId: string;
  enrolledAt: string;
  renewedAt: string | null;
  /** Serials (hex) of the certificates that authenticate the cluster: the current one, then the one before. */
  serials?: string[];
  /** When an operator revoked the cluster (its certificates no longer authenticate nor renew). */
  revokedAt?: string;
}

const key = (id: string) => `auth/cluster/${id}`;

export class Enrollment {
  constructor(
    private readonly store: Store,
    private readonly ca: CertificateAuthority,
    private readonly tokens: TokenStore,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Records read from the store (null: none), so the check on every request costs a map lookup. */
  private readonly cache = new Map<string, EnrollmentRecord | null>();

  async enroll(req: ClusterEnroll): Promise<ClusterCertificates> {
    const token = this.tokens.verify(req.token, ['cluster']);
    const id = req.cluster_id;
    const keys = await this.requests(req, id);
    const ownership = (old: EnrollmentRecord | undefined) => {
      if (old?.revokedAt !== undefined && old.tokenId === token.id)
        throw new ForbiddenError(
          `cluster ${id} was revoked at ${old.revokedAt}; it enrolls again only with a new cluster token`,
        );
      if (old && old.revokedAt === undefined && old.tokenId !== token.id)
        throw new ForbiddenError(
          `cluster ${id} was enrolled with another token (${old.tokenId}); a cluster ID cannot be taken over`,
        );
    };
    ownership(this.record(id));
    const certs = await this.issue(id, keys);
    this.write(id, (old) => {
      ownership(old);
      return {
        clusterId: id,
        tokenId: token.id,
        enrolledAt: old && old.revokedAt === undefined ? old.enrolledAt : this.now().toISOString(),
        renewedAt: null,
        serials: [serialOf(certs.cert)],
      };
    });
    return certs;
  }

  /**
   * Why a cluster certificate (valid, from the platform CA) does not authenticate the cluster, or undefined
   * when it does: the cluster was revoked, is not enrolled, or the certificate is not its current one.
   */
  certificateProblem(clusterId: string, serial: string): string | undefined {
    return problemOf(this.record(clusterId), clusterId, serial);
  }

  /** Revokes a cluster: its certificates stop authenticating at once and never renew. */
  revoke(clusterId: string): ClusterRevoked {
    const rec = this.write(clusterId, (old) => {
      if (!old) throw new NotFoundError(`cluster ${clusterId} is not enrolled`);
      return { ...old, revokedAt: old.revokedAt ?? this.now().toISOString(), serials: [] };
    });
    return { cluster_id: clusterId, revoked: rec.revokedAt! };
  }

  /** Renews the certificates of the cluster whose certificate the TLS client presented. */
  async renew(socket: Partial<TLSSocket>, req: ClusterRenew): Promise<ClusterCertificates> {
    const peer = socket.getPeerCertificate?.(true);
    if (!peer?.raw)
      throw new UnauthenticatedError(
        'renewal needs the current cluster certificate as the TLS client certificate',
      );
    const leaf = new X509Certificate(peer.raw);
    try {
      verifyChain(leaf.toString(), this.ca.certPem, { ignoreTime: true });
    } catch (err) {
      throw new UnauthenticatedError(
        `the client certificate is not one this root issued: ${(err as Error).message}`,
      );
    }
    const identity = identityOf(leaf);
    if (identity?.kind !== 'cluster')
      throw new ForbiddenError('only a cluster certificate can be renewed here');
    const id = identity.clusterId;
    const expired = this.now().getTime() - Date.parse(leaf.validTo);
    if (expired > RENEW_EXPIRED_DAYS * DAY_MS)
      throw new UnauthenticatedError(
        `the certificate of cluster ${id} expired at ${new Date(leaf.validTo).toISOString()}, more than ` +
          `${RENEW_EXPIRED_DAYS} days ago: it must enroll again with a cluster token`,
      );
    const serial = leaf.serialNumber;
    const current = (rec: EnrollmentRecord | undefined) => {
      const problem = problemOf(rec, id, serial);
      if (problem || !rec) throw new ForbiddenError(`no renewal: ${problem ?? ''}`);
      return rec;
    };
    current(this.record(id));
    const keys = await this.requests(req, id);
    const certs = await this.issue(id, keys);
    this.write(id, (old) => ({
      ...current(old),
      renewedAt: this.now().toISOString(),
      // the certificate it renewed with keeps working while the cluster switches to the new one
      serials: [serialOf(certs.cert), serial],
    }));
    return certs;
  }

  /** The cluster's record, from the cache or the store. */
  private record(id: string): EnrollmentRecord | undefined {
    let rec = this.cache.get(id);
    if (rec === undefined) {
      rec = this.store.transact((tx) => tx.get<EnrollmentRecord>(key(id))) ?? null;
      this.cache.set(id, rec);
    }
    return rec ?? undefined;
  }

  /** Replaces the cluster's record in one transaction with what `update` makes of the stored one. */
  private write(
    id: string,
    update: (old: EnrollmentRecord | undefined) => EnrollmentRecord,
  ): EnrollmentRecord {
    this.cache.delete(id);
    const rec = this.store.transact((tx) => {
      const next = update(tx.get<EnrollmentRecord>(key(id)));
      tx.put(key(id), next as unknown as Json);
      return next;
    });
    this.cache.set(id, rec);
    return rec;
  }

  private async requests(req: { csr: string; ca_csr: string }, id: string) {
    const tls = await readCsr(req.csr);
    const nodeCa = await readCsr(req.ca_csr);
    expectIdentity(tls.identity, { kind: 'cluster', clusterId: id }, 'csr');
    expectIdentity(nodeCa.identity, { kind: 'cluster-ca', clusterId: id }, 'ca_csr');
    return { tls: tls.publicKey, nodeCa: nodeCa.publicKey };
  }

  private async issue(id: string, keys: { tls: string; nodeCa: string }): Promise<ClusterCertificates> {
    return {
      cert: await this.ca.issue({
        publicKey: keys.tls,
        identity: { kind: 'cluster', clusterId: id },
        days: CLUSTER_CERT_DAYS,
      }),
      node_ca: await this.ca.issue({
        publicKey: keys.nodeCa,
        identity: { kind: 'cluster-ca', clusterId: id },
        days: NODE_CA_DAYS,
        ca: true,
      }),
      ca: this.ca.certPem,
    };
  }
}

function problemOf(rec: EnrollmentRecord | undefined, id: string, serial: string): string | undefined {
  if (!rec) return `cluster ${id} is not enrolled`;
  if (rec.revokedAt !== undefined)
    return `cluster ${id} was revoked at ${rec.revokedAt}; it must enroll again with a new cluster token`;
  if (rec.serials && !rec.serials.includes(serial))
    return `the certificate (serial ${serial}) is no longer cluster ${id}'s: it enrolled or renewed since`;
  return undefined;
}

function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber;
}

function expectIdentity(got: Identity | undefined, want: Identity, field: string): void {
  if (!got || !sameIdentity(got, want))
    throw new InvalidInputError(`${field} must ask for exactly ${identityUri(want)}`);
}
