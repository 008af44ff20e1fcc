/**
 * @module node/dns/server
 * The node's DNS server (issue 13), first cut: UDP and TCP on the given addresses, authoritative for
 * `oakestra.` and for the PTR names of the addresses its zone holds, answering from the zone (zone.ts) the
 * NetManager hands it. A name with a job's shape that the zone does not hold is asked about (`ask`: the
 * table query by name) and only that query waits. Names answered before that the zone no longer holds (an
 * expired interest, a cluster out of reach) are answered at once from a bounded stale copy while the cluster
 * is asked; its "no such job", or the tables listing the job without instances, ends the copy. Only clients in `allowedSources` (and loopback) get answers. The
 * wire format is dns-packet's; only the 12-byte header is read by hand, to refuse what is no query before
 * decoding. Other names go to the node's resolvers (forwarder.ts; without upstreams they are REFUSED), and
 * `ANY` for them is answered minimally (RFC 8482).
 *
 * The hot path: answers that follow from the zone alone are kept as encoded responses, keyed by the query's
 * question (its name lowercased) and its EDNS payload size, until the zone changes. A query that hits is
 * answered from its bytes (its ID, RD bit and the question as the client spelled it written over a copy)
 * without decoding. With the native addon, UDP is read with recvmmsg and answered with sendmmsg, a batch at a
 * time (the tunnel's UdpTunnel, bound to the address); without it, through node:dgram.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type Question } from 'dns-packet';
import type { Logger } from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { decodeEndpoint, ENDPOINT_BYTES } from '../../dataplane/tunnel/tunnel.ts';
import { UdpTunnel } from '../../dataplane/tunnel/udp.ts';
import type { NativeIo } from '../../dataplane/tun/native.ts';
import type { PacketBatch } from '../../dataplane/tun/tun.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { Forwarder, type Upstream } from './forwarder.ts';
import { jobOfName, NEGATIVE_TTL, ZONE, type ZoneData, type ZoneRecord } from './zone.ts';

/** What the cluster said of a job the zone does not hold. */
export type AskResult = 'known' | 'unknown' | 'unreachable';

export interface DnsServerOptions {
  listen: Array<{ host: string; port: number }>;
  /** Client prefixes answered (loopback always is, unless `loopback: false`). */
  allowedSources: string[];
  loopback?: boolean;
  ask: (job: string) => Promise<AskResult>;
  used?: (jobs: string[]) => void;
  log: Logger;
  /** How long a query waits for its ask (ms, default 2000). */
  askTimeoutMs?: number;
  /** Where other names go (the node's resolvers); none: they are refused. */
  upstreams?: Upstream[];
  /** How long an upstream has to answer (ms, default 2000). */
  forwardTimeoutMs?: number;
  /** The native addon, for batched UDP (recvmmsg/sendmmsg); without it UDP goes through node:dgram. */
  io?: NativeIo;
}

export interface DnsCounters {
  queries: number;
  udp: number;
  tcp: number;
  answered: number;
  nxdomain: number;
  nodata: number;
  servfail: number;
  formerr: number;
  notimp: number;
  refused: number;
  refused_source: number;
  dropped: number;
  truncated: number;
  asked: number;
  ask_throttled: number;
  stale_answers: number;
  forwarded: number;
  forward_cache_hits: number;
  forward_failed: number;
  /** Queries answered from the response cache. */
  cache_hits: number;
}

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const UDP_MAX = 1232;
const STALE_MAX = 4096;
const ASKS_PER_S = 50;
const ASK_BURST = 20;
const TCP_MAX_CONNECTIONS = 256;
const TCP_IDLE_MS = 10_000;
const SOA: Answer = {
  type: 'SOA',
  name: ZONE,
  ttl: NEGATIVE_TTL,
  data: {
    mname: `ns.${ZONE}`,
    rname: `hostmaster.${ZONE}`,
    serial: 1,
    refresh: 3600,
    retry: 600,
    expire: 86400,
    minimum: NEGATIVE_TTL,
  },
};

interface Reply {
  rcode: number;
  answers: Answer[];
  authorities: Answer[];
  /** False when the answer took an ask or a stale copy; otherwise it follows from the zone alone and may be kept until the zone changes. */
  cacheable?: boolean;
  job?: string;
}

