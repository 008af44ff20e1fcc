/**
 * @module node/dns/forwarder
 * Names outside oakestra. go to the node's own resolvers (its /etc/resolv.conf), as the instances' stub
 * would have sent them: the query is passed on with a fresh random ID from one socket per family, the answer
 * is taken only from the upstream it was sent to with that ID and the same question, a truncated answer is
 * asked again over TCP, a silent upstream is left for the next after `timeoutMs`, and SERVFAIL comes when all
 * fail. Answers are cached (a count-bounded LRU, until the smallest TTL, at most 300 s; negative answers for
 * the SOA's minimum, at most 60 s). At most `maxInFlight` questions are out at once.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import dnsPacket, { type Question } from 'dns-packet';
import { IpAddress } from '../../addressing/ip.ts';

export interface Upstream {
  host: string;
  port: number;
}

/** The nameservers of a resolv.conf text (default: the node's), in order. */
export function systemResolvers(text?: string): Upstream[] {
  let conf = text;
  if (conf === undefined) {
    try {
      conf = readFileSync('/etc/resolv.conf', 'utf8');
    } catch {
      return [];
    }
  }
  const out: Upstream[] = [];
  for (const line of conf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    // a link-local address with a zone (fe80::1%eth0) names an interface this socket does not bind to: left out
    const ip = m && !m[1]!.includes('%') ? IpAddress.tryParse(m[1]!) : undefined;
    if (ip) out.push({ host: ip.toString(), port: 53 });
  }
  return out;
}

export interface ForwarderOptions {
  timeoutMs?: number;
  maxInFlight?: number;
  cacheEntries?: number;
}

interface Pending {
  resolve: (answer: Buffer | undefined) => void;
  key: string;
  upstream: Upstream;
  timer: NodeJS.Timeout;
}

const MAX_TTL_S = 300;
const MAX_NEGATIVE_S = 60;

function questionKey(q: Question): string {
  return `${q.name.toLowerCase().replace(/\.$/, '')}/${q.type}/${q.class ?? 'IN'}`;
}

export class Forwarder {
  private readonly sockets = new Map<4 | 6, Socket>();
  private readonly pending = new Map<number, Pending>();
  private readonly cache = new Map<string, { answer: Buffer; until: number }>();
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private readonly cacheEntries: number;
  counters = { forwarded: 0, cache_hits: 0, failed: 0, busy: 0 };

  constructor(
    private readonly upstreams: readonly Upstream[],
    o: ForwarderOptions = {},
  ) {
    this.timeoutMs = o.timeoutMs ?? 2000;
    this.maxInFlight = o.maxInFlight ?? 1000;
    this.cacheEntries = o.cacheEntries ?? 10_000;
  }

  /**
   * The upstream answer to the query `msg` (its question `q`), with the client's ID; undefined when no
   * upstream answered (the caller answers SERVFAIL).
   */
  async forward(msg: Buffer, q: Question): Promise<Buffer | undefined> {
    const key = questionKey(q);
    const id = msg.readUInt16BE(0);
    const hit = this.cache.get(key);
    if (hit && hit.until > Date.now()) {
      this.counters.cache_hits++;
      this.cache.delete(key);
      this.cache.set(key, hit);
      return withId(hit.answer, id);
    }
    if (this.pending.size >= this.maxInFlight) {
      this.counters.busy++;
      return undefined;
    }
    this.counters.forwarded++;
    for (const upstream of this.upstreams) {
      let answer = await this.udp(msg, key, upstream);
      if (answer && (answer[2]! & 0x02) !== 0) answer = await this.tcp(msg, key, upstream);
      if (!answer) continue;
      this.store(key, answer);
      return withId(answer, id);
    }
    this.counters.failed++;
    return undefined;
  }

  close(): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.resolve(undefined);
    }
    this.pending.clear();
    for (const s of this.sockets.values()) s.close();
    this.sockets.clear();
  }

  private socket(family: 4 | 6): Socket {
    let s = this.sockets.get(family);
    if (s) return s;
    s = createSocket(family === 4 ? 'udp4' : 'udp6');
    s.on('error', () => undefined);
    s.on('message', (m, rinfo) => this.onAnswer(m, rinfo.address, rinfo.port));
    s.unref();
    this.sockets.set(family, s);
    return s;
  }

  private udp(msg: Buffer, key: string, upstream: Upstream): Promise<Buffer | undefined> {
    let id = randomInt(0, 0x10000);
    for (let i = 0; this.pending.has(id) && i < 16; i++) id = randomInt(0, 0x10000);
    if (this.pending.has(id)) return Promise.resolve(undefined);
    const out = withId(msg, id);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(undefined);
      }, this.timeoutMs);
      this.pending.set(id, { resolve, key, upstream, timer });
      this.socket(upstream.host.includes(':') ? 6 : 4).send(out, upstream.port, upstream.host, (err) => {
        if (err) this.settle(id, undefined);
      });
    });
  }

  private onAnswer(m: Buffer, host: string, port: number): void {
    if (m.length < 12 || (m[2]! & 0x80) === 0) return;
    const id = m.readUInt16BE(0);
    const p = this.pending.get(id);
    if (!p || IpAddress.tryParse(host)?.toString() !== p.upstream.host || port !== p.upstream.port) return;
    let q: Question | undefined;
    try {
      q = dnsPacket.decode(m).questions?.[0];
    } catch {
      return;
    }
    if (!q || questionKey(q) !== p.key) return; // not the answer to this question: keep waiting
    this.settle(id, m);
  }

  private settle(id: number, answer: Buffer | undefined): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(answer);
  }

  private tcp(msg: Buffer, key: string, upstream: Upstream): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const c = connect({ host: upstream.host, port: upstream.port });
      const done = (answer: Buffer | undefined) => {
        c.destroy();
        resolve(answer);
      };
      c.setTimeout(this.timeoutMs, () => done(undefined));
      c.on('error', () => done(undefined));
      const len = Buffer.alloc(2);
      len.writeUInt16BE(msg.length);
      c.write(Buffer.concat([len, msg]));
      let buf = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const answer = buf.subarray(2, 2 + buf.readUInt16BE(0));
        try {
          const q = dnsPacket.decode(answer).questions?.[0];
          done(q && questionKey(q) === key ? Buffer.from(answer) : undefined);
        } catch {
          done(undefined);
        }
      });
    });
  }

  private store(key: string, answer: Buffer): void {
    let seconds: number;
    try {
      const p = dnsPacket.decode(answer);
      const rcode = answer[3]! & 0xf;
      const ttls = (p.answers ?? []).map((a) => ('ttl' in a && a.ttl !== undefined ? a.ttl : 0));
      if (rcode === 3 || ttls.length === 0) {
        const soa = p.authorities?.find((a) => a.type === 'SOA');
        if (!soa || soa.type !== 'SOA' || (rcode !== 0 && rcode !== 3)) return;
        seconds = Math.min(MAX_NEGATIVE_S, soa.ttl ?? 0, soa.data.minimum ?? 0);
      } else seconds = Math.min(MAX_TTL_S, ...ttls);
    } catch {
      return;
    }
    if (seconds <= 0) return;
    this.cache.delete(key);
    this.cache.set(key, { answer: Buffer.from(answer), until: Date.now() + seconds * 1000 });
    if (this.cache.size > this.cacheEntries) this.cache.delete(this.cache.keys().next().value!);
  }
}

function withId(msg: Buffer, id: number): Buffer {
  const out = Buffer.from(msg);
  out.writeUInt16BE(id, 0);
  return out;
}
