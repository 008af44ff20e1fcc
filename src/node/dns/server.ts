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
 * `ANY` for them is answered minimally (RFC 8482). Not here yet: the response cache and the worker thread the
 * issue's query rate needs.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type Question } from 'dns-packet';
import type { Logger } from 'pino';
import { Cidr } from '../../addressing/cidr.ts';
import { IpAddress } from '../../addressing/ip.ts';
import { Forwarder, type Upstream } from './forwarder.ts';
import { jobOfName, NEGATIVE_TTL, ZONE, type ZoneData, type ZoneRecord } from './zone.ts';

export interface DnsServerOptions {
  listen: Array<{ host: string; port: number }>;
  /** Client prefixes answered (loopback always is, unless `loopback: false`). */
  allowedSources: string[];
  loopback?: boolean;
  ask: (job: string) => Promise<'known' | 'unknown' | 'unreachable'>;
  used?: (jobs: string[]) => void;
  log: Logger;
  /** How long a query waits for its ask (ms, default 2000). */
  askTimeoutMs?: number;
  /** Where other names go (the node's resolvers); none: they are refused. */
  upstreams?: Upstream[];
  /** How long an upstream has to answer (ms, default 2000). */
  forwardTimeoutMs?: number;
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
  private readonly tcp: Server[] = [];
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
    return this.udp.map((u) => ({ host: u.address().address, port: u.address().port }));
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.forwarder?.close();
    for (const c of this.connections) c.destroy();
    for (const u of this.udp) u.close();
    await Promise.all(this.tcp.map((t) => new Promise((r) => t.close(r))));
  }

  private async bind(host: string, port: number): Promise<void> {
    const v6 = host.includes(':');
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
    const tcp = createServer((c) => this.onTcp(c));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', (err) =>
        reject(new Error(`DNS: cannot listen on tcp ${host}:${port}: ${err.message}`)),
      );
      // the TCP port is the UDP one (port 0 in tests: the one the UDP socket got)
      tcp.listen({ host, port: udp.address().port, ...(v6 ? { ipv6Only: true } : {}) }, () => resolve());
    });
    this.tcp.push(tcp);
  }

  private permitted(address: string): boolean {
    const ip = IpAddress.tryParse(address.replace(/^::ffff:(?=\d+\.)/, ''));
    return ip !== undefined && this.allowed.some((c) => c.family === ip.family && c.contains(ip));
  }

  private async onUdp(sock: Socket, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    try {
      if (!this.permitted(rinfo.address)) {
        this.counters.refused_source++;
        return;
      }
      this.counters.udp++;
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
    if (r.rcode === RCODE.NXDOMAIN) this.counters.nxdomain++;
    else if (r.rcode === RCODE.SERVFAIL) this.counters.servfail++;
    else if (r.rcode === RCODE.REFUSED) this.counters.refused++;
    else if (r.answers.length === 0) this.counters.nodata++;
    else this.counters.answered++;
  }

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
    if (!rec && !this.jobs.has(job)) {
      const stale = this.stale.get(name);
      if (stale) {
        // answered before (the tables dropped it, or the cluster is out of reach): at once from the stale
        // copy, with a short TTL, while the cluster is asked; its "no such job" takes the copy away
        this.counters.stale_answers++;
        rec = { ...stale, ttl: Math.min(stale.ttl, 5) };
        void this.askAbout(job).then((outcome) => outcome === 'unknown' && this.forgetStale(job));
      } else {
        const outcome = await this.askAbout(job);
        rec = this.names.get(name);
        if (!rec && outcome === 'unreachable') return { rcode: RCODE.SERVFAIL, answers: [], authorities: [] };
      }
    }
    if (!rec) return nx;
    this.usedJobs.add(job);
    const answers: Answer[] = [];
    if (type === 'A' || type === 'ANY')
      for (const a of rec.a) answers.push({ type: 'A', name: question.name, ttl: rec.ttl, data: a });
    if (type === 'AAAA')
      for (const a of rec.aaaa) answers.push({ type: 'AAAA', name: question.name, ttl: rec.ttl, data: a });
    return { rcode: 0, answers, authorities: answers.length ? [] : [SOA] };
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
