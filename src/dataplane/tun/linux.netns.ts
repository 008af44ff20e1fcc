/**
 * LinuxTun tests that need a network namespace of their own: `linux.test.ts` runs this file with
 * `ip netns exec <throwaway namespace> node --import tsx`, because a TUN device is created in the namespace of
 * the process that opens it. Every device made here dies with the namespace, and each test also closes its own.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { IpAddress } from '../../addressing/ip.ts';
import { SystemError } from '../../errors.ts';
import {
  buildTcp,
  buildUdp,
  completePartialChecksum,
  fullChecksumsValid,
  withPartialChecksum,
} from '../packet/build.ts';
import { ParsedPacket, sameAddress, setDstAddress, setSrcAddress } from '../packet/index.ts';
import { OutboundBatch, endpoint } from '../tunnel/tunnel.ts';
import { GSO_REFUSALS_BEFORE_OFF, UdpTunnel } from '../tunnel/udp.ts';
import { Collector, buildIpv4Udp } from './fixtures.ts';
import { TestSegmenter } from './test-segmenter.ts';
import { LinuxTun, type LinuxTunOptions } from './linux.ts';
import { TunOffload } from './native.ts';
import { BatchBuilder, type PacketBatch } from './tun.ts';
import { type TunHarness, runTunConformance } from './tun.case.ts';

const execFileAsync = promisify(execFile);

async function ip(args: string[]): Promise<string> {
  return (await execFileAsync('ip', args)).stdout;
}

async function linkExists(name: string): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

let devices = 0;

/** A LinuxTun with the host side at 10.77.N.1/24 and a UDP socket bound there; peer 10.77.N.2:9000. */
async function openLinuxHarness(options: Partial<LinuxTunOptions> = {}): Promise<TunHarness> {
  const n = ++devices;
  const name = `oktun${n}`;
  const host = { address: `10.77.${n}.1`, port: 0 };
  const peer = { address: `10.77.${n}.2`, port: 9000 };
  const tun = await LinuxTun.open({ name, mtu: 1400, ...options });
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => {}); // sends after close fail with ENETUNREACH; nothing to do about them
  try {
    await ip(['addr', 'add', `${host.address}/24`, 'dev', name]);
    socket.bind(0, host.address);
    await once(socket, 'listening');
  } catch (err) {
    tun.close();
    socket.close();
    throw err;
  }
  host.port = socket.address().port;
  const receivedOnHost = new Collector<Buffer>();
  socket.on('message', (msg, from) => {
    if (from.address === peer.address && from.port === peer.port) receivedOnHost.push(msg);
  });
  return {
    tun,
    host,
    peer,
    receivedOnHost,
    sendFromHost: (payloads) => {
      for (const p of payloads) socket.send(p, peer.port, peer.address);
    },
    dispose: () => {
      tun.close();
      socket.close();
      return Promise.resolve();
    },
  };
}

runTunConformance('LinuxTun', () => openLinuxHarness());
runTunConformance('LinuxTun with offloads', () => openLinuxHarness({ offload: true }));
runTunConformance('LinuxTun (headroom 32, batches of 16)', () =>
  openLinuxHarness({ headroom: 32, batchSize: 16 }),
);

