import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTlsServer, connect as tlsConnect, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  caPin,
  CertificateAuthority,
  createCsr,
  firstCertificate,
  generateKeyPair,
  identityOf,
  parseIdentityUri,
  peerIdentityOf,
  readCsr,
  verifiedIdentityOf,
  verifyChain,
  type Identity,
} from './pki.ts';
import { tlsOptions } from '../protocol/http-client.ts';
import { X509Certificate } from 'node:crypto';

describe('platform PKI', () => {
  let ca: CertificateAuthority;
  let caKey: string;
  let dir: string;
  before(async () => {
    ({ ca, key: caKey } = await CertificateAuthority.create());
    dir = mkdtempSync(join(tmpdir(), 'oaknet-pki-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('identity URIs round-trip and reject what is not ours', () => {
    const ids: Identity[] = [
      { kind: 'root' },
      { kind: 'cluster', clusterId: 'c-1' },
      { kind: 'node', clusterId: 'c-1', workerId: 'w.2' },
    ];
    for (const id of ids) {
      const cert = id; // typed round trip through the URI
      assert.deepEqual(parseIdentityUri(`urn:oaknet:${uriTail(cert)}`), id);
    }
    assert.equal(parseIdentityUri('urn:oaknet:cluster:a:b'), undefined);
    assert.equal(parseIdentityUri('urn:oaknet:cluster:../x'), undefined);
    assert.equal(parseIdentityUri('urn:other:root'), undefined);
  });

  it('a node certificate issued through a cluster node CA verifies with openssl against the platform CA', async () => {
    const clusterCaKeys = generateKeyPair();
    const clusterCaCert = await ca.issue({
      publicKey: clusterCaKeys.publicKey,
      identity: { kind: 'cluster-ca', clusterId: 'c1' },
      days: 30,
      ca: true,
    });
    const nodeCa = await CertificateAuthority.load(clusterCaCert, clusterCaKeys.privateKey, clusterCaCert);
    const node = await nodeCa.issueKeyAndChain({ kind: 'node', clusterId: 'c1', workerId: 'w1' }, 7);
    writeFileSync(join(dir, 'ca.pem'), ca.certPem);
    writeFileSync(join(dir, 'chain.pem'), node.chain);
    const leafOnly = node.chain.slice(0, node.chain.indexOf('-----END CERTIFICATE-----') + 25) + '\n';
    writeFileSync(join(dir, 'leaf.pem'), leafOnly);
    writeFileSync(join(dir, 'intermediate.pem'), clusterCaCert);
    const out = execFileSync('openssl', [
      'verify',
      '-x509_strict',
      '-purpose',
      'sslclient',
      '-CAfile',
      join(dir, 'ca.pem'),
      '-untrusted',
      join(dir, 'intermediate.pem'),
      join(dir, 'leaf.pem'),
    ]).toString();
    assert.match(out, /leaf\.pem: OK/);
    assert.deepEqual(identityOf(firstCertificate(node.chain)), {
      kind: 'node',
      clusterId: 'c1',
      workerId: 'w1',
    });
    assert.equal(verifyChain(node.chain, ca.certPem).subject.includes('w1'), true);
    // a node CA may not make further CAs (path length 0): openssl refuses a leaf below such a sub-CA
    const subKeys = generateKeyPair();
    const sub = await nodeCa.issue({
      publicKey: subKeys.publicKey,
      identity: { kind: 'cluster-ca', clusterId: 'evil' },
      days: 1,
      ca: true,
    });
    const subCa = await CertificateAuthority.load(sub, subKeys.privateKey);
    const evil = await subCa.issueKeyAndChain({ kind: 'node', clusterId: 'c1', workerId: 'w9' }, 1);
    writeFileSync(join(dir, 'evil.pem'), evil.chain);
    writeFileSync(join(dir, 'evil-int.pem'), sub + clusterCaCert);
    const refused = spawnSync('openssl', [
      'verify',
      '-CAfile',
      join(dir, 'ca.pem'),
      '-untrusted',
      join(dir, 'evil-int.pem'),
      join(dir, 'evil.pem'),
    ]);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stdout.toString() + refused.stderr.toString(), /path length/);
    await assert.rejects(CertificateAuthority.load(sub, generateKeyPair().privateKey), /does not belong/);
  });

  it('a certificate from another CA fails verifyChain with a message naming the problem', async () => {
    const { ca: other } = await CertificateAuthority.create('other');
    const cert = await other.issueKeyAndChain({ kind: 'cluster', clusterId: 'c9' }, 1);
    assert.throws(() => verifyChain(cert.chain, ca.certPem), /not signed by this platform CA/);
  });

  it('an expired certificate fails unless time is ignored (renewal of an expired one)', async () => {
    const cert = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: 'c2' }, 1);
    const later = new Date(Date.now() + 3 * 86_400_000);
    assert.throws(() => verifyChain(cert.chain, ca.certPem, { at: later }), /expired since/);
    assert.doesNotThrow(() => verifyChain(cert.chain, ca.certPem, { at: later, ignoreTime: true }));
  });

  it('a CSR proves the key and names the identity; a tampered one is refused', async () => {
    const keys = generateKeyPair();
    const csr = await createCsr(keys.privateKey, { kind: 'cluster', clusterId: 'c3' });
    const read = await readCsr(csr);
    assert.deepEqual(read.identity, { kind: 'cluster', clusterId: 'c3' });
    assert.equal(read.publicKey.replace(/\s/g, ''), keys.publicKey.replace(/\s/g, ''));
    await assert.rejects(readCsr('garbage'), /malformed certificate request/);
    const der = Buffer.from(csr.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 10] = der[der.length - 10]! ^ 0xff; // inside the signature
    const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(readCsr(bad), /not signed by its own key|malformed/);
  });

  it('the pin is the SPKI SHA-256 openssl computes, and survives reloading the CA', async () => {
    writeFileSync(join(dir, 'ca2.pem'), ca.certPem);
    const spki = execFileSync('sh', [
      '-c',
      `openssl x509 -in ${join(dir, 'ca2.pem')} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex`,
    ])
      .toString()
      .trim()
      .split(/\s+/)
      .pop();
    assert.equal(caPin(ca.certPem), `sha256:${spki}`);
    const reloaded = await CertificateAuthority.load(ca.certPem, caKey);
    assert.equal(caPin(reloaded.cert), caPin(ca.cert));
  });

  it('Node TLS 1.3 accepts the chain both ways: server and client authenticate', async () => {
    const server = await ca.issueKeyAndChain({ kind: 'root' }, 1);
    const client = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: 'c4' }, 1);
    const srv = createTlsServer(
      { key: server.key, cert: server.chain, ca: ca.certPem, requestCert: true, minVersion: 'TLSv1.3' },
      (s) => {
        const peer = s.getPeerCertificate();
        s.end(`${s.authorized} ${peer.subjectaltname}`);
      },
    );
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    const reply = await new Promise<string>((resolve, reject) => {
      const sock: TLSSocket = tlsConnect({
        port,
        host: '127.0.0.1',
        key: client.key,
        cert: client.chain,
        ca: ca.certPem,
        checkServerIdentity: (_h, cert) =>
          cert.subjectaltname === 'URI:urn:oaknet:root' ? undefined : new Error('not the root'),
      });
      let text = '';
      sock.on('data', (d: Buffer) => (text += d.toString()));
      sock.on('end', () => resolve(text));
      sock.on('error', reject);
    });
    srv.close();
    assert.equal(reply, 'true URI:urn:oaknet:cluster:c4');
  });
  it("a cluster's node CA signs nodes of its own cluster only: nothing else passes, in TLS either", async () => {
    const nodeCaKeys = generateKeyPair();
    const nodeCaPem = await ca.issue({
      publicKey: nodeCaKeys.publicKey,
      identity: { kind: 'cluster-ca', clusterId: 'b' },
      days: 30,
      ca: true,
    });
    const nodeCa = await CertificateAuthority.load(nodeCaPem, nodeCaKeys.privateKey, nodeCaPem);
    const nodeCaCert = new X509Certificate(nodeCaPem);
    const leafOf = async (id: Identity) => firstCertificate((await nodeCa.issueKeyAndChain(id, 1)).chain);
    assert.deepEqual(
      verifiedIdentityOf(await leafOf({ kind: 'node', clusterId: 'b', workerId: 'w1' }), nodeCaCert),
      { kind: 'node', clusterId: 'b', workerId: 'w1' },
    );
    for (const forged of [
      { kind: 'node', clusterId: 'a', workerId: 'w1' },
      { kind: 'cluster', clusterId: 'a' },
      { kind: 'cluster', clusterId: 'b' },
      { kind: 'root' },
      { kind: 'operator', name: 'x' },
    ] as Identity[])
      assert.equal(verifiedIdentityOf(await leafOf(forged), nodeCaCert), undefined, JSON.stringify(forged));
    // the platform CA signs the root and clusters, not nodes
    const direct = async (id: Identity) => firstCertificate((await ca.issueKeyAndChain(id, 1)).chain);
    assert.deepEqual(verifiedIdentityOf(await direct({ kind: 'root' }), ca.cert), { kind: 'root' });
    assert.equal(
      verifiedIdentityOf(await direct({ kind: 'node', clusterId: 'b', workerId: 'w1' }), ca.cert),
      undefined,
    );
    // not the issuer at all
    assert.equal(verifiedIdentityOf(await direct({ kind: 'root' }), nodeCaCert), undefined);

    // over TLS: a server sees a node of b as itself and a forged cluster as nothing; a client expecting the
    // root refuses a root certificate from the node CA
    const server = await ca.issueKeyAndChain({ kind: 'root' }, 1);
    const seen: Array<Identity | undefined> = [];
    const srv = createTlsServer(
      { key: server.key, cert: server.chain, ca: ca.certPem, requestCert: true, minVersion: 'TLSv1.3' },
      (sock) => {
        seen.push(peerIdentityOf(sock));
        sock.end('ok');
      },
    );
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    const call = (key: string, cert: string) =>
      new Promise<string>((resolve, reject) => {
        const sock = tlsConnect({
          port,
          host: '127.0.0.1',
          ...tlsOptions({ ca: ca.certPem, key, cert, expect: { kind: 'root' } }),
        });
        let text = '';
        sock.on('data', (d: Buffer) => (text += d.toString()));
        sock.on('end', () => resolve(text));
        sock.on('error', reject);
      });
    const node = await nodeCa.issueKeyAndChain({ kind: 'node', clusterId: 'b', workerId: 'w1' }, 1);
    const forged = await nodeCa.issueKeyAndChain({ kind: 'cluster', clusterId: 'a' }, 1);
    assert.equal(await call(node.key, node.chain), 'ok');
    assert.equal(await call(forged.key, forged.chain), 'ok');
    assert.deepEqual(seen, [{ kind: 'node', clusterId: 'b', workerId: 'w1' }, undefined]);
    srv.close();

    const fakeRoot = await nodeCa.issueKeyAndChain({ kind: 'root' }, 1);
    const fake = createTlsServer({ key: fakeRoot.key, cert: fakeRoot.chain, minVersion: 'TLSv1.3' }, (sock) =>
      sock.end('stolen'),
    );
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const fakePort = (fake.address() as { port: number }).port;
    await assert.rejects(
      new Promise<void>((resolve, reject) => {
        const sock = tlsConnect({
          port: fakePort,
          host: '127.0.0.1',
          ...tlsOptions({ ca: ca.certPem, expect: { kind: 'root' } }),
        });
        sock.on('secureConnect', () => resolve());
        sock.on('error', reject);
      }),
      /the server is not urn:oaknet:root/,
    );
    fake.close();
  });

  it('a resumed TLS session (no chain kept) still yields the identity, from the issuers this side knows', async () => {
    const server = await ca.issueKeyAndChain({ kind: 'root' }, 1);
    const client = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: 'c5' }, 1);
    const seen: Array<[boolean, Identity | undefined, Identity | undefined]> = [];
    const srv = createTlsServer(
      { key: server.key, cert: server.chain, ca: ca.certPem, requestCert: true, minVersion: 'TLSv1.3' },
      (sock) => {
        seen.push([sock.isSessionReused(), peerIdentityOf(sock), peerIdentityOf(sock, [ca.cert])]);
        sock.end('ok');
      },
    );
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    let session: Buffer | undefined;
    for (let i = 0; i < 2; i++) {
      await new Promise<void>((resolve, reject) => {
        const sock = tlsConnect({
          port,
          host: '127.0.0.1',
          ...tlsOptions({ ca: ca.certPem, key: client.key, cert: client.chain, expect: { kind: 'root' } }),
          ...(session ? { session } : {}),
        });
        sock.on('session', (s: Buffer) => (session = s));
        sock.on('data', () => undefined);
        sock.on('end', () => resolve());
        sock.on('error', reject);
      });
    }
    srv.close();
    const c5: Identity = { kind: 'cluster', clusterId: 'c5' };
    assert.deepEqual(seen, [
      [false, c5, c5],
      [true, undefined, c5],
    ]);
  });
});

function uriTail(id: Identity): string {
  if (id.kind === 'root') return 'root';
  if (id.kind === 'node') return `node:${id.clusterId}:${id.workerId}`;
  if (id.kind === 'cluster') return `cluster:${id.clusterId}`;
  return '';
}
