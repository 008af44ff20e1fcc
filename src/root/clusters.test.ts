/** Registry clusters (clusters.ts): registration, re-registration and delivery status. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setup } from './registry.fixtures.ts';

describe('Registry clusters', () => {
  it('registers, re-registers (new address and port) and reports delivery status', () => {
    const { registry } = setup();
    const first = registry.registerCluster({
      cluster_id: 'c1',
      cluster_address: '10.0.0.1',
      cluster_port: '10110',
    });
    assert.equal(first.port, 10110);
    assert.equal(first.status, 'ACTIVE');
    registry.setClusterStatus('c1', 'ERROR', 'notification failed: HTTP 503');
    assert.deepEqual(registry.listClusters(), [
      {
        cluster_id: 'c1',
        cluster_address: '10.0.0.1',
        cluster_port: 10110,
        status: 'ERROR',
        pending_notifications: 0,
        last_error: 'notification failed: HTTP 503',
      },
    ]);
    registry.setClusterStatus('c1', 'ACTIVE');
    assert.equal(registry.listClusters()[0]!.last_error, undefined);
    registry.setClusterStatus('c1', 'ERROR', 'again');
    const moved = registry.registerCluster({
      cluster_id: 'c1',
      cluster_address: 'fd00::1',
      cluster_port: 20110,
    });
    assert.equal(moved.registeredAt, first.registeredAt);
    assert.deepEqual(registry.getCluster('c1'), moved);
    assert.equal(moved.status, 'ACTIVE');
    assert.equal(registry.listClusters()[0]!.last_error, undefined);
    registry.setClusterStatus('ghost', 'ERROR', 'x');
    assert.equal(registry.getCluster('ghost'), undefined);
  });
});
