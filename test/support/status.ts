/**
 * @module test/support/status
 * The data-plane status of a platform node, as `oaknet status --json` shows it (typed by the node API's schema).
 */
import assert from 'node:assert/strict';
import type { Platform } from '../../src/platform/platform.ts';
import type { DataPlaneStatus } from '../../src/protocol/dataplane-status.ts';

/** The data plane of node `name`; fails the test when the node is not registered (no data plane yet). */
export async function dataPlaneOf(platform: Platform, name: string): Promise<DataPlaneStatus> {
  const proxy = (await platform.nodeClient(name).status()).proxy;
  assert.ok(proxy, `${name} reports its data plane`);
  return proxy;
}