describe('LinuxTun in a network namespace', () => {
  it('sets the MTU, brings the device up, and removes it on close', async () => {
    const tun = await LinuxTun.open({ name: 'oktunmtu', mtu: 1280 });
    try {
      const [link] = JSON.parse(await ip(['-j', 'link', 'show', 'dev', 'oktunmtu'])) as Array<{
        mtu: number;
        flags: string[];
      }>;
      assert.equal(link?.mtu, 1280);
      assert.ok(link?.flags.includes('UP'));
      assert.equal(tun.name, 'oktunmtu');
    } finally {
      tun.close();
    }
    assert.equal(await linkExists('oktunmtu'), false);
  });

  it('lets the kernel choose a name when given none', async () => {
    const tun = await LinuxTun.open({ name: '' });
    try {
      assert.match(tun.name, /^tun\d+$/);
      assert.equal(await linkExists(tun.name), true);
    } finally {
      tun.close();
    }
  });

  it('opens two queues of one multi-queue device', async () => {
    const a = await LinuxTun.open({ name: 'oktunmq', multiQueue: true });
    try {
      const b = await LinuxTun.open({ name: 'oktunmq', multiQueue: true });
      b.close();
    } finally {
      a.close();
    }
  });

  it('fails with a SystemError carrying the errno for a bad name, a busy name, or a failed ip command', async () => {
    await assert.rejects(LinuxTun.open({ name: 'bad name' }), (err: unknown) => {
      assert.ok(err instanceof SystemError);
      assert.equal((err.cause as { code?: string }).code, 'EINVAL');
      return true;
    });
    await assert.rejects(LinuxTun.open({ name: 'x'.repeat(16) }), SystemError);
    const tun = await LinuxTun.open({ name: 'oktunbusy' });
    try {
      await assert.rejects(LinuxTun.open({ name: 'oktunbusy' }), (err: unknown) => {
        assert.ok(err instanceof SystemError);
        assert.equal((err.cause as { code?: string }).code, 'EBUSY');
        return true;
      });
    } finally {
      tun.close();
    }
    const failingIp = (): Promise<void> => Promise.reject(new Error('ip exploded'));
    await assert.rejects(LinuxTun.open({ name: 'oktunip', runIp: failingIp }), /ip exploded/);
    assert.equal(await linkExists('oktunip'), false, 'the fd was closed, so the device is gone');
  });

  it('reports through onError, and stops reading, when the device is deleted under it', async () => {
    const tun = await LinuxTun.open({ name: 'oktundel' });
    try {
      const failed = new Promise<Error>((resolve) => tun.start(() => {}, resolve));
      await ip(['link', 'del', 'dev', 'oktundel']);
      const err = await failed;
      assert.ok(err instanceof SystemError, String(err));
      const p = buildIpv4Udp('10.0.0.1', 1, '10.0.0.2', 2, Buffer.from('x'));
      assert.equal(
        tun.write({ buffer: p, offsets: Uint32Array.of(0), lengths: Uint32Array.of(p.length), count: 1 }),
        0,
      );
      assert.equal(tun.counters.rejected, 1);
    } finally {
      tun.close();
    }
  });
});

/**
 * A two-address NAT inside one namespace, so the kernel's own TCP client and server talk through the TUN:
 * the client at `a` dials `b` (routed into the TUN); the reflector rewrites that to `c` -> `a`, so the server
 * at `a` sees a connection from `c`, and its replies (c is routed into the TUN too) become `b` -> `a`. What it
 * does to each packet is what ProxyTUN does: a translation of the (super-)packet in place, then either the
 * packet written back whole (a local delivery) or cut into wire packets that are written as ordinary packets
 * (what arrives from the tunnel), which the TUN coalesces again.
 */
function startReflector(
  tun: LinuxTun,
  addresses: { a: Uint8Array; b: Uint8Array; c: Uint8Array },
  mode: 'whole' | 'segmented',
): { wirePackets: number; badChecksums: number; wholeSuperPackets: number } {
  const p = new ParsedPacket();
  const out = new BatchBuilder(1024);
  const toSegment = new OutboundBatch(1024);
  const segmenter = new TestSegmenter();
  const noEndpoint = Buffer.alloc(18);
  const stats = { wirePackets: 0, badChecksums: 0, wholeSuperPackets: 0 };
  const { a, b, c } = addresses;
  tun.start((batch: PacketBatch) => {
    out.reset(batch.buffer);
    toSegment.reset(batch.buffer);
    for (let i = 0; i < batch.count; i++) {
      const off = batch.offsets[i]!;
      const len = batch.lengths[i]!;
      const gso = batch.gso?.[i] ?? 0;
      if (len === 0 || !p.decode(batch.buffer, off, len) || p.addrLength !== a.length) continue;
      if (!sameAddress(batch.buffer, p.srcOffset, a, 0, a.length)) continue;
      p.l4ChecksumPartial = gso !== 0;
      const toB = sameAddress(batch.buffer, p.dstOffset, b, 0, b.length);
      if (!toB && !sameAddress(batch.buffer, p.dstOffset, c, 0, c.length)) continue;
      setSrcAddress(p, batch.buffer, toB ? c : b);
      setDstAddress(p, batch.buffer, a);
      if (mode === 'whole') {
        // the kernel trusts a partial checksum here, so check the translated one the way a NIC would use it
        if (gso !== 0) {
          stats.wholeSuperPackets++;
          const done = completePartialChecksum(batch.buffer.subarray(off, off + len));
          if (!fullChecksumsValid(done, 0, done.length)) stats.badChecksums++;
        }
        out.push(off, len, gso);
      } else {
        toSegment.pushTo(off, len, noEndpoint, 0, gso);
      }
    }
    for (let i = 0; i < toSegment.count;) {
      i = segmenter.fill(toSegment, i);
      const wire = segmenter.out;
      for (let k = 0; k < wire.count; k++) {
        stats.wirePackets++;
        if (!fullChecksumsValid(wire.buffer, wire.offsets[k]!, wire.lengths[k]!)) stats.badChecksums++;
      }
      assert.equal(tun.write(wire), wire.count);
    }
    if (out.count) assert.equal(tun.write(out), out.count);
  });
  return stats;
}

