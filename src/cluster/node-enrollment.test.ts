import assert from 'node:assert/strict';
import type { TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { RENEW_EXPIRED_DAYS } from '../protocol/auth-api.ts';
import { CertificateAuthority, createCsr, firstCertificate, generateKeyPair } from '../security/pki.ts';
import type { TokenInfo } from '../security/tokens.ts';
import { MemoryStore } from '../store/memory.ts';
import type { ClusterIdentity } from './credentials.ts';
import { NODE_CERT_DAYS, NodeEnrollment } from './node-enrollment.ts';

const DAY_MS = 86_400_000;

function socketWith(chainPem: string): Partial<TLSSocket> {
  const raw = firstCertificate(chainPem).raw;
  return { getPeerCertificate: (() => ({ raw })) as unknown as TLSSocket['getPeerCertificate'] };
}

describe('node enrollment at the cluster', () => {
  it(`an expired node certificate renews for ${RENEW_EXPIRED_DAYS} days past its expiry, not later`, async () => {
    const { ca } = await CertificateAuthority.create();
    const nodeCaKeys = generateKeyPair();
    const nodeCaCert = await ca.issue({
      publicKey: nodeCaKeys.publicKey,
      identity: { kind: 'cluster-ca', clusterId: 'c1' },
      days: 90,
      ca: true,
    });
    const own = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: 'c1' }, 30);
    const identity: ClusterIdentity = {
      clusterId: 'c1',
      ca: ca.certPem,
      key: own.key,
      cert: own.chain,
      nodeCa: await CertificateAuthority.load(nodeCaCert, nodeCaKeys.privateKey),
      nodeCaKey: nodeCaKeys.privateKey,
    };
    const token: TokenInfo = {
      id: '0123456789abcdef',
      role: 'node',
      description: '',
      created: new Date().toISOString(),
      expires: null,
      revoked: null,
      uses: 0,
      last_used: null,
    };
    let aheadMs = 0;
    const enrollment = new NodeEnrollment(
      new MemoryStore(),
      () => identity,
      { verify: () => token },
      () => new Date(Date.now() + aheadMs),
    );
    const csr = () =>
      createCsr(generateKeyPair().privateKey, { kind: 'node', clusterId: 'c1', workerId: 'w1' });
    const certs = await enrollment.enroll({ token: 'x', worker_id: 'w1', csr: await csr() });
    aheadMs = (NODE_CERT_DAYS + RENEW_EXPIRED_DAYS + 1) * DAY_MS;
    await assert.rejects(enrollment.renew(socketWith(certs.chain), { csr: await csr() }), {
      code: 'E_UNAUTHENTICATED',
      message: /worker w1 expired at .*more than 30 days ago: it must enroll again with a node token/,
    });
    aheadMs = (NODE_CERT_DAYS + RENEW_EXPIRED_DAYS - 1) * DAY_MS;
    const renewed = await enrollment.renew(socketWith(certs.chain), { csr: await csr() });
    assert.notEqual(firstCertificate(renewed.chain).serialNumber, firstCertificate(certs.chain).serialNumber);
  });
});
