import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { INITIATIONS_BURST, INITIATIONS_PER_SECOND, SourceRateLimiter } from './ratelimit.ts';

describe('SourceRateLimiter', () => {
  it('lets a burst through, then the steady rate, per source', () => {
    const l = new SourceRateLimiter();
    let now = 1_000;
    let passed = 0;
    for (let i = 0; i < 100; i++) if (l.allow('a', now)) passed++;
    assert.equal(passed, INITIATIONS_BURST);
    assert.ok(l.allow('b', now), 'another source has its own bucket');
    passed = 0;
    // one second of 1,000 messages (one per ms): the rate, plus nothing left of the spent burst
    for (let i = 0; i < 1000; i++) if (l.allow('a', ++now)) passed++;
    assert.ok(
      passed >= INITIATIONS_PER_SECOND - 1 && passed <= INITIATIONS_PER_SECOND + 1,
      `${passed} in a second`,
    );
  });

  it('forgets quiet sources and refuses new ones beyond its bound', () => {
    const l = new SourceRateLimiter(2);
    assert.ok(l.allow('a', 0));
    assert.ok(l.allow('b', 0));
    assert.equal(l.allow('c', 0), false, 'full');
    l.sweep(5_000);
    assert.equal(l.size, 0);
    assert.ok(l.allow('c', 5_000));
  });
});
