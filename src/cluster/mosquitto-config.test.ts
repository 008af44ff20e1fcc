import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CertificateAuthority, certificateCommonName } from '../security/pki.ts';
import {
  clusterUserIsWorkerLike,
  mosquittoAcl,
  mosquittoPid,
  reloadMosquitto,
  writeMosquittoConfig,
} from './mosquitto-config.ts';

describe('mosquitto configuration', () => {
  it("a cluster's CN is its identity URI, which no worker ID (a node's CN) can be", async () => {
    const { ca } = await CertificateAuthority.create();
    const cluster = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: 'c1' }, 1);
    const node = await ca.issueKeyAndChain({ kind: 'node', clusterId: 'c1', workerId: 'c1' }, 1);
    const operator = await ca.issueKeyAndChain({ kind: 'operator', name: 'w1' }, 1);
    assert.equal(certificateCommonName(cluster.chain), 'urn:oaknet:cluster:c1');
    assert.equal(certificateCommonName(node.chain), 'c1');
    assert.equal(certificateCommonName(operator.chain), 'urn:oaknet:operator:w1');
    assert.equal(clusterUserIsWorkerLike({ cert: cluster.chain }), false);
    assert.equal(clusterUserIsWorkerLike({ cert: node.chain }), true);
  });

  it('the access list gives each node its own topics by %u and the cluster everything', () => {
    const acl = mosquittoAcl('urn:oaknet:cluster:c1');
    assert.match(acl, /^pattern write nodes\/%u\/net\/service\/deployed$/m);
    assert.match(acl, /^pattern read nodes\/%u\/net\/subnetwork\/result$/m);
    assert.match(acl, /^pattern read jobs\/\+\/updates_available$/m);
    assert.doesNotMatch(
      acl,
      /^pattern write (?!nodes\/%u\/net\/)/m,
      'nodes write only below their own topics',
    );
    assert.match(acl, /^user urn:oaknet:cluster:c1\ntopic readwrite #$/m);
  });

  it('writes the files 0600 in a 0700 directory, refuses a worker-like CN, signals no stranger', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'oaknet-mosq-conf-'));
    try {
      const { ca } = await CertificateAuthority.create();
      const c = await ca.issueKeyAndChain({ kind: 'cluster', clusterId: 'c1' }, 1);
      const id = { clusterId: 'c1', ca: ca.certPem, cert: c.chain, key: c.key };
      const files = writeMosquittoConfig(id, { dir: join(dir, 'm'), port: 18883, host: '127.0.0.1' });
      assert.equal(statSync(files.dir).mode & 0o777, 0o700);
      for (const f of [files.conf, files.acl, files.ca, files.cert, files.key])
        assert.equal(statSync(f).mode & 0o777, 0o600);
      assert.match(readFileSync(files.conf, 'utf8'), /^listener 18883 127\.0\.0\.1$/m);
      const old = await ca.issueKeyAndChain({ kind: 'node', clusterId: 'x', workerId: 'c1' }, 1);
      assert.throws(() => writeMosquittoConfig({ ...id, cert: old.chain }, { dir, port: 1 }), /worker ID/);
      // a PID file that names a process which is not this mosquitto: never signalled
      const { writePrivateFile } = await import('../security/files.ts');
      writePrivateFile(files.pidFile, `${process.pid}\n`);
      assert.equal(mosquittoPid(files.dir), undefined);
      assert.equal(reloadMosquitto(files.dir), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
