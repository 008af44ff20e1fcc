/**
 * @module security/pki
 * The platform's X.509 identities. One platform CA (ECDSA P-256, self-signed) signs every identity, directly
 * (the root, clusters, operators' tools) or through a cluster's node CA (a CA certificate the root issues to
 * each cluster with path length 0, with which the cluster signs its NetManagers' certificates, so nodes can
 * join while the root is away).
 *
 * An identity is a URI subject alternative name, as SPIFFE does it, not a host name: `urn:oaknet:root`,
 * `urn:oaknet:cluster:<cluster ID>`, `urn:oaknet:node:<cluster ID>:<worker ID>`. Peers check the URI they
 * expect, so a certificate is valid wherever its holder runs (behind NAT, port forwards, new addresses) and
 * no identity can pose as another one by naming an address. The certificates are built by @peculiar/x509
 * (no hand-written ASN.1) and checked by Node's own X509Certificate and TLS stack.
 */
import 'reflect-metadata';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  webcrypto,
  X509Certificate,
} from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { InvalidInputError } from '../errors.ts';
import { isId } from '../protocol/names.ts';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** Certificates are valid from a little in the past: clocks of edge machines drift. */
const BACKDATE_MS = 10 * 60_000;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;

/** Who holds a certificate. */
export type Identity =
  | { kind: 'root' }
  | { kind: 'cluster'; clusterId: string }
  | { kind: 'cluster-ca'; clusterId: string }
  | { kind: 'node'; clusterId: string; workerId: string }
  | { kind: 'operator'; name: string };

export function identityUri(id: Identity): string {
  switch (id.kind) {
    case 'root':
      return 'urn:oaknet:root';
    case 'cluster':
      return `urn:oaknet:cluster:${id.clusterId}`;
    case 'cluster-ca':
      return `urn:oaknet:cluster-ca:${id.clusterId}`;
    case 'node':
      return `urn:oaknet:node:${id.clusterId}:${id.workerId}`;
    case 'operator':
      return `urn:oaknet:operator:${id.name}`;
  }
}

/** The identity a URI names, or undefined when it is not one of ours (or its IDs are not safe IDs). */
export function parseIdentityUri(uri: string): Identity | undefined {
  const parts = uri.split(':');
  if (parts[0] !== 'urn' || parts[1] !== 'oaknet') return undefined;
  const [kind, a, b] = [parts[2], parts[3], parts[4]];
  const ok = (s: string | undefined): s is string => s !== undefined && isId(s);
  if (kind === 'root' && parts.length === 3) return { kind: 'root' };
  if (kind === 'cluster' && parts.length === 4 && ok(a)) return { kind: 'cluster', clusterId: a };
  if (kind === 'cluster-ca' && parts.length === 4 && ok(a)) return { kind: 'cluster-ca', clusterId: a };
  if (kind === 'node' && parts.length === 5 && ok(a) && ok(b))
    return { kind: 'node', clusterId: a, workerId: b };
  if (kind === 'operator' && parts.length === 4 && ok(a)) return { kind: 'operator', name: a };
  return undefined;
}

export function sameIdentity(a: Identity, b: Identity): boolean {
  return identityUri(a) === identityUri(b);
}

/**
 * The common name a certificate of this identity carries (for logs and brokers that read CNs: mosquitto's
 * use_identity_as_username makes it the MQTT username). Only a node's CN is an ID (its worker ID, as
 * upstream's NetManagers are named on MQTT); every other CN has a ':' or a space, which no ID has, so no
 * other certificate of the platform (a cluster's, an operator's) can pass for a node, and no node's for
 * a cluster.
 */
export function commonNameOf(id: Identity): string {
  switch (id.kind) {
    case 'root':
      return 'oaknet root';
    case 'cluster':
    case 'operator':
      return identityUri(id);
    case 'cluster-ca':
      return `oaknet node CA of ${id.clusterId}`;
    case 'node':
      return id.workerId;
  }
}

