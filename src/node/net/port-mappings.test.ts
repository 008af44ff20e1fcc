import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidInputError } from '../../errors.ts';
import {
  formatPortMappings,
  parsePortMapping,
  parsePortMappings,
  validatePortMapping,
} from './port-mappings.ts';

describe('parsePortMappings', () => {
  it('reads upstream cases: 80, 80:80, 80:80/udp;90:100/udp', () => {
    assert.deepEqual(parsePortMappings('80'), [{ protocol: 'tcp', hostPort: 80, containerPort: 80 }]);
    assert.deepEqual(parsePortMappings('80:80'), [{ protocol: 'tcp', hostPort: 80, containerPort: 80 }]);
    assert.deepEqual(parsePortMappings('80:80/udp;90:100/udp'), [
      { protocol: 'udp', hostPort: 80, containerPort: 80 },
      { protocol: 'udp', hostPort: 90, containerPort: 100 },
    ]);
  });

  it('treats the empty string as no mappings', () => {
    assert.deepEqual(parsePortMappings(''), []);
  });

  it('defaults the protocol to tcp and the container port to the host port', () => {
    assert.deepEqual(parsePortMappings('8080/udp;9000:90'), [
      { protocol: 'udp', hostPort: 8080, containerPort: 8080 },
      { protocol: 'tcp', hostPort: 9000, containerPort: 90 },
    ]);
  });

  it('accepts the same host port for tcp and udp', () => {
    assert.equal(parsePortMappings('53/tcp;53/udp').length, 2);
  });

  it('tolerates whitespace around entries and normalises the protocol case', () => {
    assert.deepEqual(parsePortMappings(' 80:81/TCP ;  90/Udp '), [
      { protocol: 'tcp', hostPort: 80, containerPort: 81 },
      { protocol: 'udp', hostPort: 90, containerPort: 90 },
    ]);
  });

  it('accepts the port range ends 1 and 65535', () => {
    assert.deepEqual(parsePortMappings('1:65535'), [{ protocol: 'tcp', hostPort: 1, containerPort: 65535 }]);
  });

  for (const [input, mentions] of [
    ['80:80-80', '80:80-80'],
    [' ', 'empty entry'],
    ['hello', 'hello'],
    ['70000', '70000'],
    ['0', 'port 0'],
    ['80:0', 'port 0'],
    ['65536:80', '65536'],
    ['80;', 'empty entry'],
    ['80;;90', 'empty entry'],
    [';', 'empty entry'],
    ['80/sctp', 'tcp or udp'],
    ['80 : 90', '80 : 90'],
    ['-80', '-80'],
    ['+80', '+80'],
    ['80:', '80:'],
    [':80', ':80'],
    ['80/', '80/'],
    ['8.0', '8.0'],
    ['1e3', '1e3'],
    ['123456', '123456'],
    ['80;80/tcp', 'more than once'],
  ] as const) {
    it(`rejects ${JSON.stringify(input)} with InvalidInputError naming it`, () => {
      assert.throws(
        () => parsePortMappings(input),
        (err: unknown) =>
          err instanceof InvalidInputError &&
          err.code === 'E_INVALID_INPUT' &&
          err.message.includes(mentions),
      );
    });
  }

  it('round-trips through formatPortMappings', () => {
    const parsed = parsePortMappings('80;90:100/udp;7/TCP');
    assert.equal(formatPortMappings(parsed), '80:80/tcp;90:100/udp;7:7/tcp');
    assert.deepEqual(parsePortMappings(formatPortMappings(parsed)), parsed);
  });
});

describe('parsePortMapping / validatePortMapping', () => {
  it('parses one entry', () => {
    assert.deepEqual(parsePortMapping('443:8443/tcp'), {
      protocol: 'tcp',
      hostPort: 443,
      containerPort: 8443,
    });
  });

  it('validates mappings read from JSON', () => {
    assert.deepEqual(validatePortMapping({ protocol: 'udp', hostPort: 5, containerPort: 6 }), {
      protocol: 'udp',
      hostPort: 5,
      containerPort: 6,
    });
    for (const bad of [
      null,
      'x',
      { protocol: 'icmp', hostPort: 5, containerPort: 6 },
      { protocol: 'tcp', hostPort: 0, containerPort: 6 },
      { protocol: 'tcp', hostPort: 5.5, containerPort: 6 },
      { protocol: 'tcp', hostPort: 5 },
    ]) {
      assert.throws(() => validatePortMapping(bad), InvalidInputError);
    }
  });
});
