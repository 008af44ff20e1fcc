/**
 * @module dataplane/proxy/prober
 * Round-trip times to the peer nodes this node sends to, for Closest_IP. Every `intervalMs` a small probe
 * goes to each peer on the tunnel port; the peer's ProxyTUN echoes it. The estimate per peer is the minimum of
 * its last few samples: a late answer (a queue, a first packet waiting for ARP) does not move traffic, a
 * path that became faster counts at once, and one that became slower counts once its fast samples have aged
 * out of the window (a few probe periods). An EWMA of the samples is kept for display.
 *
 * Probes share the tunnel with upstream's raw IP packets, so they must never look like one: their first byte is
 * 0x00 (IP version 0), then the magic "OAKP". An upstream NetManager drops them as undecodable (no reply: its
 * RTT stays unknown and Closest falls back to its topology rule); oaknet's inbound path answers them before it
 * decodes anything.
 *
 * Probes also tell whether a peer is still there: a peer that answered before and then left `missedProbes`
 * probes in a row unanswered (3 by default: 2-3 s at the default interval) is unreachable, and new flows avoid
 * its instances (InstanceChooser in policy.ts) until it answers again. A peer that never answered (an upstream NetManager,
 * which does not speak probes) is never called unreachable.
 *
 * Layout (24 bytes): 0x00, "OAKP", kind (1 request, 2 reply), 2 reserved bytes, the sender's send time as a
 * float64 (ms, its own monotonic clock; informational), then an 8-byte random nonce. A reply echoes the request.
 * A reply counts only if it carries the nonce of one of the peer's last few requests, and its sample is taken
 * from this node's own record of when that request left: a reply made up without seeing the request (a forged
 * one, or an old one replayed) changes neither liveness nor the RTT, and no answer can claim a shorter round
 * trip than the request's own.
 */
import { randomFillSync } from 'node:crypto';
import type { PeerStatus } from '../../protocol/dataplane-status.ts';
import { decodeEndpoint, endpointKey, OutboundBatch, type Tunnel } from '../tunnel/tunnel.ts';

export const PROBE_BYTES = 24;
const MAGIC = [0x4f, 0x41, 0x4b, 0x50]; // "OAKP"
/** Byte 5 of a probe: a request, or its reply. */
export const PROBE_REQUEST = 1;
export const PROBE_REPLY = 2;
const REQUEST = PROBE_REQUEST;
const REPLY = PROBE_REPLY;

export interface PeerRtt {
  /** The peer's tunnel endpoint (18 bytes). */
  readonly endpoint: Buffer;
  /** Exponentially smoothed round-trip time in ms (for display); undefined before the first answer. */
  srtt: number | undefined;
  /** The last samples (ms), newest last; the estimate is their minimum. */
  window: number[];
  /** Answers received. */
  samples: number;
  /** Last raw sample (ms). */
  last: number | undefined;
  /** When the peer was last wanted (ms); peers nobody wants for a while are dropped. */
  wantedAt: number;
  /** Probes sent since its last answer. */
  unanswered: number;
  /** The requests an answer may still come for, oldest first: nonce (hex) and when it left (ms). */
  outstanding: Array<{ nonce: string; at: number }>;
}

export interface ProberOptions {
  intervalMs?: number;
  /** EWMA weight of a new sample, for the displayed average (default 0.25). */
  alpha?: number;
  /** Samples the estimate is the minimum of (default 4). */
  windowSamples?: number;
  /** Forget peers not wanted for this long (default 60 s). */
  forgetMs?: number;
  /** Probes in a row a peer that answered before may leave unanswered before it counts as unreachable (default 3). */
  missedProbes?: number;
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
}

/** True when the datagram at buf[off, off+len) is a probe (request or reply). */
export function isProbe(buf: Uint8Array, off: number, len: number): boolean {
  return (
    len === PROBE_BYTES &&
    buf[off] === 0 &&
    buf[off + 1] === MAGIC[0] &&
    buf[off + 2] === MAGIC[1] &&
    buf[off + 3] === MAGIC[2] &&
    buf[off + 4] === MAGIC[3]
  );
}

export class Prober {
  private readonly peers = new Map<number | string, PeerRtt>();
  private readonly out = new OutboundBatch(256);
  private readonly scratch = Buffer.alloc(PROBE_BYTES * 256);
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;
  private readonly alpha: number;
  private readonly windowSamples: number;
  private readonly forgetMs: number;
  private readonly missedProbes: number;
  private readonly now: () => number;
  /** Probes sent and answers received, for status. */
  sent = 0;
  answered = 0;
  /** Replies that matched no outstanding request (forged, replayed or too late). */
  unmatched = 0;

  constructor(
    private readonly tunnel: Pick<Tunnel, 'send'>,
    options: ProberOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 1000;
    this.alpha = options.alpha ?? 0.25;
    this.windowSamples = options.windowSamples ?? 4;
    this.forgetMs = options.forgetMs ?? 60_000;
    this.missedProbes = options.missedProbes ?? 3;
    this.now = options.now ?? (() => performance.now());
  }

