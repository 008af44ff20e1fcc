/** The path builders of the root and cluster contracts: any string in, a path or an InvalidInputError out. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../errors.ts';
import { clusterPaths } from './cluster-api.ts';
import { encodePathSegment } from './names.ts';
import { rootPaths } from './root-api.ts';

/** Every builder that takes text, with its text as the only variable. */
const builders: Array<[string, (text: string) => string]> = [
  ['rootPaths.interest', rootPaths.interest],
  ['rootPaths.service', rootPaths.service],
  ['rootPaths.instance', (t) => rootPaths.instance(t, 0)],
  ['rootPaths.instancesByName', rootPaths.instancesByName],
  ['rootPaths.instancesByIp', rootPaths.instancesByIp],
  ['rootPaths.workerSubnet', rootPaths.workerSubnet],
  ['rootPaths.netinfoByName', rootPaths.netinfoByName],
  ['rootPaths.netinfoByIp', rootPaths.netinfoByIp],
  ['clusterPaths.deploymentOf', clusterPaths.deploymentOf],
];

describe('path builders', () => {
  it('turn text that is not well-formed Unicode into E_INVALID_INPUT, never a URIError', () => {
    for (const [name, build] of builders) {
      for (const bad of ['\ud800', '\udfff', 'shop_prod\ud83d', '\ude00x', 'a\udc00\ud800b']) {
        assert.throws(
          () => build(bad),
          (err: unknown) =>
            err instanceof InvalidInputError &&
            err.code === 'E_INVALID_INPUT' &&
            !(err instanceof URIError) &&
            /not well-formed Unicode/.test(err.message),
          `${name}(${JSON.stringify(bad)})`,
        );
      }
    }
  });

  it('encode everything else as one segment', () => {
    for (const [name, build] of builders) {
      for (const text of ['shop_prod_web_web', 'a/b?c#d%e f', 'é', '\ud83d\ude00', '']) {
        const path = build(text);
        assert.ok(path.includes(encodeURIComponent(text)), `${name}: ${path}`);
        assert.doesNotMatch(path, /[?#\s]/, name);
      }
    }
    assert.equal(
      rootPaths.instancesByName('shop_prod_web_web'),
      '/api/net/service/shop_prod_web_web/instances',
    );
    assert.equal(rootPaths.instance('j/1', 3), '/api/net/j%2F1/3');
    assert.equal(clusterPaths.deploymentOf('a.b.c.d'), '/api/net/deployment/a.b.c.d');
    assert.equal(encodePathSegment('\ud83d\ude00'), '%F0%9F%98%80');
  });
});
