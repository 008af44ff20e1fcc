/**
 * @module dataplane/wireguard/wg-tunnel
 * The tunnel between nodes as WireGuard peers (wireguard-go's device/peer/timers roles), a `Tunnel` over the
 * raw one (UDP, or in memory): one session per peer node, the peers and their keys taken from the service
 * snapshot (so only nodes the control plane knows can talk), handshakes in TypeScript (`handshake.ts`,
 * `cookie.ts`), transport messages sealed by the raw tunnel in its send (per packet slot, `sessions[i]`) and
 * opened here over whole received batches (`TransportSessions.open`, one call per batch).
 *
 * The proxy sees the same contract as before: batches of inner IP packets (and RTT probes) to and from peer
 * endpoints. What changes is only who may talk: a datagram is delivered only if it opened with a session of a
 * known peer, or it is plaintext from a known peer without a key where the cluster allows plaintext; every
 * other datagram is dropped and counted by reason. Packets to a peer without a session wait (bounded) for its
 * handshake. Timers follow the whitepaper (section 6): rekey after REKEY_AFTER_TIME or REKEY_AFTER_MESSAGES,
 * sessions unusable after REJECT_AFTER_TIME, handshake retries every REKEY_TIMEOUT (with jitter) for
 * REKEY_ATTEMPT_TIME, passive keepalive after KEEPALIVE_TIMEOUT, persistent keepalive only when configured,
 * cookie replies when under load.
 */
import { randomInt } from 'node:crypto';
import type { PeerTunnelStatus, WireGuardStatus } from '../../protocol/dataplane-status.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { isProbe, PROBE_BYTES, PROBE_REPLY, PROBE_REQUEST } from '../proxy/prober.ts';
import { addressKey, type Peer, type ServiceSnapshot } from '../snapshot.ts';
import type { PacketBatch } from '../tun/tun.ts';
import {
  type AddressedBatch,
  decodeEndpoint,
  ENDPOINT_BYTES,
  endpointKey,
  type SendResult,
  type Tunnel,
} from '../tunnel/tunnel.ts';
import { CookieChecker, consumeCookieReply } from './cookie.ts';
import {
  COOKIE_REFRESH_TIME,
  COOKIE_REPLY_BYTES,
  INITIATION_BYTES,
  KEEPALIVE_TIMEOUT,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  RESPONSE_BYTES,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX,
} from './constants.ts';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  type InitiatorState,
} from './handshake.ts';
import { isUsablePublicKey, type KeyPair } from './keys.ts';
import { SourceRateLimiter } from './ratelimit.ts';
import {
  OpenVerdict,
  REKEY_AFTER_MESSAGES,
  SESSION_STAT_FIELDS,
  SessionStat,
  type TransportSessions,
} from './sessions.ts';

const MS = 1000;
const TICK_MS = 250;
/** Packets (and bytes) that wait per peer for its handshake, as wireguard-go's staged queue. */
const STAGED_MAX_PACKETS = 1024;
const STAGED_MAX_BYTES = 4 * 1024 * 1024;
/** Handshake messages per second above which initiations and responses must carry a valid MAC2 (a cookie). */
const DEFAULT_UNDER_LOAD_PER_SECOND = 200;
/** Peers with keys the tables do not name yet, at most; how long one waits to be named; its held packets. */
const PROVISIONAL_MAX = 64;
const PROVISIONAL_MS = 10_000;
const PROVISIONAL_HELD_MAX = 256;
/** Provisional peers from one source address at most (nodes behind one NAT share an address). */
const PROVISIONAL_PER_SOURCE = 8;
/** A provisional peer's source address is asked about again after this while its packets wait. */
const ASK_AGAIN_MS = 1000;
/**
 * Data sent with nothing received for this long starts a new handshake. The whitepaper's KEEPALIVE +
 * REKEY_TIMEOUT (15 s) assumes silence may be normal; here every peer answers RTT probes each second, so
 * silence means the peer lost the session (a restart) or died, and REKEY_TIMEOUT finds out sooner.
 */
const UNANSWERED_REHANDSHAKE_MS = REKEY_TIMEOUT;
/** Bytes held for all provisional peers together. */
const PROVISIONAL_HELD_BYTES = 4 * 1024 * 1024;
/** Keys whose last initiation timestamp is remembered. */
const TIMESTAMPS_MAX = 65_536;
/** Initiations accepted from one peer at most this often (wireguard-go: 50 per second). */
const INITIATION_MIN_INTERVAL_MS = 20;
/** Rekey on receive: an initiator's session older than this (whitepaper: REJECT - KEEPALIVE - REKEY_TIMEOUT). */
const REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT;

/** Why a datagram was dropped (status keys). */
export type TunnelDrop =
  | 'unknown_peer'
  | 'unknown_key'
  | 'plaintext_refused'
  | 'unknown_index'
  | 'auth_failed'
  | 'replayed'
  | 'malformed'
  | 'exhausted'
  | 'bad_mac'
  | 'handshake_failed'
  | 'handshake_replayed'
  | 'handshake_timeout'
  | 'staged_overflow'
  | 'rate_limited'
  | 'bad_key'
  | 'no_key';

const VERDICT_DROP: Record<number, TunnelDrop> = {
  [OpenVerdict.UnknownIndex]: 'unknown_index',
  [OpenVerdict.AuthFailed]: 'auth_failed',
  [OpenVerdict.Replayed]: 'replayed',
  [OpenVerdict.Malformed]: 'malformed',
  [OpenVerdict.Exhausted]: 'exhausted',
};

export interface WgTunnelConfig {
  /** This node's static key pair; null: a node without WireGuard (plaintext to every peer, where allowed). */
  identity: KeyPair | null;
  /** Where sessions live (the raw tunnel seals with them in its send); required with an identity. */
  sessions: TransportSessions | null;
  /** Persistent keepalive interval in seconds (0 or absent: off, as the whitepaper's default). */
  persistentKeepaliveSeconds?: number;
  /** Handshake messages per second that put the node under load (cookie replies); default 200. */
  underLoadPerSecond?: number;
  /** Clock (ms); tests pass their own. */
  now?: () => number;
  /**
   * Asks the control plane about a semantic address (the data plane's AddressLookup). With it, a handshake
   * from a key the tables do not name yet completes provisionally: the peer's packets are held and their
   * source addresses asked about, and they are delivered once the tables name the key (a node that talks to
   * us before we looked up any of its instances), else dropped after PROVISIONAL_MS. Without it, such
   * handshakes are refused.
   */
  ask?: (address: IpAddress) => void;
}

