/**
 * @module dataplane/proxy/fragments
 * IPv4/IPv6 fragments without reassembly (steps 3 and 10 of the packet flow in proxy.ts): only a datagram's
 * first fragment has ports, so it decides the translation, and the datagram's later fragments follow it by
 * (addresses, protocol, fragment ID). A later fragment that arrives before its first fragment waits (bounded)
 * and is processed again once the first one has been seen.
 *
 * A datagram is (src, dst, protocol, id) in IPv4 but (src, dst, id) in IPv6 (RFC 8200 4.5), where a later
 * fragment may not name the transport at all. Datagrams are found by their ID first and then compared byte
 * by byte: no key strings per fragment. A datagram is forgotten as soon as all of its bytes have passed (the
 * last fragment gives its length), else after REMEMBER_MS: a flow of fragmented datagrams (UDP larger than
 * the overlay MTU) keeps only the datagrams in flight in the table, not the last 5 s of them.
 */
import type { ParsedPacket } from '../packet/index.ts';
import type { Flow } from './flow-table.ts';
import { type HeldPacket, PendingPackets } from './pending.ts';

/** How long a first fragment's translation is remembered for its later fragments (ms). */
const REMEMBER_MS = 5000;
/** Most datagrams tracked at once, and with one fragment ID: a flood of fragments costs bounded work. */
const MAX_DATAGRAMS = 4096;
const MAX_PER_ID = 8;

/** What a datagram's first fragment decided. */
export interface FragmentRecord {
  /** The flow whose translation the datagram's later fragments follow; none for an inbound request. */
  readonly flow: Flow | undefined;
  readonly outbound: boolean;
  readonly at: number;
}

interface Datagram {
  readonly key: number;
  readonly id: number;
  readonly kind: number;
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  record: FragmentRecord | undefined;
  /** Data bytes of the datagram that have passed, and its length once its last fragment passed (-1 before). */
  seen: number;
  total: number;
}

export class Fragments {
  private readonly byId = new Map<number, Datagram[]>();
  /** Later fragments that came before their first one, by datagram key. */
  private readonly waiting = new PendingPackets(64, 256);
  private nextKey = 1;
  /** Datagrams tracked. */
  private count = 0;

  /** Fragments waiting for their first fragment. */
  get waitingPackets(): number {
    return this.waiting.size;
  }

  /** Datagrams tracked now (remembered first fragments, or later ones waiting). */
  get datagrams(): number {
    return this.count;
  }

  /** What the first fragment of the datagram of p (a later fragment, not yet rewritten) decided. */
  find(p: ParsedPacket): FragmentRecord | undefined {
    const b = p.buffer;
    return this.datagram(b, p.srcOffset, b, p.dstOffset, p.addrLength, p.proto, p.fragmentId, false)?.record;
  }

  /** Holds the later fragment in p (of `length` bytes at `offset`) until its first fragment is seen; false when full. */
  hold(p: ParsedPacket, offset: number, length: number, now: number): boolean {
    const b = p.buffer;
    const d = this.datagram(b, p.srcOffset, b, p.dstOffset, p.addrLength, p.proto, p.fragmentId, true);
    if (!d) return false;
    if (this.waiting.hold(d.key, b, offset, length, now)) return true;
    if (!d.record && !this.waiting.has(d.key)) this.forget(d);
    return false;
  }

  /**
   * Records the first fragment in p, so the datagram's later fragments follow its translation; returns the
   * later fragments that waited for it (to be processed again, in order). Keyed as the later ones arrive, with
   * the original addresses: for an outbound first fragment (already rewritten) the flow's client and dialed
   * addresses; an inbound one is recorded before its rewrite.
   */
  remember(p: ParsedPacket, flow: Flow | undefined, outbound: boolean, now: number): HeldPacket[] {
    const b = p.buffer;
    const d =
      outbound && flow
        ? this.datagram(flow.clientAddr, 0, flow.dialed, 0, flow.dialed.length, p.proto, p.fragmentId, true)
        : this.datagram(b, p.srcOffset, b, p.dstOffset, p.addrLength, p.proto, p.fragmentId, true);
    if (!d) return []; // too many datagrams in flight: its later fragments will wait, and expire counted
    d.record = { flow, outbound, at: now };
    const held = this.waiting.take(d.key);
    this.account(d, p);
    return held;
  }

  /**
   * Records that the later fragment in p (found by `find`, not yet rewritten) passed; the datagram is forgotten
   * once every byte of it has.
   */
  passed(p: ParsedPacket): void {
    const b = p.buffer;
    const d = this.datagram(b, p.srcOffset, b, p.dstOffset, p.addrLength, p.proto, p.fragmentId, false);
    if (d) this.account(d, p);
  }

  private account(d: Datagram, p: ParsedPacket): void {
    d.seen += p.fragmentDataLength;
    if (!p.moreFragments) d.total = p.fragmentOffset + p.fragmentDataLength;
    if (d.total >= 0 && d.seen >= d.total && !this.waiting.has(d.key)) this.forget(d);
  }

  /** Forgets old records and drops later fragments that waited too long; returns how many were dropped. */
  expire(now: number, waitMs: number): number {
    const dropped = this.waiting.expire(now, waitMs);
    for (const [id, list] of this.byId) {
      const keep = list.filter((d) => {
        if (d.record && (now - d.record.at > REMEMBER_MS || d.record.flow?.dead)) d.record = undefined;
        return d.record !== undefined || this.waiting.has(d.key);
      });
      this.count -= list.length - keep.length;
      if (keep.length === 0) this.byId.delete(id);
      else if (keep.length !== list.length) this.byId.set(id, keep);
    }
    return dropped;
  }

  private forget(d: Datagram): void {
    const list = this.byId.get(d.id);
    const i = list ? list.indexOf(d) : -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    this.count--;
    if (list.length === 0) this.byId.delete(d.id);
  }

  private datagram(
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    len: number,
    proto: number,
    id: number,
    create: boolean,
  ): Datagram | undefined {
    const kind = len === 4 ? proto : 0;
    const list = this.byId.get(id);
    if (list)
      for (const d of list)
        if (d.kind === kind && same(d.src, src, srcOff, len) && same(d.dst, dst, dstOff, len)) return d;
    if (!create || this.count >= MAX_DATAGRAMS || (list && list.length >= MAX_PER_ID)) return undefined;
    this.count++;
    const d: Datagram = {
      key: this.nextKey++,
      id,
      kind,
      src: Uint8Array.prototype.slice.call(src, srcOff, srcOff + len),
      dst: Uint8Array.prototype.slice.call(dst, dstOff, dstOff + len),
      record: undefined,
      seen: 0,
      total: -1,
    };
    if (list) list.push(d);
    else this.byId.set(id, [d]);
    return d;
  }
}

function same(a: Uint8Array, b: Uint8Array, off: number, len: number): boolean {
  if (a.length !== len) return false;
  for (let i = 0; i < len; i++) if (a[i] !== b[off + i]) return false;
  return true;
}
