/**
 * @module cluster/broker
 * The embedded MQTT broker (aedes, MQTT 3.1.1) a cluster runs unless it is pointed at an external one
 * (mosquitto, as upstream deploys). It only has to route the cluster <-> NetManager contract. Secure: MQTT
 * over TLS 1.3 (port 10003, as upstream's TLS listener), a client certificate from the platform CA required,
 * and the access list of broker-acl.ts on every connect (with its last will), publish and subscribe.
 */
import type { X509Certificate } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { Aedes, type AuthenticateError } from 'aedes';
import type { Logger } from 'pino';
import type { ServerTls } from '../protocol/http-server.ts';
import { peerIdentityOf, type Identity } from '../security/pki.ts';
import type { BrokerAcl } from './broker-acl.ts';

/** TLS and the access list of a secure broker. */
export interface BrokerSecurity {
  tls: ServerTls;
  acl: BrokerAcl;
  /** The CAs that sign the broker's clients (for resumed TLS sessions, which keep no chain). */
  issuers: () => readonly X509Certificate[];
}

export interface EmbeddedBroker {
  /** Port the broker listens on. */
  port: number;
  /** IDs of the clients connected now. */
  connectedClients(): string[];
  /** Swaps the TLS key and chain (a renewed certificate) for new connections. */
  rotate(tls: ServerTls): void;
  /** Disconnects every client and stops listening. */
  close(): Promise<void>;
}

export async function startEmbeddedBroker(
  port: number,
  host: string,
  log: Logger,
  security?: BrokerSecurity,
): Promise<EmbeddedBroker> {
  const identities = new WeakMap<object, Identity>();
  // the last will of each CONNECT, checked like a publish before the connection is accepted: a will the
  // client could not publish itself is refused at once (aedes checks wills only when it sends them, and
  // not at all for the persisted wills of another broker, which come without a client)
  const wills = new WeakMap<object, { topic: string; retain: boolean }>();
  const acl = security?.acl;
  const aedes = await Aedes.createBroker({
    maxClientsIdLength: 256,
    drainTimeout: 10_000,
    concurrency: 1000,
    ...(acl
      ? {
          preConnect: (client, packet, callback) => {
            if (packet.will)
              wills.set(client, { topic: packet.will.topic, retain: packet.will.retain === true });
            callback(null, true);
          },
          authenticate: (client, _user, _password, done) => {
            const socket = client.conn as Partial<TLSSocket>;
            // only what the certificate's issuer may sign (a node CA signs its own cluster's nodes only)
            const identity = socket.authorized ? peerIdentityOf(socket, security.issuers()) : undefined;
            const will = wills.get(client);
            const d = acl.connect(identity, client.id, will);
            if (!d.ok || !identity) {
              log.warn(
                { client: client.id, reason: d.ok ? 'no identity' : d.reason },
                'mqtt connection refused',
              );
              const err = new Error(d.ok ? 'no identity' : d.reason) as AuthenticateError;
              err.returnCode = 5; // not authorized
              done(err, false);
              return;
            }
            identities.set(client, identity);
            done(null, true);
          },
          authorizePublish: (client, packet, callback) => {
            const identity = client ? identities.get(client) : undefined;
            if (!client) return callback(null); // the broker's own messages
            const d = identity
              ? acl.publish(identity, packet.topic, packet.retain)
              : { ok: false as const, reason: 'unknown' };
            if (d.ok) return callback(null);
            log.warn({ client: client.id, topic: packet.topic, reason: d.reason }, 'mqtt publish refused');
            callback(new Error(d.reason));
          },
          authorizeSubscribe: (client, sub, callback) => {
            const identity = identities.get(client);
            const d = identity
              ? acl.subscribe(identity, sub.topic)
              : { ok: false as const, reason: 'unknown' };
            if (d.ok) return callback(null, sub);
            log.warn({ client: client.id, filter: sub.topic, reason: d.reason }, 'mqtt subscription refused');
            callback(null, null); // refused in the SUBACK (0x80); the client stays connected
          },
        }
      : {}),
  });
  const clients = new Set<string>();
  aedes.on('client', (c) => clients.add(c.id));
  aedes.on('clientDisconnect', (c) => clients.delete(c.id));
  aedes.on('clientError', (c, err) => log.debug({ client: c.id, err: err.message }, 'mqtt client error'));
  aedes.on('connectionError', (_c, err) => log.debug({ err: err.message }, 'mqtt connection error'));
  const sockets = new Set<Socket>();
  const onSocket = (socket: Socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    aedes.handle(socket);
  };
  // TLS: a certificate from the platform CA is required; the handshake fails without one
  const tlsOptions = (tls: ServerTls) => ({
    key: tls.key,
    cert: tls.cert,
    ca: tls.ca,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3' as const,
  });
  const server: Server = security
    ? createTlsServer(tlsOptions(security.tls), onSocket)
    : createServer(onSocket);
  if (security)
    server.on('tlsClientError', (err: Error) => {
      security.acl.counters.connectRefused++;
      log.info({ err: err.message }, 'mqtt TLS handshake refused');
    });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  log.info({ port: bound, tls: security !== undefined }, 'embedded MQTT broker listening');
  return {
    port: bound,
    connectedClients: () => [...clients],
    rotate: (tls) => {
      if (security) (server as ReturnType<typeof createTlsServer>).setSecureContext(tlsOptions(tls));
    },
    async close() {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