/** Which counter an answer adds to. */
type Outcome = 'answered' | 'nxdomain' | 'nodata' | 'servfail' | 'refused';

/**
 * A kept response: its bytes as encoded for the first asker, where the question's name stands in it (the
 * question and the owner names that are the question's: each answered in the case of the query), what it
 * counts as, and the job it names.
 */
interface Cached {
  response: Buffer;
  names: number[];
  outcome: Outcome;
  job: string | undefined;
}

/** The end of the (uncompressed) name at `at`, or -1 for a compressed or malformed one. */
function nameEnd(b: Buffer, at: number): number {
  for (let i = at; i < b.length;) {
    const len = b[i]!;
    if (len === 0) return i + 1;
    if (len > 63) return -1;
    i += len + 1;
  }
  return -1;
}

/** Where the question's name (at 12, `n` bytes) is an owner name in the response's records. */
function ownerNames(r: Buffer, n: number): number[] | undefined {
  const names = [12];
  let at = 12 + n + 4;
  const records = r.readUInt16BE(6) + r.readUInt16BE(8) + r.readUInt16BE(10);
  for (let k = 0; k < records; k++) {
    const end = nameEnd(r, at);
    if (end < 0 || end + 10 > r.length) return undefined;
    if (
      end - at === n &&
      r.toString('latin1', 12, 12 + n).toLowerCase() === r.toString('latin1', at, end).toLowerCase()
    )
      names.push(at);
    at = end + 10 + r.readUInt16BE(end + 8);
  }
  return at === r.length ? names : undefined;
}

const CACHE_MAX = 16_384;
const SOURCES_MAX = 4096;
const BATCH = 64;
const SLOT = 1280;

/**
 * The cache key of a plain query (one question, no answers or authorities, at most an OPT record, nothing
 * after it): its question with the name in lowercase, and the UDP payload size it can take; with the end of
 * its question. Undefined for anything else (those take the full path).
 */
function questionKey(msg: Buffer, scratch: Buffer): { key: string; end: number } | undefined {
  if (msg.length < 17 || msg.length > 512 + 64) return undefined;
  // QR 0, opcode 0, QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1
  if ((msg[2]! & 0xf8) !== 0 || msg.readUInt16BE(4) !== 1 || msg.readUInt32BE(6) !== 0) return undefined;
  const arcount = msg.readUInt16BE(10);
  if (arcount > 1) return undefined;
  let i = 12;
  for (;;) {
    const len = msg[i];
    if (len === undefined || len > 63) return undefined;
    if (len === 0) break;
    i += len + 1;
    if (i - 12 > 254) return undefined;
  }
  const end = i + 5; // the root label, QTYPE, QCLASS
  if (end > msg.length) return undefined;
  let limit = 512;
  if (arcount === 1) {
    // the OPT record: root name, type 41, class = payload size, TTL (extended RCODE, version 0, flags), RDLEN
    if (end + 11 > msg.length || msg[end] !== 0 || msg.readUInt16BE(end + 1) !== 41 || msg[end + 6] !== 0)
      return undefined;
    if (end + 11 + msg.readUInt16BE(end + 9) !== msg.length) return undefined;
    limit = Math.max(512, Math.min(UDP_MAX, msg.readUInt16BE(end + 3)));
  } else if (end !== msg.length) return undefined;
  const n = end - 12;
  for (let j = 0; j < n; j++) {
    const c = msg[12 + j]!;
    // only the name's bytes are lowered; a label length is at most 63, below 'A'
    scratch[j] = j < n - 4 && c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
  }
  return { key: `${scratch.toString('latin1', 0, n)}${arcount === 1 ? limit : 0}`, end };
}

/** The address a reverse name stands for, or undefined. */
function reverseAddress(name: string): string | undefined {
  const labels = name.toLowerCase().split('.');
  if (labels.length === 6 && labels[4] === 'in-addr' && labels[5] === 'arpa') {
    const parts = labels.slice(0, 4).reverse();
    return IpAddress.tryParse(parts.join('.'))?.toString();
  }
  if (labels.length === 34 && labels[32] === 'ip6' && labels[33] === 'arpa') {
    const nibbles = labels.slice(0, 32).reverse();
    if (!nibbles.every((n) => /^[0-9a-f]$/.test(n))) return undefined;
    const groups = Array.from({ length: 8 }, (_, i) => nibbles.slice(i * 4, i * 4 + 4).join(''));
    return IpAddress.tryParse(groups.join(':'))?.toString();
  }
  return undefined;
}