/** Sends `bytes` random bytes from a client at `from` to an echo server, and returns what came back. */
async function echoTransfer(
  server: { host: string; port: number },
  dial: string,
  from: string,
  bytes: number,
): Promise<{ sent: Buffer; received: Buffer }> {
  const sent = randomBytes(bytes);
  const echo = net.createServer((socket) => socket.pipe(socket));
  echo.listen(server.port, server.host);
  await once(echo, 'listening');
  try {
    const client = net.connect({ host: dial, port: server.port, localAddress: from });
    const chunks: Buffer[] = [];
    client.on('data', (d: Buffer) => chunks.push(d));
    await once(client, 'connect');
    client.end(sent);
    await Promise.race([
      once(client, 'close'),
      new Promise((_, reject) => setTimeout(() => reject(new Error('transfer timed out')), 30_000)),
    ]);
    return { sent, received: Buffer.concat(chunks) };
  } finally {
    echo.close();
  }
}

describe('LinuxTun with offloads in a network namespace', () => {
  it('opens with a virtio header and TSO (and reports the offloads the kernel granted)', async () => {
    const tun = await LinuxTun.open({ name: 'oktunoff', offload: true });
    try {
      const tso = TunOffload.Csum | TunOffload.Tso4 | TunOffload.Tso6;
      assert.equal(tun.offloads & tso, tso, `offloads ${tun.offloads}`);
    } finally {
      tun.close();
    }
    const plain = await LinuxTun.open({ name: 'oktunoff' });
    try {
      assert.equal(plain.offloads, -1);
    } finally {
      plain.close();
    }
  });

  let n = 0;
  for (const family of [4, 6] as const) {
    for (const mode of ['whole', 'segmented'] as const) {
      it(`carries TCP over IPv${family} intact both ways: super-packets read, translated, ${
        mode === 'whole' ? 'written back whole' : 'cut into segments that the TUN coalesces again'
      }`, async () => {
        const name = `oktcp${++n}`;
        const tun = await LinuxTun.open({ name, mtu: 1500, offload: true });
        try {
          const [a, b, c] =
            family === 4
              ? [`10.79.${n}.1`, `10.79.${n}.2`, `10.79.${n}.3`]
              : [`fd79:${n}::1`, `fd79:${n}::2`, `fd79:${n}::3`];
          await ip([
            ...(family === 6 ? ['-6'] : []),
            'addr',
            'add',
            `${a}/${family === 4 ? 24 : 64}`,
            'dev',
            name,
            ...(family === 6 ? ['nodad'] : []),
          ]);
          const bytes = (s: string) => IpAddress.parse(s).toBytes();
          const stats = startReflector(tun, { a: bytes(a), b: bytes(b), c: bytes(c) }, mode);
          const { sent, received } = await echoTransfer({ host: a, port: 7000 + n }, b, a, 8 << 20);
          assert.equal(received.length, sent.length);
          assert.equal(
            createHash('sha256').update(received).digest('hex'),
            createHash('sha256').update(sent).digest('hex'),
          );
          const oc = tun.offloadCounters;
          assert.ok(oc.superPacketsRead > 0, `no TSO super-packet was read: ${JSON.stringify(oc)}`);
          assert.equal(stats.badChecksums, 0);
          if (mode === 'whole') assert.equal(stats.wholeSuperPackets, oc.superPacketsRead);
          if (mode === 'segmented') {
            assert.ok(stats.wirePackets > oc.superPacketsRead, JSON.stringify({ stats, oc }));
            assert.ok(oc.coalesced > 0, `no write was coalesced: ${JSON.stringify(oc)}`);
            assert.ok(
              oc.writes < stats.wirePackets,
              `one write per segment: ${JSON.stringify({ stats, oc })}`,
            );
          }
        } finally {
          tun.close();
        }
      });
    }
  }
});

