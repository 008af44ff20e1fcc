/**
 * @module dataplane/proxy/proxy
 * ProxyTUN: the L4 proxy that turns semantic addresses into real ones (reference section 4, the seed's
 * "packet proxying"). Wire-compatible with upstream: on the tunnel a packet carries the sender instance's
 * instance IP as source and the receiving namespace address as destination, as a raw IP packet in UDP.
 *
 * Packet flow (the functions below follow this order):
 *  Outbound, a batch read from the TUN (packets of local instances to semantic addresses):
 *   1. decode into the one reused ParsedPacket; malformed -> counted drop
 *   2. the destination must be a ServiceIP or instance IP (the semantic ranges) -> else counted drop
 *   3. non-first IPv4/IPv6 fragments follow the translation of their first fragment (held until it came)
 *   4. flow lookup by the outbound 5-tuple: a packet of a known flow goes straight to 6
 *   5. a new flow: the source namespace address must belong to a local instance (its instance IP becomes the
 *      source; unknown yet -> the packet waits, bounded, for the instance's own table entry), the destination
 *      is resolved (unknown -> the packet waits in a bounded per-address queue while the control plane is
 *      asked; other flows go on) and the address's policy chooses an instance (round robin per new flow,
 *      closest, or the named instance; a TCP connection opened while the same client's previous one to that
 *      ServiceIP and port is still open joins its instance)
 *   6. TCP progress is tracked (SYN, FIN both ways, RST) for the flow's lifetime
 *   7. in-place rewrite: source := own instance IP, destination := chosen instance's namespace address,
 *      checksums updated incrementally (RFC 1624)
 *   8. delivery: an instance on this node goes straight to step 10 (no network); else to the chosen node's
 *      tunnel endpoint (batched send)
 *  Inbound, a batch received on the tunnel (and step 8's local deliveries):
 *   9. decode; the destination must be a namespace address of this node and the source a semantic address
 *  10. a reply of a flow opened here (found by its reply 5-tuple): source := the address the client dialed;
 *      anything else is a new request and goes in unchanged; later fragments follow their first fragment
 *      (held until it came)
 *  11. written to the TUN in one batch (the kernel hands it to the bridge and the instance)
 *  Housekeeping: idle flows expire (TCP-aware), held packets time out, flows to vanished instances are
 *  re-resolved (UDP, ICMP) or reset (TCP: the client gets a RST instead of a black hole).
 *
 * Offloads: a TUN opened with offloads delivers TCP/UDP super-packets (up to 64 KiB, one header, a partial
 * transport checksum; the batch's gso words, packet/offload.ts). Each is translated ONCE like any packet
 * (steps 1-7; the rewrite adjusts the partial sum); at step 8 a local one is written back to the TUN as it is,
 * and a remote one goes to the tunnel with its gso word: Tunnel.send cuts it into MSS-sized packets with full
 * checksums (so the wire carries ordinary packets, sent as UDP GSO runs where the tunnel can). A super-packet
 * that has to wait (steps 3, 5) is held whole, with its gso word, and replayed with it. The TUN itself
 * coalesces runs of segments it is given (step 11) into super-packets again.
 */
