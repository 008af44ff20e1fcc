/**
 * @module dataplane/proxy/misses
 * Cache misses (step 5 of the packet flow in proxy.ts): packets that wait while the control plane is asked,
 * so a miss for one service never stalls traffic to the others. Two bounded queues: packets to a semantic
 * address the snapshot does not know (the address is asked about through the AddressLookup port, once per
 * address while a question is in flight, within a token bucket so that a scan of the semantic range cannot
 * turn into a flood of table queries), and packets from a local namespace address whose instance's own entry
 * has not arrived yet (the node refreshes its own jobs itself; nothing to ask). A new snapshot releases what
 * it answers: packets to addresses it knows, from instances it lists; packets to addresses the control plane
 * answered as unknown are dropped.
 */
import { IpAddress } from '../../addressing/ip.ts';
import type { AddressLookup } from '../dataplane.ts';
import type { ParsedPacket } from '../packet/index.ts';
import { addressKey, instanceAddress, type ServiceSnapshot } from '../snapshot.ts';
import { Drop, type ProxyCounters } from './counters.ts';
import { type HeldPacket, PendingPackets } from './pending.ts';

/** Table queries the data plane may start per second, and in a burst. */
const QUESTIONS_PER_S = 200;
const QUESTION_BURST = 400;

interface Question {
  at: number;
  /** Generation of the snapshot in use when it was asked: only a later answer can settle it. */
  generation: number;
}

export class Misses {
  private readonly forDestination = new PendingPackets();
  private readonly forSource = new PendingPackets(64, 512);
  /** Addresses asked about, by address key. */
  private readonly asked = new Map<number | string, Question>();
  private tokens = QUESTION_BURST;
  private tokensAt = 0;

  constructor(
    private readonly lookup: AddressLookup,
    private readonly counters: ProxyCounters,
    /** How long a packet waits, and a question counts as in flight (ms). */
    private readonly waitMs: number,
  ) {}

  /** Packets waiting for the control plane. */
  get waitingPackets(): number {
    return this.forDestination.size + this.forSource.size;
  }

  /**
   * Holds the packet in p (`length` bytes at `offset`, with its gso word), whose destination the snapshot does
   * not know, and asks about that address; a full queue is a counted drop.
   */
  holdForDestination(
    p: ParsedPacket,
    offset: number,
    length: number,
    gso: number,
    now: number,
    generation: number,
  ): void {
    const key = addressKey(p.buffer, p.dstOffset, p.addrLength);
    if (!this.forDestination.hold(key, p.buffer, offset, length, now, gso)) {
      this.counters.drop(Drop.QueueFull);
      return;
    }
    this.ask(p.buffer, p.dstOffset, p.addrLength, now, generation);
  }

  /** Holds the packet in p, from a local namespace address that has no instance yet; a full queue is a counted drop. */
  holdForSource(p: ParsedPacket, offset: number, length: number, gso: number, now: number): void {
    const key = addressKey(p.buffer, p.srcOffset, p.addrLength);
    if (!this.forSource.hold(key, p.buffer, offset, length, now, gso)) this.counters.drop(Drop.UnknownSource);
  }

  /** Asks the control plane about the semantic address at buf[offset, +length), unless already asked. */
  ask(buf: Uint8Array, offset: number, length: number, now: number, generation: number): void {
    const key = addressKey(buf, offset, length);
    const q = this.asked.get(key);
    if (q !== undefined && now - q.at < this.waitMs) return;
    this.tokens = Math.min(QUESTION_BURST, this.tokens + ((now - this.tokensAt) * QUESTIONS_PER_S) / 1000);
    this.tokensAt = now;
    if (this.tokens < 1) {
      this.counters.questionsThrottled++;
      return;
    }
    this.tokens--;
    this.asked.set(key, { at: now, generation });
    this.lookup.ask(IpAddress.fromBytes(buf.subarray(offset, offset + length)));
  }

  /**
   * What the snapshot `next` answers: returns the held packets it releases (to be processed again, oldest
   * first per address) and drops, counted, the packets to addresses it answers as unknown.
   */
  release(next: ServiceSnapshot): HeldPacket[] {
    const out: HeldPacket[] = [];
    for (const [key, q] of [...this.asked]) {
      const unknownSince = next.unknownSinceGeneration(key);
      if (next.targetByKey(key) !== undefined) {
        this.asked.delete(key);
      } else if (unknownSince !== undefined && unknownSince > q.generation) {
        this.asked.delete(key);
        this.counters.drop(Drop.Unresolved, this.forDestination.take(key).length);
      }
    }
    for (const key of [...this.forDestination.keys()])
      if (next.targetByKey(key) !== undefined) out.push(...this.forDestination.take(key));
    for (const key of [...this.forSource.keys()]) {
      // only an instance with its own address in the packets' family can send them (else they wait on, and expire)
      const inst = next.localByKey(key);
      if (inst && instanceAddress(inst, typeof key === 'number' ? 4 : 16))
        out.push(...this.forSource.take(key));
    }
    return out;
  }

  /** Drops packets that waited too long (counted) and forgets stale questions. */
  expire(now: number): void {
    for (const [key, q] of this.asked) if (now - q.at > this.waitMs) this.asked.delete(key);
    this.counters.drop(Drop.Unresolved, this.forDestination.expire(now, this.waitMs));
    this.counters.drop(Drop.UnknownSource, this.forSource.expire(now, this.waitMs));
  }
}
