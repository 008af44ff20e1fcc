/**
 * @module cluster/node-enrollment
 * NetManagers join their cluster: a node token (checked by the root) and a certificate request for
 * urn:oaknet:node:<cluster>:<worker> get a certificate signed by this cluster's node CA, so the node can
 * connect to the cluster's broker. A worker ID belongs to the token that first enrolled it (no takeover).
 * That token may enroll it again (a node that lost its state) only while it enrolled no other worker: a
 * token shared by many nodes (the local platform's, a fleet's) would otherwise buy any of them the
 * certificate, and with it the MQTT session, of every other. A node renews with its current certificate,
 * even one that expired up to RENEW_EXPIRED_DAYS ago (the root's limit for clusters); later it must enroll
 * again with a node token.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { ForbiddenError, InvalidInputError, UnauthenticatedError } from '../errors.ts';
import {
  RENEW_EXPIRED_DAYS,
  type NodeCertificates,
  type NodeEnroll,
  type NodeRenew,
} from '../protocol/auth-api.ts';
import type { TokenVerifier } from '../protocol/http-auth.ts';
import {
  certificateCommonName,
  identityOf,
  identityUri,
  readCsr,
  sameIdentity,
  verifyChain,
} from '../security/pki.ts';
import type { Json, Store } from '../store/store.ts';
import type { ClusterIdentity } from './credentials.ts';

/** Days a NetManager's certificate is valid; it renews after two thirds. */
export const NODE_CERT_DAYS = 30;

interface NodeEnrollmentRecord {
  workerId: string;
  tokenId: string;
  enrolledAt: string;
}

export class NodeEnrollment {
  private readonly enrolled = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly identity: () => ClusterIdentity,
    private readonly tokens: TokenVerifier,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async enroll(req: NodeEnroll): Promise<NodeCertificates> {
    const token = await this.tokens.verify(req.token, ['node']);
    const { clusterId, cert } = this.identity();
    const worker = req.worker_id;
    // a broker that reads CNs (mosquitto) would give such a node the cluster's rights
    if (worker === clusterId || worker === certificateCommonName(cert))
      throw new InvalidInputError(
        `worker ID ${worker} is this cluster's own name: a node cannot be called like its cluster`,
      );
    const publicKey = await this.request(req.csr, clusterId, worker);
    this.store.transact((tx) => {
      const old = tx.get<NodeEnrollmentRecord>(`auth/node/${worker}`);
      if (old && old.tokenId !== token.id)
        throw new ForbiddenError(
          `worker ${worker} was enrolled with another token (${old.tokenId}); a worker ID cannot be taken over`,
        );
      if (old) {
        const other = tx
          .list<NodeEnrollmentRecord>('auth/node/')
          .find(([, r]) => r.tokenId === token.id && r.workerId !== worker);
        if (other)
          throw new ForbiddenError(
            `worker ${worker} is enrolled already, and token ${token.id} enrolled other workers too (${other[1].workerId}): a shared token cannot enroll a worker again; the node renews with its certificate, or enrolls with a token of its own`,
          );
      }
      const rec: NodeEnrollmentRecord = {
        workerId: worker,
        tokenId: token.id,
        enrolledAt: old?.enrolledAt ?? new Date().toISOString(),
      };
      tx.put(`auth/node/${worker}`, rec as unknown as Json);
    });
    this.enrolled.add(worker);
    return this.issue(publicKey, clusterId, worker);
  }

  /** Whether `worker` enrolled at this cluster (enrollments are never removed, so hits are cached). */
  isEnrolled(worker: string): boolean {
    if (this.enrolled.has(worker)) return true;
    const known = this.store.transact((tx) => tx.get(`auth/node/${worker}`)) !== undefined;
    if (known) this.enrolled.add(worker);
    return known;
  }

  /** Renews the certificate of the node whose certificate the TLS client presented. */
  async renew(socket: Partial<TLSSocket>, req: NodeRenew): Promise<NodeCertificates> {
    const peer = socket.getPeerCertificate?.(true);
    if (!peer?.raw)
      throw new UnauthenticatedError(
        'renewal needs the current node certificate as the TLS client certificate',
      );
    const leaf = new X509Certificate(peer.raw);
    const { nodeCa, ca, clusterId } = this.identity();
    try {
      // this cluster's node CA (any of its renewals: they keep the cluster's identity) signed it
      verifyChain(leaf.toString() + nodeCa.certPem, ca, { ignoreTime: true });
    } catch (err) {
      throw new UnauthenticatedError(
        `the client certificate is not one this cluster issued: ${(err as Error).message}`,
      );
    }
    const id = identityOf(leaf);
    if (id?.kind !== 'node' || id.clusterId !== clusterId)
      throw new ForbiddenError(`only a node certificate of cluster ${clusterId} can be renewed here`);
    if (this.now().getTime() - Date.parse(leaf.validTo) > RENEW_EXPIRED_DAYS * 86_400_000)
      throw new UnauthenticatedError(
        `the certificate of worker ${id.workerId} expired at ${new Date(leaf.validTo).toISOString()}, ` +
          `more than ${RENEW_EXPIRED_DAYS} days ago: it must enroll again with a node token`,
      );
    if (!this.store.transact((tx) => tx.get(`auth/node/${id.workerId}`)))
      throw new ForbiddenError(`worker ${id.workerId} is not enrolled at this cluster`);
    return this.issue(await this.request(req.csr, clusterId, id.workerId), clusterId, id.workerId);
  }

  private async request(csr: string, clusterId: string, workerId: string): Promise<string> {
    const read = await readCsr(csr);
    const want = { kind: 'node' as const, clusterId, workerId };
    if (!read.identity || !sameIdentity(read.identity, want))
      throw new InvalidInputError(`csr must ask for exactly ${identityUri(want)}`);
    return read.publicKey;
  }

  private async issue(publicKey: string, clusterId: string, workerId: string): Promise<NodeCertificates> {
    const { nodeCa, ca } = this.identity();
    const leaf = await nodeCa.issue({
      publicKey,
      identity: { kind: 'node', clusterId, workerId },
      days: NODE_CERT_DAYS,
    });
    return { chain: leaf + nodeCa.certPem, ca };
  }
}