/** A private key and its certificate chain (leaf first), both PEM. */
export interface KeyAndChain {
  key: string;
  /** The leaf certificate followed by the intermediates up to (not including) the platform CA. */
  chain: string;
}

/** A fresh P-256 key pair, PEM (PKCS#8 private, SPKI public). */
export function generateKeyPair(): { privateKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** The first certificate of a PEM chain. */
export function firstCertificate(pem: string): X509Certificate {
  const certs = splitPem(pem);
  if (certs.length === 0) throw new InvalidInputError('no PEM certificate found');
  try {
    return new X509Certificate(certs[0]!);
  } catch (cause) {
    throw new InvalidInputError('malformed certificate', { cause });
  }
}

/** The common name of a certificate (the first certificate of a PEM chain); undefined without one. */
export function certificateCommonName(cert: string | X509Certificate): string | undefined {
  const c = typeof cert === 'string' ? firstCertificate(cert) : cert;
  return c.subject
    .split('\n')
    .find((l) => l.startsWith('CN='))
    ?.slice(3);
}

/** Every certificate of a PEM bundle, each as its own PEM text. */
export function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * The pin of a CA, as kubeadm pins one: `sha256:` and the hex SHA-256 of its DER SubjectPublicKeyInfo.
 * Independent of the certificate's dates and serial, so a re-issued CA with the same key keeps its pin.
 */
export function caPin(cert: X509Certificate | string): string {
  const c = typeof cert === 'string' ? firstCertificate(cert) : cert;
  const spki = c.publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

/** The identities (URI SANs of ours) a certificate names. */
export function identitiesOf(cert: X509Certificate): Identity[] {
  const san = cert.subjectAltName ?? '';
  const out: Identity[] = [];
  for (const entry of san.split(/,\s*/)) {
    if (!entry.startsWith('URI:')) continue;
    const id = parseIdentityUri(entry.slice(4));
    if (id) out.push(id);
  }
  return out;
}

/** The one identity of a certificate; undefined unless it names exactly one. */
export function identityOf(cert: X509Certificate): Identity | undefined {
  const ids = identitiesOf(cert);
  return ids.length === 1 ? ids[0] : undefined;
}

/**
 * The identity of a certificate a TLS handshake verified against the platform CA, given its issuer there, if
 * that issuer may sign it: the platform CA (it names no identity) signs the root, clusters, operators and
 * clusters' node CAs; a cluster's node CA signs nodes of that cluster only. Without this check a cluster's
 * node CA, which chains to the platform CA, could sign a certificate naming the root or another cluster.
 */
export function verifiedIdentityOf(
  cert: X509Certificate,
  issuer: X509Certificate | undefined,
): Identity | undefined {
  const id = identityOf(cert);
  if (!id || !issuer || !issuer.ca || !cert.checkIssued(issuer) || !cert.verify(issuer.publicKey))
    return undefined;
  const by = identitiesOf(issuer);
  if (id.kind === 'node') {
    const only = by.length === 1 ? by[0] : undefined;
    return only?.kind === 'cluster-ca' && only.clusterId === id.clusterId ? id : undefined;
  }
  return by.length === 0 && issuer.checkIssued(issuer) ? id : undefined;
}

/**
 * verifiedIdentityOf for a TLS peer: its certificate and the issuer the handshake found for it. A resumed
 * TLS session keeps the peer's certificate but not its chain; its issuer is then the one of `issuers` (the
 * CAs this side knows: the platform CA, a cluster's own node CA) that signed it.
 */
export function peerIdentityOf(
  socket: { getPeerX509Certificate?: () => X509Certificate | undefined },
  issuers: readonly X509Certificate[] = [],
): Identity | undefined {
  const cert = socket.getPeerX509Certificate?.();
  if (!cert) return undefined;
  const issuer =
    cert.issuerCertificate ?? issuers.find((i) => cert.checkIssued(i) && cert.verify(i.publicKey));
  return verifiedIdentityOf(cert, issuer);
}

export interface IssueRequest {
  /** The holder's public key, SPKI PEM (from a CSR the caller verified, or a key the caller made). */
  publicKey: string;
  identity: Identity;
  /** Validity from now. */
  days: number;
  /** A CA certificate that may sign leaf certificates only (path length 0): a cluster's node CA. */
  ca?: boolean;
}

/** A certificate authority: the platform CA, or a cluster's node CA (then `parents` holds the chain above it). */
export class CertificateAuthority {
  private constructor(
    readonly cert: X509Certificate,
    readonly certPem: string,
    private readonly signingKey: CryptoKey,
    /** The chain above this CA, PEM, excluding the platform CA (empty for the platform CA). */
    readonly parents: string,
  ) {}

  /** A new platform CA with a fresh key; valid 10 years. */
  static async create(name = 'oaknet platform CA'): Promise<{ ca: CertificateAuthority; key: string }> {
    const keys = generateKeyPair();
    const now = Date.now();
    const signingKey = await importPrivateKey(keys.privateKey);
    const publicKey = await importPublicKey(keys.publicKey);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=${escapeDn(name)}, O=oaknet`,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + 3650 * DAY_MS),
      keys: { privateKey: signingKey, publicKey },
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(publicKey),
      ],
    });
    const pem = pemLine(cert.toString('pem'));
    return {
      ca: new CertificateAuthority(new X509Certificate(pem), pem, signingKey, ''),
      key: keys.privateKey,
    };
  }

  /** A CA from its certificate and key (PEM); `parents` is the chain above it up to the platform CA. */
  static async load(certPem: string, keyPem: string, parents = ''): Promise<CertificateAuthority> {
    const cert = firstCertificate(certPem);
    if (!cert.ca) throw new InvalidInputError('the CA certificate is not a CA (basicConstraints CA:FALSE)');
    let signingKey: CryptoKey;
    try {
      signingKey = await importPrivateKey(keyPem);
    } catch (cause) {
      throw new InvalidInputError('the CA key is not a PKCS#8 P-256 private key', { cause });
    }
    if (!cert.checkPrivateKey(createPrivateKey(keyPem)))
      throw new InvalidInputError('the CA key does not belong to the CA certificate');
    return new CertificateAuthority(cert, pemLine(cert.toString()), signingKey, parents);
  }

  /** Signs a certificate for `req.identity`. */
  async issue(req: IssueRequest): Promise<string> {
    const now = Date.now();
    const publicKey = await importPublicKey(req.publicKey);
    const issuer = new x509.X509Certificate(this.certPem);
    const extensions: x509.Extension[] = [
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identityUri(req.identity) }], false),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuer),
    ];
    if (req.ca) {
      extensions.push(
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      );
    } else {
      extensions.push(
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(
          [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
      );
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${escapeDn(commonNameOf(req.identity))}, O=oaknet`,
      issuer: issuer.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(Math.min(now + req.days * DAY_MS, Date.parse(this.cert.validTo))),
      publicKey,
      signingKey: this.signingKey,
      signingAlgorithm: ALG,
      extensions,
    });
    return pemLine(cert.toString('pem'));
  }

  /** A key and a certificate for `identity` made here (the root's own, a platform's tools). */
  async issueKeyAndChain(identity: Identity, days: number): Promise<KeyAndChain> {
    const keys = generateKeyPair();
    const leaf = await this.issue({ publicKey: keys.publicKey, identity, days });
    return { key: keys.privateKey, chain: leaf + this.parents };
  }
}