interface Session {
  readonly slot: number;
  readonly localIndex: number;
  readonly created: number;
  readonly initiator: boolean;
  /** Its peer (a provisional peer's session moves to the known peer when the tables name the key). */
  peer: PeerState;
}

interface PendingHandshake {
  readonly state: InitiatorState;
  readonly slot: number;
  readonly localIndex: number;
  readonly mac1: Uint8Array;
  sentAt: number;
  readonly firstAt: number;
  retryAfterMs: number;
}

class PeerState {
  current: Session | undefined;
  previous: Session | undefined;
  /** A responder's session until the initiator's first transport message confirms it. */
  next: Session | undefined;
  pending: PendingHandshake | undefined;
  cookie: { value: Uint8Array; at: number } | undefined;
  lastTimestamp: Uint8Array | undefined;
  /** MAC1 of the last handshake message sent to it (a cookie reply is sealed to it). */
  lastSentMac1: Uint8Array | undefined;
  lastInitiationAt = -Infinity;
  lastHandshakeAt = 0;
  lastSentAt = -Infinity;
  /** When this node last sent it an initiation. */
  lastInitiatedAt = -Infinity;
  /** When data went to it with nothing received since (the whitepaper's new-handshake timer); undefined: none. */
  unansweredSince: number | undefined;
  lastDataReceivedAt = -Infinity;
  lastReceivedAt = -Infinity;
  handshakes = 0;
  wantHandshake = false;
  staged: Array<{ packet: Buffer; gso: number }> = [];
  stagedBytes = 0;
  /** Bytes of sessions already removed (their slots' stats are gone). */
  bytesInBefore = 0;
  bytesOutBefore = 0;
  readonly drops = new Map<TunnelDrop, number>();
  readonly text: string;
  readonly keyText: string | null;
  /**
   * Set for a peer not in the tables yet (a node whose instances this node has not looked up): when it was
   * made. Its packets are held, not delivered, while their source addresses are asked about.
   */
  provisionalSince: number | undefined;
  held: Buffer[] = [];
  /** When the oldest held packet came. */
  heldSince = 0;
  /** Source addresses asked about, and when (asked again after ASK_AGAIN_MS while packets wait). */
  asked = new Map<number | string, number>();

  constructor(
    readonly endpoint: Buffer,
    readonly key: Uint8Array | null,
  ) {
    const { host, port } = decodeEndpoint(endpoint);
    this.text = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    this.keyText = key ? Buffer.from(key).toString('base64') : null;
  }

  drop(reason: TunnelDrop, n = 1): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + n);
  }
}

/** The raw batch handed on to the proxy: own offset and length arrays (the raw tunnel's are its own). */
interface ReceiveView extends PacketBatch {
  offsets: Uint32Array;
  lengths: Uint32Array;
}

export class WgTunnel implements Tunnel {
  readonly drops = new Map<TunnelDrop, number>();
  cookiesSent = 0;
  private readonly peers = new Map<number | string, PeerState>();
  private readonly byKey = new Map<string, PeerState>();
  private readonly bySlot: Array<Session | PendingHandshake | undefined>;
  private readonly slotPeer: Array<PeerState | undefined>;
  private readonly freeSlots: number[] = [];
  private readonly sessions: TransportSessions | null;
  private readonly identity: KeyPair | null;
  private readonly cookies: CookieChecker | null;
  private readonly now: () => number;
  private readonly keepaliveMs: number;
  private readonly underLoadPerSecond: number;
  private allowPlaintext = false;
  /** Some peer wants a handshake (startWantedHandshakes looks for it). */
  private wanted = false;
  private slots = new Int32Array(1024);
  private verdicts = new Int32Array(1024);
  private view: ReceiveView = {
    buffer: Buffer.alloc(0),
    offsets: new Uint32Array(1024),
    lengths: new Uint32Array(1024),
    count: 0,
  };
  private outSources = Buffer.alloc(1024 * ENDPOINT_BYTES);
  private readonly stats = new Float64Array(SESSION_STAT_FIELDS);
  private readonly one: AddressedBatch & { sessions: Int32Array; gso: Uint32Array } = {
    buffer: Buffer.alloc(0),
    offsets: new Uint32Array(1),
    lengths: new Uint32Array(1),
    gso: new Uint32Array(1),
    count: 1,
    endpoints: Buffer.alloc(ENDPOINT_BYTES),
    sessions: new Int32Array(1),
  };
  private handshakeWindowStart = 0;
  private handshakesInWindow = 0;
  private underLoadUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private snapshot: ServiceSnapshot | undefined;
  private onBatch: ((batch: PacketBatch, sources: Buffer) => void) | undefined;
  /** Peers that completed a handshake with a key the tables do not name yet, by key. */
  private readonly provisional = new Map<string, PeerState>();
  /** Endpoints not in the tables that sent plaintext (allowed by the cluster), by endpoint key. */
  private readonly provisionalPlain = new Map<number | string, PeerState>();
  /**
   * The last initiation timestamp accepted per key the tables named, kept while peer entries come and go (a
   * replayed initiation must not pass because the tables dropped and re-added its peer); bounded, oldest out.
   * Provisional peers keep theirs in their own entry only: keys anyone can make up must not push out these.
   */
  private readonly timestamps = new Map<string, Uint8Array>();
  /** Bytes held for provisional peers, all of them. */
  private heldBytes = 0;
  private readonly ask: ((address: IpAddress) => void) | undefined;
  /** Unusable keys the tables named (each counted once). */
  private readonly badKeys = new Set<string>();
  /** Handshake messages per source address under load. */
  private readonly limiter = new SourceRateLimiter();
  private closed = false;

  constructor(
    private readonly inner: Tunnel,
    config: WgTunnelConfig,
  ) {
    this.identity = config.identity;
    this.sessions = config.identity ? config.sessions : null;
    if (config.identity && !config.sessions) throw new Error('a WireGuard tunnel needs its sessions');
    const capacity = this.sessions?.capacity ?? 0;
    this.bySlot = new Array<Session | PendingHandshake | undefined>(capacity);
    this.slotPeer = new Array<PeerState | undefined>(capacity);
    for (let s = capacity - 1; s >= 0; s--) this.freeSlots.push(s);
    this.cookies = config.identity ? new CookieChecker(config.identity.publicKey) : null;
    this.now = config.now ?? Date.now;
    this.keepaliveMs = (config.persistentKeepaliveSeconds ?? 0) * MS;
    this.underLoadPerSecond = config.underLoadPerSecond ?? DEFAULT_UNDER_LOAD_PER_SECOND;
    this.ask = config.ask;
  }

