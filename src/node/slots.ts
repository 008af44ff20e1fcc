/**
 * @module node/slots
 * Which host slot of the node's subnetworks each instance gets (its namespace addresses are subnet + slot in
 * both families). Fresh slots first, then the oldest released one, so an address that was just given up is
 * not handed to the next instance at once (a client may still talk to it). The cursor and the released slots
 * live in the node's state file, so a restart hands out nothing twice.
 */
import { AddressSpaceExhaustedError } from '../errors.ts';

/** The part of the state file the slots live in (the allocator changes it in place). */
export interface SlotState {
  /** The next never-used slot. */
  nextSlot: number;
  /** Released slots, oldest first. */
  freeSlots: number[];
}

export class SlotAllocator {
  constructor(
    private readonly state: SlotState,
    /** Slots first..last are the usable ones (the network address and the gateway come before `first`). */
    private readonly first: number,
    private readonly last: number,
    /** What the slots belong to, for the error when they run out. */
    private readonly what: string,
  ) {}

  /** A free slot; AddressSpaceExhaustedError when every slot is taken. */
  take(): number {
    if (this.state.nextSlot <= this.last) return this.state.nextSlot++;
    const slot = this.state.freeSlots.shift();
    if (slot === undefined) throw new AddressSpaceExhaustedError(this.what, this.last - this.first + 1);
    return slot;
  }

  /** Gives a slot back (it is handed out again after the fresh ones and the earlier released ones). */
  release(slot: number): void {
    if (slot < this.first || slot >= this.state.nextSlot || this.state.freeSlots.includes(slot)) return;
    this.state.freeSlots.push(slot);
  }
}
