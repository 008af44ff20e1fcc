/**
 * @module cluster/cluster-id
 * A cluster's ID: the one in its store, else a new random one (the caller keeps it in the store).
 */
import { randomBytes } from 'node:crypto';
import type { Store } from '../store/store.ts';

export function storedClusterId(store: Store): string {
  return (
    store.transact((tx) => tx.get<string>('meta/cluster_id')) ?? `cluster-${randomBytes(4).toString('hex')}`
  );
}
