/**
 * The cases the node's DNS server passes however it runs: in the process with node:dgram (server.test.ts) or
 * the addon's batched sockets (server-native.test.ts), and in its own thread (thread-native.test.ts): on loopback, asked by Debian's dig (UDP and TCP) and by raw datagrams: every name
 * form, NXDOMAIN with the SOA, NODATA, PTR, the ask path (known after a zone update, unknown, unreachable ->
 * the stale copy), truncation and the TCP retry, malformed input, and sources outside the allowed prefixes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';
import { pino } from 'pino';
import type { ServiceAddress } from '../../dataplane/snapshot.ts';
import type { NativeIo } from '../../dataplane/tun/native.ts';
import { bytes as b, remoteInstance } from './fixtures.ts';
import { DnsServer, type DnsCounters, type DnsServerOptions } from './server.ts';
import { buildZone, type ZoneData, type ZoneService } from './zone.ts';

/** A running server as the cases drive it. */
export interface ServerUnderTest {
  setZone(zone: ZoneData): void;
  counters(): Promise<DnsCounters>;
  /** Its first bound UDP port. */
  port: number;
  close(): Promise<void>;
}
export type StartServer = (o: Omit<DnsServerOptions, 'io'>) => Promise<ServerUnderTest>;

/** A server in this process, with UDP through `io`'s batched sockets, or node:dgram without it. */
export function inProcess(io?: NativeIo): StartServer {
  return async (o) => {
    const server = await DnsServer.start({ ...o, ...(io ? { io } : {}) });
    return {
      setZone: (zone) => server.setZone(zone),
      counters: () => Promise.resolve({ ...server.counters }),
      port: server.addresses()[0]!.port,
      close: () => server.close(),
    };
  };
}

const exec = promisify(execFile);
const inst = (job: string, n: number, ip4: string, ip6: string) =>
  remoteInstance(job, n, ip4, ip6, `10.16.0.${n + 2}`, `fc00::${n + 2}`);
const WEB = 'demo.oaknet.web.v1';
const rr: ServiceAddress[] = [
  { kind: 'rr', address: b('10.30.0.1') },
  { kind: 'rr', address: b('fdff:2000::1') },
  { kind: 'closest', address: b('10.30.0.4') },
];
const web: ZoneService = { job: WEB, instances: [inst(WEB, 0, '10.30.0.2', 'fdff::2')], addresses: rr };
/** A job with many instances: its instance-IP PTRs are many, its names' answers big (for truncation). */
const LATE = 'demo.oaknet.late.v1';
const late: ZoneService = {
  job: LATE,
  instances: [inst(LATE, 0, '10.30.1.2', 'fdff::102')],
  addresses: Array.from({ length: 60 }, (_, i) => ({
    kind: 'rr' as const,
    address: b(`fdff:2001::${i + 1}`),
  })),
};

