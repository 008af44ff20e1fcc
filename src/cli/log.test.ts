import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { humanLine } from './log.ts';

describe('humanLine', () => {
  it('turns a pino line into one short line a person reads, first lines of long values only', () => {
    const line = JSON.stringify({
      level: 50,
      time: 1,
      pid: 2,
      hostname: 'h',
      msg: 'platform creation failed; removing what was made',
      id: 'p8uar',
      err: `n3: the process exited; log ends with:\n${'x'.repeat(500)}`,
    });
    assert.equal(
      humanLine('oaknet up', line),
      'oaknet up: error: platform creation failed; removing what was made (id=p8uar, err=n3: the process exited; log ends with:)',
    );
    assert.equal(
      humanLine('oaknet up', JSON.stringify({ level: 40, msg: 'no netem', delays: [1, 2] })),
      'oaknet up: warning: no netem (delays=[1,2])',
    );
    assert.equal(humanLine('x', 'not json\n'), 'x: not json');
  });
});
