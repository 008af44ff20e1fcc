/**
 * The data-plane boundary, checked on the import graph: the engine (the proxy and its stages), the snapshot,
 * the in-memory devices and the NetManager never import the native addon (tun/native.ts), so their unit tests
 * (`npm run test:unit`) need neither the compiled addon nor root; and the NetManager reaches the data plane
 * only through dataplane.ts and snapshot.ts.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const NATIVE = join(SRC, 'dataplane/tun/native.ts');

/** The relative .ts imports of a file (static and dynamic), resolved to absolute paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+\.ts)'/g))
    out.push(resolve(dirname(file), m[1]!));
  return out;
}

/** Every file reachable from `roots` by imports. */
function closure(roots: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    todo.push(...importsOf(f));
  }
  return seen;
}

/** The path from `root` to `target` through imports, for the failure message. */
function pathTo(root: string, target: string): string[] {
  const prev = new Map<string, string>();
  const queue = [root];
  const seen = new Set([root]);
  while (queue.length) {
    const f = queue.shift()!;
    if (f === target) break;
    for (const g of importsOf(f)) {
      if (seen.has(g)) continue;
      seen.add(g);
      prev.set(g, f);
      queue.push(g);
    }
  }
  const path = [target];
  while (prev.has(path[0]!)) path.unshift(prev.get(path[0]!)!);
  return path.map((p) => relative(SRC, p));
}

const files = (dir: string, pick: (name: string) => boolean) =>
  readdirSync(join(SRC, dir))
    .filter(pick)
    .map((f) => join(SRC, dir, f));

describe('the data-plane boundary', () => {
  it('the engine, the in-memory devices, the NetManager and their unit tests never load the native addon', () => {
    const roots = [
      ...files('dataplane/proxy', (f) => f.endsWith('.ts')),
      join(SRC, 'dataplane/dataplane.ts'),
      join(SRC, 'dataplane/snapshot.ts'),
      join(SRC, 'dataplane/tun/fake.ts'),
      join(SRC, 'dataplane/tunnel/memory.ts'),
      ...files('node', (f) => f.endsWith('.ts')),
      // environment.netns.ts is the root-only namespace harness: it writes into a real TUN
      ...files('node/net', (f) => f.endsWith('.ts') && !f.endsWith('.netns.ts')),
    ];
    for (const root of roots) {
      const reach = closure([root]);
      assert.ok(
        !reach.has(NATIVE),
        `${relative(SRC, root)} loads the addon: ${pathTo(root, NATIVE).join(' -> ')}`,
      );
    }
  });

  it('the NetManager sees the data plane only through dataplane.ts and snapshot.ts (and the devices it is given)', () => {
    const allowed = new Set(['dataplane/dataplane.ts', 'dataplane/snapshot.ts']);
    for (const file of files('node', (f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))) {
      for (const imp of importsOf(file)) {
        const rel = relative(SRC, imp);
        if (!rel.startsWith('dataplane/')) continue;
        // the service table builds endpoint keys; tunnel.ts holds only the endpoint codec and the contract
        if (rel === 'dataplane/tunnel/tunnel.ts' && file.endsWith('service-table.ts')) continue;
        // the node's static WireGuard key pair is made and stored by the node, in the data plane's key type
        if (rel === 'dataplane/wireguard/keys.ts' && file.endsWith('tunnel-key.ts')) continue;
        assert.ok(allowed.has(rel), `${relative(SRC, file)} imports ${rel}`);
      }
    }
  });
});
