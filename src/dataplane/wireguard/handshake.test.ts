import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { INITIATION_BYTES, RESPONSE_BYTES } from './constants.ts';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  INITIAL_CHAINING_KEY,
  INITIAL_HASH,
  mac1Key,
  messageMac1,
  type InitiatorState,
} from './handshake.ts';
import { KeyPair } from './keys.ts';
import { aeadOpen, aeadSeal, mac, timestampAfter } from './primitives.ts';

// What boringtun (Cloudflare's WireGuard, noise/handshake.rs) hard-codes as HASH(CONSTRUCTION) and
// HASH(C_i || IDENTIFIER); wireguard-go and the Linux kernel compute them at start from the same strings.
const BORINGTUN_INITIAL_CHAIN_KEY = [
  96, 226, 109, 174, 243, 39, 239, 192, 46, 195, 53, 226, 160, 37, 210, 208, 22, 235, 66, 6, 248, 114, 119,
  245, 45, 56, 209, 152, 139, 120, 205, 54,
];
const BORINGTUN_INITIAL_CHAIN_HASH = [
  34, 17, 179, 97, 8, 26, 197, 102, 105, 18, 67, 219, 69, 138, 213, 50, 45, 156, 108, 102, 34, 147, 232, 183,
  14, 225, 156, 101, 186, 7, 158, 243,
];

const NOW = 1_760_000_000_000;

function handshake(psk?: Uint8Array, responderPsk = psk) {
  const alice = KeyPair.generate();
  const bob = KeyPair.generate();
  const init = createInitiation(alice, bob.publicKey, psk, 0x11223344, NOW);
  const got = consumeInitiation(bob, init.message);
  assert.ok(got);
  const resp = createResponse(got.state, 0xaabbccdd, responderPsk);
  assert.ok(resp);
  return { alice, bob, init, got, resp, done: consumeResponse(init.state, resp.message) };
}

function flip(message: Uint8Array, at: number): Buffer {
  const copy = Buffer.from(message);
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}

describe('Noise constants', () => {
  it('C_i = HASH(construction) and H_i = HASH(C_i || identifier) match the values other implementations hard-code', () => {
    assert.deepEqual([...INITIAL_CHAINING_KEY], BORINGTUN_INITIAL_CHAIN_KEY);
    assert.deepEqual([...INITIAL_HASH], BORINGTUN_INITIAL_CHAIN_HASH);
  });
});

describe('handshake', () => {
  it('initiator and responder derive crossed session keys and learn each other', () => {
    const { alice, init, got, resp, done } = handshake();
    assert.equal(init.message.length, INITIATION_BYTES);
    assert.equal(resp.message.length, RESPONSE_BYTES);
    assert.equal(init.message.readUInt32LE(0), 1);
    assert.equal(resp.message.readUInt32LE(0), 2);
    assert.deepEqual(got.peerPublic, alice.publicKey);
    assert.equal(got.state.remoteIndex, 0x11223344);
    assert.equal(resp.remoteIndex, 0x11223344);
    assert.ok(done);
    assert.equal(done.remoteIndex, 0xaabbccdd);
    assert.deepEqual(done.keys.send, resp.keys.recv);
    assert.deepEqual(done.keys.recv, resp.keys.send);
    assert.notDeepEqual(done.keys.send, done.keys.recv);
    // the keys work with the AEAD both ways
    const sealed = aeadSeal(done.keys.send, 0n, Buffer.from('hello'), new Uint8Array(0));
    assert.deepEqual(aeadOpen(resp.keys.recv, 0n, sealed, new Uint8Array(0)), Buffer.from('hello'));
  });

  it('both directions: each party can be the initiator', () => {
    const a = KeyPair.generate();
    const b = KeyPair.generate();
    for (const [i, r] of [
      [a, b],
      [b, a],
    ] as const) {
      const init = createInitiation(i, r.publicKey, undefined, 1, NOW);
      const got = consumeInitiation(r, init.message);
      assert.ok(got);
      assert.deepEqual(got.peerPublic, i.publicKey);
      const resp = createResponse(got.state, 2);
      assert.ok(resp);
      const done = consumeResponse(init.state, resp.message);
      assert.ok(done);
      assert.deepEqual(done.keys.send, resp.keys.recv);
    }
  });

  it('carries the TAI64N timestamp; a later initiation has a later one', () => {
    const a = KeyPair.generate();
    const b = KeyPair.generate();
    const first = consumeInitiation(b, createInitiation(a, b.publicKey, undefined, 1, NOW).message);
    const second = consumeInitiation(b, createInitiation(a, b.publicKey, undefined, 2, NOW + 1000).message);
    assert.ok(first && second);
    assert.equal(first.timestamp.length, 12);
    assert.ok(timestampAfter(second.timestamp, first.timestamp));
    // a replayed initiation carries the same timestamp: not after, the caller refuses it
    const replay = createInitiation(a, b.publicKey, undefined, 3, NOW);
    const again = consumeInitiation(b, replay.message);
    assert.ok(again && !timestampAfter(again.timestamp, first.timestamp));
  });

  it('a psk on both sides works; different psks do not', () => {
    const psk = Buffer.alloc(32, 9);
    const good = handshake(psk);
    assert.ok(good.done);
    assert.notDeepEqual(good.done.keys.send, handshake().done?.keys.send);
    assert.equal(handshake(psk, Buffer.alloc(32, 8)).done, null);
    assert.equal(handshake(undefined, psk).done, null);
  });

  it('MAC2 is zero without a cookie and MAC(cookie, message..mac1) with one', () => {
    const a = KeyPair.generate();
    const b = KeyPair.generate();
    const plain = createInitiation(a, b.publicKey, undefined, 1, NOW);
    assert.ok(plain.message.subarray(132).every((x) => x === 0));
    const cookie = Buffer.alloc(16, 5);
    const withCookie = createInitiation(a, b.publicKey, undefined, 1, NOW, cookie);
    assert.ok(!withCookie.message.subarray(132).every((x) => x === 0));
    assert.ok(consumeInitiation(b, withCookie.message));
    assert.deepEqual(messageMac1(withCookie.message), Uint8Array.from(withCookie.message.subarray(116, 132)));
    assert.deepEqual(withCookie.state.mac1, messageMac1(withCookie.message));
  });
});

