/**
 * @module dataplane/proxy/flow-table
 * The proxy's connection table. A flow is one L4 conversation a local instance opened towards a semantic
 * address; it remembers the instance the policy chose, so every later packet of the flow (and every reply)
 * is translated the same way. Each flow is reachable by two keys: the outbound 5-tuple as the client sent it
 * (proto, client namespace address, client port, dialed address, port) and the inbound 5-tuple of replies as
 * they arrive (proto, chosen instance's instance IP, port, client namespace address, client port).
 *
 * Lookups must not allocate: keys are ten 32-bit words written into a scratch array straight from packet
 * bytes, hashed, and compared word by word in an open-addressing table (linear probing, tombstones, grown
 * and rebuilt when full of either). No strings, no per-packet objects.
 */
import type { Instance } from '../snapshot.ts';

/** TCP progress bits of a flow. */
export const TcpProgress = {
  SynOut: 1,
  SynAckIn: 2,
  FinOut: 4,
  FinIn: 8,
  Reset: 16,
  /** The client sent payload (a connection in use, not one just opened). */
  DataOut: 32,
} as const;

export class Flow {
  /** Closed flows are unlinked from the table; `dead` tells late holders. */
  dead = false;
  /** TcpProgress bits (TCP only). */
  tcp = 0;
  /** Last acknowledgment number the client sent (TCP): a reset we inject must carry it as sequence number. */
  clientAck = 0;
  /** The client's next sequence number (TCP): what a reset of a half-open connection acknowledges. */
  clientNext = 0;
  /** True once the chosen instance is gone (UDP/ICMP; a TCP flow is reset and closed then): its next packet chooses again. */
  stale = false;
  /** (client, ServiceIP, port) of a TCP flow to a ServiceIP that leads a session: its session-affinity key. */
  sessionKey: string | undefined;
  /** When the flow was made (ms, coarse clock). */
  openedAt = 0;
  /** Packets and bytes that matched the flow, both directions. */
  packets = 0;
  bytes = 0;

  constructor(
    readonly proto: number,
    /** Client (local instance) namespace address, 4 or 16 bytes. */
    readonly clientAddr: Uint8Array,
    readonly clientPort: number,
    /** The semantic address the client called: what replies must come from. */
    readonly dialed: Uint8Array,
    /** Destination port (or echo id for ICMP). */
    readonly port: number,
    /** The client instance's own instance IP: the source it gets on the wire. */
    readonly ownIp: Uint8Array,
    /** The local instance that opened the flow (as the snapshot had it then). */
    public client: Instance,
    /** Chosen target instance. */
    public instance: Instance,
    /** Target's namespace address and instance IP in this flow's family. */
    public targetNs: Uint8Array,
    public targetIp: Uint8Array,
    /** Last packet time (ms, coarse clock). */
    public lastSeen: number,
  ) {}
}

const KEY_WORDS = 10;
const EMPTY = 0;
const USED = 1;
const TOMB = 2;

export class FlowTable {
  /** Key under construction; fill it with setKey, then get/put/remove. */
  private readonly scratch = new Uint32Array(KEY_WORDS);
  private keys: Uint32Array;
  private state: Uint8Array;
  private values: Array<Flow | undefined>;
  private mask: number;
  private used = 0;
  private tombs = 0;
  /** Every live flow (for sweeps and status). */
  readonly flows = new Set<Flow>();

  constructor(initialCapacity = 4096) {
    let cap = 16;
    while (cap < initialCapacity * 2) cap *= 2;
    this.mask = cap - 1;
    this.keys = new Uint32Array(cap * KEY_WORDS);
    this.state = new Uint8Array(cap);
    this.values = new Array<Flow | undefined>(cap);
  }

  get size(): number {
    return this.flows.size;
  }

  /** Writes the key (proto, src, srcPort, dst, dstPort) into the scratch key; addresses are 4 or 16 bytes. */
  setKey(
    proto: number,
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    len: number,
    srcPort: number,
    dstPort: number,
  ): void {
    const k = this.scratch;
    k[0] = proto | (len << 8);
    k[1] = ((srcPort << 16) | dstPort) >>> 0;
    writeAddress(k, 2, src, srcOff, len);
    writeAddress(k, 6, dst, dstOff, len);
  }

  /** The flow under the scratch key. */
  get(): Flow | undefined {
    const slot = this.find();
    return slot < 0 ? undefined : this.values[slot];
  }