import type { Logger } from 'pino';
import type { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { buildTcp } from '../packet/build.ts';
import { IpProto, ParsedPacket, setDstAddress, setSrcAddress, TcpFlag } from '../packet/index.ts';
import { decodeEndpoint, ENDPOINT_BYTES, OutboundBatch, type Tunnel } from '../tunnel/tunnel.ts';
import { BatchBuilder, type PacketBatch, type Tun } from '../tun/tun.ts';
import { Drop, ProxyCounters } from './counters.ts';
import {
  addressKey,
  type AddressTarget,
  type Directory,
  type DirectoryEvents,
  type ServiceInstance,
} from './directory.ts';
import { Flow, FlowTable, TcpProgress } from './flow-table.ts';
import { type HeldPacket, PendingPackets } from './pending.ts';
import { createPolicies, type Policy, type PolicyContext } from './policy.ts';
import { PrefixSet } from './prefix-set.ts';
import { isProbe, Prober } from './prober.ts';

export interface ProxyConfig {
  /** This node's namespace subnetworks (v4 /26, v6 /120): tunnelled packets must be addressed into them. */
  localSubnets: readonly Cidr[];
  /** ServiceIP and instance IP ranges (10.30.0.0/16, fdff::/16). */
  semanticRanges: readonly Cidr[];
  /** This node's cluster ID (for Closest); a function because a node learns it from its own table entries. */
  cluster: () => string;
  /** Period of the RTT probes to peer nodes (ms, default 1000; 0: no probes, Closest uses topology only). */
  probeIntervalMs?: number;
  /** How long a packet waits for the control plane (ms, default 3000). */
  resolveTimeoutMs?: number;
  /** Idle timeouts in ms. */
  idle?: Partial<IdleTimeouts>;
}

export interface IdleTimeouts {
  tcpEstablished: number;
  tcpOpening: number;
  tcpClosed: number;
  udp: number;
  icmp: number;
}

const DEFAULT_IDLE: IdleTimeouts = {
  tcpEstablished: 2 * 3600_000,
  tcpOpening: 30_000,
  tcpClosed: 10_000,
  udp: 60_000,
  icmp: 30_000,
};

const BATCH = 512;
const SWEEP_MS = 1000;
/** Table queries this proxy may start per second, and in a burst. */
const QUESTIONS_PER_S = 200;
const QUESTION_BURST = 400;
/** How long after its session leader opened a connection may still join the leader's instance (see newFlow). */
export const SESSION_WINDOW_MS = 2000;

interface FragmentRecord {
  /** The flow whose translation the datagram's later fragments follow; none for an inbound request. */
  flow: Flow | undefined;
  outbound: boolean;
  at: number;
}

export class ProxyTun implements DirectoryEvents {
  readonly counters = new ProxyCounters();
  /** Round-trip times to peer nodes (for Closest_IP). */
  readonly prober: Prober;
  private readonly flows = new FlowTable();
  private readonly p = new ParsedPacket();
  private readonly toTun = new BatchBuilder(BATCH * 2);
  private readonly toTunnel = new OutboundBatch(BATCH);
  private readonly local: PrefixSet;
  private readonly semantic: PrefixSet;
  private readonly policies: Record<'rr' | 'closest' | 'instance', Policy>;
  private readonly ctx: PolicyContext;
  private readonly idle: IdleTimeouts;
  private readonly resolveTimeoutMs: number;
  /** Packets waiting for a destination address, by address key; and for their source's own entry. */
  private readonly waitingForDestination = new PendingPackets();
  private readonly waitingForSource = new PendingPackets(64, 512);
  private readonly waitingForFirstFragment = new PendingPackets(64, 256);
  /** Addresses asked about (text -> time), so one question per address is in flight. */
  private readonly asked = new Map<string, number>();
  private readonly fragments = new Map<string, FragmentRecord>();
  private readonly flowsByInstance = new Map<ServiceInstance, Set<Flow>>();
  /** The latest TCP flow of each (client, ServiceIP, port): later connections join its instance while it is open. */
  private readonly sessions = new Map<string, Flow>();
  private now = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private readonly aside: PacketBatch = {
    buffer: Buffer.alloc(0),
    offsets: new Uint32Array(1),
    lengths: new Uint32Array(1),
    count: 1,
  };
  /** The gso word of the packet being processed (0 but for an offloaded super-packet from the TUN). */
  private gso = 0;
  private questionTokens = QUESTION_BURST;
  private questionsAt = 0;
  /** True while a batch is being processed: work that would start another batch waits for its end. */
  private inCycle = false;
  private afterCycle: Array<() => void> = [];

  constructor(
    private readonly tun: Tun,
    private readonly tunnel: Tunnel,
    private readonly directory: Directory,
    config: ProxyConfig,
    private readonly log: Logger,
  ) {
    this.local = new PrefixSet(config.localSubnets);
    this.semantic = new PrefixSet(config.semanticRanges);
    this.policies = createPolicies();
    const cluster = config.cluster;
    const prober = (this.prober = new Prober(
      tunnel,
      config.probeIntervalMs !== undefined ? { intervalMs: config.probeIntervalMs } : {},
    ));
    this.ctx = {
      get cluster() {
        return cluster();
      },
      // choose() has asked the prober to probe every remote instance it offers a policy
      rtt: (i) => prober.rtt(i.endpoint),
    };
    this.idle = { ...DEFAULT_IDLE, ...config.idle };
    this.resolveTimeoutMs = config.resolveTimeoutMs ?? 3000;
  }

  /** Starts reading the TUN and the tunnel. */
  start(): void {
    this.tun.start(
      (batch) => this.onTunBatch(batch),
      (err) => this.log.error({ err: err.message }, 'TUN read failed'),
    );
    this.tunnel.start(
      (batch, sources) => this.onTunnelBatch(batch, sources),
      (err) => this.log.error({ err: err.message }, 'tunnel receive failed'),
    );
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
    this.prober.start();
  }

  /** Stops reading; the devices are closed by their owner. */
  stop(): void {
    clearInterval(this.timer);
    this.prober.stop();
  }

  /** Flow and queue figures for status. */
  status(): Record<string, unknown> {
    return {
      flows: this.flows.size,
      waiting_packets:
        this.waitingForDestination.size + this.waitingForSource.size + this.waitingForFirstFragment.size,
      ...this.counters.snapshot(),
      offloads: {
        tun: this.tun.offloadStatus?.() ?? null,
        tunnel: this.tunnel.offloadStatus?.() ?? null,
      },
      peers: this.prober.list().map((p) => {
        const { host, port } = decodeEndpoint(p.endpoint);
        return {
          node: `${host}:${port}`,
          rtt_ms: p.window.length ? Math.round(Math.min(...p.window) * 1000) / 1000 : null,
          average_ms: p.srtt === undefined ? null : Math.round(p.srtt * 1000) / 1000,
          samples: p.samples,
          reachable: !this.prober.lost(p),
        };
      }),
    };
  }

  // ---- outbound: TUN -> tunnel (steps 1-8) ----------------------------------------------------------------

  private onTunBatch(batch: PacketBatch): void {
    this.now = Date.now();
    this.beginCycle(batch.buffer);
    const gso = batch.gso;
    try {
      for (let i = 0; i < batch.count; i++) {
        const len = batch.lengths[i]!;
        this.counters.tunIn++;
        if (len === 0) {
          this.counters.drop(Drop.Truncated);
          continue;
        }
        this.gso = gso ? gso[i]! : 0;
        this.outbound(batch.buffer, batch.offsets[i]!, len);
      }
    } finally {
      this.gso = 0;
      this.flush();
    }
  }

  private outbound(buf: Buffer, off: number, len: number): void {
    const p = this.p;
    // 1. decode
    if (!p.decode(buf, off, len)) {
      this.counters.decodeErrors[p.error]!++;
      return;
    }
    if (this.gso !== 0) p.l4ChecksumPartial = true;
    // 2. semantic destination
    if (!this.semantic.contains(buf, p.dstOffset, p.addrLength)) {
      // the kernel's own link chatter on the TUN (IPv6 MLD, router solicitations) is no drop worth showing
      if (p.addrLength === 16 && buf[p.dstOffset] === 0xff) this.counters.multicast++;
      else this.counters.drop(Drop.NotSemantic);
      return;
    }
    // 3. fragments after the first
    if (p.isFragment && !p.isFirstFragment) {
      this.outboundFragment(buf, off, len);
      return;
    }
    if (p.proto !== IpProto.Tcp && p.proto !== IpProto.Udp && !p.isEcho) {
      this.counters.drop(Drop.UnsupportedIcmp);
      return;
    }
    // 4. the flow (a hit needs nothing else: its translation is decided)
    this.flows.setKey(p.proto, buf, p.srcOffset, buf, p.dstOffset, p.addrLength, p.srcPort, p.dstPort);
    let flow = this.flows.get();
    if (flow && (flow.stale || !flow.instance.alive)) flow = this.refresh(flow, buf, p.dstOffset);
    if (
      flow &&
      p.proto === IpProto.Tcp &&
      (p.tcpFlags & TcpFlag.Syn) !== 0 &&
      (p.tcpFlags & TcpFlag.Ack) === 0 &&
      closed(flow)
    ) {
      this.closeFlow(flow); // port reuse after a finished connection: a new flow, a new choice
      flow = undefined;
    }
    if (!flow) {
      // 5. a new flow: the source must be a local instance (its instance IP becomes the source), the
      // destination known, and the policy must find an instance
      const source = this.directory.localByNamespace(buf, p.srcOffset, p.addrLength);
      const ownIp = source ? (p.addrLength === 4 ? source.instanceIp4 : source.instanceIp6) : null;
      if (!source || !ownIp) {
        const key = addressKey(buf, p.srcOffset, p.addrLength);
        if (!this.hold(this.waitingForSource, key, buf, off, len)) this.counters.drop(Drop.UnknownSource);
        return;
      }
      const target = this.directory.target(buf, p.dstOffset, p.addrLength);
      if (!target) {
        this.waitForDestination(buf, off, len);
        return;
      }
      if (this.waitingForDestination.size !== 0) {
        // the table learned the address before its answer came: earlier packets to it still wait, go after them
        const key = addressKey(buf, p.dstOffset, p.addrLength);
        if (this.waitingForDestination.has(key)) {
          if (this.hold(this.waitingForDestination, key, buf, off, len))
            this.afterCycle.push(() => this.replay(this.waitingForDestination.takeHeld(key)));
          else this.counters.drop(Drop.QueueFull);
          return;
        }
      }
      flow = this.newFlow(target, source, ownIp, buf);
      if (!flow) return;
    }
    flow.lastSeen = this.now;
    flow.packets++;
    flow.bytes += len;
    // 6. TCP progress
    if (p.proto === IpProto.Tcp) this.trackOutboundTcp(flow, buf);
    // 7. rewrite
    setSrcAddress(p, buf, flow.ownIp);
    setDstAddress(p, buf, flow.targetNs);
    if (p.isFragment) this.rememberFragment(flow, true);
    // 8. deliver
    this.deliver(flow, buf, off, len);
  }

  private deliver(flow: Flow, buf: Buffer, off: number, len: number): void {
    if (flow.instance.local) {
      this.counters.local++;
      this.inbound(buf, off, len, this.gso);
    } else if (!this.toTunnel.pushTo(off, len, flow.instance.endpoint, 0, this.gso)) {
      this.flushTunnel();
      this.toTunnel.pushTo(off, len, flow.instance.endpoint, 0, this.gso);
    }
  }

  /** Holds the packet in a queue; a super-packet whole, with its gso word (replayed with it). */
  private hold(queue: PendingPackets, key: number | string, buf: Buffer, off: number, len: number): boolean {
    return queue.hold(key, buf, off, len, this.now, this.gso);
  }

  private outboundFragment(buf: Buffer, off: number, len: number): void {
    const p = this.p;
    const key = fragmentKey(buf, p.srcOffset, p.dstOffset, p.addrLength, p.proto, p.fragmentId);
    const rec = this.fragments.get(key);
    if (!rec?.outbound || !rec.flow || rec.flow.dead) {
      if (!this.waitingForFirstFragment.hold(key, buf, off, len, this.now))
        this.counters.drop(Drop.FragmentUnmatched);
      return;
    }
    setSrcAddress(p, buf, rec.flow.ownIp);
    setDstAddress(p, buf, rec.flow.targetNs);
    this.deliver(rec.flow, buf, off, len);
  }

  /**
   * Records the first fragment in this.p, so the datagram's later fragments follow its translation. Keyed as
   * they will arrive, with the original addresses: for an outbound first fragment (already rewritten) the
   * client's namespace address and the dialed address; an inbound one is recorded before its rewrite.
   */
  private rememberFragment(flow: Flow | undefined, outbound: boolean): void {
    const p = this.p;
    const key =
      outbound && flow
        ? fragmentKeyOf(flow.clientAddr, 0, flow.dialed, 0, flow.dialed.length, p.proto, p.fragmentId)
        : fragmentKey(p.buffer, p.srcOffset, p.dstOffset, p.addrLength, p.proto, p.fragmentId);
    this.fragments.set(key, { flow, outbound, at: this.now });
    const held = this.waitingForFirstFragment.takeHeld(key);
    if (held.length) this.afterCycle.push(() => this.replay(held, outbound));
  }

  private waitForDestination(buf: Buffer, off: number, len: number): void {
    const p = this.p;
    const key = addressKey(buf, p.dstOffset, p.addrLength);
    if (!this.hold(this.waitingForDestination, key, buf, off, len)) {
      this.counters.drop(Drop.QueueFull);
      return;
    }
    this.ask(p.dstAddress());
  }

  private ask(address: string): void {
    const at = this.asked.get(address);
    if (at !== undefined && this.now - at < this.resolveTimeoutMs) return;
    // a scan of the semantic range must not turn into a flood of table queries: a token bucket
    this.questionTokens = Math.min(
      QUESTION_BURST,
      this.questionTokens + ((this.now - this.questionsAt) * QUESTIONS_PER_S) / 1000,
    );
    this.questionsAt = this.now;
    if (this.questionTokens < 1) {
      this.counters.questionsThrottled++;
      return;
    }
    this.questionTokens--;
    this.asked.set(address, this.now);
    this.directory.request(address);
  }

  private newFlow(
    target: AddressTarget,
    source: ServiceInstance,
    ownIp: Uint8Array,
    buf: Buffer,
  ): Flow | undefined {
    const p = this.p;
    // Session affinity, narrowly: a protocol's control and data connections (iperf3, passive FTP) must meet one
    // server. A client's TCP connection to a ServiceIP and port joins the instance of its session leader (the
    // earlier connection there that made a round-robin choice) only while the leader is open, has already
    // carried the client's data (a control connection in use), and is younger than SESSION_WINDOW_MS. Every
    // other connection is a round-robin turn: a pool opening many connections at once, or later ones while
    // a keep-alive connection stays open, spreads over the instances.
    const sessionKey =
      p.proto === IpProto.Tcp && target.kind !== 'instance'
        ? `${String(addressKey(buf, p.srcOffset, p.addrLength))}/${String(addressKey(buf, p.dstOffset, p.addrLength))}/${p.dstPort}`
        : undefined;
    const leader = sessionKey !== undefined ? this.sessions.get(sessionKey) : undefined;
    const joins =
      leader !== undefined &&
      !leader.dead &&
      !closed(leader) &&
      leader.instance.alive &&
      (leader.tcp & TcpProgress.DataOut) !== 0 &&
      this.now - leader.openedAt <= SESSION_WINDOW_MS;
    const chosen = joins ? leader.instance : this.choose(target, p.addrLength);
    if (!chosen) {
      this.counters.drop(Drop.NoInstance);
      if (p.proto === IpProto.Tcp && (p.tcpFlags & TcpFlag.Rst) === 0) this.resetClient(buf);
      return undefined;
    }
    const copy = (o: number) => Uint8Array.prototype.slice.call(buf, o, o + p.addrLength);
    const flow = new Flow(
      p.proto,
      copy(p.srcOffset),
      p.srcPort,
      copy(p.dstOffset),
      p.dstPort,
      ownIp,
      source.job,
      chosen,
      familyAddress(chosen, p.addrLength, 'ns')!,
      familyAddress(chosen, p.addrLength, 'ip')!,
      this.now,
    );
    flow.openedAt = this.now;
    this.flows.add(flow);
    this.link(flow);
    if (sessionKey !== undefined && !joins) {
      // a round-robin choice leads the session from now on (an older leader no longer can be joined)
      if (leader !== undefined && this.sessions.get(sessionKey) === leader) leader.sessionKey = undefined;
      flow.sessionKey = sessionKey;
      this.sessions.set(sessionKey, flow);
    }
    this.counters.flowsCreated++;
    this.directory.touch(target.service.job);
    return flow;
  }

  /**
   * A policy's choice among the instances that have an address of the packet's family, leaving out those on
   * peers the probes found unreachable (a node that went down before the control plane said so), unless
   * that leaves none.
   */
  private choose(target: AddressTarget, family: number): ServiceInstance | undefined {
    const prober = this.prober;
    const fits = (i: ServiceInstance) =>
      i.alive && familyAddress(i, family, 'ns') !== null && familyAddress(i, family, 'ip') !== null;
    const up = (i: ServiceInstance) => {
      if (i.local) return true;
      prober.want(i.endpoint); // probed from now on, so a node that goes down is noticed
      return prober.reachable(i.endpoint);
    };
    const usable = (i: ServiceInstance) => fits(i) && up(i);
    let instances = target.service.instances;
    if (!instances.every(usable)) {
      const reachable = instances.filter(usable);
      instances = reachable.length > 0 ? reachable : instances.filter(fits);
    }
    const view: AddressTarget =
      instances === target.service.instances
        ? target
        : { ...target, service: { job: target.service.job, instances } };
    const chosen = this.policies[target.kind].choose(view, this.ctx);
    return chosen && fits(chosen) ? chosen : undefined;
  }

  /** A flow whose instance vanished: UDP/ICMP choose again; TCP cannot move, so the client is reset. */
  private refresh(flow: Flow, buf: Buffer, dstOff: number): Flow | undefined {
    if (flow.proto === IpProto.Tcp) {
      this.resetClient(buf);
      this.closeFlow(flow);
      return undefined;
    }
    const target = this.directory.target(buf, dstOff, flow.dialed.length);
    const chosen = target ? this.choose(target, flow.dialed.length) : undefined;
    if (!chosen) {
      this.closeFlow(flow);
      return undefined;
    }
    this.unlink(flow);
    this.flows.retarget(
      flow,
      chosen,
      familyAddress(chosen, flow.dialed.length, 'ns')!,
      familyAddress(chosen, flow.dialed.length, 'ip')!,
    );
    this.link(flow);
    return flow;
  }

  private trackOutboundTcp(flow: Flow, buf: Buffer): void {
    const f = this.p.tcpFlags;
    if (f & TcpFlag.Syn) flow.tcp |= TcpProgress.SynOut;
    const dataOffset = (buf[this.p.l4Offset + 12]! >> 4) << 2;
    if (this.p.l4Length > dataOffset) flow.tcp |= TcpProgress.DataOut;
    if (f & TcpFlag.Fin) flow.tcp |= TcpProgress.FinOut;
    if (f & TcpFlag.Rst) flow.tcp |= TcpProgress.Reset;
    const at = this.p.l4Offset;
    if (f & TcpFlag.Ack) flow.clientAck = buf.readUInt32BE(at + 8);
    const payload = this.p.l4Length - dataOffset;
    flow.clientNext =
      (buf.readUInt32BE(at + 4) +
        Math.max(0, payload) +
        (f & TcpFlag.Syn ? 1 : 0) +
        (f & TcpFlag.Fin ? 1 : 0)) >>>
      0;
  }

  // ---- inbound: tunnel (and local deliveries) -> TUN (steps 9-11) -----------------------------------------

  private onTunnelBatch(batch: PacketBatch, sources: Buffer): void {
    this.now = Date.now();
    this.beginCycle(batch.buffer);
    try {
      for (let i = 0; i < batch.count; i++) {
        const len = batch.lengths[i]!;
        const off = batch.offsets[i]!;
        if (isProbe(batch.buffer, off, len)) {
          this.prober.onProbe(batch.buffer, off, sources, i * ENDPOINT_BYTES);
          continue;
        }
        this.counters.tunnelIn++;
        if (len === 0) {
          this.counters.drop(Drop.Truncated);
          continue;
        }
        this.inbound(batch.buffer, off, len);
      }
    } finally {
      this.flush();
    }
  }

  private inbound(buf: Buffer, off: number, len: number, gso = 0): void {
    const p = this.p;
    // 9. decode and check it belongs here
    if (!p.decode(buf, off, len)) {
      this.counters.decodeErrors[p.error]!++;
      return;
    }
    if (gso !== 0) p.l4ChecksumPartial = true;
    if (!this.local.contains(buf, p.dstOffset, p.addrLength)) {
      this.counters.drop(Drop.NotForThisNode);
      return;
    }
    if (!this.semantic.contains(buf, p.srcOffset, p.addrLength)) {
      this.counters.drop(Drop.FromOutsideOverlay);
      return;
    }
    // 10. replies of flows opened here get the dialed address back as source
    if (p.isFragment && !p.isFirstFragment) {
      // whether the datagram is a reply is known from its first fragment only: wait for it (bounded)
      const key = fragmentKey(buf, p.srcOffset, p.dstOffset, p.addrLength, p.proto, p.fragmentId);
      const rec = this.fragments.get(key);
      if (!rec) {
        if (!this.waitingForFirstFragment.hold(key, buf, off, len, this.now))
          this.counters.drop(Drop.FragmentUnmatched);
        return;
      }
      if (!rec.outbound && rec.flow && !rec.flow.dead) setSrcAddress(p, buf, rec.flow.dialed);
    } else if (p.proto === IpProto.Tcp || p.proto === IpProto.Udp || p.isEcho) {
      this.flows.setKey(p.proto, buf, p.srcOffset, buf, p.dstOffset, p.addrLength, p.srcPort, p.dstPort);
      const flow = this.flows.get();
      if (p.isFragment) this.rememberFragment(flow, false);
      if (flow) {
        flow.lastSeen = this.now;
        flow.packets++;
        flow.bytes += len;
        if (p.proto === IpProto.Tcp) {
          const f = p.tcpFlags;
          if (f & TcpFlag.Syn) flow.tcp |= TcpProgress.SynAckIn;
          if (f & TcpFlag.Fin) flow.tcp |= TcpProgress.FinIn;
          if (f & TcpFlag.Rst) flow.tcp |= TcpProgress.Reset;
        }
        setSrcAddress(p, buf, flow.dialed);
      } else if (!this.directory.target(buf, p.srcOffset, p.addrLength)) {
        // a new request from an instance this node does not know yet: the answer will need it, ask now
        this.ask(p.srcAddress());
      }
    } else if (p.isFragment) {
      this.rememberFragment(undefined, false); // another protocol's datagram: its fragments pass as they are
    }
    // 11. to the TUN
    if (!this.toTun.push(off, len, gso)) {
      this.flushTun();
      this.toTun.push(off, len, gso);
    }
  }

  // ---- batches --------------------------------------------------------------------------------------------

  private beginCycle(buffer: Buffer): void {
    this.inCycle = true;
    this.toTun.reset(buffer);
    this.toTunnel.reset(buffer);
  }

  private flush(): void {
    this.flushTun();
    this.flushTunnel();
    this.inCycle = false;
    while (this.afterCycle.length) this.afterCycle.shift()!();
  }

  /** Runs fn now, or after the batch in progress. */
  private soon(fn: () => void): void {
    if (this.inCycle) this.afterCycle.push(fn);
    else fn();
  }

  private flushTun(): void {
    const n = this.toTun.count;
    if (n === 0) return;
    const written = this.tun.write(this.toTun);
    this.counters.tunOut += written;
    for (let i = written; i < n; i++) this.counters.drop(Drop.TunWriteFailed);
    this.toTun.reset();
  }

  private flushTunnel(): void {
    const b = this.toTunnel;
    if (b.count === 0) return;
    const result = this.tunnel.send(b);
    this.counters.tunnelOut += result.sent;
    for (let i = 0; i < result.failed; i++) this.counters.drop(Drop.TunnelSendFailed);
    b.reset();
  }

  /** Runs held packets (with their gso words) through the outbound path again, as one batch of their own. */
  private replay(packets: readonly HeldPacket[], outbound = true): void {
    if (packets.length === 0) return;
    const total = packets.reduce((n, h) => n + h.packet.length, 0);
    const buffer = Buffer.allocUnsafe(total);
    let at = 0;
    this.beginCycle(buffer);
    try {
      for (const { packet, gso } of packets) {
        packet.copy(buffer, at);
        this.gso = gso;
        if (outbound) this.outbound(buffer, at, packet.length);
        else this.inbound(buffer, at, packet.length, gso);
        at += packet.length;
      }
    } finally {
      this.gso = 0;
      this.flush();
    }
  }

  // ---- directory events -----------------------------------------------------------------------------------

  resolved(address: string, ok: boolean): void {
    if (this.inCycle) return this.soon(() => this.resolved(address, ok));
    this.now = Date.now();
    this.asked.delete(address);
    const key = textKey(address);
    if (key === undefined) return;
    const held = this.waitingForDestination.takeHeld(key);
    if (!ok) {
      for (let i = 0; i < held.length; i++) this.counters.drop(Drop.Unresolved);
      return;
    }
    this.replay(held);
  }

  localChanged(address: string): void {
    if (this.inCycle) return this.soon(() => this.localChanged(address));
    this.now = Date.now();
    const key = textKey(address);
    if (key !== undefined) this.replay(this.waitingForSource.takeHeld(key));
  }

  instancesGone(instances: readonly ServiceInstance[]): void {
    if (this.inCycle) return this.soon(() => this.instancesGone(instances));
    this.now = Date.now();
    for (const inst of instances) {
      const flows = this.flowsByInstance.get(inst);
      if (!flows) continue;
      for (const flow of [...flows]) {
        const successor = this.successor(flow);
        if (successor) {
          // the same instance with changed details (its node's address, its cluster): the flow follows it
          this.unlink(flow);
          this.flows.retarget(flow, successor, flow.targetNs, flow.targetIp);
          this.link(flow);
          continue;
        }
        if (flow.proto === IpProto.Tcp) {
          // a finished connection (FIN both ways, or reset) has nobody to tell: resetting it would only hit a
          // socket in TIME_WAIT
          if (!closed(flow)) this.resetFlow(flow);
          this.closeFlow(flow);
        } else {
          flow.stale = true;
        }
      }
    }
    // flows opened by instances that left this node; namespace addresses are reused, so a flow whose address
    // now belongs to a live instance with the flow's own instance IP is that instance's, and stays
    for (const flow of [...this.flows.flows]) {
      const len = flow.clientAddr.length;
      if (!instances.some((i) => i.local && sameBytes(familyAddress(i, len, 'ns'), flow.clientAddr)))
        continue;
      const owner = this.directory.localByNamespace(flow.clientAddr, 0, len);
      if (owner?.alive && sameBytes(familyAddress(owner, len, 'ip'), flow.ownIp)) continue;
      this.closeFlow(flow);
    }
  }

  /** The live record now behind a flow's target instance IP, if it is the same instance at the same address. */
  private successor(flow: Flow): ServiceInstance | undefined {
    const t = this.directory.target(flow.targetIp, 0, flow.targetIp.length);
    const inst = t?.kind === 'instance' ? t.instance : undefined;
    if (!inst?.alive || inst.job !== flow.instance.job || inst.number !== flow.instance.number)
      return undefined;
    return sameBytes(familyAddress(inst, flow.targetNs.length, 'ns'), flow.targetNs) ? inst : undefined;
  }

  // ---- resets, flow bookkeeping, housekeeping -------------------------------------------------------------

  /** Answers the TCP segment in this.p (from a client) with a RST that appears to come from the dialed address. */
  private resetClient(buf: Buffer): void {
    const p = this.p;
    const ack = (p.tcpFlags & TcpFlag.Ack) !== 0 ? buf.readUInt32BE(p.l4Offset + 8) : 0;
    const seq = buf.readUInt32BE(p.l4Offset + 4);
    const payload = Math.max(0, p.l4Length - ((buf[p.l4Offset + 12]! >> 4) << 2));
    const syn = (p.tcpFlags & TcpFlag.Syn) !== 0 ? 1 : 0;
    const rst = buildTcp({
      src: Uint8Array.prototype.slice.call(buf, p.dstOffset, p.dstOffset + p.addrLength),
      dst: Uint8Array.prototype.slice.call(buf, p.srcOffset, p.srcOffset + p.addrLength),
      srcPort: p.dstPort,
      dstPort: p.srcPort,
      seq: ack,
      ack: (seq + payload + syn) >>> 0,
      flags: TcpFlag.Rst | TcpFlag.Ack,
      window: 0,
    });
    this.writeAside(rst);
  }

  /**
   * Resets the client side of a flow whose instance is gone. Established: RST with the sequence number the
   * client expects (its last ACK). Still opening (no answer yet): RST|ACK acknowledging its SYN, which is what
   * a SYN-SENT socket accepts.
   */
  private resetFlow(flow: Flow): void {
    const opening = (flow.tcp & TcpProgress.SynAckIn) === 0;
    const rst = buildTcp({
      src: flow.dialed,
      dst: flow.clientAddr,
      srcPort: flow.port,
      dstPort: flow.clientPort,
      seq: opening ? 0 : flow.clientAck,
      ...(opening ? { ack: flow.clientNext } : {}),
      flags: opening ? TcpFlag.Rst | TcpFlag.Ack : TcpFlag.Rst,
      window: 0,
    });
    this.writeAside(rst);
  }

  private writeAside(packet: Buffer): void {
    this.aside.buffer = packet;
    this.aside.lengths[0] = packet.length;
    this.aside.offsets[0] = 0;
    if (this.tun.write(this.aside) === 1) this.counters.resetsSent++;
  }

  private link(flow: Flow): void {
    let set = this.flowsByInstance.get(flow.instance);
    if (!set) {
      set = new Set();
      this.flowsByInstance.set(flow.instance, set);
    }
    set.add(flow);
  }

  private unlink(flow: Flow): void {
    const set = this.flowsByInstance.get(flow.instance);
    if (!set) return;
    set.delete(flow);
    if (set.size === 0) this.flowsByInstance.delete(flow.instance);
  }

  private closeFlow(flow: Flow): void {
    this.unlink(flow);
    this.flows.remove(flow);
    if (flow.sessionKey !== undefined && this.sessions.get(flow.sessionKey) === flow)
      this.sessions.delete(flow.sessionKey);
  }

  private sweep(): void {
    this.now = Date.now();
    const touched = new Set<string>();
    for (const flow of [...this.flows.flows]) {
      const idle = this.now - flow.lastSeen;
      if (idle > this.idleLimit(flow)) {
        this.closeFlow(flow);
        continue;
      }
      touched.add(flow.instance.job); // a job with live flows stays watched, however idle they are
    }
    for (const job of touched) this.directory.touch(job);
    for (const [key, rec] of this.fragments)
      if (this.now - rec.at > 5000 || rec.flow?.dead) this.fragments.delete(key);
    for (const [address, at] of this.asked)
      if (this.now - at > this.resolveTimeoutMs) this.asked.delete(address);
    const expired =
      this.waitingForDestination.expire(this.now, this.resolveTimeoutMs) +
      this.waitingForFirstFragment.expire(this.now, this.resolveTimeoutMs);
    for (let i = 0; i < expired; i++) this.counters.drop(Drop.Unresolved);
    const orphans = this.waitingForSource.expire(this.now, this.resolveTimeoutMs);
    for (let i = 0; i < orphans; i++) this.counters.drop(Drop.UnknownSource);
  }

  private idleLimit(flow: Flow): number {
    if (flow.proto === IpProto.Udp) return this.idle.udp;
    if (flow.proto !== IpProto.Tcp) return this.idle.icmp;
    if (closed(flow)) return this.idle.tcpClosed;
    if ((flow.tcp & TcpProgress.SynAckIn) === 0 && (flow.tcp & TcpProgress.SynOut) !== 0)
      return this.idle.tcpOpening;
    return this.idle.tcpEstablished;
  }
}

function closed(flow: Flow): boolean {
  return (
    (flow.tcp & TcpProgress.Reset) !== 0 ||
    (flow.tcp & (TcpProgress.FinOut | TcpProgress.FinIn)) === (TcpProgress.FinOut | TcpProgress.FinIn)
  );
}

function familyAddress(i: ServiceInstance, family: number, which: 'ns' | 'ip'): Uint8Array | null {
  if (which === 'ns') return family === 4 ? i.nsip4 : i.nsip6;
  return family === 4 ? i.instanceIp4 : i.instanceIp6;
}

function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function fragmentKey(
  buf: Uint8Array,
  srcOff: number,
  dstOff: number,
  len: number,
  proto: number,
  id: number,
): string {
  return fragmentKeyOf(buf, srcOff, buf, dstOff, len, proto, id);
}

function fragmentKeyOf(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  len: number,
  proto: number,
  id: number,
): string {
  // a datagram is (src, dst, protocol, id) in IPv4 but (src, dst, id) in IPv6 (RFC 8200 4.5), where a later
  // fragment may not name the transport at all (proto 0 when the fragmentable part starts with an option header)
  const kind = len === 4 ? proto : 0;
  return `${kind}/${id}/${String(addressKey(src, srcOff, len))}/${String(addressKey(dst, dstOff, len))}`;
}

/** The address key of an address in text (as the directory reports it). */
function textKey(address: string): number | string | undefined {
  const ip = IpAddress.tryParse(address);
  if (!ip) return undefined;
  const bytes = ip.toBytes();
  return addressKey(bytes, 0, bytes.length);
}
