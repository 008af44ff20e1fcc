/**
 * Plays upstream's NetManager on MQTT, byte for byte: client ID = worker ID, MQTT 3.1.1, QoS 1, the
 * payloads of reference section 2.2 as upstream's Go code serialises them.
 */
import type { MqttClient } from 'mqtt';
import { connectMqttAsync as connectAsync } from '../../src/protocol/mqtt-client.ts';

export class FakeNetManager {
  private readonly queues = new Map<string, string[]>();
  private readonly waiters = new Map<string, Array<(payload: string) => void>>();

  private constructor(
    readonly worker: string,
    readonly client: MqttClient,
  ) {
    client.on('message', (topic, payload) => {
      const text = payload.toString('utf8');
      const w = this.waiters.get(topic)?.shift();
      if (w) w(text);
      else this.queues.set(topic, [...(this.queues.get(topic) ?? []), text]);
    });
  }

  static async connect(url: string, worker: string): Promise<FakeNetManager> {
    const client = await connectAsync(url, {
      clientId: worker,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
    });
    const nm = new FakeNetManager(worker, client);
    await client.subscribeAsync(
      [`nodes/${worker}/net/tablequery/result`, `nodes/${worker}/net/subnetwork/result`],
      { qos: 1 },
    );
    return nm;
  }

  /** Publishes raw text to nodes/<worker>/net/<suffix>. */
  async publish(suffix: string, payload: string): Promise<void> {
    await this.client.publishAsync(`nodes/${this.worker}/net/${suffix}`, payload, { qos: 1 });
  }

  async subscribe(topic: string): Promise<void> {
    await this.client.subscribeAsync(topic, { qos: 1 });
  }

  /** The next message on topic (already received or still to come), parsed as JSON. */
  next(topic: string, timeoutMs = 5000): Promise<unknown> {
    const queued = this.queues.get(topic)?.shift();
    if (queued !== undefined) return Promise.resolve(JSON.parse(queued) as unknown);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const list = this.waiters.get(topic) ?? [];
        list.splice(list.indexOf(deliver), 1);
        reject(new Error(`no message on ${topic} within ${timeoutMs} ms`));
      }, timeoutMs);
      const deliver = (text: string) => {
        clearTimeout(timer);
        resolve(JSON.parse(text) as unknown);
      };
      this.waiters.set(topic, [...(this.waiters.get(topic) ?? []), deliver]);
    });
  }

  /** Messages received on topic and not consumed yet. */
  pending(topic: string): number {
    return this.queues.get(topic)?.length ?? 0;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
