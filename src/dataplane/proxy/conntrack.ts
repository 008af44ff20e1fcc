/**
 * @module dataplane/proxy/conntrack
 * Connection tracking (steps 4-6 and 10 of the packet flow in proxy.ts): the flows, found by their outbound and
 * reply 5-tuples in the FlowTable; TCP progress (SYN, data, FIN both ways, RST) read through ParsedPacket;
 * idle expiry, TCP-aware; session affinity for protocols with control and data connections; and what a new
 * snapshot means for the flows (`reconcile`): a flow whose instance left follows it when the same instance is
 * still there at the same address, else a TCP flow is reset and closed and a UDP/ICMP flow chooses again at its
 * next packet; a flow whose client left this node closes.
 */
import { IpProto, type ParsedPacket, TcpFlag } from '../packet/index.ts';
import {
  type AddressTarget,
  addressKey,
  type Instance,
  instanceAddress,
  namespaceAddress,
  type ServiceSnapshot,
} from '../snapshot.ts';
import { Flow, FlowTable, TcpProgress } from './flow-table.ts';

export interface IdleTimeouts {
  tcpEstablished: number;
  tcpOpening: number;
  tcpClosed: number;
  udp: number;
  icmp: number;
}

export const DEFAULT_IDLE: IdleTimeouts = {
  tcpEstablished: 2 * 3600_000,
  tcpOpening: 30_000,
  tcpClosed: 10_000,
  udp: 60_000,
  icmp: 30_000,
};

/** How long after its session leader opened a connection may still join the leader's instance (see `session`). */
export const SESSION_WINDOW_MS = 2000;

/** A new TCP connection's session: (client, ServiceIP, port), and the leader's instance it joins, if any. */
export interface Session {
  readonly key: string;
  readonly join: Instance | undefined;
}

export class ConnTracker {
  private readonly table = new FlowTable();
  /** Flows by the instance they go to, and by the local instance that opened them. */
  private readonly byInstance = new Map<Instance, Set<Flow>>();
  private readonly byClient = new Map<Instance, Set<Flow>>();
  /** The latest round-robin TCP flow of each (client, ServiceIP, port): the session's leader. */
  private readonly sessions = new Map<string, Flow>();

  constructor(private readonly idle: IdleTimeouts) {}

  /** Open flows. */
  get size(): number {
    return this.table.size;
  }

  /** The flow of the outbound packet in p (by the 5-tuple its client sent). */
  outbound(p: ParsedPacket): Flow | undefined {
    const b = p.buffer;
    this.table.setKey(p.proto, b, p.srcOffset, b, p.dstOffset, p.addrLength, p.srcPort, p.dstPort);
    return this.table.get();
  }

  /** The flow the inbound packet in p replies to (by its reply 5-tuple). */
  reply(p: ParsedPacket): Flow | undefined {
    return this.outbound(p); // the reply key has the same layout: (proto, src, sport, dst, dport)
  }

  /** True when p opens a new TCP connection (SYN without ACK) on the 5-tuple of a finished one. */
  reopens(flow: Flow, p: ParsedPacket): boolean {
    return (
      p.proto === IpProto.Tcp &&
      (p.tcpFlags & TcpFlag.Syn) !== 0 &&
      (p.tcpFlags & TcpFlag.Ack) === 0 &&
      closed(flow)
    );
  }

  /**
   * Session affinity, narrowly: a protocol's control and data connections (iperf3, passive FTP) must meet one
   * server. A client's TCP connection to a ServiceIP and port joins the instance of its session leader (the
   * earlier connection there that made a round-robin choice) only while the leader is open, has already
   * carried the client's data (a control connection in use), and is younger than SESSION_WINDOW_MS. Every other
   * connection is a round-robin turn: a pool opening many connections at once, or later ones while a keep-alive
   * connection stays open, spreads over the instances. Returns the new connection's session (undefined for
   * anything but TCP to a ServiceIP), with the instance it must join, if any.
   */
  session(p: ParsedPacket, target: AddressTarget, now: number): Session | undefined {
    if (p.proto !== IpProto.Tcp || target.kind === 'instance') return undefined;
    const b = p.buffer;
    const key = `${String(addressKey(b, p.srcOffset, p.addrLength))}/${String(addressKey(b, p.dstOffset, p.addrLength))}/${p.dstPort}`;
    const leader = this.sessions.get(key);
    const joins =
      leader !== undefined &&
      !leader.dead &&
      !closed(leader) &&
      (leader.tcp & TcpProgress.DataOut) !== 0 &&
      now - leader.openedAt <= SESSION_WINDOW_MS;
    return { key, join: joins ? leader.instance : undefined };
  }

  /**
   * Opens the flow of the packet in p (its outbound key must be free): from `client` (whose instance IP
   * `ownIp` becomes the source) to `chosen`. A session that made a round-robin choice (joined nobody) leads
   * from now on.
   */
  open(
    p: ParsedPacket,
    client: Instance,
    ownIp: Uint8Array,
    chosen: Instance,
    session: Session | undefined,
    now: number,
  ): Flow {
    const b = p.buffer;
    const copy = (o: number) => Uint8Array.prototype.slice.call(b, o, o + p.addrLength);
    const flow = new Flow(
      p.proto,
      copy(p.srcOffset),
      p.srcPort,
      copy(p.dstOffset),
      p.dstPort,
      ownIp,
      client,
      chosen,
      namespaceAddress(chosen, p.addrLength)!,
      instanceAddress(chosen, p.addrLength)!,
      now,
    );
    flow.openedAt = now;
    this.table.add(flow);
    link(this.byInstance, chosen, flow);
    link(this.byClient, client, flow);
    if (session && !session.join) {
      const leader = this.sessions.get(session.key);
      if (leader !== undefined) leader.sessionKey = undefined; // an older leader can no longer be joined
      flow.sessionKey = session.key;
      this.sessions.set(session.key, flow);
    }
    return flow;
  }