/** A batch of these packets, back to back in one buffer, with these gso words (default 0). */
function batchOf(packets: Buffer[], gso?: number[]): PacketBatch {
  const offsets = new Uint32Array(packets.length);
  let at = 0;
  packets.forEach((p, i) => {
    offsets[i] = at;
    at += p.length;
  });
  return {
    buffer: Buffer.concat(packets),
    offsets,
    lengths: Uint32Array.from(packets, (p) => p.length),
    count: packets.length,
    ...(gso ? { gso: Uint32Array.from(gso) } : {}),
  };
}

describe('Offload edge cases in a network namespace', () => {
  it('writes the packets of a coalesced super-packet that the kernel refuses one by one (here: the device is down)', async () => {
    const tun = await LinuxTun.open({ name: 'okrefuse', offload: true });
    try {
      await ip(['link', 'set', 'dev', 'okrefuse', 'down']);
      const segments = [0, 1, 2].map((k) =>
        buildTcp({
          src: '10.81.1.2',
          dst: '10.81.1.1',
          srcPort: 40000,
          dstPort: 5201,
          seq: 1 + k * 1000,
          dontFragment: true,
          payload: Buffer.alloc(1000, k),
        }),
      );
      assert.equal(tun.write(batchOf(segments)), 0);
      assert.deepEqual(tun.counters, { written: 0, rejected: 3, busy: 0 });
      assert.deepEqual(tun.offloadCounters, {
        superPacketsRead: 0,
        writes: 4, // the super-packet, then each segment on its own
        coalesced: 0,
        coalesceRefused: 1,
      });
    } finally {
      tun.close();
    }
  });

  it('reads a forwarded super-packet with the pseudo-header sum in its checksum field, whatever its writer left there', async () => {
    const name = 'okfwd';
    const forwarding = '/proc/sys/net/ipv4/ip_forward';
    const wasForwarding = fs.readFileSync(forwarding, 'utf8').trim();
    const tun = await LinuxTun.open({ name, offload: true });
    try {
      await ip(['addr', 'add', '10.82.1.1/24', 'dev', name]);
      fs.writeFileSync(forwarding, '1');
      const got = new Collector<{ packet: Buffer; gso: number }>();
      tun.start((batch) => {
        for (let i = 0; i < batch.count; i++) {
          const at = batch.offsets[i]!;
          const packet = batch.buffer.subarray(at, at + batch.lengths[i]!);
          if (packet.length > 40 && packet[9] === 6 && packet.readUInt16BE(22) === 5201)
            got.push({ packet: Buffer.from(packet), gso: batch.gso?.[i] ?? -1 });
        }
      });
      const payload = randomBytes(5000);
      // 10.82.1.3 is on the TUN's subnet: the kernel routes the packet straight back out of the TUN, as it is
      const sp = withPartialChecksum(
        buildTcp({
          src: '10.82.1.2',
          dst: '10.82.1.3',
          srcPort: 40000,
          dstPort: 5201,
          seq: 1,
          ttl: 64,
          dontFragment: true,
          payload,
        }),
      );
      sp.writeUInt16BE(sp.readUInt16BE(36) ^ 0x1234, 36); // a wrong partial sum, which nothing on the way checks
      assert.equal(tun.write(batchOf([sp], [1000])), 1);
      const [read] = await got.take(1);
      assert.equal(read!.gso, 1000, 'forwarded as one super-packet');
      assert.equal(read!.packet[8], 63, 'forwarded: one hop less');
      assert.deepEqual(read!.packet.subarray(40), payload);
      const done = completePartialChecksum(read!.packet);
      assert.ok(fullChecksumsValid(done, 0, done.length), 'the partial field is the pseudo-header sum');
    } finally {
      fs.writeFileSync(forwarding, wasForwarding);
      tun.close();
    }
  });

  it('receives a UDP GRO buffer of 100 datagrams (over the 64 of older kernels) as 100 datagrams', async () => {
    const name = 'okgro128';
    const tun = await LinuxTun.open({ name, offload: true });
    const tunnel = UdpTunnel.open({ offload: true, batchSize: 4 });
    try {
      assert.equal(tunnel.offloads.gro, true);
      await ip(['addr', 'add', '10.83.1.1/24', 'dev', name]);
      const got = new Collector<Buffer>();
      const batchSizes: number[] = [];
      tunnel.start((batch) => {
        batchSizes.push(batch.count);
        for (let i = 0; i < batch.count; i++) {
          const at = batch.offsets[i]!;
          got.push(Buffer.from(batch.buffer.subarray(at, at + batch.lengths[i]!)));
        }
      });
      const datagrams = Array.from({ length: 100 }, (_, i) => {
        const d = Buffer.alloc(500, i);
        d.writeUInt32BE(i, 0);
        return d;
      });
      // one USO super-packet written into the TUN: the kernel hands it to the UDP_GRO socket as one buffer
      const sp = withPartialChecksum(
        buildUdp({
          src: '10.83.1.2',
          dst: '10.83.1.1',
          srcPort: 4000,
          dstPort: tunnel.port,
          payload: Buffer.concat(datagrams),
        }),
      );
      assert.equal(tun.write(batchOf([sp], [500])), 1);
      assert.deepEqual(await got.take(100), datagrams);
      assert.deepEqual(batchSizes, [100], 'all in one buffer');
    } finally {
      tunnel.close();
      tun.close();
    }
  });

  it(`turns UDP GSO off after ${GSO_REFUSALS_BEFORE_OFF} refused runs in a row (segments over the route MTU), sending all anyway`, async () => {
    const name = 'okgsomtu';
    const tun = await LinuxTun.open({ name, mtu: 1000 });
    const tunnel = UdpTunnel.open({ offload: true });
    try {
      assert.equal(tunnel.offloads.gso, true);
      await ip(['addr', 'add', '10.84.1.1/24', 'dev', name]);
      const payload = Buffer.alloc(1200, 1);
      const send = () => {
        // two runs of 3 (one per peer) of datagrams too big for one IP packet on this route: each run is
        // refused (EMSGSIZE), its datagrams then go fragmented one by one
        const out = new OutboundBatch(6);
        out.reset(payload);
        for (const peer of ['10.84.1.2', '10.84.1.3'])
          for (let k = 0; k < 3; k++) out.pushTo(0, payload.length, endpoint(peer, 9000));
        assert.equal(out.sendThrough(tunnel), 6);
      };
      for (let call = 1; call < GSO_REFUSALS_BEFORE_OFF / 2; call++) send();
      assert.equal(tunnel.gsoRefused, GSO_REFUSALS_BEFORE_OFF - 2);
      assert.equal(tunnel.offloads.gso, true);
      send();
      assert.equal(tunnel.gsoRefused, GSO_REFUSALS_BEFORE_OFF);
      assert.equal(tunnel.offloads.gso, false);
      send();
      assert.equal(tunnel.gsoRefused, GSO_REFUSALS_BEFORE_OFF, 'no GSO tried any more');
      assert.deepEqual(tunnel.counters, {
        sent: 6 * (GSO_REFUSALS_BEFORE_OFF / 2 + 1),
        rejected: 0,
        busy: 0,
      });
    } finally {
      tunnel.close();
      tun.close();
    }
  });
});