  /**
   * Adds flow under both of its keys (outbound and reply). The caller must have checked that the outbound key
   * is free; a reply key another flow holds is taken over (two flows whose replies look alike: the later wins).
   */
  add(flow: Flow): void {
    this.reserve(2);
    this.outboundKey(flow);
    this.insert(flow);
    this.replyKey(flow);
    this.insert(flow);
    this.flows.add(flow);
  }

  /** Removes a flow's two keys and marks it dead. */
  remove(flow: Flow): void {
    if (flow.dead) return;
    flow.dead = true;
    this.outboundKey(flow);
    this.erase(flow);
    this.replyKey(flow);
    this.erase(flow);
    this.flows.delete(flow);
  }

  /** Re-keys a flow whose target changed (the reply key depends on the target's instance IP). */
  retarget(flow: Flow, instance: Instance, targetNs: Uint8Array, targetIp: Uint8Array): void {
    this.replyKey(flow);
    this.erase(flow);
    flow.instance = instance;
    flow.targetNs = targetNs;
    flow.targetIp = targetIp;
    flow.stale = false;
    this.reserve(1);
    this.replyKey(flow);
    this.insert(flow);
  }

  private outboundKey(f: Flow): void {
    this.setKey(f.proto, f.clientAddr, 0, f.dialed, 0, f.clientAddr.length, f.clientPort, f.port);
  }

  private replyKey(f: Flow): void {
    this.setKey(f.proto, f.targetIp, 0, f.clientAddr, 0, f.clientAddr.length, f.port, f.clientPort);
  }

  private hash(): number {
    const k = this.scratch;
    let h = 0x811c9dc5;
    for (let i = 0; i < KEY_WORDS; i++) h = Math.imul(h ^ k[i]!, 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  private matches(slot: number): boolean {
    const base = slot * KEY_WORDS;
    const k = this.scratch;
    for (let i = 0; i < KEY_WORDS; i++) if (this.keys[base + i] !== k[i]) return false;
    return true;
  }

  private find(): number {
    let slot = this.hash() & this.mask;
    for (;;) {
      const s = this.state[slot];
      if (s === EMPTY) return -1;
      if (s === USED && this.matches(slot)) return slot;
      slot = (slot + 1) & this.mask;
    }
  }

  /** Makes room for n more keys, so that probes always end at an empty slot. Clobbers the scratch key. */
  private reserve(n: number): void {
    if ((this.used + this.tombs + n) * 4 > (this.mask + 1) * 3)
      this.rebuild(this.used + n > (this.mask + 1) / 2);
  }

  private insert(flow: Flow): void {
    // the whole probe chain is searched before a tombstone is reused: a key must never be stored twice
    let slot = this.hash() & this.mask;
    let free = -1;
    for (;;) {
      const s = this.state[slot];
      if (s === EMPTY) break;
      if (s === USED && this.matches(slot)) {
        this.values[slot] = flow; // the key changes hands (see add)
        return;
      }
      if (s === TOMB && free < 0) free = slot;
      slot = (slot + 1) & this.mask;
    }
    if (free >= 0) {
      slot = free;
      this.tombs--;
    }
    this.state[slot] = USED;
    this.keys.set(this.scratch, slot * KEY_WORDS);
    this.values[slot] = flow;
    this.used++;
  }

  private erase(flow: Flow): void {
    const slot = this.find();
    if (slot < 0 || this.values[slot] !== flow) return;
    this.state[slot] = TOMB;
    this.values[slot] = undefined;
    this.used--;
    this.tombs++;
  }

  /** Re-inserts every key (dropping tombstones), into twice the slots when grow; keeps who holds which key. */
  private rebuild(grow: boolean): void {
    const { keys, state, values } = this;
    const cap = (this.mask + 1) * (grow ? 2 : 1);
    this.mask = cap - 1;
    this.keys = new Uint32Array(cap * KEY_WORDS);
    this.state = new Uint8Array(cap);
    this.values = new Array<Flow | undefined>(cap);
    this.used = 0;
    this.tombs = 0;
    for (let slot = 0; slot < state.length; slot++) {
      if (state[slot] !== USED) continue;
      this.scratch.set(keys.subarray(slot * KEY_WORDS, (slot + 1) * KEY_WORDS));
      this.insert(values[slot]!);
    }
  }
}

function writeAddress(k: Uint32Array, at: number, buf: Uint8Array, off: number, len: number): void {
  for (let w = 0; w < 4; w++) {
    const i = off + w * 4;
    k[at + w] =
      w * 4 < len ? ((buf[i]! << 24) | (buf[i + 1]! << 16) | (buf[i + 2]! << 8) | buf[i + 3]!) >>> 0 : 0;
  }
}