function outcomeOf(r: Reply): Outcome {
  if (r.rcode === RCODE.NXDOMAIN) return 'nxdomain';
  if (r.rcode === RCODE.SERVFAIL) return 'servfail';
  if (r.rcode === RCODE.REFUSED) return 'refused';
  return r.answers.length === 0 ? 'nodata' : 'answered';
}

export class DnsServer {
  private names = new Map<string, ZoneRecord>();
  private jobs = new Set<string>();
  private ptr = new Map<string, { name: string; ttl: number }>();
  private readonly stale = new Map<string, ZoneRecord>();
  private readonly asking = new Map<string, Promise<'known' | 'unknown' | 'unreachable'>>();
  private readonly negative = new Map<string, number>();
  private readonly usedJobs = new Set<string>();
  private tokens = ASK_BURST;
  private tokensAt = Date.now();
  private readonly allowed: Cidr[];
  private readonly udp: Socket[] = [];
  private readonly batched: UdpTunnel[] = [];
  private readonly bound: Array<{ host: string; port: number }> = [];
  private readonly tcp: Server[] = [];
  private readonly cache = new Map<string, Cached>();
  private readonly sourceAllowed = new Map<string, boolean>();
  private readonly scratch = Buffer.alloc(512);
  private readonly out: PacketBatch & { endpoints: Buffer } = {
    buffer: Buffer.alloc(BATCH * SLOT),
    offsets: Uint32Array.from({ length: BATCH }, (_, i) => i * SLOT),
    lengths: new Uint32Array(BATCH),
    count: 0,
    endpoints: Buffer.alloc(BATCH * ENDPOINT_BYTES),
  };
  private readonly connections = new Set<TcpSocket>();
  private readonly timer: NodeJS.Timeout;
  readonly counters: DnsCounters = {
    queries: 0,
    udp: 0,
    tcp: 0,
    answered: 0,
    nxdomain: 0,
    nodata: 0,
    servfail: 0,
    formerr: 0,
    notimp: 0,
    refused: 0,
    refused_source: 0,
    dropped: 0,
    truncated: 0,
    asked: 0,
    ask_throttled: 0,
    stale_answers: 0,
    forwarded: 0,
    forward_cache_hits: 0,
    forward_failed: 0,
    cache_hits: 0,
  };
  private readonly forwarder: Forwarder | undefined;

  private constructor(private readonly o: DnsServerOptions) {
    this.allowed = o.allowedSources.map((c) => Cidr.parse(c));
    if (o.loopback !== false) this.allowed.push(Cidr.parse('127.0.0.0/8'), Cidr.parse('::1/128'));
    this.forwarder = o.upstreams?.length
      ? new Forwarder(o.upstreams, o.forwardTimeoutMs !== undefined ? { timeoutMs: o.forwardTimeoutMs } : {})
      : undefined;
    this.timer = setInterval(() => this.report(), 1000);
    this.timer.unref();
  }

  /** Listens on every address (UDP and TCP); rejects naming the address that cannot be bound. */
  static async start(o: DnsServerOptions): Promise<DnsServer> {
    const s = new DnsServer(o);
    try {
      for (const { host, port } of o.listen) await s.bind(host, port);
    } catch (err) {
      await s.close();
      throw err;
    }
    return s;
  }

  setZone(zone: ZoneData): void {
    this.names = new Map(zone.names);
    this.jobs = new Set(zone.jobs);
    this.ptr = new Map(zone.ptr.map(([a, name, ttl]) => [a, { name, ttl }]));
    this.cache.clear();
    for (const [name, rec] of zone.names) this.remember(name, rec);
    // a job the tables hold without instances is undeployed: none of its names stays
    const named = new Set(zone.names.map(([, rec]) => rec.job));
    for (const job of zone.jobs) if (!named.has(job)) this.forgetStale(job);
  }

