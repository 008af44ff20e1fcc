/** http-limits.ts: heavy requests take event-loop turns one at a time; limits are checked. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidInputError, UnavailableError } from '../errors.ts';
import { DEFAULT_RATE_LIMITS, inTurn, resolveRateLimits } from './http-limits.ts';

describe('inTurn', () => {
  it('runs queued works one per event-loop turn, in order, so other work runs between them', async () => {
    const order: string[] = [];
    const a = inTurn(() => {
      order.push('A');
      // queued while A runs: it must not wait for B (the next heavy work)
      setImmediate(() => order.push('other'));
      return 1;
    });
    const b = inTurn(() => {
      order.push('B');
      return 2;
    });
    assert.deepEqual(order, [], 'nothing runs synchronously');
    assert.deepEqual(await Promise.all([a, b]), [1, 2]);
    assert.deepEqual(order, ['A', 'other', 'B']);
  });

  it("passes a work's error to its caller only", async () => {
    const failing = inTurn(() => {
      throw new InvalidInputError('bad page');
    });
    const fine = inTurn(() => 'ok');
    await assert.rejects(failing, InvalidInputError);
    assert.equal(await fine, 'ok');
  });

  it('refuses work beyond 1,000 waiting with E_UNAVAILABLE', async () => {
    const waiting = Array.from({ length: 1000 }, (_, i) => inTurn(() => i));
    await assert.rejects(
      inTurn(() => -1),
      (err: unknown) => err instanceof UnavailableError && err.code === 'E_UNAVAILABLE',
    );
    assert.equal((await Promise.all(waiting)).length, 1000);
    assert.equal(await inTurn(() => 'room again'), 'room again');
  });
});

describe('resolveRateLimits', () => {
  it('takes the defaults for what is not set and refuses nonsense', () => {
    assert.deepEqual(resolveRateLimits(), DEFAULT_RATE_LIMITS);
    const off = { max: 0, windowMs: 1000 };
    assert.deepEqual(resolveRateLimits({ general: off }), { ...DEFAULT_RATE_LIMITS, general: off });
    for (const bad of [
      { max: -1, windowMs: 1000 },
      { max: 1.5, windowMs: 1000 },
      { max: 10, windowMs: 0 },
      { max: 10, windowMs: NaN },
    ]) {
      assert.throws(() => resolveRateLimits({ allocation: bad }), InvalidInputError);
    }
  });
});
