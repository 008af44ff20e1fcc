#!/usr/bin/env node
// Installs what oaknet needs and is missing: Debian packages (when run as root on a Debian/Ubuntu machine),
// the npm packages (npm ci, which also builds the native addon) when node_modules is missing or older than the
// lock file, and else the addon alone (npm run build:native) when either of its builds is missing or older than
// its sources. First it checks that the lock file belongs to package.json. Plain Node, no dependencies, so it
// runs from a fresh clone. Used by `./oaknet`, `npm test` (pretest) and .ci/run.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
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
  'wireguard-go': 'wireguard-go', // the interoperability peer of the WireGuard tunnel (tests, bench)
  wg: 'wireguard-tools',
  nc: 'netcat-openbsd',
  dig: 'bind9-dnsutils', // the DNS server's tests ask it as a user would (issue 13)
  dnsperf: 'dnsperf', // the DNS bench's load generator (bench/dns.ts)
  dnsmasq: 'dnsmasq-base', // the DNS bench's reference server, serving the same names from a hosts file
  python3: 'python3',
  make: 'make',
  gcc: 'gcc', // the addon, and its sanitizer harnesses (native/test/fuzz_*.c: ASan and UBSan come with gcc)
  'g++': 'g++',
  'aarch64-linux-gnu-gcc': 'gcc-aarch64-linux-gnu', // the addon cross-compiled for ARM boxes (cross-arm64.test.ts)
};

function have(cmd) {
  return (
    spawnSync('sh', ['-c', `command -v ${cmd}`], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    }).status === 0
  );
}

// file -> Debian package that provides it (what no command stands for)
const FILES = {
  // the WireGuard harness (native/test/fuzz_wg.c) links libcrypto; the addon itself uses Node's own OpenSSL
  '/usr/include/openssl/evp.h': 'libssl-dev',
};

const missing = [
  ...new Set([
    ...Object.entries(SYSTEM)
      .filter(([cmd]) => !have(cmd))
      .map(([, pkg]) => pkg),
    ...Object.entries(FILES)
      .filter(([file]) => !existsSync(file))
      .map(([, pkg]) => pkg),
  ]),
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
const manifest = join(repo, 'package.json');
checkLockMatches();
const marker = join(repo, 'node_modules', '.package-lock.json');
const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs;
// Both builds of the addon: the production one and the test one (native/binding.gyp makes both).
const addons = ['oaknet_native.node', 'oaknet_native_test.node'].map((f) =>
  join(repo, 'native', 'build', 'Release', f),
);
if (stale) {
  say('installing npm packages (npm ci, which builds the addon too)');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: repo, stdio: 'inherit' });
} else if (existsSync(join(repo, 'native', 'binding.gyp'))) {
  // node_modules is in place: a missing or out-of-date build of either addon only needs node-gyp again
  const missingAddon = addons.find((f) => !existsSync(f));
  if (missingAddon) {
    say(`${missingAddon.slice(repo.length + 1)} is not built: building the addon (npm run build:native)`);
    execFileSync('npm', ['run', 'build:native'], { cwd: repo, stdio: 'inherit' });
  } else if (nativeSourcesNewerThan(Math.min(...addons.map((f) => statSync(f).mtimeMs)))) {
    say('native sources changed since the addon was built: rebuilding it (npm run build:native)');
    execFileSync('npm', ['run', 'build:native'], { cwd: repo, stdio: 'inherit' });
  }
}

/** Whether a file of native/ (sources, header, binding.gyp; not the build) changed after `mtimeMs`. */
function nativeSourcesNewerThan(mtimeMs) {
  const dirs = [join(repo, 'native'), join(repo, 'native', 'test')];
  return dirs.some((dir) =>
    readdirSync(dir).some((f) => /\.(c|h|gyp)$/.test(f) && statSync(join(dir, f)).mtimeMs > mtimeMs),
  );
}

/**
 * Fails (as npm ci would, but before anything is installed, and saying what differs) when the lock file does
 * not belong to package.json: its root entry must list the same dependencies, with the same specs, as
 * package.json does (a hand-edited package.json without `npm install` is caught here).
 */
function checkLockMatches() {
  const pkg = JSON.parse(readFileSync(manifest, 'utf8'));
  const root = JSON.parse(readFileSync(lock, 'utf8')).packages?.[''] ?? {};
  const kinds = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies'];
  const differ = kinds.flatMap((kind) => {
    const want = pkg[kind] ?? {};
    const have = root[kind] ?? {};
    return [...new Set([...Object.keys(want), ...Object.keys(have)])]
      .filter((name) => want[name] !== have[name])
      .map(
        (name) => `${kind}.${name}: package.json ${want[name] ?? '(none)'}, lock ${have[name] ?? '(none)'}`,
      );
  });
  if (differ.length) {
    process.stderr.write(
      `oaknet setup: package-lock.json does not match package.json (run npm install to update it):\n  ${differ.join('\n  ')}\n`,
    );
    process.exit(1);
  }
}