  get port(): number {
    return this.inner.port;
  }

  /** Whether this node speaks WireGuard (has a key). */
  get encrypted(): boolean {
    return this.identity !== null;
  }

  /** Takes the peers (endpoints and keys) and the plaintext policy of a snapshot; cheap when they did not change. */
  use(snapshot: ServiceSnapshot): void {
    this.allowPlaintext = snapshot.allowPlaintextPeers;
    if (this.snapshot && this.snapshot.peers() === snapshot.peers()) return;
    this.snapshot = snapshot;
    this.setPeers(snapshot.peers());
  }

  /**
   * Replaces the known peers: a peer whose key changed starts over (its sessions end). A peer the tables no
   * longer name (its instances left them, e.g. an interest that expired while it was idle) becomes a
   * provisional peer if it has a live session: the session stays, so a peer that talks again on it is not
   * met with silence (it would keep sending into a session this node forgot until its own timer gave up);
   * its packets are held and their sources asked about, as for any key the tables do not name, until the
   * tables name it again. Others are forgotten.
   */
  setPeers(peers: readonly Peer[]): void {
    const seen = new Set<number | string>();
    for (const p of peers) {
      const k = endpointKey(p.endpoint);
      const old = this.peers.get(k);
      if (old && sameKey(old.key, p.key)) {
        seen.add(k);
        continue;
      }
      if (p.key && !isUsablePublicKey(p.key)) {
        // a low-order point: no handshake can be made with it (a broken or hostile record); left out
        const text = Buffer.from(p.key).toString('base64');
        if (!this.badKeys.has(text) && this.badKeys.size < 1024) {
          this.badKeys.add(text);
          this.count('bad_key');
        }
        continue;
      }
      seen.add(k);
      if (old) this.forget(k, old);
      const state = new PeerState(p.endpoint, p.key);
      this.peers.set(k, state);
      if (state.keyText) this.byKey.set(state.keyText, state);
      const provisional = state.keyText ? this.provisional.get(state.keyText) : undefined;
      if (provisional) this.adopt(provisional, state);
      const plain = this.provisionalPlain.get(k);
      if (plain) {
        this.provisionalPlain.delete(k);
        // named with a key: its plaintext is refused as from any keyed peer (when this node has a key)
        if (state.key === null || this.identity === null) {
          state.lastReceivedAt = plain.lastReceivedAt;
          this.deliverHeld(plain, state);
        } else this.dropHeld(plain, 'plaintext_refused');
      }
    }
    for (const [k, old] of this.peers) if (!seen.has(k)) this.leave(k, old);
    this.byKey.clear();
    for (const peer of this.peers.values()) if (peer.keyText) this.byKey.set(peer.keyText, peer);
  }