  /** Starts the probe rounds (an interval of 0 disables probing: every RTT stays unknown). */
  start(): void {
    if (this.intervalMs <= 0) return;
    this.timer = setInterval(() => this.probeAll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Asks for the RTT to a peer from now on (probed at the next round; a new peer at once). */
  want(endpoint: Buffer): void {
    if (this.intervalMs <= 0) return;
    const key = endpointKey(endpoint);
    const known = this.peers.get(key);
    if (known) {
      known.wantedAt = this.now();
      return;
    }
    const peer: PeerRtt = {
      endpoint: Buffer.from(endpoint),
      srtt: undefined,
      window: [],
      samples: 0,
      last: undefined,
      wantedAt: this.now(),
      unanswered: 0,
      outstanding: [],
    };
    this.peers.set(key, peer);
    this.send([peer]);
  }

  /** The RTT estimate (ms) to the peer at endpoint: the minimum of its last samples; undefined before any. */
  rtt(endpoint: Buffer): number | undefined {
    const w = this.peers.get(endpointKey(endpoint))?.window;
    return w && w.length ? Math.min(...w) : undefined;
  }

  /**
   * False when the peer at endpoint answered probes before and has left the last `missedProbes` unanswered
   * (its node or the path to it is down); true otherwise, also for a peer never probed or never answering.
   */
  reachable(endpoint: Buffer): boolean {
    const peer = this.peers.get(endpointKey(endpoint));
    return !peer || !this.lost(peer);
  }

  /** Whether a peer counts as unreachable (see reachable). */
  lost(peer: PeerRtt): boolean {
    return peer.samples > 0 && peer.unanswered > this.missedProbes;
  }

  /** Every peer with its measurements. */
  list(): readonly PeerRtt[] {
    return [...this.peers.values()];
  }

  /** The peers as the data plane's status shows them. */
  status(): PeerStatus[] {
    const ms = (v: number) => Math.round(v * 1000) / 1000;
    return this.list().map((p) => {
      const { host, port } = decodeEndpoint(p.endpoint);
      return {
        node: `${host}:${port}`,
        rtt_ms: p.window.length ? ms(Math.min(...p.window)) : null,
        average_ms: p.srtt === undefined ? null : ms(p.srtt),
        samples: p.samples,
        reachable: !this.lost(p),
      };
    });
  }

  /**
   * Handles a probe that arrived from `source` (18-byte endpoint at sources[sourceOff]): answers a request,
   * records a reply. The caller checked isProbe.
   */
  onProbe(buf: Buffer, off: number, sources: Buffer, sourceOff: number): void {
    if (buf[off + 5] === REQUEST) {
      const at = 0;
      buf.copy(this.scratch, at, off, off + PROBE_BYTES);
      this.scratch[at + 5] = REPLY;
      this.out.reset(this.scratch);
      this.out.pushTo(at, PROBE_BYTES, sources, sourceOff);
      this.flush();
      return;
    }
    if (buf[off + 5] !== REPLY) return;
    const peer = this.peers.get(endpointKey(sources, sourceOff));
    if (!peer) return;
    const nonce = buf.toString('hex', off + 16, off + PROBE_BYTES);
    const k = peer.outstanding.findIndex((o) => o.nonce === nonce);
    if (k < 0) {
      this.unmatched++;
      return;
    }
    const sample = this.now() - peer.outstanding[k]!.at;
    peer.outstanding.splice(0, k + 1); // this one and every older one are answered or lost
    if (!(sample >= 0 && sample < 60_000)) return;
    peer.last = sample;
    peer.unanswered = 0;
    peer.samples++;
    this.answered++;
    peer.srtt = peer.srtt === undefined ? sample : peer.srtt + this.alpha * (sample - peer.srtt);
    peer.window.push(sample);
    if (peer.window.length > this.windowSamples) peer.window.shift();
  }

  /** Sends one probe round now (the interval does this every intervalMs), forgetting peers nobody wants. */
  probeAll(): void {
    const now = this.now();
    for (const [key, peer] of this.peers) if (now - peer.wantedAt > this.forgetMs) this.peers.delete(key);
    this.send([...this.peers.values()]);
  }

  private send(peers: readonly PeerRtt[]): void {
    for (let i = 0; i < peers.length; i += 256) {
      this.out.reset(this.scratch);
      const chunk = peers.slice(i, i + 256);
      chunk.forEach((peer, k) => {
        const at = k * PROBE_BYTES;
        this.scratch[at] = 0;
        for (let m = 0; m < 4; m++) this.scratch[at + 1 + m] = MAGIC[m]!;
        this.scratch[at + 5] = REQUEST;
        const sentAt = this.now();
        this.scratch.writeDoubleBE(sentAt, at + 8);
        randomFillSync(this.scratch, at + 16, 8);
        this.out.pushTo(at, PROBE_BYTES, peer.endpoint);
        peer.outstanding.push({ nonce: this.scratch.toString('hex', at + 16, at + PROBE_BYTES), at: sentAt });
        if (peer.outstanding.length > this.missedProbes + 2) peer.outstanding.shift();
        peer.unanswered++;
      });
      this.flush();
    }
  }

  private flush(): void {
    const b = this.out;
    if (b.count === 0) return;
    this.sent += this.tunnel.send(b).sent;
    b.reset();
  }
}
