/** Registry resolution and interests (interests.ts): resolving a job by name or address registers interest. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpAddress } from '../addressing/ip.ts';
import {
  cluster,
  deployed,
  invalid,
  jobName,
  notFound,
  pending,
  serviceAddresses,
  setup,
  svc,
} from './registry.fixtures.ts';

describe('Registry resolution and interests', () => {
  it('resolves by name and by every address of the job (RR, Closest, instance; both families)', () => {
    const { registry } = setup();
    cluster(registry, 'c1');
    cluster(registry, 'c2');
    registry.deployService('other', svc('other'));
    const job = registry.deployService('j', svc('target'));
    const inst = registry.deployInstance('j', 0, 'c1');
    assert.equal(registry.resolveByName(job.name).id, 'j');
    assert.deepEqual(registry.interestedClusters(job.name), [], 'no cluster named, no interest');
    for (const a of [...serviceAddresses(job), inst.ip.v4, inst.ip.v6]) {
      assert.equal(registry.resolveByIp(a).id, 'j', a);
    }
    // any spelling of an IPv6 address
    const expanded = IpAddress.parse(job.rr.v6).toBytes();
    const groups = Array.from({ length: 8 }, (_, i) =>
      ((expanded[2 * i]! << 8) | expanded[2 * i + 1]!).toString(16).toUpperCase().padStart(4, '0'),
    );
    assert.equal(registry.resolveByIp(groups.join(':')).id, 'j');

    registry.resolveByName(job.name, 'c1');
    registry.resolveByIp(inst.ip.v6, 'c2');
    assert.deepEqual(registry.interestedClusters(job.name).sort(), ['c1', 'c2']);
    assert.deepEqual(registry.interestedClusters(jobName('other')), []);
  });

  it('an unknown cluster is a NotFoundError and registers nothing', () => {
    const { registry } = setup();
    const job = registry.deployService('j', svc('s'));
    assert.throws(() => registry.resolveByName(job.name, 'ghost'), notFound);
    assert.throws(() => registry.resolveByIp(job.rr.v4, 'ghost'), notFound);
    assert.deepEqual(registry.interestedClusters(job.name), []);
    assert.throws(() => registry.removeInterest(job.name, 'ghost'), notFound);
  });

  it('unknown names and addresses are NotFoundError; text that is no address is InvalidInputError', () => {
    const { registry } = setup();
    registry.deployService('j', svc('s'));
    assert.throws(() => registry.resolveByName(jobName('missing')), notFound);
    assert.throws(() => registry.resolveByIp('10.30.200.200'), notFound);
    assert.throws(() => registry.resolveByIp('fdff:2000::ffff'), notFound);
    assert.throws(() => registry.resolveByIp('10.30.0'), invalid);
    assert.throws(() => registry.resolveByIp(''), invalid);
  });

  it('removeInterest stops the notifications to that cluster', () => {
    const { registry } = setup();
    cluster(registry, 'c1');
    const job = registry.deployService('j', svc('s'));
    registry.deployInstance('j', 0, 'c1');
    registry.resolveByName(job.name, 'c1');
    registry.removeInterest(job.name, 'c1');
    assert.deepEqual(registry.interestedClusters(job.name), []);
    registry.updateDeployStatus('j', [deployed(0)]);
    assert.equal(pending(registry, 'c1'), 0);
  });
});
