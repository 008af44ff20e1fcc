/**
 * @module protocol/mqtt-client
 * mqtt.js clients as oaknet uses them: MQTT 3.1.1 (upstream's brokers and aedes speak it), QoS 1, and
 * TCP_NODELAY on the socket. Without NODELAY a query/answer exchange meets Nagle's algorithm and delayed
 * ACKs and every table query costs ~40-90 ms instead of about one.
 */
import type { Socket } from 'node:net';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { tlsOptions, type ClientTls } from './http-client.ts';

/** Connects (and keeps reconnecting) to url; the client is returned at once. */
export function connectMqtt(url: string, options: IClientOptions): MqttClient {
  const client = connect(url, { protocolVersion: 4, ...options });
  const noDelay = () => (client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);
  client.on('connect', noDelay);
  return client;
}

/**
 * Like connectMqtt, but resolves once connected; without reconnecting it rejects on the first error or when
 * the connection closes before it was accepted (a refused TLS handshake may only close it).
 */
export function connectMqttAsync(url: string, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = connectMqtt(url, options);
    const fail = (err: Error) => {
      if (options.reconnectPeriod !== 0) return;
      client.removeListener('connect', onConnect);
      client.removeListener('error', fail);
      client.removeListener('close', onClose);
      client.end(true);
      reject(err);
    };
    const onClose = () => fail(new Error(`the connection to ${url} closed before it was accepted`));
    const onConnect = () => {
      client.removeListener('error', fail);
      client.removeListener('close', onClose);
      resolve(client);
    };
    client.once('connect', onConnect);
    client.once('error', fail);
    client.once('close', onClose);
  });
}

/** mqtt.js options for TLS 1.3 to a broker of the platform, as `tls` says (see http-client.ts). */
export function mqttTlsOptions(tls: ClientTls): IClientOptions {
  const o = tlsOptions(tls);
  return {
    ca: o.ca,
    ...(o.key !== undefined && o.cert !== undefined ? { key: o.key, cert: o.cert } : {}),
    rejectUnauthorized: true,
    minVersion: o.minVersion,
    checkServerIdentity: o.checkServerIdentity,
  } as IClientOptions;
}
