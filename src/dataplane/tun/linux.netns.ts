/**
 * LinuxTun tests that need a network namespace of their own: `linux.test.ts` runs this file with
 * `ip netns exec <throwaway namespace> node --import tsx`, because a TUN device is created in the namespace of
 * the process that opens it. Every device made here dies with the namespace, and each test also closes its own.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { SystemError } from '../../errors.ts';
import { Collector, buildIpv4Udp } from './fixtures.ts';
import { LinuxTun, type LinuxTunOptions } from './linux.ts';
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
