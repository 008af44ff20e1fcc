/**
 * @module protocol/mqtt-client
 * mqtt.js clients as oaknet uses them: MQTT 3.1.1 (upstream's brokers and aedes speak it), QoS 1, and
 * TCP_NODELAY on the socket. Without NODELAY a query/answer exchange meets Nagle's algorithm and delayed
 * ACKs and every table query costs ~40-90 ms instead of about one.
 */
import type { Socket } from 'node:net';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';

/** Connects (and keeps reconnecting) to url; the client is returned at once. */
export function connectMqtt(url: string, options: IClientOptions): MqttClient {
  const client = connect(url, { protocolVersion: 4, ...options });
  const noDelay = () => (client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);
  client.on('connect', noDelay);
  return client;
}

/** Like connectMqtt, but resolves once connected (rejects on the first error when reconnecting is off). */
export function connectMqttAsync(url: string, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = connectMqtt(url, options);
    const onError = (err: Error) => {
      if (options.reconnectPeriod === 0) {
        client.removeListener('connect', onConnect);
        reject(err);
      }
    };
    const onConnect = () => {
      client.removeListener('error', onError);
      resolve(client);
    };
    client.once('connect', onConnect);
    client.once('error', onError);
  });
}
