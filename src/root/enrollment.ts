/**
 * @module root/enrollment
 * Clusters join the platform: a cluster token and two certificate requests (the cluster's TLS identity and
 * its node CA) get certificates signed by the platform CA, with the cluster ID in them. A cluster ID belongs
 * to the token that first enrolled it: another token cannot take it over (the same token may enroll it
 * again, e.g. after its state was lost). A cluster renews with its current certificate, even an expired one
 * (it may have been cut off from the root): the TLS handshake proved it holds the key, the CA's signature
 * that the root issued it.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { ForbiddenError, InvalidInputError, UnauthenticatedError } from '../errors.ts';
import type { ClusterCertificates, ClusterEnroll, ClusterRenew } from '../protocol/auth-api.ts';
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

interface EnrollmentRecord {
  clusterId: string;
  tokenId: string;
  enrolledAt: string;
  renewedAt: string | null;
}

export class Enrollment {
  constructor(
    private readonly store: Store,
    private readonly ca: CertificateAuthority,
    private readonly tokens: TokenStore,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async enroll(req: ClusterEnroll): Promise<ClusterCertificates> {
    const token = this.tokens.verify(req.token, ['cluster']);
    const id = req.cluster_id;
    const keys = await this.requests(req, id);
    this.store.transact((tx) => {
      const old = tx.get<EnrollmentRecord>(`auth/cluster/${id}`);
      if (old && old.tokenId !== token.id)
        throw new ForbiddenError(
          `cluster ${id} was enrolled with another token (${old.tokenId}); a cluster ID cannot be taken over`,
        );
      const rec: EnrollmentRecord = {
        clusterId: id,
        tokenId: token.id,
        enrolledAt: old?.enrolledAt ?? this.now().toISOString(),
        renewedAt: null,
      };
      tx.put(`auth/cluster/${id}`, rec as unknown as Json);
    });
    return this.issue(id, keys);
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
    const keys = await this.requests(req, id);
    this.store.transact((tx) => {
      const rec = tx.get<EnrollmentRecord>(`auth/cluster/${id}`);
      if (!rec) throw new ForbiddenError(`cluster ${id} is not enrolled`);
      rec.renewedAt = this.now().toISOString();
      tx.put(`auth/cluster/${id}`, rec as unknown as Json);
    });
    return this.issue(id, keys);
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

function expectIdentity(got: Identity | undefined, want: Identity, field: string): void {
  if (!got || !sameIdentity(got, want))
    throw new InvalidInputError(`${field} must ask for exactly ${identityUri(want)}`);
}
