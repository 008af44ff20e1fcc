/**
 * @module cluster/broker
 * The embedded MQTT broker (aedes, MQTT 3.1.1) a cluster runs unless it is pointed at an external one
 * (mosquitto, as upstream deploys). It only has to route the cluster <-> NetManager contract.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import type { Logger } from 'pino';

export interface EmbeddedBroker {
  /** Port the broker listens on. */
  port: number;
  /** IDs of the clients connected now. */
  connectedClients(): string[];
  /** Disconnects every client and stops listening. */
  close(): Promise<void>;
}

export async function startEmbeddedBroker(port: number, host: string, log: Logger): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker({
    maxClientsIdLength: 256,
    drainTimeout: 10_000,
    concurrency: 1000,
  });
  const clients = new Set<string>();
  aedes.on('client', (c) => clients.add(c.id));
  aedes.on('clientDisconnect', (c) => clients.delete(c.id));
  aedes.on('clientError', (c, err) => log.debug({ client: c.id, err: err.message }, 'mqtt client error'));
  aedes.on('connectionError', (_c, err) => log.debug({ err: err.message }, 'mqtt connection error'));
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    aedes.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  log.info({ port: bound }, 'embedded MQTT broker listening');
  return {
    port: bound,
    connectedClients: () => [...clients],
    async close() {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
