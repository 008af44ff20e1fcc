import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressSpaceExhaustedError } from '../errors.ts';
import { SlotAllocator, type SlotState } from './slots.ts';

describe('SlotAllocator', () => {
  it('hands out fresh slots first, then released ones oldest first, then runs out', () => {
    const state: SlotState = { nextSlot: 2, freeSlots: [] };
    const slots = new SlotAllocator(state, 2, 5, 'namespace addresses of 10.16.0.0/26');
    assert.deepEqual([slots.take(), slots.take(), slots.take()], [2, 3, 4]);
    slots.release(3);
    slots.release(2);
    assert.equal(slots.take(), 5, 'a fresh slot before any released one');
    assert.deepEqual([slots.take(), slots.take()], [3, 2], 'released ones, the oldest first');
    assert.throws(() => slots.take(), AddressSpaceExhaustedError);
    assert.deepEqual(state, { nextSlot: 6, freeSlots: [] }, 'the state (kept in the state file) follows');
  });

  it('ignores releases of slots it never handed out, and double releases', () => {
    const state: SlotState = { nextSlot: 4, freeSlots: [] };
    const slots = new SlotAllocator(state, 2, 62, 'x');
    slots.release(1);
    slots.release(9);
    slots.release(3);
    slots.release(3);
    assert.deepEqual(state.freeSlots, [3]);
  });

  it('continues from a state file: nothing handed out twice after a restart', () => {
    const state: SlotState = { nextSlot: 62, freeSlots: [7] };
    const again = new SlotAllocator(state, 2, 62, 'x');
    assert.deepEqual([again.take(), again.take()], [62, 7]);
    assert.throws(() => again.take(), AddressSpaceExhaustedError);
  });
});
