/**
 * @module dataplane/proxy/translate
 * Translation (steps 1-7 and 9-10 of the packet flow in proxy.ts): one packet in, a verdict out. Outbound, a
 * local instance's packet to a semantic address gets its flow (a new one chooses an instance through the
 * address's policy) and is rewritten in place: source := the client's own instance IP, destination := the
 * chosen instance's namespace address. Inbound, a packet from the tunnel (or a local delivery) is checked to
 * belong here, and a reply of a flow opened here gets the address its client dialed back as source. Checksums
 * are updated incrementally (RFC 1624) by packet/rewrite.ts. Nothing here throws for a bad packet: it is a
 * counted drop.
 */
import {
  IpProto,
  ParsedPacket,
  RESET_MAX_BYTES,
  setDstAddress,
  setSrcAddress,
  TcpFlag,
  writeTcpReset,
} from '../packet/index.ts';
import { instanceAddress, ServiceSnapshot } from '../snapshot.ts';
import { endpointEquals } from '../tunnel/tunnel.ts';
import type { ConnTracker } from './conntrack.ts';
import { Drop, type ProxyCounters } from './counters.ts';
import { type Flow, TcpProgress } from './flow-table.ts';
import type { Fragments } from './fragments.ts';
import type { Misses } from './misses.ts';
import type { HeldPacket } from './pending.ts';
import type { InstanceChooser } from './policy.ts';
import { PrefixSet } from './prefix-set.ts';

