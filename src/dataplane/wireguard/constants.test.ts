import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  COOKIE_REFRESH_TIME,
  COOKIE_REPLY_BYTES,
  CookieReplyField,
  INITIATION_BYTES,
  InitiationField,
  KEEPALIVE_TIMEOUT,
  MAC_BYTES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX,
  RESPONSE_BYTES,
  ResponseField,
  TRANSPORT_MIN_BYTES,
} from './constants.ts';
import { TRANSPORT_HEADER_BYTES, TRANSPORT_TAG_BYTES } from './sessions.ts';

describe('WireGuard constants', () => {
  it('timers are the whitepaper section 6 values, in milliseconds', () => {
    assert.equal(REKEY_AFTER_TIME, 120_000);
    assert.equal(REJECT_AFTER_TIME, 180_000);
    assert.equal(REKEY_ATTEMPT_TIME, 90_000);
    assert.equal(REKEY_TIMEOUT, 5_000);
    assert.equal(REKEY_TIMEOUT_JITTER_MAX, 333);
    assert.equal(KEEPALIVE_TIMEOUT, 10_000);
    assert.equal(COOKIE_REFRESH_TIME, 120_000);
  });
  it('message layouts add up to their sizes', () => {
    assert.equal(InitiationField.Ephemeral + 32, InitiationField.Static);
    assert.equal(InitiationField.Static + 32 + 16, InitiationField.Timestamp);
    assert.equal(InitiationField.Timestamp + 12 + 16, InitiationField.Mac1);
    assert.equal(InitiationField.Mac2 + MAC_BYTES, INITIATION_BYTES);
    assert.equal(ResponseField.Ephemeral + 32, ResponseField.Empty);
    assert.equal(ResponseField.Empty + 16, ResponseField.Mac1);
    assert.equal(ResponseField.Mac2 + MAC_BYTES, RESPONSE_BYTES);
    assert.equal(CookieReplyField.Nonce + 24, CookieReplyField.Cookie);
    assert.equal(CookieReplyField.Cookie + 16 + 16, COOKIE_REPLY_BYTES);
    assert.equal(TRANSPORT_HEADER_BYTES + TRANSPORT_TAG_BYTES, TRANSPORT_MIN_BYTES);
  });
});
