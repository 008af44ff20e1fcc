/**
 * @module security/join
 * The first contact of a joiner: it has a token (which carries the CA pin) and an address, nothing else. It
 * opens TLS without trusting anything yet, takes the CA the server presents in its chain, and goes on only
 * when that CA's pin is the token's and the server's certificate is signed by it and names the expected
 * identity (kubeadm's discovery with --discovery-token-ca-cert-hash). From then on it trusts that CA only.
 */
import { X509Certificate } from 'node:crypto';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { UnauthenticatedError, UnavailableError } from '../errors.ts';
import { caPin, identityOf, identityUri, sameIdentity, type Identity } from './pki.ts';
import { parseToken } from './tokens.ts';

/**
 * The platform CA (PEM) of the server at `url`, checked against the token's pin, and the server's identity
 * (which must be `expect` when given); rejects naming why not.
 */
export async function discoverServer(
  url: string,
  token: string,
  expect?: Identity,
  timeoutMs = 5000,
): Promise<{ ca: string; identity: Identity }> {
  const { pin } = parseToken(token);
  const u = new URL(url);
  if (u.protocol !== 'https:') throw new UnavailableError(`${url}: joining needs an https URL`);
  const port = Number(u.port || 443);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const chain = await new Promise<DetailedPeerCertificate>((resolve, reject) => {
    const socket = connect({
      host,
      port,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      timeout: timeoutMs,
    });
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate(true);
      socket.end();
      resolve(peer);
    });
    socket.once('timeout', () => socket.destroy(new Error(`no TLS answer in ${timeoutMs} ms`)));
    socket.once('error', (cause: Error) =>
      reject(new UnavailableError(`${url} unreachable: ${cause.message}`, { cause })),
    );
  });
  const certs: X509Certificate[] = [];
  const seen = new Set<string>();
  for (
    let c: DetailedPeerCertificate | undefined = chain;
    c?.raw && !seen.has(c.fingerprint256);
    c = c.issuerCertificate
  ) {
    seen.add(c.fingerprint256);
    certs.push(new X509Certificate(c.raw));
  }
  const leaf = certs[0];
  const ca = certs.find((c) => c.ca && caPin(c) === pin);
  if (!leaf || !ca)
    throw new UnauthenticatedError(
      `${url} does not present the CA this token was made for (pin ${pin}): wrong address, or someone in between`,
    );
  const id = identityOf(leaf);
  if (!leaf.verify(ca.publicKey) || !id)
    throw new UnauthenticatedError(`${url} presents a certificate its CA did not sign`);
  if (expect && !sameIdentity(id, expect))
    throw new UnauthenticatedError(`${url} is ${identityUri(id)}, not ${identityUri(expect)}`);
  return { ca: ca.toString(), identity: id };
}

/** The platform CA of the server at `url`, which must be `expect` (see discoverServer). */
export async function discoverCa(
  url: string,
  token: string,
  expect: Identity,
  timeoutMs = 5000,
): Promise<string> {
  return (await discoverServer(url, token, expect, timeoutMs)).ca;
}