describe('handshake null paths', () => {
  const a = KeyPair.generate();
  const b = KeyPair.generate();
  const init = createInitiation(a, b.publicKey, undefined, 7, NOW);

  it('an initiation to someone else (wrong MAC1 key) is refused', () => {
    assert.equal(consumeInitiation(KeyPair.generate(), init.message), null);
  });
  it('a bad MAC1 is refused', () => {
    assert.equal(consumeInitiation(b, flip(init.message, 120)), null);
  });
  it('a flipped bit anywhere before MAC2 is refused; MAC2 is not checked here', () => {
    for (let i = 0; i < 132; i++)
      assert.equal(consumeInitiation(b, flip(init.message, i)), null, `byte ${i}`);
    assert.ok(consumeInitiation(b, flip(init.message, 140)));
  });
  it('tampered bytes behind a recomputed MAC1 still fail the AEADs', () => {
    for (const at of [10, 50, 100]) {
      const bad = flip(init.message, at);
      bad.set(mac(mac1Key(b.publicKey), bad.subarray(0, 116)), 116);
      assert.equal(consumeInitiation(b, bad), null, `byte ${at}`);
    }
  });
  it('truncated, extended, empty, wrong type or reserved bytes are refused', () => {
    assert.equal(consumeInitiation(b, init.message.subarray(0, 147)), null);
    assert.equal(consumeInitiation(b, Buffer.concat([init.message, Buffer.alloc(1)])), null);
    assert.equal(consumeInitiation(b, new Uint8Array(0)), null);
    const typed = Buffer.from(init.message);
    typed[0] = 2;
    assert.equal(consumeInitiation(b, typed), null);
    const reserved = Buffer.from(init.message);
    reserved[2] = 1;
    assert.equal(consumeInitiation(b, reserved), null);
  });
  it('a low-order ephemeral key is refused, not thrown', () => {
    const bad = Buffer.from(init.message);
    bad.fill(0, 8, 40);
    bad.set(mac(mac1Key(b.publicKey), bad.subarray(0, 116)), 116);
    assert.equal(consumeInitiation(b, bad), null);
  });

  const got = consumeInitiation(b, init.message);
  assert.ok(got);
  const resp = createResponse(got.state, 9);
  assert.ok(resp);

  it('a response to another initiation (receiver index) or from another responder is refused', () => {
    const other = createInitiation(a, b.publicKey, undefined, 8, NOW);
    assert.equal(consumeResponse(other.state, resp.message), null);
    const state: InitiatorState = { ...init.state, local: KeyPair.generate() };
    assert.equal(consumeResponse(state, resp.message), null);
    const mallory = KeyPair.generate();
    const fromMallory = createInitiation(a, mallory.publicKey, undefined, 7, NOW);
    assert.equal(consumeResponse(fromMallory.state, resp.message), null);
  });
  it('a flipped bit anywhere before MAC2 of the response, truncation or extension is refused', () => {
    for (let i = 0; i < 76; i++)
      assert.equal(consumeResponse(init.state, flip(resp.message, i)), null, `byte ${i}`);
    assert.equal(consumeResponse(init.state, resp.message.subarray(0, 91)), null);
    assert.equal(consumeResponse(init.state, Buffer.concat([resp.message, Buffer.alloc(4)])), null);
    assert.ok(consumeResponse(init.state, resp.message));
  });
});
