/** The wire views of a job (job-document.ts), through Registry.toDocument and Registry.toNetinfo. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deployed, setup, svc } from './registry.fixtures.ts';
import { Registry } from './registry.ts';

describe('Registry.toDocument and toNetinfo', () => {
  it("uses upstream's field names, with instances sorted and optional fields only when known", () => {
    const { registry } = setup();
    registry.deployService('64a0c0ffee0000000000beef', svc('doc', { extra_field: { nested: [1, 2] } }));
    registry.deployInstance('64a0c0ffee0000000000beef', 1, 'c2');
    registry.deployInstance('64a0c0ffee0000000000beef', 0, 'c1');
    registry.updateDeployStatus('64a0c0ffee0000000000beef', [deployed(1)]);
    const job = registry.getJob('64a0c0ffee0000000000beef')!;
    const doc = Registry.toDocument(job);

    assert.equal(doc._id, job.id);
    assert.equal(doc.job_name, 'shop.prod.doc.web');
    const spread = doc as Record<string, unknown>;
    assert.equal(spread.app_name, 'shop', 'descriptor fields are spread in');
    assert.deepEqual(spread.extra_field, { nested: [1, 2] });
    assert.deepEqual(doc.service_ip_list, [
      { IpType: 'RR', Address: job.rr.v4, Address_v6: job.rr.v6 },
      { IpType: 'Closest', Address: job.closest.v4, Address_v6: job.closest.v6 },
    ]);
    assert.deepEqual(
      doc.instance_list.map((i) => i.instance_number),
      [0, 1],
    );
    const [i0, i1] = doc.instance_list as [(typeof doc.instance_list)[0], (typeof doc.instance_list)[0]];
    assert.deepEqual(Object.keys(i0).sort(), [
      'cluster_id',
      'instance_ip',
      'instance_ip_v6',
      'instance_number',
    ]);
    assert.deepEqual(i0, {
      instance_number: 0,
      instance_ip: job.instances[0]!.ip.v4,
      instance_ip_v6: job.instances[0]!.ip.v6,
      cluster_id: 'c1',
    });
    assert.equal(i1.namespace_ip, '10.16.0.3');
    assert.equal(i1.namespace_ip_v6, 'fc00::3');
    assert.equal(i1.host_ip, '192.168.1.10');
    assert.equal(i1.host_port, 50103);
    assert.equal(typeof i1.host_port, 'number');
    assert.deepEqual(JSON.parse(JSON.stringify(doc)), doc, 'the document is plain JSON');
  });

  it("the job's identity wins over same-named descriptor fields", () => {
    const { registry } = setup();
    const job = registry.deployService(
      'real',
      svc('id', { _id: 'fake', job_name: 'fake', instance_list: [] }),
    );
    registry.deployInstance('real', 0, 'c1');
    const doc = Registry.toDocument(registry.getJob('real')!);
    assert.equal(doc._id, 'real');
    assert.equal(doc.job_name, job.name);
    assert.equal(doc.instance_list.length, 1);
  });

  it('the public netinfo view splits the job name', () => {
    const { registry } = setup();
    const job = registry.deployService('n', svc('info'));
    registry.deployInstance('n', 0, 'c1');
    const info = Registry.toNetinfo(registry.getJob('n')!);
    assert.deepEqual(
      { app: info.app_name, appNs: info.app_ns, svc: info.service_name, svcNs: info.service_ns },
      { app: 'shop', appNs: 'prod', svc: 'info', svcNs: 'web' },
    );
    assert.equal(info.job_name, job.name);
    assert.equal(info.system_job_id, 'n');
    assert.deepEqual(info.service_ip_list, Registry.toDocument(job).service_ip_list);
    assert.deepEqual(Object.keys(info.instance_list[0]!).sort(), [
      'cluster_id',
      'instance_ip',
      'instance_ip_v6',
      'instance_number',
    ]);
  });
});
