import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../store/memory.ts';
import { parseToken, TokenStore } from './tokens.ts';

const PIN = `sha256:${'ab'.repeat(32)}`;

describe('tokens', () => {
  it('carry the CA pin and verify with their role; the store keeps no secret', () => {
    const store = new MemoryStore();
    const tokens = new TokenStore(store, PIN);
    const { token, info } = tokens.create('operator', { description: 'ops' });
    assert.equal(parseToken(token).pin, PIN);
    assert.equal(tokens.verify(token, ['operator']).id, info.id);
    assert.equal(tokens.list()[0]?.uses, 1);
    const secret = parseToken(token).secret;
    assert.ok(!JSON.stringify(store.transact((tx) => tx.list(''))).includes(secret));
  });

  it('refuse each bad case with a message naming it', () => {
    let now = new Date('2026-12-01T00:00:00Z');
    const tokens = new TokenStore(new MemoryStore(), PIN, () => now);
    const { token, info } = tokens.create('cluster', { ttlSeconds: 60 });
    assert.throws(() => tokens.verify(token, ['orchestrator']), { code: 'E_FORBIDDEN' });
    assert.throws(() => tokens.verify(token.slice(0, -2) + 'xx', ['cluster']), /unknown token/);
    assert.throws(() => tokens.verify('hello', ['cluster']), /not an oaknet token/);
    assert.throws(() => tokens.verify(token.slice(0, 40), ['cluster']), /malformed token/);
    const other = new TokenStore(new MemoryStore(), `sha256:${'cd'.repeat(32)}`);
    assert.throws(() => other.verify(token, ['cluster']), /another platform/);
    now = new Date('2026-12-01T00:01:01Z');
    assert.throws(() => tokens.verify(token, ['cluster']), { code: 'E_UNAUTHENTICATED', message: /expired/ });
    const fresh = tokens.create('node');
    tokens.revoke(fresh.info.id);
    assert.throws(() => tokens.verify(fresh.token, ['node']), /revoked/);
    assert.throws(() => tokens.revoke('0000000000000000'), { code: 'E_NOT_FOUND' });
    assert.equal(tokens.list().find((t) => t.id === info.id)?.expires, '2026-12-01T00:01:00.000Z');
  });

  it('count every use, but write them to the store at most once a minute (a write is an fsync)', () => {
    const store = new MemoryStore();
    let now = new Date('2026-01-01T00:00:00Z');
    const tokens = new TokenStore(store, PIN, () => now);
    const { token, info } = tokens.create('read-only');
    const before = store.writes;
    for (let i = 0; i < 100; i++) tokens.verify(token, ['read-only']);
    assert.equal(store.writes - before, 1, 'the first use is written, the next 99 wait');
    assert.equal(tokens.list().find((t) => t.id === info.id)?.uses, 100);
    now = new Date(now.getTime() + 60_000);
    const last = tokens.verify(token, ['read-only']);
    assert.equal(store.writes - before, 2);
    assert.equal(last.uses, 101);
    assert.equal(last.last_used, now.toISOString());
  });
});
