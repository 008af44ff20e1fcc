/**
 * @module dataplane/proxy/proxy
 * ProxyTUN: the L4 proxy that turns semantic addresses into real ones (reference section 4, the seed's
 * "packet proxying"). Wire-compatible with upstream: on the tunnel a packet carries the sender instance's
 * instance IP as source and the receiving namespace address as destination, as a raw IP packet in UDP. This
 * file holds the loops, the batches and the snapshot swap; each step lives in the file named beside it.
 *
 * Packet flow (the functions below follow this order):
 *  Outbound, a batch read from the TUN (packets of local instances to semantic addresses):
 *   1. decode into the one reused ParsedPacket; malformed -> counted drop                     (translate.ts)
 *   2. the destination must be a ServiceIP or instance IP (the semantic ranges), else a counted drop
 *   3. later fragments follow the translation of their datagram's first fragment, or wait for it (fragments.ts)
 *   4. flow lookup by the outbound 5-tuple (conntrack.ts): a packet of a known flow goes on to 6; a UDP/ICMP
 *      flow whose instance left chooses again first; a SYN on a finished TCP flow's 5-tuple makes a new flow
 *   5. a new flow: the source namespace address must belong to a local instance (its instance IP becomes the
 *      source; unknown yet -> the packet waits, bounded, for the instance's own entry), the destination must
 *      be known (unknown -> the packet waits in a bounded per-address queue while the control plane is asked;
 *      other flows go on) (misses.ts), and an instance is chosen: a TCP connection may join its session
 *      leader's (conntrack.ts), else the address's policy chooses (policy.ts); none -> a counted drop, and
 *      a TCP client gets a RST (packet/rst.ts)
 *   6. the flow counts the packet and follows the client's TCP progress (SYN, data, FIN, RST) (conntrack.ts)
 *   7. in-place rewrite: source := own instance IP, destination := chosen instance's namespace address,
 *      checksums updated incrementally (RFC 1624)                                  (translate.ts, packet/rewrite.ts)
 *   8. delivery: an instance on this node -> through steps 9-11 (decoded again) without the network; else to
 *      the chosen node's tunnel endpoint (batched; the tunnel segments super-packets itself)
 *  Inbound, a batch received on the tunnel (and step 8's local deliveries):
 *   9. decode; the destination must be a namespace address of this node and the source a semantic address
 *  10. a reply of a flow opened here (found by its reply 5-tuple; the flow follows the server's TCP progress):
 *      source := the address the client dialed; anything else is a request and goes in unchanged, and a
 *      request from an address the node does not know is asked about at once (its answer will need it);
 *      later fragments follow their first fragment
 *  11. written to the TUN in one batch (the kernel hands it to the bridge and the instance; the TUN coalesces)
 *  Between batches: a new snapshot is swapped in (the flows are reconciled with it and the packets it answers
 *  run again); every second idle flows expire and waiting packets time out. The prober sends RTT probes to
 *  the peers on its own timer.
 *
 * Offloads: a TUN opened with offloads delivers TCP/UDP super-packets (up to 64 KiB, one header, a partial
 * transport checksum; the batch's gso words, packet/offload.ts). Each is translated ONCE like any packet (the
 * rewrite adjusts the partial sum); a local one is written back to the TUN as it is, a remote one is handed to
 * the tunnel with its gso word, and one that waits is held whole.
 */
import type { Logger } from 'pino';
import type { IpAddress } from '../../addressing/ip.ts';
import type { DataPlaneStatus } from '../../protocol/dataplane-status.ts';
import type { AddressLookup, DataPlane, DataPlaneConfig, DataPlaneDevices } from '../dataplane.ts';
import { ServiceSnapshot } from '../snapshot.ts';
import { BatchBuilder, type PacketBatch } from '../tun/tun.ts';
import { ENDPOINT_BYTES, OutboundBatch } from '../tunnel/tunnel.ts';
import { ConnTracker, DEFAULT_IDLE } from './conntrack.ts';
import { Drop, ProxyCounters } from './counters.ts';
import { Fragments } from './fragments.ts';
import { Misses } from './misses.ts';
import type { HeldPacket } from './pending.ts';
import { InstanceChooser } from './policy.ts';
import { PrefixSet } from './prefix-set.ts';
import { isProbe, Prober } from './prober.ts';
import { Translator, Verdict } from './translate.ts';