  /** Counts an outbound packet of `length` bytes (in p) on its flow and follows the client's TCP progress. */
  outboundSeen(flow: Flow, p: ParsedPacket, length: number, now: number): void {
    flow.lastSeen = now;
    flow.packets++;
    flow.bytes += length;
    if (p.proto !== IpProto.Tcp) return;
    const f = p.tcpFlags;
    const payload = p.tcpPayloadLength();
    if (f & TcpFlag.Syn) flow.tcp |= TcpProgress.SynOut;
    if (payload > 0) flow.tcp |= TcpProgress.DataOut;
    if (f & TcpFlag.Fin) flow.tcp |= TcpProgress.FinOut;
    if (f & TcpFlag.Rst) flow.tcp |= TcpProgress.Reset;
    if (f & TcpFlag.Ack) flow.clientAck = p.tcpAck();
    flow.clientNext = (p.tcpSeq() + payload + (f & TcpFlag.Syn ? 1 : 0) + (f & TcpFlag.Fin ? 1 : 0)) >>> 0;
  }

  /** Counts a reply packet of `length` bytes (in p) on its flow and follows the server's TCP progress. */
  replySeen(flow: Flow, p: ParsedPacket, length: number, now: number): void {
    flow.lastSeen = now;
    flow.packets++;
    flow.bytes += length;
    if (p.proto !== IpProto.Tcp) return;
    const f = p.tcpFlags;
    if (f & TcpFlag.Syn) flow.tcp |= TcpProgress.SynAckIn;
    if (f & TcpFlag.Fin) flow.tcp |= TcpProgress.FinIn;
    if (f & TcpFlag.Rst) flow.tcp |= TcpProgress.Reset;
  }

  /** Points the flow at another instance (a UDP/ICMP flow choosing again, or the same instance's new record). */
  retarget(flow: Flow, to: Instance): void {
    unlink(this.byInstance, flow.instance, flow);
    const len = flow.dialed.length;
    this.table.retarget(flow, to, namespaceAddress(to, len)!, instanceAddress(to, len)!);
    link(this.byInstance, to, flow);
  }

  close(flow: Flow): void {
    unlink(this.byInstance, flow.instance, flow);
    unlink(this.byClient, flow.client, flow);
    this.table.remove(flow);
    if (flow.sessionKey !== undefined && this.sessions.get(flow.sessionKey) === flow)
      this.sessions.delete(flow.sessionKey);
  }

  /**
   * Brings the flows in line with the snapshot `next`. `reset` is called for each open TCP flow that must end
   * (before it is closed), so its client can be told.
   */
  reconcile(next: ServiceSnapshot, reset: (flow: Flow) => void): void {
    for (const [inst, flows] of [...this.byInstance]) {
      if (next.has(inst)) continue;
      const same = next.instance(inst.job, inst.number);
      for (const flow of [...flows]) {
        const ns = same && namespaceAddress(same, flow.targetNs.length);
        if (same && ns && instanceAddress(same, flow.targetNs.length) && equal(ns, flow.targetNs)) {
          this.retarget(flow, same); // the same instance with changed details (its node's address, its cluster)
        } else if (flow.proto === IpProto.Tcp) {
          // a finished connection (FIN both ways, or reset) has nobody to tell: a RST would only hit TIME_WAIT
          if (!closed(flow)) reset(flow);
          this.close(flow);
        } else {
          flow.stale = true;
        }
      }
    }
    // flows opened by instances that left this node; namespace addresses are reused, so a flow whose address
    // now belongs to a local instance with the flow's own instance IP is that instance's, and stays
    for (const [client, flows] of [...this.byClient]) {
      if (next.has(client)) continue;
      for (const flow of [...flows]) {
        const len = flow.clientAddr.length;
        const owner = next.localByNamespace(flow.clientAddr, 0, len);
        const ip = owner && instanceAddress(owner, len);
        if (owner && ip && equal(ip, flow.ownIp)) {
          unlink(this.byClient, client, flow);
          flow.client = owner;
          link(this.byClient, owner, flow);
        } else {
          this.close(flow);
        }
      }
    }
  }

  /** Closes flows idle longer than their limit. */
  expire(now: number): void {
    for (const flow of [...this.table.flows])
      if (now - flow.lastSeen > this.idleLimit(flow)) this.close(flow);
  }

  /** The jobs that open flows go to, with their flow counts. */
  usage(): Array<{ job: string; flows: number }> {
    const byJob = new Map<string, number>();
    for (const [inst, flows] of this.byInstance) byJob.set(inst.job, (byJob.get(inst.job) ?? 0) + flows.size);
    return [...byJob].map(([job, flows]) => ({ job, flows }));
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

/** True when a TCP flow is over: reset, or FIN both ways. */
export function closed(flow: Flow): boolean {
  return (
    (flow.tcp & TcpProgress.Reset) !== 0 ||
    (flow.tcp & (TcpProgress.FinOut | TcpProgress.FinIn)) === (TcpProgress.FinOut | TcpProgress.FinIn)
  );
}

function link(index: Map<Instance, Set<Flow>>, inst: Instance, flow: Flow): void {
  let set = index.get(inst);
  if (!set) {
    set = new Set();
    index.set(inst, set);
  }
  set.add(flow);
}

function unlink(index: Map<Instance, Set<Flow>>, inst: Instance, flow: Flow): void {
  const set = index.get(inst);
  if (!set) return;
  set.delete(flow);
  if (set.size === 0) index.delete(inst);
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
