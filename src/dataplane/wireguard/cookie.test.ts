import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { COOKIE_REFRESH_TIME, COOKIE_REPLY_BYTES } from './constants.ts';
import { consumeCookieReply, CookieChecker } from './cookie.ts';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  messageMac1,
} from './handshake.ts';
import { KeyPair } from './keys.ts';

const NOW = 1_760_000_000_000;
const SOURCE = Buffer.from([127, 0, 0, 1, 0xca, 0x6c]);

describe('cookies', () => {
  const initiator = KeyPair.generate();
  const responder = KeyPair.generate();
  const checker = new CookieChecker(responder.publicKey);

  it('MAC1 checks pass for messages to this responder only', () => {
    const init = createInitiation(initiator, responder.publicKey, undefined, 1, NOW);
    assert.ok(checker.checkMac1(init.message));
    assert.ok(!new CookieChecker(initiator.publicKey).checkMac1(init.message));
    const bad = Buffer.from(init.message);
    bad[130] = (bad[130] ?? 0) ^ 1;
    assert.ok(!checker.checkMac1(bad));
    assert.ok(!checker.checkMac1(init.message.subarray(0, 100)));
  });

  it('round trip: reply, cookie, MAC2 that validates for the same source only', () => {
    const first = createInitiation(initiator, responder.publicKey, undefined, 0x01020304, NOW);
    assert.ok(!checker.checkMac2(first.message, SOURCE, NOW), 'no MAC2 before any cookie');
    const mac1 = messageMac1(first.message);
    assert.ok(mac1);
    const reply = checker.createReply(0x01020304, mac1, SOURCE, NOW);
    assert.equal(reply.length, COOKIE_REPLY_BYTES);
    assert.equal(reply.readUInt32LE(0), 3);
    assert.equal(reply.readUInt32LE(4), 0x01020304);

    const held = consumeCookieReply(reply, responder.publicKey, first.state.mac1, NOW);
    assert.ok(held);
    assert.equal(held.cookie.length, 16);
    assert.equal(held.receiverIndex, 0x01020304);
    assert.equal(held.expiresAt, NOW + COOKIE_REFRESH_TIME);

    const second = createInitiation(initiator, responder.publicKey, undefined, 5, NOW + 10, held.cookie);
    assert.ok(checker.checkMac1(second.message));
    assert.ok(checker.checkMac2(second.message, SOURCE, NOW + 10));
    assert.ok(!checker.checkMac2(second.message, Buffer.from([127, 0, 0, 2, 0xca, 0x6c]), NOW + 10));
    assert.ok(!checker.checkMac2(first.message, SOURCE, NOW + 10), 'zero MAC2');
    const tampered = Buffer.from(second.message);
    tampered[140] = (tampered[140] ?? 0) ^ 1;
    assert.ok(!checker.checkMac2(tampered, SOURCE, NOW + 10));
    assert.ok(consumeInitiation(responder, second.message), 'MAC2 does not disturb the handshake');

    // the secret expires: cookies given under it stop counting
    assert.ok(!checker.checkMac2(second.message, SOURCE, NOW + COOKIE_REFRESH_TIME + 1));
  });

  it('MAC2 on a response too (the initiator under load cookies the responder)', () => {
    const initChecker = new CookieChecker(initiator.publicKey);
    const init = createInitiation(initiator, responder.publicKey, undefined, 1, NOW);
    const got = consumeInitiation(responder, init.message);
    assert.ok(got);
    const plain = createResponse(got.state, 2);
    assert.ok(plain);
    const reply = initChecker.createReply(2, messageMac1(plain.message) ?? new Uint8Array(16), SOURCE, NOW);
    const held = consumeCookieReply(reply, initiator.publicKey, messageMac1(plain.message), NOW);
    assert.ok(held);
    const resp = createResponse(got.state, 2, undefined, held.cookie);
    assert.ok(resp);
    assert.ok(initChecker.checkMac2(resp.message, SOURCE, NOW));
    assert.ok(consumeResponse(init.state, resp.message));
  });

  it('the secret is renewed after COOKIE_REFRESH_TIME: old cookies stop validating', () => {
    const c = new CookieChecker(responder.publicKey);
    const init = createInitiation(initiator, responder.publicKey, undefined, 1, NOW);
    const get = (now: number) => {
      const held = consumeCookieReply(
        c.createReply(1, init.state.mac1, SOURCE, now),
        responder.publicKey,
        init.state.mac1,
      );
      assert.ok(held);
      return held.cookie;
    };
    const a = get(NOW);
    assert.deepEqual(get(NOW + COOKIE_REFRESH_TIME), a, 'same secret within the refresh time');
    const b = get(NOW + COOKIE_REFRESH_TIME + 1);
    assert.notDeepEqual(b, a);
    const withOld = createInitiation(initiator, responder.publicKey, undefined, 1, NOW, a);
    assert.ok(!c.checkMac2(withOld.message, SOURCE, NOW + COOKIE_REFRESH_TIME + 2));
    const withNew = createInitiation(initiator, responder.publicKey, undefined, 1, NOW, b);
    assert.ok(c.checkMac2(withNew.message, SOURCE, NOW + COOKIE_REFRESH_TIME + 2));
  });

  it('a reply for another message, from another responder, tampered or malformed is null', () => {
    const init = createInitiation(initiator, responder.publicKey, undefined, 1, NOW);
    const reply = checker.createReply(1, init.state.mac1, SOURCE, NOW);
    assert.ok(consumeCookieReply(reply, responder.publicKey, init.state.mac1));
    const other = createInitiation(initiator, responder.publicKey, undefined, 1, NOW);
    assert.equal(consumeCookieReply(reply, responder.publicKey, other.state.mac1), null);
    assert.equal(consumeCookieReply(reply, initiator.publicKey, init.state.mac1), null);
    assert.equal(consumeCookieReply(reply, responder.publicKey, null), null);
    for (let i = 0; i < 64; i++) {
      if (i >= 4 && i < 8) continue; // the receiver index is not authenticated (the caller matches it)
      const bad = Buffer.from(reply);
      bad[i] = (bad[i] ?? 0) ^ 0x10;
      assert.equal(consumeCookieReply(bad, responder.publicKey, init.state.mac1), null, `byte ${i}`);
    }
    assert.equal(consumeCookieReply(reply.subarray(0, 63), responder.publicKey, init.state.mac1), null);
  });
});
