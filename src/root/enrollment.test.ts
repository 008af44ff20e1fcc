import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { RENEW_EXPIRED_DAYS, type ClusterCertificates } from '../protocol/auth-api.ts';
import { caPin, CertificateAuthority, createCsr, generateKeyPair } from '../security/pki.ts';
import { TokenStore } from '../security/tokens.ts';
import { MemoryStore } from '../store/memory.ts';
import { CLUSTER_CERT_DAYS, Enrollment } from './enrollment.ts';

const DAY_MS = 86_400_000;

async function setUp() {
  const { ca } = await CertificateAuthority.create();
  const store = new MemoryStore();
  const tokens = new TokenStore(store, caPin(ca.cert));
  let skewMs = 0;
  const enrollment = new Enrollment(store, ca, tokens, () => new Date(Date.now() + skewMs));
  const requests = async (id: string) => ({
    csr: await createCsr(generateKeyPair().privateKey, { kind: 'cluster', clusterId: id }),
    ca_csr: await createCsr(generateKeyPair().privateKey, { kind: 'cluster-ca', clusterId: id }),
  });
  return {
    ca,
    tokens,
    enrollment,
    skew: (days: number) => (skewMs = days * DAY_MS),
    enroll: async (id: string, token: string) =>
      enrollment.enroll({ token, cluster_id: id, ...(await requests(id)) }),
    /** Renews over a "connection" whose client certificate is `cert`. */
    renew: async (id: string, cert: string) => enrollment.renew(socketWith(cert), await requests(id)),
  };
}

function socketWith(certPem: string): Partial<TLSSocket> {
  const raw = new X509Certificate(certPem).raw;
  return { getPeerCertificate: (() => ({ raw })) as unknown as TLSSocket['getPeerCertificate'] };
}

const serial = (c: ClusterCertificates) => new X509Certificate(c.cert).serialNumber;

describe('cluster enrollment', () => {
  it("only the cluster's current certificate (and the one it renewed with) authenticates it", async () => {
    const t = await setUp();
    const token = t.tokens.create('cluster').token;
    const first = await t.enroll('c1', token);
    assert.equal(t.enrollment.certificateProblem('c1', serial(first)), undefined);
    const renewed = await t.renew('c1', first.cert);
    assert.equal(t.enrollment.certificateProblem('c1', serial(renewed)), undefined);
    assert.equal(t.enrollment.certificateProblem('c1', serial(first)), undefined, 'while it switches over');
    const again = await t.renew('c1', renewed.cert);
    assert.match(t.enrollment.certificateProblem('c1', serial(first)) ?? '', /no longer cluster c1's/);
    assert.equal(t.enrollment.certificateProblem('c1', serial(again)), undefined);
    await assert.rejects(t.renew('c1', first.cert), { code: 'E_FORBIDDEN', message: /no longer/ });
    assert.match(t.enrollment.certificateProblem('c9', serial(first)) ?? '', /c9 is not enrolled/);
  });

  it('enrolling again under the same ID retires every older certificate', async () => {
    const t = await setUp();
    const token = t.tokens.create('cluster').token;
    const lost = await t.enroll('c1', token);
    const renewed = await t.renew('c1', lost.cert);
    const fresh = await t.enroll('c1', token);
    assert.equal(t.enrollment.certificateProblem('c1', serial(fresh)), undefined);
    for (const old of [lost, renewed])
      assert.match(t.enrollment.certificateProblem('c1', serial(old)) ?? '', /enrolled or renewed since/);
    await assert.rejects(t.renew('c1', renewed.cert), { code: 'E_FORBIDDEN' });
  });

  it('a revoked cluster neither authenticates nor renews; it enrolls again only with a new token', async () => {
    const t = await setUp();
    const token = t.tokens.create('cluster').token;
    const certs = await t.enroll('c1', token);
    assert.throws(() => t.enrollment.revoke('nobody'), { code: 'E_NOT_FOUND' });
    const revoked = t.enrollment.revoke('c1');
    assert.equal(revoked.cluster_id, 'c1');
    assert.match(
      t.enrollment.certificateProblem('c1', serial(certs)) ?? '',
      /c1 was revoked at .*new cluster token/,
    );
    await assert.rejects(t.renew('c1', certs.cert), { code: 'E_FORBIDDEN', message: /revoked/ });
    await assert.rejects(t.enroll('c1', token), {
      code: 'E_FORBIDDEN',
      message: /revoked.*new cluster token/,
    });
    const back = await t.enroll('c1', t.tokens.create('cluster').token);
    assert.equal(t.enrollment.certificateProblem('c1', serial(back)), undefined);
    assert.match(t.enrollment.certificateProblem('c1', serial(certs)) ?? '', /no longer/);
  });

  it(`an expired certificate renews for ${RENEW_EXPIRED_DAYS} days past its expiry, not later`, async () => {
    const t = await setUp();
    const certs = await t.enroll('c1', t.tokens.create('cluster').token);
    t.skew(CLUSTER_CERT_DAYS + RENEW_EXPIRED_DAYS + 1);
    await assert.rejects(t.renew('c1', certs.cert), {
      code: 'E_UNAUTHENTICATED',
      message: /expired at .*more than 30 days ago: it must enroll again/,
    });
    t.skew(CLUSTER_CERT_DAYS + RENEW_EXPIRED_DAYS - 1);
    const renewed = await t.renew('c1', certs.cert);
    assert.equal(t.enrollment.certificateProblem('c1', serial(renewed)), undefined);
  });

  it('a certificate the CA signed but the root never recorded does not renew', async () => {
    const t = await setUp();
    await t.enroll('c1', t.tokens.create('cluster').token);
    const forged = await t.ca.issue({
      publicKey: generateKeyPair().publicKey,
      identity: { kind: 'cluster', clusterId: 'c1' },
      days: 1,
    });
    await assert.rejects(t.renew('c1', forged), { code: 'E_FORBIDDEN', message: /no longer cluster c1's/ });
  });
});