/** What becomes of a packet. */
export const Verdict = {
  /** Dropped (and counted). */
  Drop: 0,
  /** Kept in a queue (or, the queue full, dropped and counted); it comes back when its wait ends. */
  Held: 1,
  /** To the tunnel, to the node of `Translator.flow`'s instance. */
  Tunnel: 2,
  /** To an instance on this node: through the inbound steps, without the network. */
  Local: 3,
  /** Into the TUN, to the instance it is addressed to. */
  Tun: 4,
  /** Dropped; the client gets the reset in `Translator.reset` instead. */
  Reset: 5,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** Packets to run through a direction again after the batch (later fragments whose first one came). */
export interface Replay {
  readonly packets: readonly HeldPacket[];
  readonly outbound: boolean;
}

export class Translator {
  /** The one reused decoded view. */
  private readonly p = new ParsedPacket();
  /** The flow of the last Tunnel or Local verdict. */
  flow: Flow | undefined;
  /** The reset of the last Reset verdict (or of resetFlow): reset[0, resetLength). */
  readonly reset = Buffer.alloc(RESET_MAX_BYTES);
  resetLength = 0;
  /** What the batch must run again when it is done. */
  readonly replays: Replay[] = [];
  /** The clock of the batch being processed (ms). */
  now = 0;
  private snapshot = ServiceSnapshot.EMPTY;
  private local = new PrefixSet([]);

  constructor(
    private readonly semantic: PrefixSet,
    private readonly conntrack: ConnTracker,
    private readonly fragments: Fragments,
    private readonly misses: Misses,
    private readonly chooser: InstanceChooser,
    private readonly counters: ProxyCounters,
  ) {}

  /** Uses `next` from now on (between batches). */
  use(next: ServiceSnapshot): void {
    if (next.localSubnets !== this.snapshot.localSubnets) this.local = new PrefixSet(next.localSubnets);
    this.snapshot = next;
  }

  // ---- outbound: steps 1-7 ------------------------------------------------------------------------------

  /** A packet a local instance sent into the TUN: buf[off, off + len), with its gso word. */
  outbound(buf: Buffer, off: number, len: number, gso: number): Verdict {
    const p = this.p;
    // 1. decode
    if (!p.decode(buf, off, len)) {
      this.counters.decodeErrors[p.error]!++;
      return Verdict.Drop;
    }
    if (gso !== 0) p.l4ChecksumPartial = true;
    // 2. semantic destination
    if (!this.semantic.contains(buf, p.dstOffset, p.addrLength)) {
      // the kernel's own link chatter on the TUN (IPv6 MLD, router solicitations) is no drop worth showing
      if (p.addrLength === 16 && buf[p.dstOffset] === 0xff) this.counters.multicast++;
      else this.counters.drop(Drop.NotSemantic);
      return Verdict.Drop;
    }
    // 3. fragments after the first
    if (p.isFragment && !p.isFirstFragment) return this.outboundFragment(off, len);
    if (p.proto !== IpProto.Tcp && p.proto !== IpProto.Udp && !p.isEcho) {
      this.counters.drop(Drop.UnsupportedIcmp);
      return Verdict.Drop;
    }
    // 4. the flow (a hit needs nothing else: its translation is decided)
    let flow = this.conntrack.outbound(p);
    // a UDP/ICMP flow whose instance left chooses again (TCP flows were reset and closed when it left);
    // undefined: closed, and the packet makes a new flow below
    if (flow?.stale) flow = this.chooseAgain(flow);
    if (flow && this.conntrack.reopens(flow, p)) {
      this.conntrack.close(flow); // port reuse after a finished connection: a new flow, a new choice
      flow = undefined;
    }
    if (!flow) {
      // 5. a new flow: the source must be a local instance, the destination known, an instance chosen
      const snap = this.snapshot;
      const source = snap.localByNamespace(buf, p.srcOffset, p.addrLength);
      const ownIp = source && instanceAddress(source, p.addrLength);
      if (!source || !ownIp) {
        this.misses.holdForSource(p, off, len, gso, this.now);
        return Verdict.Held;
      }
      const target = snap.target(buf, p.dstOffset, p.addrLength);
      if (!target) {
        this.misses.holdForDestination(p, off, len, gso, this.now, snap.generation);
        return Verdict.Held;
      }
      const session = this.conntrack.session(p, target, this.now);
      const chosen = session?.join ?? this.chooser.choose(target, p.addrLength, snap.cluster);
      if (!chosen) {
        this.counters.drop(Drop.NoInstance);
        if (p.proto !== IpProto.Tcp || (p.tcpFlags & TcpFlag.Rst) !== 0) return Verdict.Drop;
        this.resetClient();
        return Verdict.Reset;
      }
      flow = this.conntrack.open(p, source, ownIp, chosen, session, this.now);
      this.counters.flowsCreated++;
    }
    // 6. counters and TCP progress
    this.conntrack.outboundSeen(flow, p, len, this.now);
    // 7. rewrite
    setSrcAddress(p, buf, flow.ownIp);
    setDstAddress(p, buf, flow.targetNs);
    if (p.isFragment) this.replay(this.fragments.remember(p, flow, true, this.now), true);
    return this.deliver(flow);
  }

  private outboundFragment(off: number, len: number): Verdict {
    const p = this.p;
    const rec = this.fragments.find(p);
    if (!rec?.outbound || !rec.flow || rec.flow.dead) {
      if (!this.fragments.hold(p, off, len, this.now)) this.counters.drop(Drop.FragmentUnmatched);
      return Verdict.Held;
    }
    this.fragments.passed(p);
    setSrcAddress(p, p.buffer, rec.flow.ownIp);
    setDstAddress(p, p.buffer, rec.flow.targetNs);
    return this.deliver(rec.flow);
  }

  private deliver(flow: Flow): Verdict {
    this.flow = flow;
    return flow.instance.local ? Verdict.Local : Verdict.Tunnel;
  }

  /** A UDP/ICMP flow whose instance left chooses again; undefined (and closed) when nothing can be chosen. */
  private chooseAgain(flow: Flow): Flow | undefined {
    const p = this.p;
    const target = this.snapshot.target(p.buffer, p.dstOffset, p.addrLength);
    const chosen = target && this.chooser.choose(target, p.addrLength, this.snapshot.cluster);
    if (!chosen) {
      this.conntrack.close(flow);
      return undefined;
    }
    this.conntrack.retarget(flow, chosen);
    return flow;
  }

  // ---- inbound: steps 9-10 ------------------------------------------------------------------------------

  /** A packet from the tunnel (or a local delivery): buf[off, off + len), with its gso word. */
  /**
   * `from` (with `fromOffset`): the tunnel endpoint the packet came from. A source address the snapshot
   * knows must be an instance on that node (WireGuard's cryptokey routing: a peer speaks only for its own
   * instances); absent for deliveries on this node and for packets already checked.
   */
  inbound(buf: Buffer, off: number, len: number, gso: number, from?: Buffer, fromOffset = 0): Verdict {
    const p = this.p;
    // 9. decode and check that it belongs here
    if (!p.decode(buf, off, len)) {
      this.counters.decodeErrors[p.error]!++;
      return Verdict.Drop;
    }
    if (gso !== 0) p.l4ChecksumPartial = true;
    if (!this.local.contains(buf, p.dstOffset, p.addrLength)) {
      this.counters.drop(Drop.NotForThisNode);
      return Verdict.Drop;
    }
    if (!this.semantic.contains(buf, p.srcOffset, p.addrLength)) {
      this.counters.drop(Drop.FromOutsideOverlay);
      return Verdict.Drop;
    }
    if (from) {
      const known = this.snapshot.target(buf, p.srcOffset, p.addrLength);
      const source = known?.instance;
      // a known source: an instance IP (ServiceIPs are never a source on the wire) of a remote instance
      // behind exactly this endpoint; an unknown one is asked about below, and answers to it go to its owner
      if (known && (!source || source.local || !endpointEquals(source.endpoint, 0, from, fromOffset))) {
        this.counters.drop(Drop.WrongPeer);
        return Verdict.Drop;
      }
    }
    // 10. replies of flows opened here get the dialed address back as source
    if (p.isFragment && !p.isFirstFragment) {
      // whether the datagram is a reply is known from its first fragment only: wait for it (bounded)
      const rec = this.fragments.find(p);
      if (!rec) {
        if (!this.fragments.hold(p, off, len, this.now)) this.counters.drop(Drop.FragmentUnmatched);
        return Verdict.Held;
      }
      this.fragments.passed(p);
      if (!rec.outbound && rec.flow && !rec.flow.dead) setSrcAddress(p, buf, rec.flow.dialed);
    } else if (p.proto === IpProto.Tcp || p.proto === IpProto.Udp || p.isEcho) {
      const flow = this.conntrack.reply(p);
      if (p.isFragment) this.replay(this.fragments.remember(p, flow, false, this.now), false);
      if (flow) {
        this.conntrack.replySeen(flow, p, len, this.now);
        setSrcAddress(p, buf, flow.dialed);
      } else if (
        (p.proto !== IpProto.Tcp || (p.tcpFlags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn) &&
        !this.snapshot.target(buf, p.srcOffset, p.addrLength)
      ) {
        // a new request (a TCP SYN, any UDP/ICMP packet) from an instance this node does not know yet: the
        // answer will need it, ask now
        this.misses.ask(buf, p.srcOffset, p.addrLength, this.now, this.snapshot.generation);
      }
    } else if (p.isFragment) {
      // another protocol's datagram: its fragments pass as they are
      this.replay(this.fragments.remember(p, undefined, false, this.now), false);
    }
    return Verdict.Tun;
  }

  /**
   * Asks the control plane about a source address the tunnel saw before the tables named its sender (the
   * WireGuard tunnel's provisional peers): only a semantic address is asked about, within the same question
   * budget as the proxy's own misses.
   */
  askAbout(buf: Uint8Array, off: number, len: number, now: number): void {
    if (this.semantic.contains(buf, off, len)) this.misses.ask(buf, off, len, now, this.snapshot.generation);
  }

  // ---- resets -------------------------------------------------------------------------------------------

  /** Answers the client's TCP segment in p with a RST|ACK that appears to come from the dialed address. */
  private resetClient(): void {
    const p = this.p;
    const b = p.buffer;
    const syn = (p.tcpFlags & TcpFlag.Syn) !== 0 ? 1 : 0;
    this.resetLength = writeTcpReset(this.reset, {
      src: b.subarray(p.dstOffset, p.dstOffset + p.addrLength),
      dst: b.subarray(p.srcOffset, p.srcOffset + p.addrLength),
      srcPort: p.dstPort,
      dstPort: p.srcPort,
      seq: (p.tcpFlags & TcpFlag.Ack) !== 0 ? p.tcpAck() : 0,
      ack: (p.tcpSeq() + p.tcpPayloadLength() + syn) >>> 0,
    });
  }

  /**
   * Writes into `reset` the reset of the client side of a flow whose instance is gone. Established: RST with
   * the sequence number the client expects (its last ACK). Still opening (no answer yet): RST|ACK acknowledging
   * its SYN, which is what a SYN-SENT socket accepts.
   */
  resetFlow(flow: Flow): void {
    const opening = (flow.tcp & TcpProgress.SynAckIn) === 0;
    this.resetLength = writeTcpReset(this.reset, {
      src: flow.dialed,
      dst: flow.clientAddr,
      srcPort: flow.port,
      dstPort: flow.clientPort,
      seq: opening ? 0 : flow.clientAck,
      ...(opening ? { ack: flow.clientNext } : {}),
    });
  }

  private replay(packets: HeldPacket[], outbound: boolean): void {
    if (packets.length) this.replays.push({ packets, outbound });
  }
}
