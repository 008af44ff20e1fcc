/**
 * @module protocol/http-client
 * The one HTTP(S) client of oaknet's control plane (root, cluster and CLI clients use it). Over https it
 * speaks TLS 1.3 only, trusts only the platform CA, and checks that the server is the identity it expects
 * (a URI SAN such as urn:oaknet:root), never a host name: a platform's certificates hold wherever its
 * processes run. It presents a client certificate and/or a bearer token when given them.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, PeerCertificate } from 'node:tls';
import { UnavailableError } from '../errors.ts';
import { identityUri, verifiedIdentityOf, type Identity } from '../security/pki.ts';

/** What a TLS client needs: the platform CA, whom it expects, and optionally its own key and chain. */
export interface ClientTls {
  ca: string;
  /** The server's identity; a server with any other certificate is refused. */
  expect: Identity;
  key?: string;
  cert?: string;
}

/** Credentials of a caller: a TLS config (for https URLs) and a bearer token. */
export interface Credentials {
  tls?: ClientTls;
  token?: string;
}

export interface HttpResponse {
  status: number;
  text: string;
  headers: IncomingMessage['headers'];
}

export class HttpTransport {
  private readonly agent: HttpAgent | HttpsAgent;
  readonly https: boolean;

  constructor(
    readonly baseUrl: string,
    private readonly credentials: Credentials = {},
    /** What the server is, for messages ("root", "cluster"). */
    private readonly peer = 'server',
  ) {
    this.https = baseUrl.startsWith('https:');
    if (this.https && !credentials.tls)
      throw new UnavailableError(`${baseUrl} is https: the platform CA is needed to talk to it`);
    this.agent = this.https
      ? new HttpsAgent({ keepAlive: true, ...tlsOptions(credentials.tls!) })
      : new HttpAgent({ keepAlive: true });
  }

  /** Sends one request; rejects with UnavailableError when the server cannot be reached or times out. */
  request(
    method: string,
    pathAndQuery: string,
    opts: { body?: unknown; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<HttpResponse> {
    const url = new URL(this.baseUrl + pathAndQuery);
    const headers: Record<string, string> = {};
    let payload: string | undefined;
    if (opts.body !== undefined) {
      payload = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    if (this.credentials.token) headers['authorization'] = `Bearer ${this.credentials.token}`;
    const send = this.https ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(
        url,
        {
          method,
          headers,
          agent: this.agent,
          timeout: opts.timeoutMs ?? 5000,
          ...(opts.signal ? { signal: opts.signal } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              text: Buffer.concat(chunks).toString('utf8'),
              headers: res.headers,
            }),
          );
          res.on('error', (cause) =>
            reject(
              new UnavailableError(`${method} ${url.origin}${url.pathname}: ${cause.message}`, { cause }),
            ),
          );
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer in ${opts.timeoutMs ?? 5000} ms`)));
      req.on('error', (cause) =>
        reject(
          new UnavailableError(
            `${this.peer} ${url.origin} unreachable (${method} ${url.pathname}): ${cause.message}`,
            {
              cause,
            },
          ),
        ),
      );
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Node TLS client options for `tls`: TLS 1.3, only the platform CA, the expected identity. */
export function tlsOptions(tls: ClientTls) {
  const want = identityUri(tls.expect);
  return {
    ca: tls.ca,
    minVersion: 'TLSv1.3' as const,
    ...(tls.key !== undefined && tls.cert !== undefined ? { key: tls.key, cert: tls.cert } : {}),
    // Node passes the detailed peer certificate: its issuer is the one the handshake verified it with
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      const issuer = (cert as Partial<DetailedPeerCertificate>).issuerCertificate;
      const id =
        cert.raw && issuer?.raw
          ? verifiedIdentityOf(new X509Certificate(cert.raw), new X509Certificate(issuer.raw))
          : undefined;
      return id !== undefined && identityUri(id) === want
        ? undefined
        : new Error(
            `the server is not ${want} (its certificate names ${cert.subjectaltname ?? 'nothing'}${id === undefined ? ', or its issuer may not sign that' : ''})`,
          );
    },
  };
}
