import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../../errors.ts';
import { clampPrivateKey, formatKey, KeyPair, parseKey } from './keys.ts';

describe('keys', () => {
  it('round-trips the wg text form (44 characters)', () => {
    const k = KeyPair.generate();
    const text = formatKey(k.privateKey);
    assert.equal(text.length, 44);
    assert.deepEqual(parseKey(text), k.privateKey);
    assert.deepEqual(KeyPair.fromText(text).publicKey, k.publicKey);
    assert.deepEqual(parseKey(` ${k.publicText()}\n`), k.publicKey);
  });
  it('RFC 7748 6.1: Alice in wg form', () => {
    const alice = KeyPair.fromPrivateKey(
      Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex'),
    );
    assert.equal(
      alice.publicKey.toString('hex'),
      '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
    );
    assert.equal(alice.publicText(), Buffer.from(alice.publicKey).toString('base64'));
  });
  it('refuses what is not exactly 32 bytes of base64 with an InvalidInputError', () => {
    const good = formatKey(Buffer.alloc(32, 1));
    for (const bad of [
      '',
      good.slice(0, 43),
      good + 'A',
      good.slice(0, 43) + 'A', // no padding
      '!' + good.slice(1),
      good.slice(0, 42) + 'B=', // the last character carries bits beyond 32 bytes
      Buffer.alloc(33).toString('base64'),
      Buffer.alloc(31).toString('base64'),
      Buffer.alloc(32).toString('base64url'),
    ]) {
      assert.throws(() => parseKey(bad), InvalidInputError, JSON.stringify(bad));
    }
    assert.throws(() => KeyPair.fromPrivateKey(new Uint8Array(16)), InvalidInputError);
  });
  it('clamps as X25519 does, and clamping does not change the public key', () => {
    const raw = Buffer.alloc(32, 0xff);
    const c = clampPrivateKey(raw);
    assert.equal(c[0], 0xf8);
    assert.equal(c[31], 0x7f);
    assert.equal(raw[0], 0xff);
    assert.equal(clampPrivateKey(Buffer.alloc(32))[31], 0x40);
    assert.deepEqual(KeyPair.fromPrivateKey(raw).publicKey, KeyPair.fromPrivateKey(c).publicKey);
    const g = KeyPair.generate().privateKey;
    assert.deepEqual(clampPrivateKey(g), g);
  });
});
