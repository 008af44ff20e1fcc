import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { caPin, CertificateAuthority, type Identity } from '../security/pki.ts';
import { TokenStore } from '../security/tokens.ts';
import { MemoryStore } from '../store/memory.ts';
import { NodeCredentials } from './credentials.ts';

const log = pino({ level: 'silent' });

describe('NodeCredentials: the node token goes only to a server that proves the pinned CA', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oaknet-node-creds-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** An https server presenting a certificate for `identity` from `ca` (and `ca` in its chain). */
  async function impostor(ca: CertificateAuthority, identity: Identity) {
    const { key, chain } = await ca.issueKeyAndChain(identity, 1);
    let requests = 0;
    const server = createServer({ key, cert: chain + ca.certPem, minVersion: 'TLSv1.3' }, (_req, res) => {
      requests++;
      res.end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
      requests: () => requests,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  it('refuses a server of another CA, and one of the platform that is no cluster, before sending anything', async () => {
    const { ca } = await CertificateAuthority.create();
    const { ca: other } = await CertificateAuthority.create('attacker');
    const token = new TokenStore(new MemoryStore(), caPin(ca.cert)).create('node').token;
    const cases: Array<[CertificateAuthority, Identity, RegExp]> = [
      [other, { kind: 'cluster', clusterId: 'c1' }, /does not present the CA this token was made for/],
      [ca, { kind: 'root' }, /is not a cluster service manager/],
    ];
    for (const [i, [issuer, identity, refusal]] of cases.entries()) {
      const server = await impostor(issuer, identity);
      try {
        const creds = new NodeCredentials({
          stateDir: join(dir, `n${i}`),
          clusterApi: server.url,
          token,
          log,
        });
        await assert.rejects(creds.forWorker('w1'), refusal);
        assert.equal(server.requests(), 0, 'no request, so no token, reached the server');
      } finally {
        await server.close();
      }
    }
  });

  it('takes the token of a registration when the command line gave none', async () => {
    const { ca } = await CertificateAuthority.create();
    const { ca: other } = await CertificateAuthority.create('attacker');
    const token = new TokenStore(new MemoryStore(), caPin(ca.cert)).create('node').token;
    const server = await impostor(other, { kind: 'cluster', clusterId: 'c1' });
    try {
      const creds = new NodeCredentials({ stateDir: join(dir, 'registered'), clusterApi: server.url, log });
      await assert.rejects(creds.forWorker('w1'), /no identity in .* yet: start the node once with --token/);
      // the registration's token is used, and checked against its pin like the command line's
      await assert.rejects(creds.forWorker('w1', token), /does not present the CA this token was made for/);
      assert.equal(server.requests(), 0);
    } finally {
      await server.close();
    }
  });
});