/** A PKCS#10 request for `identity` signed by `privateKey` (PEM): what a joiner sends to be certified. */
export async function createCsr(privateKey: string, identity: Identity): Promise<string> {
  const signingKey = await importPrivateKey(privateKey);
  const publicKey = await importPublicKey(publicKeyOf(privateKey));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${escapeDn(commonNameOf(identity))}`,
    keys: { privateKey: signingKey, publicKey },
    signingAlgorithm: ALG,
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identityUri(identity) }], false),
    ],
  });
  return pemLine(csr.toString('pem'));
}

/**
 * Verifies a PKCS#10 request (its signature proves the key is held) and returns its public key (SPKI PEM)
 * and the identity it asks for; throws InvalidInputError naming the problem.
 */
export async function readCsr(pem: string): Promise<{ publicKey: string; identity: Identity | undefined }> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (cause) {
    throw new InvalidInputError('malformed certificate request (expected a PEM PKCS#10 CSR)', { cause });
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new InvalidInputError('the certificate request is not signed by its own key');
  const raw = csr.extensions.find((e) => e.type === '2.5.29.17');
  const san = raw ? new x509.SubjectAlternativeNameExtension(raw.rawData) : undefined;
  const uris = san?.names.items.filter((n) => n.type === 'url').map((n) => n.value) ?? [];
  const ids = uris.map(parseIdentityUri).filter((x): x is Identity => x !== undefined);
  const spki = Buffer.from(csr.publicKey.rawData).toString('base64');
  const publicKey = `-----BEGIN PUBLIC KEY-----\n${spki.replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PUBLIC KEY-----\n`;
  const key = createPublicKey(publicKey);
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    throw new InvalidInputError('the certificate request must carry an ECDSA P-256 key');
  return { publicKey, identity: ids.length === 1 ? ids[0] : undefined };
}

/**
 * Checks that `chainPem` (leaf first, then intermediates) leads to `caPem` by signatures, that every
 * certificate above the leaf is a CA and that all are within their dates at `at` (unless `ignoreTime`);
 * returns the leaf. Throws InvalidInputError naming the problem. (TLS does the same for live connections;
 * this is for certificates that arrive any other way, and for renewals of expired ones.)
 */
export function verifyChain(
  chainPem: string,
  caPem: string,
  opts: { at?: Date; ignoreTime?: boolean } = {},
): X509Certificate {
  const ca = firstCertificate(caPem);
  const certs = splitPem(chainPem).map((p) => new X509Certificate(p));
  const leaf = certs[0];
  if (!leaf) throw new InvalidInputError('no certificate given');
  const at = opts.at ?? new Date();
  const path = [...certs, ca];
  for (let i = 0; i < path.length; i++) {
    const c = path[i]!;
    const from = new Date(c.validFrom);
    const to = new Date(c.validTo);
    if (!opts.ignoreTime && (at < from || at > to))
      throw new InvalidInputError(
        `certificate ${c.subject.replace(/\n/g, ', ')} is ${at > to ? `expired since ${to.toISOString()}` : `not valid before ${from.toISOString()}`}`,
      );
    if (i > 0 && !c.ca) throw new InvalidInputError(`certificate ${c.subject} is not a CA`);
    const issuer = path[i + 1];
    if (issuer === undefined) break;
    if (!c.verify(issuer.publicKey))
      throw new InvalidInputError(
        i === path.length - 2
          ? 'certificate is not signed by this platform CA'
          : `certificate ${c.subject} is not signed by the next one of its chain`,
      );
  }
  return leaf;
}

/** The SPKI PEM public key of a PKCS#8 PEM private key. */
export function publicKeyOf(privateKey: string): string {
  return createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign']);
}

async function importPublicKey(pem: string): Promise<CryptoKey> {
  let der: Buffer;
  try {
    der = createPublicKey(pem).export({ type: 'spki', format: 'der' });
  } catch (cause) {
    throw new InvalidInputError('malformed public key', { cause });
  }
  return webcrypto.subtle.importKey('spki', der, ALG, true, ['verify']);
}

/** A positive random 128-bit serial number (RFC 5280 4.1.2.2: at most 20 octets, positive). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** PEM text ending in exactly one newline, so that bundles concatenate. */
function pemLine(pem: string): string {
  return pem.trimEnd() + '\n';
}

function escapeDn(value: string): string {
  return value.replace(/[,+"\\<>;=]/g, (c) => `\\${c}`);
}