  private forgetStale(job: string): void {
    for (const [n, rec] of this.stale) if (rec.job === job) this.stale.delete(n);
  }

  /** Bound UDP addresses (for tests that listen on port 0). */
  addresses(): Array<{ host: string; port: number }> {
    return [...this.bound];
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.forwarder?.close();
    for (const c of this.connections) c.destroy();
    for (const u of this.udp) u.close();
    for (const u of this.batched) u.close();
    await Promise.all(this.tcp.map((t) => new Promise((r) => t.close(r))));
  }

  private async bind(host: string, port: number): Promise<void> {
    const v6 = host.includes(':');
    let udpPort: number;
    if (this.o.io) {
      let sock: UdpTunnel;
      try {
        sock = UdpTunnel.open({ port, address: host, batchSize: BATCH, maxDatagramBytes: 4096 }, this.o.io);
      } catch (err) {
        throw new Error(`DNS: cannot listen on udp ${host}:${port}: ${(err as Error).message}`);
      }
      this.batched.push(sock);
      sock.start(
        (batch, sources) => this.onBatch(sock, batch, sources),
        (err) => this.o.log.warn({ err: err.message }, 'DNS UDP socket failed'),
      );
      udpPort = sock.port;
    } else {
      const udp = createSocket(v6 ? { type: 'udp6', ipv6Only: true } : { type: 'udp4' });
      await new Promise<void>((resolve, reject) => {
        udp.once('error', (err) =>
          reject(new Error(`DNS: cannot listen on udp ${host}:${port}: ${err.message}`)),
        );
        udp.bind({ address: host, port }, () => resolve());
      });
      udp.on('error', (err) => this.o.log.warn({ err: err.message }, 'DNS UDP socket error'));
      udp.on('message', (msg, rinfo) => void this.onUdp(udp, msg, rinfo));
      this.udp.push(udp);
      udpPort = udp.address().port;
    }
    this.bound.push({ host, port: udpPort });
    const tcp = createServer((c) => this.onTcp(c));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', (err) =>
        reject(new Error(`DNS: cannot listen on tcp ${host}:${port}: ${err.message}`)),
      );
      // the TCP port is the UDP one (port 0 in tests: the one the UDP socket got)
      tcp.listen({ host, port: udpPort, ...(v6 ? { ipv6Only: true } : {}) }, () => resolve());
    });
    this.tcp.push(tcp);
  }

  /** A batch from a native socket: cached answers go back in one send, the rest each when it is ready. */
  private onBatch(sock: UdpTunnel, batch: PacketBatch, sources: Buffer): void {
    const out = this.out;
    out.count = 0;
    for (let i = 0; i < batch.count; i++) {
      const len = batch.lengths[i]!;
      if (len === 0) {
        // empty, or larger than a slot
        this.counters.queries++;
        this.counters.dropped++;
        continue;
      }
      const at = i * ENDPOINT_BYTES;
      const src = sources.toString('latin1', at, at + 16);
      if (!this.permittedSource(src, () => decodeEndpoint(sources, at).host)) {
        this.counters.refused_source++;
        continue;
      }
      this.counters.udp++;
      const off = batch.offsets[i]!;
      const msg = batch.buffer.subarray(off, off + len);
      const slot = out.count * SLOT;
      const n = this.fromCache(msg, out.buffer, slot);
      if (n > 0) {
        out.lengths[out.count] = n;
        sources.copy(out.endpoints, out.count * ENDPOINT_BYTES, at, at + ENDPOINT_BYTES);
        out.count++;
        continue;
      }
      // the full path may wait (an ask, an upstream): the batch's buffers are reused by the next read
      const query = Buffer.from(msg);
      const to = Buffer.from(sources.subarray(at, at + ENDPOINT_BYTES));
      void this.handle(query, true)
        .then((answer) => {
          if (!answer) return;
          sock.send({
            buffer: answer,
            offsets: Uint32Array.of(0),
            lengths: Uint32Array.of(answer.length),
            count: 1,
            endpoints: to,
          });
        })
        .catch((err: unknown) => {
          this.counters.dropped++;
          this.o.log.debug({ err }, 'DNS query failed');
        });
    }
    if (out.count > 0) sock.send(out);
  }

  /**
   * Answers a query from the response cache into `into` at `at`: the answer's length, or 0 when the query is
   * not a plain one or its answer is not kept.
   */
  private fromCache(msg: Buffer, into: Buffer, at: number): number {
    const q = questionKey(msg, this.scratch);
    if (!q) return 0;
    const hit = this.cache.get(q.key);
    if (!hit || hit.response.length > into.length - at) return 0;
    const r = hit.response;
    r.copy(into, at);
    into[at] = msg[0]!;
    into[at + 1] = msg[1]!;
    into[at + 2] = (r[2]! & 0xfe) | (msg[2]! & 1);
    // the question's name as this client spelled it, wherever it stands
    for (const n of hit.names) msg.copy(into, at + n, 12, q.end - 4);
    this.counters.queries++;
    this.counters.cache_hits++;
    this.counters[hit.outcome]++;
    if (hit.job !== undefined) this.usedJobs.add(hit.job);
    return r.length;
  }

  /** Whether the source `key` stands for may ask (remembered per source, bounded). */
  private permittedSource(key: string, address: () => string): boolean {
    let ok = this.sourceAllowed.get(key);
    if (ok === undefined) {
      ok = this.permitted(address());
      if (this.sourceAllowed.size >= SOURCES_MAX) this.sourceAllowed.clear();
      this.sourceAllowed.set(key, ok);
    }
    return ok;
  }

  private permitted(address: string): boolean {
    const ip = IpAddress.tryParse(address.replace(/^::ffff:(?=\d+\.)/, ''));
    return ip !== undefined && this.allowed.some((c) => c.family === ip.family && c.contains(ip));
  }

  private async onUdp(sock: Socket, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    try {
      if (!this.permittedSource(rinfo.address, () => rinfo.address)) {
        this.counters.refused_source++;
        return;
      }
      this.counters.udp++;
      const answer = Buffer.allocUnsafe(SLOT);
      const n = this.fromCache(msg, answer, 0);
      if (n > 0) {
        sock.send(answer.subarray(0, n), rinfo.port, rinfo.address);
        return;
      }
      const out = await this.handle(msg, true);
      if (out) sock.send(out, rinfo.port, rinfo.address);
    } catch (err) {
      this.counters.dropped++;
      this.o.log.debug({ err }, 'DNS query failed');
    }
  }

  private onTcp(c: TcpSocket): void {
    if (!c.remoteAddress || !this.permitted(c.remoteAddress)) {
      this.counters.refused_source++;
      c.destroy();
      return;
    }
    if (this.connections.size >= TCP_MAX_CONNECTIONS) {
      c.destroy();
      this.counters.dropped++;
      return;
    }
    this.connections.add(c);
    c.setTimeout(TCP_IDLE_MS, () => c.destroy());
    c.on('close', () => this.connections.delete(c));
    c.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (buf.length < 2 + n) break;
        const msg = buf.subarray(2, 2 + n);
        buf = buf.subarray(2 + n);
        this.counters.tcp++;
        void this.handle(msg, false)
          .then((out) => {
            if (!out || c.destroyed) return;
            const len = Buffer.alloc(2);
            len.writeUInt16BE(out.length);
            c.write(Buffer.concat([len, out]));
          })
          .catch(() => this.counters.dropped++);
      }
    });
  }

  /** One query in, its answer out (undefined: dropped). */
  private async handle(msg: Buffer, udp: boolean): Promise<Buffer | undefined> {
    this.counters.queries++;
    if (msg.length < 12 || (msg[2]! & 0x80) !== 0) {
      this.counters.dropped++; // no header, or a response: nothing to answer
      return undefined;
    }
    const id = msg.readUInt16BE(0);
    const opcode = (msg[2]! >> 3) & 0xf;
    const rd = msg[2]! & 1;
    const bare = (rcode: number) => {
      const h = Buffer.alloc(12);
      h.writeUInt16BE(id, 0);
      h[2] = 0x80 | (opcode << 3) | rd;
      h[3] = rcode;
      return h;
    };
    if (opcode !== 0) {
      this.counters.notimp++;
      return bare(RCODE.NOTIMP);
    }
    let q: DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      this.counters.formerr++;
      return bare(RCODE.FORMERR);
    }
    const question = q.questions?.length === 1 ? q.questions[0] : undefined;
    if (!question || (q.answers?.length ?? 0) > 0) {
      this.counters.formerr++;
      return bare(RCODE.FORMERR);
    }
    const opt = q.additionals?.find((a) => a.type === 'OPT');
    const limit = opt && 'udpPayloadSize' in opt ? Math.max(512, Math.min(UDP_MAX, opt.udpPayloadSize)) : 512;
    if (this.forwarder && this.forwardable(question)) {
      const type: string = question.type;
      if (type !== 'ANY') {
        const answer = await this.forwarder.forward(msg, question);
        this.counters.forwarded = this.forwarder.counters.forwarded;
        this.counters.forward_cache_hits = this.forwarder.counters.cache_hits;
        if (!answer) {
          this.counters.forward_failed++;
          this.counters.servfail++;
          return bare(RCODE.SERVFAIL);
        }
        if (!udp || answer.length <= limit) return answer;
        this.counters.truncated++;
        return dnsPacket.encode({
          type: 'response',
          id,
          flags: dnsPacket.TRUNCATED_RESPONSE | (rd ? dnsPacket.RECURSION_DESIRED : 0),
          questions: [question],
        });
      }
    }
    const reply = await this.resolve(question);
    this.count(reply);
    const packet = (answers: Answer[], authorities: Answer[], tc: boolean) =>
      dnsPacket.encode({
        type: 'response',
        id,
        flags:
          (reply.rcode === RCODE.REFUSED ? 0 : dnsPacket.AUTHORITATIVE_ANSWER) |
          (rd ? dnsPacket.RECURSION_DESIRED : 0) |
          (tc ? dnsPacket.TRUNCATED_RESPONSE : 0) |
          reply.rcode,
        questions: [question],
        answers,
        authorities,
        additionals: opt
          ? [
              {
                type: 'OPT',
                name: '.',
                udpPayloadSize: UDP_MAX,
                extendedRcode: 0,
                ednsVersion: 0,
                flags: 0,
                flag_do: false,
                options: [],
              },
            ]
          : [],
      });
    const out = packet(reply.answers, reply.authorities, false);
    if (udp && out.length > limit) {
      this.counters.truncated++;
      return packet([], [], true);
    }
    if (udp && reply.cacheable !== false && out.length <= SLOT) this.keep(msg, out, reply);
    return out;
  }

  /** A question for the node's resolvers: not under oakestra., not the PTR of an address the zone holds. */
  private forwardable(question: Question): boolean {
    const name = question.name.toLowerCase().replace(/\.$/, '');
    if (name === ZONE || name.endsWith(`.${ZONE}`)) return false;
    const type: string = question.type;
    if (type === 'PTR') {
      const address = reverseAddress(name);
      if (address !== undefined && this.ptr.has(address)) return false;
    }
    return (question.class ?? 'IN') === 'IN';
  }

  private count(r: Reply): void {
    this.counters[outcomeOf(r)]++;
  }

  /** Keeps a response that follows from the zone alone, for the queries with the same question. */
  private keep(msg: Buffer, response: Buffer, reply: Reply): void {
    const q = questionKey(msg, this.scratch);
    if (!q) return;
    const names = ownerNames(response, q.end - 4 - 12);
    if (!names) return;
    if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(q.key, {
      response: Buffer.from(response),
      names,
      outcome: outcomeOf(reply),
      job: reply.job,
    });
  }

  /** The answer to a question; cacheable false when it took an ask or a stale copy. */
  private async resolve(question: Question): Promise<Reply> {
    const name = question.name.toLowerCase().replace(/\.$/, '');
    // dns-packet decodes type 255 as 'ANY', which its type list leaves out
    const type: string = question.type;
    if ((question.class ?? 'IN') !== 'IN') return { rcode: RCODE.REFUSED, answers: [], authorities: [] };
    if (type === 'PTR') {
      const address = reverseAddress(name);
      const p = address !== undefined ? this.ptr.get(address) : undefined;
      if (p)
        return {
          rcode: 0,
          answers: [{ type: 'PTR', name: question.name, ttl: p.ttl, data: p.name }],
          authorities: [],
        };
    }
    if (name !== ZONE && !name.endsWith(`.${ZONE}`)) {
      // ANY is answered minimally (RFC 8482), never forwarded; without upstreams other names are refused
      if (type === 'ANY' && this.forwarder)
        return {
          rcode: 0,
          answers: [{ type: 'HINFO', name: question.name, ttl: 3600, data: { cpu: 'RFC8482', os: '' } }],
          authorities: [],
        };
      return { rcode: RCODE.REFUSED, answers: [], authorities: [] };
    }
    const nx: Reply = { rcode: RCODE.NXDOMAIN, answers: [], authorities: [SOA] };
    if (name === ZONE)
      return {
        rcode: 0,
        answers: type === 'SOA' || type === 'ANY' ? [SOA] : [],
        authorities: type === 'SOA' ? [] : [SOA],
      };
    const job = jobOfName(name);
    if (job === undefined) return nx;
    let rec = this.names.get(name);
    let cacheable = true;
    if (!rec && !this.jobs.has(job)) {
      const stale = this.stale.get(name);
      if (stale) {
        // answered before (the tables dropped it, or the cluster is out of reach): at once from the stale
        // copy, with a short TTL, while the cluster is asked; its "no such job" takes the copy away
        this.counters.stale_answers++;
        cacheable = false;
        rec = { ...stale, ttl: Math.min(stale.ttl, 5) };
        void this.askAbout(job).then((outcome) => outcome === 'unknown' && this.forgetStale(job));
      } else {
        cacheable = false;
        const outcome = await this.askAbout(job);
        rec = this.names.get(name);
        if (!rec && outcome === 'unreachable')
          return { rcode: RCODE.SERVFAIL, answers: [], authorities: [], cacheable };
      }
    }
    if (!rec) return { ...nx, cacheable };
    this.usedJobs.add(job);
    const answers: Answer[] = [];
    if (type === 'A' || type === 'ANY')
      for (const a of rec.a) answers.push({ type: 'A', name: question.name, ttl: rec.ttl, data: a });
    if (type === 'AAAA')
      for (const a of rec.aaaa) answers.push({ type: 'AAAA', name: question.name, ttl: rec.ttl, data: a });
    return { rcode: 0, answers, authorities: answers.length ? [] : [SOA], cacheable, job };
  }

  /** Asks about a job once at a time, within the question budget and the negative memory. */
  private askAbout(job: string): Promise<'known' | 'unknown' | 'unreachable'> {
    const running = this.asking.get(job);
    if (running) return running;
    const now = Date.now();
    const neg = this.negative.get(job);
    if (neg !== undefined && now - neg < NEGATIVE_TTL * 1000) return Promise.resolve('unknown');
    this.tokens = Math.min(ASK_BURST, this.tokens + ((now - this.tokensAt) * ASKS_PER_S) / 1000);
    this.tokensAt = now;
    if (this.tokens < 1) {
      this.counters.ask_throttled++;
      return Promise.resolve('unreachable');
    }
    this.tokens--;
    this.counters.asked++;
    const timeout = new Promise<'unreachable'>((r) =>
      setTimeout(() => r('unreachable'), this.o.askTimeoutMs ?? 2000).unref(),
    );
    const p = Promise.race([this.o.ask(job).catch(() => 'unreachable' as const), timeout]).then((outcome) => {
      this.asking.delete(job);
      if (outcome === 'unknown') {
        this.negative.set(job, Date.now());
        if (this.negative.size > 4096) this.negative.delete(this.negative.keys().next().value!);
      }
      return outcome;
    });
    this.asking.set(job, p);
    return p;
  }

  private remember(name: string, rec: ZoneRecord): void {
    this.stale.delete(name);
    this.stale.set(name, rec);
    if (this.stale.size > STALE_MAX) this.stale.delete(this.stale.keys().next().value!);
  }

  private report(): void {
    if (this.usedJobs.size === 0) return;
    const jobs = [...this.usedJobs];
    this.usedJobs.clear();
    this.o.used?.(jobs);
  }
}