  start(onBatch: (batch: PacketBatch, sources: Buffer) => void, onError?: (err: Error) => void): void {
    this.onBatch = onBatch;
    this.inner.start((batch, sources) => this.receive(batch, sources, onBatch), onError);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const [k, p] of this.peers) this.forget(k, p);
    this.inner.close();
    this.sessions?.close();
  }

  offloadStatus(): ReturnType<NonNullable<Tunnel['offloadStatus']>> {
    return this.inner.offloadStatus?.();
  }

  // ---- send -----------------------------------------------------------------------------------------------

  send(batch: AddressedBatch): SendResult {
    const n = batch.count;
    if (this.slots.length < n) this.slots = new Int32Array(n);
    const slots = this.slots;
    const now = this.now();
    let lastKey: number | string | undefined;
    let lastSlot = -1;
    let irregular = false;
    for (let i = 0; i < n; i++) {
      const key = endpointKey(batch.endpoints, i * ENDPOINT_BYTES);
      if (key === lastKey) {
        slots[i] = lastSlot;
        continue;
      }
      lastKey = key;
      lastSlot = this.slotFor(this.peers.get(key), now);
      slots[i] = lastSlot;
      if (lastSlot < -1) irregular = true;
    }
    if (irregular) return this.sendIrregular(batch, now);
    const result = this.inner.send({ ...batch, sessions: slots.subarray(0, n) });
    if (this.wanted) this.startWantedHandshakes(now);
    return result;
  }

  /** The slot packets to `peer` go with now: >= 0 a session, -1 plaintext, -2 drop, -3 wait for a handshake. */
  private slotFor(peer: PeerState | undefined, now: number): number {
    if (!peer) return -2;
    if (peer.key === null || this.identity === null) return this.allowPlaintext ? -1 : -2;
    peer.lastSentAt = now;
    peer.unansweredSince ??= now;
    const s = peer.current;
    if (s && now - s.created < REJECT_AFTER_TIME) {
      if (s.initiator && now - s.created >= REKEY_AFTER_TIME && !peer.pending) this.want(peer);
      return s.slot;
    }
    this.want(peer);
    return -3;
  }

  /** A batch with packets to drop or to hold: the others go on, in order. */
  private sendIrregular(batch: AddressedBatch, now: number): SendResult {
    const n = batch.count;
    const keep = new Uint32Array(n);
    let kept = 0;
    let dropped = 0;
    for (let i = 0; i < n; i++) {
      const slot = this.slots[i]!;
      if (slot >= -1) {
        keep[kept++] = i;
        continue;
      }
      const peer = this.peers.get(endpointKey(batch.endpoints, i * ENDPOINT_BYTES));
      if (slot === -3 && peer) {
        if (!this.stage(peer, batch, i)) dropped++;
        continue;
      }
      dropped++;
      if (peer) peer.drop('plaintext_refused');
      else this.count('unknown_peer');
    }
    const sub = subBatch(batch, keep, kept, this.slots);
    const result = kept > 0 ? this.inner.send(sub) : { sent: 0, failed: 0 };
    this.startWantedHandshakes(now);
    return { sent: result.sent, failed: result.failed + dropped };
  }

  private stage(peer: PeerState, batch: AddressedBatch, i: number): boolean {
    const len = batch.lengths[i]!;
    if (peer.staged.length >= STAGED_MAX_PACKETS || peer.stagedBytes + len > STAGED_MAX_BYTES) {
      peer.drop('staged_overflow');
      return false;
    }
    const off = batch.offsets[i]!;
    peer.staged.push({
      packet: Buffer.from(batch.buffer.subarray(off, off + len)),
      gso: batch.gso?.[i] ?? 0,
    });
    peer.stagedBytes += len;
    return true;
  }

  private want(peer: PeerState): void {
    peer.wantHandshake = true;
    this.wanted = true;
  }

  private startWantedHandshakes(now: number): void {
    if (!this.wanted) return;
    this.wanted = false;
    for (const peer of this.peers.values()) {
      if (!peer.wantHandshake) continue;
      peer.wantHandshake = false;
      if (!peer.pending) this.initiate(peer, now);
    }
  }

  /** Sends packets that waited for a session, in order. */
  private flushStaged(peer: PeerState): void {
    const s = peer.current;
    if (!s || peer.staged.length === 0) return;
    const staged = peer.staged;
    peer.staged = [];
    peer.stagedBytes = 0;
    const total = staged.reduce((a, p) => a + p.packet.length, 0);
    const buffer = Buffer.allocUnsafe(total);
    const n = staged.length;
    const batch = {
      buffer,
      offsets: new Uint32Array(n),
      lengths: new Uint32Array(n),
      gso: new Uint32Array(n),
      count: n,
      endpoints: Buffer.alloc(n * ENDPOINT_BYTES),
      sessions: new Int32Array(n).fill(s.slot),
    };
    let at = 0;
    staged.forEach((p, i) => {
      p.packet.copy(buffer, at);
      batch.offsets[i] = at;
      batch.lengths[i] = p.packet.length;
      batch.gso[i] = p.gso;
      peer.endpoint.copy(batch.endpoints, i * ENDPOINT_BYTES);
      at += p.packet.length;
    });
    this.inner.send(batch);
    peer.lastSentAt = this.now();
  }

  /** Sends one datagram, plaintext (slot -1) or sealed with a slot, to an endpoint. */
  private sendOne(packet: Buffer, to: Buffer, toOffset: number, slot: number): void {
    const one = this.one;
    one.buffer = packet;
    one.offsets[0] = 0;
    one.lengths[0] = packet.length;
    one.gso[0] = 0;
    to.copy(one.endpoints, 0, toOffset, toOffset + ENDPOINT_BYTES);
    one.sessions[0] = slot;
    this.inner.send(one);
  }

  private keepalive(peer: PeerState): void {
    const s = peer.current;
    if (!s) return;
    this.sendOne(Buffer.alloc(0), peer.endpoint, 0, s.slot);
    peer.lastSentAt = this.now();
  }

  // ---- receive --------------------------------------------------------------------------------------------

  private receive(
    batch: PacketBatch,
    sources: Buffer,
    onBatch: (batch: PacketBatch, sources: Buffer) => void,
  ): void {
    const n = batch.count;
    if (this.view.offsets.length < n) {
      // a GRO batch has up to 64 datagrams per slot
      this.view.offsets = new Uint32Array(n);
      this.view.lengths = new Uint32Array(n);
      this.verdicts = new Int32Array(n);
      this.outSources = Buffer.alloc(n * ENDPOINT_BYTES);
    }
    const view = this.view;
    view.buffer = batch.buffer;
    view.offsets.set(batch.offsets.subarray(0, n));
    view.lengths.set(batch.lengths.subarray(0, n));
    view.count = n;
    const verdicts = this.verdicts;
    if (this.sessions) this.sessions.open(view, verdicts);
    else verdicts.fill(OpenVerdict.NotTransport, 0, n);
    const buf = batch.buffer;
    const now = this.now();
    const offsets = view.offsets;
    const lengths = view.lengths;
    let out = 0;
    for (let i = 0; i < n; i++) {
      const v = verdicts[i]!;
      const off = offsets[i]!;
      let len = lengths[i]!;
      if (v >= 0) {
        const s = this.bySlot[v];
        if (!s || !('peer' in s)) {
          this.count('unknown_index');
          continue;
        }
        const peer = s.peer;
        peer.lastReceivedAt = now;
        peer.unansweredSince = undefined;
        if (s === peer.next) this.confirm(peer, s);
        if (len === 0) continue; // a keepalive
        peer.lastDataReceivedAt = now;
        if (peer.provisionalSince !== undefined) {
          // its RTT probes are answered here (the proxy's prober cannot reach a peer the tables do not
          // name), so the peer sees this node alive while it waits to be named; its packets are held
          if (isProbe(buf, off, Math.min(len, PROBE_BYTES)) && buf[off + 5] === PROBE_REQUEST) {
            this.answerProbe(peer, buf, off);
            continue;
          }
          this.holdFromProvisional(peer, buf, off, len);
          continue;
        }
        if (s.initiator && s === peer.current && now - s.created >= REKEY_ON_RECEIVE_AGE && !peer.pending)
          this.want(peer);
        if (buf[off] === 0 && len >= 24) len = 24; // an RTT probe, padded to 32 by the sender
        // every delivered datagram names its source (the Tunnel contract), not only RTT probes
        peer.endpoint.copy(this.outSources, out * ENDPOINT_BYTES);
        offsets[out] = off;
        lengths[out] = len;
        out++;
        continue;
      }
      if (v === (OpenVerdict.NotTransport as number)) {
        const type =
          len >= 4 && buf[off + 1] === 0 && buf[off + 2] === 0 && buf[off + 3] === 0 ? buf[off]! : 0;
        if (type >= 1 && type <= 3) {
          this.handshakeMessage(type, buf.subarray(off, off + len), sources, i * ENDPOINT_BYTES, now);
          continue;
        }
        const ek = endpointKey(sources, i * ENDPOINT_BYTES);
        const peer = this.peers.get(ek);
        if (!peer) {
          if (this.allowPlaintext && this.ask) this.plaintextFromUnknown(ek, sources, i, buf, off, len, now);
          else this.count('unknown_peer');
          continue;
        }
        if (!this.allowPlaintext || (peer.key !== null && this.identity !== null)) {
          peer.drop('plaintext_refused');
          continue;
        }
        peer.lastReceivedAt = now;
        sources.copy(this.outSources, out * ENDPOINT_BYTES, i * ENDPOINT_BYTES, (i + 1) * ENDPOINT_BYTES);
        offsets[out] = off;
        lengths[out] = len;
        out++;
        continue;
      }
      this.dropVerdict(v, buf, off, len);
      if (v === (OpenVerdict.UnknownIndex as number)) {
        // a known peer still using a session this node lost (it restarted): offer it a new one
        const peer = this.peers.get(endpointKey(sources, i * ENDPOINT_BYTES));
        if (peer?.key && this.identity && !peer.pending && now - peer.lastInitiatedAt >= REKEY_TIMEOUT)
          this.want(peer);
      }
    }
    this.startWantedHandshakes(now);
    if (out === 0) return;
    view.count = out;
    onBatch(view, this.outSources);
  }

  private dropProvisional(keyText: string, peer: PeerState): void {
    this.provisional.delete(keyText);
    this.dropHeld(peer, 'unknown_key');
    for (const s of [peer.current, peer.previous, peer.next]) if (s) this.release(s);
  }

  /** Answers an RTT probe request of a provisional peer over its session. */
  private answerProbe(peer: PeerState, buf: Buffer, off: number): void {
    const s = peer.current;
    if (!s) return;
    const reply = Buffer.from(buf.subarray(off, off + PROBE_BYTES));
    reply[5] = PROBE_REPLY;
    this.sendOne(reply, peer.endpoint, 0, s.slot);
  }

  /**
   * Plaintext from an endpoint the tables do not name, where the cluster allows plaintext peers: a keyless
   * node (an upstream NetManager, or `--plaintext-tunnel`) calling an instance here before this node looked up
   * any of its instances. Held and asked about as a provisional peer's packets; delivered once the tables
   * name the endpoint without a key (see `setPeers`), else dropped (`unknown_peer`). Its probes are answered.
   */
  private plaintextFromUnknown(
    ek: number | string,
    sources: Buffer,
    i: number,
    buf: Buffer,
    off: number,
    len: number,
    now: number,
  ): void {
    let peer = this.provisionalPlain.get(ek);
    if (!peer) {
      if (this.provisionalPlain.size >= PROVISIONAL_MAX) {
        const quietest = quietestOf(this.provisionalPlain);
        if (!quietest || now - quietest[1].lastReceivedAt < TICK_MS * 4) {
          this.count('unknown_peer');
          return;
        }
        this.dropPlain(quietest[0], quietest[1]);
      }
      peer = new PeerState(Buffer.from(sources.subarray(i * ENDPOINT_BYTES, (i + 1) * ENDPOINT_BYTES)), null);
      peer.provisionalSince = now;
      this.provisionalPlain.set(ek, peer);
    }
    peer.lastReceivedAt = now;
    if (isProbe(buf, off, len)) {
      if (buf[off + 5] !== PROBE_REQUEST) {
        this.count('unknown_peer');
        return;
      }
      const reply = Buffer.from(buf.subarray(off, off + PROBE_BYTES));
      reply[5] = PROBE_REPLY;
      this.sendOne(reply, peer.endpoint, 0, -1);
      return;
    }
    this.holdFromProvisional(peer, buf, off, len, 'unknown_peer');
  }

  private dropPlain(ek: number | string, peer: PeerState): void {
    this.provisionalPlain.delete(ek);
    this.dropHeld(peer, 'unknown_peer');
  }

  /** A provisional peer's held packets are dropped, counted under `reason`. */
  private dropHeld(peer: PeerState, reason: TunnelDrop): void {
    for (const h of peer.held) this.heldBytes -= h.length;
    if (peer.held.length) this.count(reason, peer.held.length);
    peer.held = [];
  }

  /**
   * A packet from a peer whose key the tables do not name yet: held (bounded), and its source address asked
   * about; the answer brings the peer's instance, with its node's key, into the tables (see `setPeers`).
   */
  private holdFromProvisional(
    peer: PeerState,
    buf: Buffer,
    off: number,
    len: number,
    reason: TunnelDrop = 'unknown_key',
  ): void {
    const version = len > 0 ? buf[off]! >> 4 : 0;
    if (
      peer.held.length >= PROVISIONAL_HELD_MAX ||
      this.heldBytes + len > PROVISIONAL_HELD_BYTES ||
      (version !== 4 && version !== 6)
    ) {
      this.count(reason);
      return;
    }
    if (peer.held.length === 0) peer.heldSince = this.now();
    peer.held.push(Buffer.from(buf.subarray(off, off + len)));
    this.heldBytes += len;
    const at = version === 4 ? off + 12 : off + 8;
    const size = version === 4 ? 4 : 16;
    if ((version !== 4 && version !== 6) || len < at - off + size) return;
    const key = addressKey(buf, at, size);
    const now = this.now();
    const askedAt = peer.asked.get(key);
    if (askedAt !== undefined ? now - askedAt < ASK_AGAIN_MS : peer.asked.size >= 16) return;
    peer.asked.set(key, now);
    this.ask?.(IpAddress.fromBytes(buf.subarray(at, at + size)));
  }

  /** A peer for an initiation with a key the tables do not name (bounded in number), or undefined. */
  private provisionalPeer(keyText: string, key: Buffer, source: Buffer, now: number): PeerState | undefined {
    if (!this.ask) return undefined;
    const seen = this.provisional.get(keyText);
    if (seen) return seen;
    // one address gets a share of the provisional peers (an attacker with one host cannot take them all)
    let fromSource = 0;
    for (const p of this.provisional.values())
      if (p.endpoint.compare(source, 0, 16, 0, 16) === 0 && ++fromSource >= PROVISIONAL_PER_SOURCE)
        return undefined;
    if (this.provisional.size >= PROVISIONAL_MAX) {
      // full: the one that has been quiet longest makes room, if it has been quiet for a while
      const quietest = quietestOf(this.provisional);
      if (!quietest || now - quietest[1].lastReceivedAt < TICK_MS * 4) return undefined;
      this.dropProvisional(quietest[0], quietest[1]);
    }
    const peer = new PeerState(Buffer.from(source), new Uint8Array(key));
    peer.provisionalSince = now;
    this.provisional.set(keyText, peer);
    return peer;
  }

  private rememberTimestamp(keyText: string, timestamp: Uint8Array): void {
    this.timestamps.delete(keyText);
    this.timestamps.set(keyText, timestamp);
    if (this.timestamps.size > TIMESTAMPS_MAX) this.timestamps.delete(this.timestamps.keys().next().value!);
  }

  /** The tables now name a provisional peer's key: its sessions and held packets go to the known peer. */
  private adopt(from: PeerState, to: PeerState): void {
    this.provisional.delete(from.keyText!);
    for (const s of [from.current, from.previous, from.next]) {
      if (!s) continue;
      s.peer = to;
      this.slotPeer[s.slot] = to;
    }
    to.current = from.current;
    to.previous = from.previous;
    to.next = from.next;
    to.lastTimestamp = from.lastTimestamp;
    if (from.lastTimestamp) this.rememberTimestamp(from.keyText!, from.lastTimestamp);
    to.lastInitiationAt = from.lastInitiationAt;
    to.lastHandshakeAt = from.lastHandshakeAt;
    to.handshakes = from.handshakes;
    to.lastReceivedAt = from.lastReceivedAt;
    to.lastDataReceivedAt = from.lastDataReceivedAt;
    this.deliverHeld(from, to);
  }

  /** A provisional peer's held packets go to the proxy, as from the known peer `to`. */
  private deliverHeld(from: PeerState, to: PeerState): void {
    for (const h of from.held) this.heldBytes -= h.length;
    if (from.held.length && this.onBatch) {
      const held = from.held;
      const onBatch = this.onBatch;
      const n = held.length;
      const batch: PacketBatch = {
        buffer: Buffer.concat(held),
        offsets: new Uint32Array(n),
        lengths: new Uint32Array(n),
        count: n,
      };
      const sources = Buffer.alloc(n * ENDPOINT_BYTES);
      let at = 0;
      held.forEach((h, i) => {
        batch.offsets[i] = at;
        batch.lengths[i] = h.length;
        to.endpoint.copy(sources, i * ENDPOINT_BYTES);
        at += h.length;
      });
      // after the proxy has swapped in the snapshot that named the key (it does so from a microtask)
      queueMicrotask(() => onBatch(batch, sources));
    }
  }

  private dropVerdict(v: number, buf: Buffer, off: number, len: number): void {
    const reason = VERDICT_DROP[v] ?? 'malformed';
    // attribute it to the peer whose session index it names, when it names one
    const slot = len >= 8 && this.sessions ? buf.readUInt32LE(off + 4) % this.sessions.capacity : -1;
    const owner = slot >= 0 ? this.slotPeer[slot] : undefined;
    if (owner && reason !== 'unknown_index') owner.drop(reason);
    else this.count(reason);
  }

  /** The responder's session is confirmed by the initiator's first transport message: it becomes current. */
  private confirm(peer: PeerState, s: Session): void {
    peer.next = undefined;
    if (peer.previous) this.release(peer.previous);
    peer.previous = peer.current;
    peer.current = s;
    this.flushStaged(peer);
  }

  // ---- handshakes -----------------------------------------------------------------------------------------

  private underLoad(now: number): boolean {
    if (now - this.handshakeWindowStart >= MS) {
      this.handshakeWindowStart = now;
      this.handshakesInWindow = 0;
    }
    if (++this.handshakesInWindow > this.underLoadPerSecond) this.underLoadUntil = now + MS;
    return now < this.underLoadUntil;
  }

  private handshakeMessage(type: number, msg: Buffer, sources: Buffer, srcOff: number, now: number): void {
    if (!this.identity || !this.cookies || !this.sessions) {
      this.count('no_key');
      return;
    }
    if (type === 3) {
      this.cookieReply(msg);
      return;
    }
    if (msg.length !== (type === 1 ? INITIATION_BYTES : RESPONSE_BYTES)) {
      this.count('malformed');
      return;
    }
    if (!this.cookies.checkMac1(msg)) {
      this.count('bad_mac');
      return;
    }
    const source = sources.subarray(srcOff, srcOff + ENDPOINT_BYTES);
    if (this.underLoad(now)) {
      if (!this.cookies.checkMac2(msg, source, now)) {
        const senderIndex = msg.readUInt32LE(4);
        const mac1 = msg.subarray(msg.length - 32, msg.length - 16);
        this.sendOne(this.cookies.createReply(senderIndex, mac1, source, now), source, 0, -1);
        this.cookiesSent++;
        return;
      }
      // the source proved it receives at its address; it still gets only its share of the DH work
      if (!this.limiter.allow(sources.toString('latin1', srcOff, srcOff + 16), now)) {
        this.count('rate_limited');
        return;
      }
    }
    if (type === 1) this.initiation(msg, source, now);
    else this.response(msg, now);
  }

  private initiation(msg: Buffer, source: Buffer, now: number): void {
    const got = consumeInitiation(this.identity!, msg);
    if (!got) {
      this.count('handshake_failed');
      return;
    }
    const keyText = Buffer.from(got.peerPublic).toString('base64');
    const peer = this.byKey.get(keyText) ?? this.provisionalPeer(keyText, got.peerPublic, source, now);
    if (!peer) {
      this.count('unknown_key');
      return;
    }
    const known = this.timestamps.get(keyText);
    const lastTimestamp =
      known && peer.lastTimestamp && Buffer.compare(known, peer.lastTimestamp) < 0
        ? peer.lastTimestamp
        : (known ?? peer.lastTimestamp);
    if (
      (lastTimestamp && Buffer.compare(got.timestamp, lastTimestamp) <= 0) ||
      now - peer.lastInitiationAt < INITIATION_MIN_INTERVAL_MS
    ) {
      peer.drop('handshake_replayed');
      return;
    }
    const slot = this.takeSlot(peer);
    if (slot < 0) return;
    const localIndex = this.indexFor(slot);
    const res = createResponse(got.state, localIndex, undefined, this.cookieOf(peer, now));
    if (!res) {
      this.releaseSlot(slot);
      peer.drop('handshake_failed');
      return;
    }
    peer.lastTimestamp = got.timestamp;
    if (peer.provisionalSince === undefined) this.rememberTimestamp(keyText, got.timestamp);
    peer.lastInitiationAt = now;
    this.sessions!.install(slot, res.keys.send, res.keys.recv, localIndex, res.remoteIndex);
    const s: Session = { slot, localIndex, created: now, initiator: false, peer };
    this.bySlot[slot] = s;
    if (peer.next) this.release(peer.next);
    peer.next = s;
    peer.handshakes++;
    peer.lastHandshakeAt = now;
    peer.lastSentMac1 = res.message.subarray(RESPONSE_BYTES - 32, RESPONSE_BYTES - 16);
    this.sendOne(Buffer.from(res.message), source, 0, -1);
  }

  private response(msg: Buffer, now: number): void {
    const index = msg.readUInt32LE(8);
    const slot = index % this.sessions!.capacity;
    const pending = this.bySlot[slot];
    const peer = this.slotPeer[slot];
    if (!pending || 'peer' in pending || !peer || pending.localIndex !== index) {
      this.count('unknown_index');
      return;
    }
    const got = consumeResponse(pending.state, msg);
    if (!got) {
      peer.drop('handshake_failed');
      return;
    }
    this.sessions!.install(slot, got.keys.send, got.keys.recv, pending.localIndex, got.remoteIndex);
    const s: Session = { slot, localIndex: pending.localIndex, created: now, initiator: true, peer };
    peer.cookie = undefined;
    this.bySlot[slot] = s;
    peer.pending = undefined;
    if (peer.previous) this.release(peer.previous);
    peer.previous = peer.current;
    peer.current = s;
    peer.handshakes++;
    peer.lastHandshakeAt = now;
    if (peer.staged.length) this.flushStaged(peer);
    else this.keepalive(peer); // confirms the session to the responder
  }

  private cookieReply(msg: Buffer): void {
    if (msg.length !== COOKIE_REPLY_BYTES) {
      this.count('malformed');
      return;
    }
    const index = msg.readUInt32LE(4);
    const slot = index % this.sessions!.capacity;
    const entry = this.bySlot[slot];
    const peer = this.slotPeer[slot];
    // a reply to our initiation (a pending handshake) or to our response (the responder's next session)
    if (!entry || !peer?.key || entry.localIndex !== index || ('peer' in entry && entry !== peer.next)) {
      this.count('unknown_index');
      return;
    }
    const held = consumeCookieReply(msg, peer.key, peer.lastSentMac1);
    if (!held) {
      peer.drop('bad_mac');
      return;
    }
    peer.cookie = { value: held.cookie, at: this.now() };
  }

  private cookieOf(peer: PeerState, now: number): Uint8Array | undefined {
    const c = peer.cookie;
    if (!c) return undefined;
    if (now - c.at >= COOKIE_REFRESH_TIME) {
      peer.cookie = undefined;
      return undefined;
    }
    return c.value;
  }

  private initiate(peer: PeerState, now: number, firstAt = now): void {
    if (!peer.key || !this.identity) return;
    if (peer.pending) this.releasePending(peer);
    const slot = this.takeSlot(peer);
    if (slot < 0) return;
    const localIndex = this.indexFor(slot);
    let init: ReturnType<typeof createInitiation>;
    try {
      init = createInitiation(this.identity, peer.key, undefined, localIndex, now, this.cookieOf(peer, now));
    } catch {
      // setPeers leaves out keys no handshake can use; this is only a backstop for the data path
      this.releaseSlot(slot);
      peer.drop('handshake_failed');
      return;
    }
    const pending: PendingHandshake = {
      state: init.state,
      slot,
      localIndex,
      mac1: init.state.mac1,
      sentAt: now,
      firstAt,
      retryAfterMs: REKEY_TIMEOUT + randomInt(0, REKEY_TIMEOUT_JITTER_MAX + 1),
    };
    this.bySlot[slot] = pending;
    peer.pending = pending;
    peer.lastSentMac1 = pending.mac1;
    peer.lastInitiatedAt = now;
    this.sendOne(Buffer.from(init.message), peer.endpoint, 0, -1);
  }

  // ---- timers ---------------------------------------------------------------------------------------------

  private tick(): void {
    const now = this.now();
    this.limiter.sweep(now);
    for (const [keyText, peer] of this.provisional) {
      // held packets wait PROVISIONAL_MS for the tables to name the key; the peer itself stays while it
      // keeps talking (its probes: it may never send us data) and its session lives
      if (peer.held.length && now - peer.heldSince >= PROVISIONAL_MS) this.dropHeld(peer, 'unknown_key');
      const alive = peer.current ?? peer.next;
      if (now - peer.lastReceivedAt < PROVISIONAL_MS && alive && now - alive.created < REJECT_AFTER_TIME)
        continue;
      if (now - peer.provisionalSince! < PROVISIONAL_MS) continue;
      this.dropProvisional(keyText, peer);
    }
    for (const [ek, peer] of this.provisionalPlain) {
      if (peer.held.length && now - peer.heldSince >= PROVISIONAL_MS) this.dropHeld(peer, 'unknown_peer');
      if (now - peer.lastReceivedAt >= PROVISIONAL_MS || !this.allowPlaintext) this.dropPlain(ek, peer);
    }
    for (const peer of this.peers.values()) {
      const p = peer.pending;
      if (p && now - p.sentAt >= p.retryAfterMs) {
        if (now - p.firstAt >= REKEY_ATTEMPT_TIME) {
          this.releasePending(peer);
          peer.drop('handshake_timeout', peer.staged.length || 1);
          peer.staged = [];
          peer.stagedBytes = 0;
        } else {
          this.initiate(peer, now, p.firstAt);
        }
      }
      for (const s of [peer.current, peer.previous, peer.next]) {
        if (s && now - s.created >= REJECT_AFTER_TIME) this.expire(peer, s);
      }
      const s = peer.current;
      // data went out and nothing came back for UNANSWERED_REHANDSHAKE_MS: the peer may have lost the
      // session (a restart); a new handshake finds out
      if (
        s &&
        peer.unansweredSince !== undefined &&
        now - peer.unansweredSince >= UNANSWERED_REHANDSHAKE_MS
      ) {
        peer.unansweredSince = undefined;
        if (!peer.pending) this.want(peer);
      }
      if (s && this.sessions) {
        this.sessions.stats(s.slot, this.stats);
        if (this.stats[SessionStat.SendCounter]! >= Number(REKEY_AFTER_MESSAGES) && !peer.pending)
          this.want(peer);
        const quiet = now - peer.lastSentAt;
        if (peer.lastDataReceivedAt > peer.lastSentAt && now - peer.lastDataReceivedAt >= KEEPALIVE_TIMEOUT)
          this.keepalive(peer);
        else if (this.keepaliveMs > 0 && quiet >= this.keepaliveMs) this.keepalive(peer);
      } else if (
        this.keepaliveMs > 0 &&
        peer.key &&
        !peer.pending &&
        now - peer.lastSentAt >= this.keepaliveMs
      ) {
        this.want(peer);
        peer.lastSentAt = now;
      }
    }
    this.startWantedHandshakes(now);
  }

  private expire(peer: PeerState, s: Session): void {
    if (peer.current === s) peer.current = undefined;
    if (peer.previous === s) peer.previous = undefined;
    if (peer.next === s) peer.next = undefined;
    this.release(s);
  }

  // ---- slots ----------------------------------------------------------------------------------------------

  /** A free slot for peer (its oldest session's, when none is free); -1 when there is none. */
  private takeSlot(peer: PeerState): number {
    const slot = this.freeSlots.pop();
    if (slot === undefined) {
      peer.drop('staged_overflow');
      return -1;
    }
    this.slotPeer[slot] = peer;
    return slot;
  }

  /** A session index whose low bits name the slot (so an index finds its slot without a map). */
  private indexFor(slot: number): number {
    const capacity = this.sessions!.capacity;
    return (randomInt(0, Math.floor(0xffffffff / capacity)) * capacity + slot) >>> 0;
  }

  private release(s: Session): void {
    if (this.bySlot[s.slot] !== s) return;
    if (this.sessions) {
      this.sessions.stats(s.slot, this.stats);
      s.peer.bytesInBefore += this.stats[SessionStat.BytesIn]!;
      s.peer.bytesOutBefore += this.stats[SessionStat.BytesOut]!;
      this.sessions.remove(s.slot);
    }
    this.bySlot[s.slot] = undefined;
    this.slotPeer[s.slot] = undefined;
    this.freeSlots.push(s.slot);
  }

  private releaseSlot(slot: number): void {
    this.bySlot[slot] = undefined;
    this.slotPeer[slot] = undefined;
    this.freeSlots.push(slot);
  }

  private releasePending(peer: PeerState): void {
    const p = peer.pending;
    if (!p) return;
    peer.pending = undefined;
    if (this.bySlot[p.slot] !== p) return;
    this.bySlot[p.slot] = undefined;
    this.slotPeer[p.slot] = undefined;
    this.freeSlots.push(p.slot);
  }

  /** A peer the tables stopped naming: kept as a provisional peer with its live session, or forgotten. */
  private leave(k: number | string, peer: PeerState): void {
    const now = this.now();
    const s = peer.current;
    const keyText = peer.keyText;
    if (
      !keyText ||
      !this.ask ||
      !s ||
      now - s.created >= REJECT_AFTER_TIME ||
      this.provisional.has(keyText) ||
      this.provisional.size >= PROVISIONAL_MAX ||
      [...this.peers.values()].some((p) => p !== peer && p.keyText === keyText) // it moved: named elsewhere
    ) {
      this.forget(k, peer);
      return;
    }
    this.releasePending(peer);
    if (peer.staged.length) peer.drop('handshake_timeout', peer.staged.length);
    peer.staged = [];
    peer.stagedBytes = 0;
    this.peers.delete(k);
    if (this.byKey.get(keyText) === peer) this.byKey.delete(keyText);
    peer.provisionalSince = now;
    this.provisional.set(keyText, peer);
  }

  private forget(k: number | string, peer: PeerState): void {
    for (const s of [peer.current, peer.previous, peer.next]) if (s) this.release(s);
    this.releasePending(peer);
    peer.current = peer.previous = peer.next = undefined;
    peer.staged = [];
    this.peers.delete(k);
    if (peer.keyText && this.byKey.get(peer.keyText) === peer) this.byKey.delete(peer.keyText);
  }

  private count(reason: TunnelDrop, n = 1): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + n);
  }

  // ---- status ---------------------------------------------------------------------------------------------

  status(): WireGuardStatus {
    const peers: PeerTunnelStatus[] = [];
    let total = 0;
    const drops: Record<string, number> = {};
    for (const [reason, n] of this.drops) {
      drops[reason] = n;
      total += n;
    }
    for (const peer of this.peers.values()) {
      let bytesIn = peer.bytesInBefore;
      let bytesOut = peer.bytesOutBefore;
      for (const s of [peer.current, peer.previous, peer.next]) {
        if (!s || !this.sessions) continue;
        this.sessions.stats(s.slot, this.stats);
        bytesIn += this.stats[SessionStat.BytesIn]!;
        bytesOut += this.stats[SessionStat.BytesOut]!;
      }
      const peerDrops: Record<string, number> = {};
      for (const [reason, n] of peer.drops) {
        peerDrops[reason] = n;
        drops[reason] = (drops[reason] ?? 0) + n;
        total += n;
      }
      const encrypted = peer.key !== null && this.identity !== null;
      peers.push({
        node: peer.text,
        public_key: peer.keyText,
        encrypted,
        state: !encrypted
          ? this.allowPlaintext
            ? 'plaintext'
            : 'refused'
          : peer.current
            ? 'established'
            : peer.pending || peer.next
              ? 'handshaking'
              : 'idle',
        last_handshake: peer.lastHandshakeAt ? new Date(peer.lastHandshakeAt).toISOString() : null,
        handshakes: peer.handshakes,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        waiting_packets: peer.staged.length,
        drops: peerDrops,
      });
    }
    return {
      encryption: this.identity ? 'wireguard' : 'off',
      public_key: this.identity ? Buffer.from(this.identity.publicKey).toString('base64') : null,
      allow_plaintext_peers: this.allowPlaintext,
      peer_conflicts: this.snapshot?.peerConflicts ?? 0,
      cookies_sent: this.cookiesSent,
      dropped: total,
      drops,
      peers,
    };
  }
}

