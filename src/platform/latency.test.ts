import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../errors.ts';
import { FakeRunner } from '../node/net/runner.ts';
import {
  netemScript,
  pairDelays,
  parseDelay,
  parseLatencyArg,
  probeNetem,
  siteDelay,
  siteOfNodes,
} from './latency.ts';

describe('parseDelay', () => {
  it('reads ms (default unit), s and us', () => {
    assert.equal(parseDelay('40'), 40);
    assert.equal(parseDelay('40ms'), 40);
    assert.equal(parseDelay('1.5s'), 1500);
    assert.equal(parseDelay('500us'), 0.5);
    assert.equal(parseDelay(' 0ms '), 0);
  });

  it('rejects garbage, negatives and absurd values', () => {
    for (const bad of ['', 'ms', '-1ms', '40 ms', '4e3', '10m', '61s']) {
      assert.throws(() => parseDelay(bad), InvalidInputError, bad);
    }
  });
});

describe('parseLatencyArg', () => {
  it('reads the INTRA,INTER shorthand', () => {
    assert.deepEqual(parseLatencyArg('2ms,40ms'), { latency: { intraSiteMs: 2, interSiteMs: 40 } });
  });

  it('reads sites, intra, inter and site pairs', () => {
    assert.deepEqual(parseLatencyArg('site-a=n1,n2; site-b=n3; intra=2ms; inter=40ms; site-a:site-b=25'), {
      latency: { intraSiteMs: 2, interSiteMs: 40, pairs: [{ a: 'site-a', b: 'site-b', ms: 25 }] },
      sites: { 'site-a': ['n1', 'n2'], 'site-b': ['n3'] },
    });
  });

  it('says what is wrong', () => {
    assert.throws(() => parseLatencyArg(''), /empty/);
    assert.throws(() => parseLatencyArg('2ms'), /INTRA,INTER/);
    assert.throws(() => parseLatencyArg('a=n1;a=n2'), /given twice/);
    assert.throws(() => parseLatencyArg('a='), /no nodes/);
    assert.throws(() => parseLatencyArg('a:b:c=3ms'), /SITE:SITE/);
    assert.throws(() => parseLatencyArg('inter=fast'), /bad delay/);
  });
});

describe('sites and delays', () => {
  const nodes = [
    { name: 'n1', ip: '198.18.0.11' },
    { name: 'n2', ip: '198.18.0.12' },
    { name: 'n3', ip: '198.18.0.13' },
  ];

  it('puts a node in no site into a site of its own', () => {
    const sites = siteOfNodes(['n1', 'n2', 'n3'], { a: ['n1', 'n2'] });
    assert.deepEqual(
      [...sites],
      [
        ['n1', 'a'],
        ['n2', 'a'],
        ['n3', 'n3'],
      ],
    );
  });

  it('makes two sites of the nodes for the INTRA,INTER shorthand, so both delays are used', () => {
    const latency = parseLatencyArg('2ms,40ms').latency;
    const sites = siteOfNodes(['n1', 'n2', 'n3'], {}, latency);
    assert.deepEqual(
      [...sites],
      [
        ['n1', 'a'],
        ['n2', 'a'],
        ['n3', 'b'],
      ],
    );
    assert.equal(siteDelay(latency, sites.get('n1')!, sites.get('n2')!), 2);
    assert.equal(siteDelay(latency, sites.get('n1')!, sites.get('n3')!), 40);
  });

  it('rejects unknown nodes, nodes in two sites, and pairs of unknown sites', () => {
    assert.throws(() => siteOfNodes(['n1'], { a: ['n9'] }), /unknown node n9/);
    assert.throws(() => siteOfNodes(['n1'], { a: ['n1'], b: ['n1'] }), /in sites a and b/);
    assert.throws(() => siteOfNodes(['n1'], {}, { pairs: [{ a: 'x', b: 'n1', ms: 1 }] }), /unknown site x/);
  });

  it('a site pair overrides inter in both directions', () => {
    const spec = { intraSiteMs: 1, interSiteMs: 40, pairs: [{ a: 'a', b: 'b', ms: 10 }] };
    assert.equal(siteDelay(spec, 'a', 'a'), 1);
    assert.equal(siteDelay(spec, 'a', 'b'), 10);
    assert.equal(siteDelay(spec, 'b', 'a'), 10);
    assert.equal(siteDelay(spec, 'a', 'c'), 40);
  });

  it('lists every directed pair with a non-zero delay', () => {
    const delays = pairDelays(nodes, { a: ['n1', 'n2'], b: ['n3'] }, { interSiteMs: 20 });
    assert.deepEqual(
      delays.map((d) => `${d.src}>${d.dst}=${d.ms}`),
      [
        '198.18.0.11>198.18.0.13=20',
        '198.18.0.12>198.18.0.13=20',
        '198.18.0.13>198.18.0.11=20',
        '198.18.0.13>198.18.0.12=20',
      ],
    );
    assert.equal(pairDelays(nodes, undefined, {}).length, 0);
    assert.equal(pairDelays(nodes, undefined, { interSiteMs: 5 }).length, 6); // each node is its own site
  });
});

describe('netem', () => {
  it('builds an HTB with one netem leaf per distinct delay and a filter per destination', () => {
    const lines = netemScript('eth0', [
      { dst: '198.18.0.12', ms: 20 },
      { dst: '198.18.0.13', ms: 40 },
      { dst: '198.18.0.14', ms: 20 },
    ]);
    assert.deepEqual(lines, [
      'qdisc add dev eth0 root handle 1: htb default 1',
      'class add dev eth0 parent 1: classid 1:1 htb rate 100gbit quantum 60000',
      'class add dev eth0 parent 1: classid 1:2 htb rate 100gbit quantum 60000',
      'qdisc add dev eth0 parent 1:2 handle 2: netem delay 20ms limit 100000',
      'class add dev eth0 parent 1: classid 1:3 htb rate 100gbit quantum 60000',
      'qdisc add dev eth0 parent 1:3 handle 3: netem delay 40ms limit 100000',
      'filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 198.18.0.12/32 flowid 1:2',
      'filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 198.18.0.13/32 flowid 1:3',
      'filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 198.18.0.14/32 flowid 1:2',
    ]);
    assert.deepEqual(netemScript('eth0', []), []);
  });

  it('probe reports why netem is unavailable', async () => {
    const runner = new FakeRunner((call) =>
      call.args.includes('netem')
        ? { fail: 'Error: Specified qdisc kind is unknown.', exitCode: 2 }
        : undefined,
    );
    const probe = await probeNetem(runner, 'x-ctl');
    assert.equal(probe.ok, false);
    assert.match(probe.ok ? '' : probe.reason, /Specified qdisc kind is unknown/);
    assert.deepEqual(await probeNetem(new FakeRunner(), 'x-ctl'), { ok: true });
  });
});