/** The suite, against servers that `start` makes (`udp` names how they run). */
export function dnsServerCases(udp: string, start: StartServer): void {
  describe(`the node DNS server (${udp})`, () => {
    let server: ServerUnderTest;
    let port = 0;
    let asked: string[] = [];
    let outcome: 'known' | 'unknown' | 'unreachable' = 'unknown';
    const used: string[] = [];
    const services: ZoneService[] = [web];

    before(async () => {
      server = await start({
        listen: [{ host: '127.0.0.1', port: 0 }],
        allowedSources: [],
        ask: (job) => {
          asked.push(job);
          if (outcome === 'known') {
            services.push(late);
            server.setZone(buildZone(services, 2));
          }
          return Promise.resolve(outcome);
        },
        used: (jobs) => used.push(...jobs),
        log: pino({ level: 'silent' }),
      });
      server.setZone(buildZone(services, 1));
      port = server.port;
    });
    after(() => server.close());

    const dig = async (...args: string[]) =>
      (await exec('dig', ['@127.0.0.1', '-p', String(port), '+time=2', '+tries=1', ...args])).stdout.trim();
    const short = async (...args: string[]) => (await dig('+short', ...args)).split('\n').filter(Boolean);
    const status = async (...args: string[]) => /status: ([A-Z]+)/.exec(await dig(...args))?.[1];

    it('answers every name form, A and AAAA, over UDP and TCP, in the case asked', async () => {
      for (const tcp of [[], ['+tcp']]) {
        assert.deepEqual(await short(...tcp, 'web.v1.demo.oaknet.oakestra', 'A'), ['10.30.0.1']);
        assert.deepEqual(await short(...tcp, 'web.v1.demo.oaknet.oakestra', 'AAAA'), ['fdff:2000::1']);
        assert.deepEqual(await short(...tcp, 'web.v1.demo.oaknet.rr.oakestra', 'A'), ['10.30.0.1']);
        assert.deepEqual(await short(...tcp, 'web.v1.demo.oaknet.closest.oakestra', 'A'), ['10.30.0.4']);
        assert.deepEqual(await short(...tcp, '0.instance.web.v1.demo.oaknet.oakestra', 'AAAA'), ['fdff::2']);
      }
      const mixed = await dig('+noall', '+answer', 'WEB.v1.Demo.oaknet.oakestra', 'A');
      assert.match(mixed, /^WEB\.v1\.Demo\.oaknet\.oakestra\.\s+30\s+IN\s+A\s+10\.30\.0\.1$/);
    });

    it('answers a repeated question from its kept response, with the ID, RD bit and spelling of each query, until the zone changes', async () => {
      const sock = createSocket('udp4');
      const ask = (name: string, id: number, rd: boolean) =>
        new Promise<dnsPacket.DecodedPacket>((resolve) => {
          sock.once('message', (m) => resolve(dnsPacket.decode(m)));
          sock.send(
            dnsPacket.encode({
              type: 'query',
              id,
              flags: rd ? dnsPacket.RECURSION_DESIRED : 0,
              questions: [{ type: 'A', name }],
            }),
            port,
            '127.0.0.1',
          );
        });
      try {
        await ask('web.v1.demo.oaknet.oakestra', 1, true);
        const hits = (await server.counters()).cache_hits;
        const r = await ask('WEB.v1.Demo.OAKNET.oakestra', 0xbeef, false);
        assert.equal((await server.counters()).cache_hits, hits + 1, 'answered from the kept response');
        assert.equal(r.id, 0xbeef);
        assert.equal((r.flags ?? 0) & dnsPacket.RECURSION_DESIRED, 0);
        assert.ok((r.flags ?? 0) & dnsPacket.AUTHORITATIVE_ANSWER);
        assert.equal(r.questions?.[0]?.name, 'WEB.v1.Demo.OAKNET.oakestra');
        assert.deepEqual(
          r.answers?.map((a) => [a.name, a.type, 'data' in a ? a.data : undefined]),
          [['WEB.v1.Demo.OAKNET.oakestra', 'A', '10.30.0.1']],
        );
        // a new RR_IP in the tables: the kept response goes with the old zone
        const moved = {
          ...web,
          addresses: [{ kind: 'rr' as const, address: b('10.30.0.9') }, ...rr.slice(1)],
        };
        server.setZone(buildZone([moved], 2));
        const after = await ask('web.v1.demo.oaknet.oakestra', 2, true);
        assert.deepEqual(
          after.answers?.map((a) => ('data' in a ? a.data : undefined)),
          ['10.30.0.9'],
        );
        assert.equal(((after.flags ?? 0) & dnsPacket.RECURSION_DESIRED) !== 0, true);
      } finally {
        sock.close();
        server.setZone(buildZone(services, 3));
      }
    });

    it('PTR for ServiceIPs, instance IPs and namespace addresses', async () => {
      assert.deepEqual(await short('-x', '10.30.0.1'), ['web.v1.demo.oaknet.rr.oakestra.']);
      assert.deepEqual(await short('-x', 'fdff::2'), ['0.instance.web.v1.demo.oaknet.oakestra.']);
      assert.deepEqual(await short('-x', '10.16.0.2'), ['0.instance.web.v1.demo.oaknet.oakestra.']);
    });

    it('NXDOMAIN with the SOA for names that do not exist; NODATA for a type a name lacks', async () => {
      const nx = await dig('+noall', '+comments', '+authority', 'x.web.v1.demo.oaknet.oakestra', 'A');
      assert.match(nx, /status: NXDOMAIN/);
      assert.match(nx, /^oakestra\.\s+1\s+IN\s+SOA\s+ns\.oakestra\. hostmaster\.oakestra\./m);
      const nodata = await dig(
        '+noall',
        '+comments',
        '+authority',
        'web.v1.demo.oaknet.closest.oakestra',
        'AAAA',
      );
      assert.match(nodata, /status: NOERROR/);
      assert.match(nodata, /ANSWER: 0/);
      assert.match(nodata, /IN\s+SOA/);
      assert.equal(await status('2.instance.web.v1.demo.oaknet.oakestra', 'A'), 'NXDOMAIN');
    });

    it('asks about a job it does not hold: answered once the tables have it, NXDOMAIN when the cluster says no', async () => {
      asked = [];
      outcome = 'known';
      assert.deepEqual(await short('0.instance.late.v1.demo.oaknet.oakestra', 'A'), ['10.30.1.2']);
      assert.deepEqual(asked, [LATE]);
      outcome = 'unknown';
      assert.equal(await status('nope.v1.demo.oaknet.oakestra', 'A'), 'NXDOMAIN');
      assert.equal(await status('nope.v1.demo.oaknet.rr.oakestra', 'A'), 'NXDOMAIN', 'remembered for 1 s');
      assert.deepEqual(asked, [LATE, 'demo.oaknet.nope.v1'], 'each job asked once');
      assert.equal(
        await status('x.nope.v1.demo.oaknet.oakestra', 'A'),
        'NXDOMAIN',
        'no job shape: not asked',
      );
      assert.equal(asked.length, 2);
    });

    it('truncates an answer too big for UDP; dig retries over TCP and gets it whole', async () => {
      server.setZone(buildZone([web, late], 3));
      const out = await dig(
        '+noall',
        '+answer',
        '+comments',
        '+noedns',
        'late.v1.demo.oaknet.oakestra',
        'AAAA',
      );
      assert.match(out, /Truncated, retrying in TCP mode/);
      assert.equal(out.split('\n').filter((l) => /\sAAAA\s/.test(l)).length, 60);
      assert.ok((await server.counters()).truncated >= 1);
    });

    it('answers from its stale copy when the cluster cannot be reached', async () => {
      server.setZone(buildZone([web], 4)); // the tables forgot late (its interest expired)
      outcome = 'unreachable';
      assert.deepEqual(await short('0.instance.late.v1.demo.oaknet.oakestra', 'A'), ['10.30.1.2']);
      assert.ok((await server.counters()).stale_answers >= 1);
      outcome = 'unknown';
      assert.deepEqual(await short('0.instance.late.v1.demo.oaknet.oakestra', 'A'), ['10.30.1.2'], 'at once');
      assert.equal(
        await status('0.instance.late.v1.demo.oaknet.oakestra', 'A'),
        'NXDOMAIN',
        'the cluster said: gone',
      );
      // a job the tables list without instances (undeployed) leaves no stale copy either
      server.setZone(buildZone([web, late], 5));
      server.setZone(buildZone([web, { ...late, instances: [] }], 6));
      assert.equal(await status('0.instance.late.v1.demo.oaknet.oakestra', 'A'), 'NXDOMAIN');
    });

    it('refuses other names without upstreams, and other classes; FORMERR, NOTIMP and drops for bad input', async () => {
      assert.equal(await status('example.com', 'A'), 'REFUSED');
      assert.equal(await status('-c', 'CH', 'version.bind', 'TXT'), 'REFUSED');
      const sock = createSocket('udp4');
      const replies: Buffer[] = [];
      sock.on('message', (m) => replies.push(m));
      const send = (m: Buffer) => new Promise((r) => sock.send(m, port, '127.0.0.1', r));
      const query = dnsPacket.encode({
        type: 'query',
        id: 7,
        questions: [{ type: 'A', name: 'web.v1.demo.oaknet.oakestra' }],
      });
      const garbage = Buffer.from(query);
      garbage[5] = 2; // two questions announced, one present
      await send(garbage);
      const notimp = Buffer.from(query);
      notimp[2] = 0x28; // opcode 5 (UPDATE)
      await send(notimp);
      for (let i = 0; i < 2000; i++) {
        const r = Buffer.from(query);
        for (let k = 0; k < 3; k++) r[Math.floor(Math.random() * r.length)] = Math.floor(Math.random() * 256);
        await send(
          i % 2 ? r : Buffer.from(Array.from({ length: i % 40 }, () => Math.floor(Math.random() * 256))),
        );
        // sender and server share one process: let the server drain its socket before the buffer overflows
        if (i % 50 === 49)
          while (((c) => c.queries + c.refused_source)(await server.counters()) < i - 10)
            await new Promise((r) => setImmediate(r));
      }
      await send(query);
      const deadline = Date.now() + 5000;
      while (!replies.some((m) => m.readUInt16BE(0) === 7 && (m[3]! & 0xf) === 0) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      sock.close();
      const rcodes = replies.filter((m) => m.readUInt16BE(0) === 7).map((m) => m[3]! & 0xf);
      assert.ok(rcodes.includes(1), 'FORMERR');
      assert.ok(rcodes.includes(4), 'NOTIMP');
      assert.ok(
        rcodes.includes(0),
        `still answering after 2,000 bad packets: ${JSON.stringify([replies.length, await server.counters()])}`,
      );
      assert.ok((await server.counters()).formerr > 0 && (await server.counters()).dropped > 0);
    });

    it('keeps the interests of the jobs it answered alive', async () => {
      await short('web.v1.demo.oaknet.oakestra', 'A');
      const deadline = Date.now() + 3000;
      while (!used.includes(WEB) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(used.includes(WEB));
    });
  });

  describe(`the node DNS server (${udp}) and its clients`, () => {
    it('answers no source outside its prefixes', async () => {
      const server = await start({
        listen: [{ host: '127.0.0.1', port: 0 }],
        allowedSources: ['10.16.0.0/26'],
        loopback: false,
        ask: () => Promise.resolve('unknown'),
        log: pino({ level: 'silent' }),
      });
      try {
        const port = server.port;
        await assert.rejects(
          exec('dig', [
            '@127.0.0.1',
            '-p',
            String(port),
            '+time=1',
            '+tries=1',
            'web.v1.demo.oaknet.oakestra',
          ]),
        );
        assert.ok((await server.counters()).refused_source >= 1);
      } finally {
        await server.close();
      }
    });
  });

  describe(`the node DNS server (${udp}) forwarding to the node resolvers`, () => {
    /** A resolver on loopback: example.test has one A; big.test 60 AAAA (truncated over UDP); slow.test never. */
    async function upstream() {
      const { createServer } = await import('node:net');
      const queries: string[] = [];
      const answer = (m: Buffer, tcp: boolean): Buffer | undefined => {
        const q = dnsPacket.decode(m);
        const question = q.questions![0]!;
        queries.push(`${tcp ? 'tcp' : 'udp'} ${question.name} ${question.type}`);
        if (question.name === 'slow.test') return undefined;
        const answers =
          question.name === 'big.test'
            ? Array.from({ length: 60 }, (_, i) => ({
                type: 'AAAA' as const,
                name: 'big.test',
                ttl: 60,
                data: `2001:db8::${i + 1}`,
              }))
            : question.name === 'example.test'
              ? [{ type: 'A' as const, name: 'example.test', ttl: 60, data: '192.0.2.7' }]
              : [];
        const full = dnsPacket.encode({
          type: 'response',
          id: q.id ?? 0,
          flags: answers.length ? 0 : 3,
          questions: [question],
          answers,
        });
        if (!tcp && full.length > 512)
          return dnsPacket.encode({
            type: 'response',
            id: q.id ?? 0,
            flags: dnsPacket.TRUNCATED_RESPONSE,
            questions: [question],
          });
        return full;
      };
      const udp = createSocket('udp4');
      udp.on('message', (m, r) => {
        const a = answer(m, false);
        if (a) udp.send(a, r.port, r.address);
      });
      await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
      const port = udp.address().port;
      const tcp = createServer((c) => {
        c.on('data', (d: Buffer) => {
          const a = answer(d.subarray(2), true);
          if (!a) return;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(a.length);
          c.end(Buffer.concat([len, a]));
        });
      });
      await new Promise<void>((r) => tcp.listen(port, '127.0.0.1', () => r()));
      return { port, queries, close: () => (udp.close(), new Promise((r) => tcp.close(r))) };
    }

    it('forwards other names, caches the answers, retries truncated ones over TCP, SERVFAIL when nobody answers, ANY minimally', async () => {
      const up = await upstream();
      const server = await start({
        listen: [{ host: '127.0.0.1', port: 0 }],
        allowedSources: [],
        ask: () => Promise.resolve('unknown'),
        log: pino({ level: 'silent' }),
        upstreams: [{ host: '127.0.0.1', port: up.port }],
        forwardTimeoutMs: 300,
      });
      try {
        const port = server.port;
        const dig = async (...args: string[]) =>
          (
            await exec('dig', ['@127.0.0.1', '-p', String(port), '+time=3', '+tries=1', ...args])
          ).stdout.trim();
        assert.equal(await dig('+short', 'example.test', 'A'), '192.0.2.7');
        assert.equal(await dig('+short', 'EXAMPLE.test', 'A'), '192.0.2.7', 'from the cache');
        assert.equal(
          up.queries.filter((q) => q.startsWith('udp example.test')).length,
          1,
          'asked upstream once',
        );
        const big = await dig('+short', '+noedns', 'big.test', 'AAAA');
        assert.equal(
          big.split('\n').length,
          60,
          'the whole answer, through two TCP retries (upstream, then dig)',
        );
        assert.ok(
          up.queries.includes('tcp big.test AAAA'),
          'the truncated upstream answer was asked again over TCP',
        );
        assert.match(await dig('+noall', '+comments', 'slow.test', 'A'), /status: SERVFAIL/);
        assert.match(await dig('+noall', '+comments', 'nothing.test', 'A'), /status: NXDOMAIN/);
        assert.match(await dig('+noall', '+answer', 'example.test', 'ANY'), /HINFO\s+"RFC8482"/);
        assert.ok(!up.queries.some((q) => q.includes('ANY')), 'ANY is never forwarded');
        // the oakestra zone is never forwarded
        assert.match(await dig('+noall', '+comments', 'x.oakestra', 'A'), /status: NXDOMAIN/);
        assert.ok(!up.queries.some((q) => q.includes('oakestra')));
        assert.ok((await server.counters()).forwarded >= 3 && (await server.counters()).forward_failed === 1);
      } finally {
        await server.close();
        await up.close();
      }
    });
  });
}
