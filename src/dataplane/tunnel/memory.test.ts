import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Collector } from '../tun/fixtures.ts';
import { MemorySwitch, createMemoryTunnelPair } from './memory.ts';
import { OutboundBatch, decodeEndpoint, endpoint } from './tunnel.ts';
import { runTunnelConformance } from './tunnel.case.ts';

runTunnelConformance('Memory tunnel pair', () => {
  const [a, b] = createMemoryTunnelPair();
  return {
    a,
    b,
    endpointOfA: a.endpoint,
    endpointOfB: b.endpoint,
    unreachable: endpoint('10.255.9.9', 9),
    dispose: () => {
      a.close();
      b.close();
    },
  };
});

describe('MemorySwitch', () => {
  it('connects N tunnels by endpoint and counts datagrams to nobody as lost', async () => {
    const network = new MemorySwitch();
    const nodes = ['10.0.0.1', '10.0.0.2', 'fd00::3'].map((host) => network.open(host, 50103));
    const got = nodes.map((node) => {
      const c = new Collector<string>();
      node.start((batch, sources) => {
        for (let i = 0; i < batch.count; i++) {
          const o = batch.offsets[i] ?? 0;
          const from = decodeEndpoint(sources, i * 18).host;
          c.push(`${from}: ${batch.buffer.toString('latin1', o, o + (batch.lengths[i] ?? 0))}`);
        }
      });
      return c;
    });
    const [n1, n2, n3] = nodes;
    assert.ok(n1 && n2 && n3);
    const out = new OutboundBatch(3);
    const text = Buffer.from('to2to3lost');
    out.reset(text);
    out.pushTo(0, 3, n2.endpoint);
    out.pushTo(3, 3, n3.endpoint);
    out.pushTo(6, 4, endpoint('10.0.0.9', 50103));
    assert.equal(out.sendThrough(n1), 3);
    assert.deepEqual(await got[1]?.take(1), ['10.0.0.1: to2']);
    assert.deepEqual(await got[2]?.take(1), ['10.0.0.1: to3']);
    assert.equal(network.lost, 1);
    for (const n of nodes) n.close();
  });

  it('picks free ports, refuses a taken endpoint, and frees it on close', () => {
    const network = new MemorySwitch();
    const a = network.open('10.0.0.1');
    const b = network.open('10.0.0.1');
    assert.notEqual(a.port, b.port);
    assert.throws(() => network.open('10.0.0.1', a.port), /in use/);
    a.close();
    network.open('10.0.0.1', a.port).close();
    b.close();
  });
});
