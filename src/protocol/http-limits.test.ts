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

  it('lets callers take turns: a work of another caller waits for one of a busy caller, not all', async () => {
    const order: string[] = [];
    const busy = Array.from({ length: 5 }, (_, i) => inTurn(() => order.push(`busy${i}`), 'ip:a'));
    await busy[0];
    // ip:a is waiting again after its turn; ip:b, new, comes first, then they alternate
    const other = [inTurn(() => order.push('b0'), 'ip:b'), inTurn(() => order.push('b1'), 'ip:b')];
    await Promise.all([...busy, ...other]);
    assert.deepEqual(order, ['busy0', 'b0', 'busy1', 'b1', 'busy2', 'busy3', 'busy4']);
  });

  it("passes a work's error to its caller only", async () => {
    const failing = inTurn(() => {
      throw new InvalidInputError('bad page');
    });
    const fine = inTurn(() => 'ok');
    await assert.rejects(failing, InvalidInputError);
    assert.equal(await fine, 'ok');
  });

  it("refuses a caller's work beyond 1,000 waiting with E_UNAVAILABLE; another caller still gets a turn", async () => {
    const waiting = Array.from({ length: 1000 }, (_, i) => inTurn(() => i));
    await assert.rejects(
      inTurn(() => -1),
      (err: unknown) => err instanceof UnavailableError && err.code === 'E_UNAVAILABLE',
    );
    const other = inTurn(() => 'another caller', 'ip:b');
    assert.equal((await Promise.all(waiting)).length, 1000);
    assert.equal(await other, 'another caller');
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