/** The entry of `peers` heard from longest ago. */
function quietestOf<K>(peers: Map<K, PeerState>): [K, PeerState] | undefined {
  let quietest: [K, PeerState] | undefined;
  for (const e of peers) if (!quietest || e[1].lastReceivedAt < quietest[1].lastReceivedAt) quietest = e;
  return quietest;
}

function sameKey(a: Uint8Array | null, b: Uint8Array | null): boolean {
  return a === null || b === null ? a === b : Buffer.compare(a, b) === 0;
}

/** Packets keep[0..kept) of batch, with their slots, as a batch of their own (same buffer). */
function subBatch(
  batch: AddressedBatch,
  keep: Uint32Array,
  kept: number,
  slots: Int32Array,
): AddressedBatch & { sessions: Int32Array } {
  const offsets = new Uint32Array(kept);
  const lengths = new Uint32Array(kept);
  const gso = new Uint32Array(kept);
  const sessions = new Int32Array(kept);
  const endpoints = Buffer.alloc(kept * ENDPOINT_BYTES);
  for (let j = 0; j < kept; j++) {
    const i = keep[j]!;
    offsets[j] = batch.offsets[i]!;
    lengths[j] = batch.lengths[i]!;
    gso[j] = batch.gso?.[i] ?? 0;
    sessions[j] = slots[i]!;
    batch.endpoints.copy(endpoints, j * ENDPOINT_BYTES, i * ENDPOINT_BYTES, (i + 1) * ENDPOINT_BYTES);
  }
  return { buffer: batch.buffer, offsets, lengths, gso, count: kept, endpoints, sessions };
}