const BATCH = 512;
const SWEEP_MS = 1000;

export class ProxyTun implements DataPlane {
  /** Counters of what happened to packets (read by status; public for tests). */
  readonly counters = new ProxyCounters();
  /** Round-trip times to peer nodes (for Closest_IP and liveness). */
  readonly prober: Prober;
  private readonly conntrack: ConnTracker;
  private readonly fragments = new Fragments();
  private readonly misses: Misses;
  private readonly translate: Translator;
  private readonly toTun = new BatchBuilder(BATCH * 2);
  private readonly toTunnel = new OutboundBatch(BATCH);
  /** A one-packet batch for resets, written outside the batch in progress. */
  private readonly aside: PacketBatch = {
    buffer: Buffer.alloc(0),
    offsets: new Uint32Array(1),
    lengths: new Uint32Array(1),
    count: 1,
  };
  private readonly resolveTimeoutMs: number;
  private snapshot = ServiceSnapshot.EMPTY;
  private next = ServiceSnapshot.EMPTY;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly devices: DataPlaneDevices,
    config: DataPlaneConfig,
    lookup: AddressLookup,
    private readonly log: Logger,
  ) {
    this.resolveTimeoutMs = config.resolveTimeoutMs ?? 3000;
    this.prober = new Prober(
      devices.tunnel,
      config.probeIntervalMs !== undefined ? { intervalMs: config.probeIntervalMs } : {},
    );
    this.conntrack = new ConnTracker({ ...DEFAULT_IDLE, ...config.idle });
    this.misses = new Misses(lookup, this.counters, this.resolveTimeoutMs);
    this.translate = new Translator(
      new PrefixSet(config.semanticRanges),
      this.conntrack,
      this.fragments,
      this.misses,
      new InstanceChooser(this.prober),
      this.counters,
    );
  }

  /** Starts reading the TUN and the tunnel, the housekeeping and the probes. */
  start(): void {
    this.devices.tun.start(
      (batch) => this.onTunBatch(batch),
      (err) => this.log.error({ err: err.message }, 'TUN read failed'),
    );
    this.devices.tunnel.start(
      (batch, sources) => this.onTunnelBatch(batch, sources),
      (err) => this.log.error({ err: err.message }, 'tunnel receive failed'),
    );
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
    this.prober.start();
  }

  apply(snapshot: ServiceSnapshot): void {
    this.next = snapshot;
    // a microtask runs when the current batch (if any) has returned, and before the next one starts
    queueMicrotask(() => this.swapIn());
  }

  /** See Translator.askAbout: the WireGuard tunnel's questions about the sources of provisional peers. */
  askAbout(address: IpAddress): void {
    const b = address.toBytes();
    this.translate.askAbout(b, 0, b.length, Date.now());
  }

  status(): DataPlaneStatus {
    const { tun, tunnel } = this.devices;
    return {
      generation: this.snapshot.generation,
      flows: this.conntrack.size,
      waiting_packets: this.misses.waitingPackets + this.fragments.waitingPackets,
      ...this.counters.status(),
      offloads: { tun: tun.offloadStatus?.() ?? null, tunnel: tunnel.offloadStatus?.() ?? null },
      peers: this.prober.status(),
      services: this.conntrack.usage(),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.prober.stop();
    this.devices.tunnel.close();
    this.devices.tun.close();
  }

  // ---- outbound: TUN -> tunnel (steps 1-8) ----------------------------------------------------------------

  private onTunBatch(batch: PacketBatch): void {
    this.begin(batch.buffer);
    const gso = batch.gso;
    try {
      for (let i = 0; i < batch.count; i++) {
        const len = batch.lengths[i]!;
        this.counters.tunIn++;
        if (len === 0) this.counters.drop(Drop.Truncated);
        else this.outbound(batch.buffer, batch.offsets[i]!, len, gso ? gso[i]! : 0);
      }
    } finally {
      this.end(); // what was translated goes out even if a bug threw half-way
    }
  }

  private outbound(buf: Buffer, off: number, len: number, gso: number): void {
    switch (this.translate.outbound(buf, off, len, gso)) {
      case Verdict.Tunnel: {
        // 8. to the chosen node's tunnel endpoint
        const to = this.translate.flow!.instance.endpoint;
        if (!this.toTunnel.pushTo(off, len, to, 0, gso)) {
          this.flushTunnel();
          this.toTunnel.pushTo(off, len, to, 0, gso);
        }
        return;
      }
      case Verdict.Local:
        // 8. an instance on this node: no network
        this.counters.local++;
        this.inbound(buf, off, len, gso);
        return;
      case Verdict.Reset:
        this.writeReset();
        return;
    }
  }

  // ---- inbound: tunnel (and local deliveries) -> TUN (steps 9-11) -----------------------------------------

  private onTunnelBatch(batch: PacketBatch, sources: Buffer): void {
    this.begin(batch.buffer);
    try {
      for (let i = 0; i < batch.count; i++) {
        const len = batch.lengths[i]!;
        const off = batch.offsets[i]!;
        if (isProbe(batch.buffer, off, len)) {
          this.prober.onProbe(batch.buffer, off, sources, i * ENDPOINT_BYTES);
          continue;
        }
        this.counters.tunnelIn++;
        if (len === 0) this.counters.drop(Drop.Truncated);
        else this.inbound(batch.buffer, off, len, 0, sources, i * ENDPOINT_BYTES);
      }
    } finally {
      this.end();
    }
  }

  private inbound(buf: Buffer, off: number, len: number, gso: number, from?: Buffer, fromOffset = 0): void {
    if (this.translate.inbound(buf, off, len, gso, from, fromOffset) !== Verdict.Tun) return;
    // 11. to the TUN
    if (!this.toTun.push(off, len, gso)) {
      this.flushTun();
      this.toTun.push(off, len, gso);
    }
  }

  // ---- batches --------------------------------------------------------------------------------------------

  private begin(buffer: Buffer): void {
    this.translate.now = Date.now();
    this.toTun.reset(buffer);
    this.toTunnel.reset(buffer);
  }

  /** Writes what the batch produced, then runs again what it released (each a batch of its own). */
  private end(): void {
    this.flushTun();
    this.flushTunnel();
    const replays = this.translate.replays;
    while (replays.length) {
      const r = replays.shift()!;
      this.replay(r.packets, r.outbound);
    }
  }

  private flushTun(): void {
    const n = this.toTun.count;
    if (n === 0) return;
    const written = this.devices.tun.write(this.toTun);
    this.counters.tunOut += written;
    this.counters.drop(Drop.TunWriteFailed, n - written);
    this.toTun.reset();
  }

  private flushTunnel(): void {
    const b = this.toTunnel;
    if (b.count === 0) return;
    const result = this.devices.tunnel.send(b);
    this.counters.tunnelOut += result.sent;
    this.counters.drop(Drop.TunnelSendFailed, result.failed);
    b.reset();
  }

  /** Runs held packets through one direction again, as one batch of their own. */
  private replay(packets: readonly HeldPacket[], outbound: boolean): void {
    if (packets.length === 0) return;
    const buffer = Buffer.allocUnsafe(packets.reduce((n, h) => n + h.packet.length, 0));
    this.begin(buffer);
    let at = 0;
    for (const { packet, gso } of packets) {
      packet.copy(buffer, at);
      if (outbound) this.outbound(buffer, at, packet.length, gso);
      else this.inbound(buffer, at, packet.length, gso);
      at += packet.length;
    }
    this.end();
  }

  /** Writes the translator's reset into the TUN at once, outside the batch in progress. */
  private writeReset(): void {
    const a = this.aside;
    a.buffer = this.translate.reset;
    a.offsets[0] = 0;
    a.lengths[0] = this.translate.resetLength;
    if (this.devices.tun.write(a) === 1) this.counters.resetsSent++;
  }

  // ---- between batches ------------------------------------------------------------------------------------

  /** Uses the newest snapshot: reconciles the flows with it and runs the packets it answers. */
  private swapIn(): void {
    const next = this.next;
    if (next === this.snapshot || this.closed) return;
    this.snapshot = next;
    this.translate.use(next);
    this.translate.now = Date.now();
    this.conntrack.reconcile(next, (flow) => {
      this.translate.resetFlow(flow);
      this.writeReset();
    });
    this.replay(this.misses.release(next), true);
  }

  private sweep(): void {
    const now = Date.now();
    this.conntrack.expire(now);
    this.counters.drop(Drop.Unresolved, this.fragments.expire(now, this.resolveTimeoutMs));
    this.misses.expire(now);
  }
}
