/**
 * @module cluster/mosquitto-config
 * An external mosquitto (2.0, as Debian ships it) as a cluster's broker, secured as the embedded one is:
 * `oaknet cluster --mqtt mqtts://<host>:<port> --write-mosquitto-config <dir>` writes a mosquitto.conf, an
 * access list and the PEM files mosquitto needs into a private directory (0700, files 0600), and rewrites
 * the PEMs when the cluster's certificate renews (then asks that mosquitto to reload them).
 *
 * One TLS 1.3 listener takes only clients with a certificate from the platform CA. A client's username is
 * its certificate's CN (use_identity_as_username) and so is its client ID (use_username_as_clientid), so no
 * one can take over another's session. A NetManager's CN is its worker ID; this cluster's is its identity
 * URI, which no worker ID can be (pki.ts commonNameOf). The access list is the topic contract of
 * broker-acl.ts, built from the same topic helpers: a NetManager publishes only to its own
 * `nodes/<worker>/net/<kind>` (its last will too: mosquitto checks a will against the list when it sends
 * it) and reads only its own results, `jobs/+/updates_available` and `oaknet/cluster`; the cluster may do
 * everything.
 *
 * What mosquitto cannot do that the embedded broker does, the cluster does (node-channel.ts): refuse a
 * retained publish (the cluster ignores and counts messages that were published retained: it speaks MQTT 5
 * with retain-as-published to an external broker), and tell a node of this cluster from a node of another
 * one (both chain to the platform CA: the cluster ignores and counts workers it did not enroll). A refused
 * publish is dropped silently by mosquitto (MQTT 3.1.1) or answered with "not authorized" (MQTT 5), and
 * counted only in mosquitto's log.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { userInfo } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage, InvalidInputError } from '../errors.ts';
import { NODE_TOPIC_KINDS, topics } from '../protocol/mqtt.ts';
import { isId } from '../protocol/names.ts';
import { ensurePrivateDir, readIfExists, writePrivateFile } from '../security/files.ts';
import { certificateCommonName } from '../security/pki.ts';
import type { ClusterCredentials, ClusterIdentity } from './credentials.ts';

export interface MosquittoConfigOptions {
  /** Where the files go (created 0700). */
  dir: string;
  /** The TLS listener's port. */
  port: number;
  /** The listener's address (default: every interface). */
  host?: string;
}

export interface MosquittoFiles {
  /** Absolute paths of what was written. */
  dir: string;
  conf: string;
  acl: string;
  ca: string;
  cert: string;
  key: string;
  /** Where mosquitto writes its PID (the cluster signals it to reload renewed certificates). */
  pidFile: string;
  /** The username mosquitto gives this cluster's own client: its certificate's CN. */
  clusterUser: string;
  /** How to run mosquitto with this configuration. */
  command: string;
}

/**
 * True when the cluster's certificate CN could also be a worker ID (a certificate issued before cluster
 * CNs were identity URIs): a NetManager with that worker ID would get the cluster's rights in mosquitto.
 */
export function clusterUserIsWorkerLike(id: Pick<ClusterIdentity, 'cert'>): boolean {
  const cn = certificateCommonName(id.cert);
  return cn === undefined || isId(cn);
}

/**
 * The access list: every NetManager (by its username, the certificate's CN = its worker ID) gets its own
 * topics of the contract; `clusterUser` gets everything. Pattern lines apply to every authenticated client
 * (plain `topic` lines before any `user` line would apply to anonymous clients only).
 */
export function mosquittoAcl(clusterUser: string): string {
  const me = '%u';
  return [
    '# oaknet: the cluster <-> NetManager topic contract as a mosquitto access list (src/cluster/broker-acl.ts).',
    "# A client's username is its certificate's CN (use_identity_as_username): a NetManager's is its worker ID.",
    '# mosquitto warns that two patterns have no %u: they are the same for every node, as intended.',
    '',
    '# every NetManager publishes only to its own topics (mosquitto cannot refuse a retained publish: the',
    '# cluster ignores messages from nodes that were published retained)',
    ...[...NODE_TOPIC_KINDS].map((kind) => `pattern write nodes/${me}/net/${kind}`),
    '# ... and reads only its own results, the job updates and the cluster info',
    `pattern read ${topics.subnetResult(me)}`,
    `pattern read ${topics.tableQueryResult(me)}`,
    `pattern read ${topics.jobUpdates('+')}`,
    `pattern read ${topics.clusterInfo}`,
    '',
    '# this cluster (its certificate CN, an identity URI: no worker ID can be this name)',
    `user ${clusterUser}`,
    'topic readwrite #',
    '',
  ].join('\n');
}

/** mosquitto.conf for `files` (absolute paths). */
export function mosquittoConf(
  files: Pick<MosquittoFiles, 'conf' | 'acl' | 'ca' | 'cert' | 'key' | 'pidFile'>,
  o: { port: number; host?: string; clusterId: string; user: string },
): string {
  return [
    `# oaknet cluster ${o.clusterId}: written by oaknet cluster --write-mosquitto-config (rewritten when the`,
    "# cluster's certificate renews; the cluster then sends this mosquitto SIGHUP to reload it). Run:",
    `#   mosquitto -c ${files.conf}`,
    '# Only clients with a certificate from the platform CA; the certificate CN is the username and the',
    '# client ID; the access list is the topic contract.',
    // only this user can read the files (0600): mosquitto started as root switches to it
    `user ${o.user}`,
    'per_listener_settings true',
    'persistence false',
    // without it every answer to a node waits for Nagle's algorithm and a delayed ACK (~40 ms)
    'set_tcp_nodelay true',
    `pid_file ${files.pidFile}`,
    '',
    o.host !== undefined ? `listener ${o.port} ${o.host}` : `listener ${o.port}`,
    `cafile ${files.ca}`,
    `certfile ${files.cert}`,
    `keyfile ${files.key}`,
    'tls_version tlsv1.3',
    'require_certificate true',
    'use_identity_as_username true',
    'use_username_as_clientid true',
    'allow_anonymous false',
    `acl_file ${files.acl}`,
    '',
  ].join('\n');
}

/**
 * Writes mosquitto.conf, acl, ca.crt (the platform CA), cluster.crt (this cluster's certificate chain) and
 * cluster.key into `o.dir` (0700; every file 0600, written atomically). Call it again after the cluster's
 * certificate renewed, then reloadMosquitto. Refuses a cluster certificate whose CN could be a worker ID.
 */
export function writeMosquittoConfig(
  id: Pick<ClusterIdentity, 'clusterId' | 'ca' | 'cert' | 'key'>,
  o: MosquittoConfigOptions,
): MosquittoFiles {
  const clusterUser = certificateCommonName(id.cert);
  if (clusterUser === undefined || isId(clusterUser))
    throw new InvalidInputError(
      `the cluster certificate's CN ${JSON.stringify(clusterUser)} could be a worker ID: renew the certificate first`,
    );
  if (!/^[\x21-\x7e]+$/.test(clusterUser))
    throw new InvalidInputError(
      `the cluster certificate's CN ${JSON.stringify(clusterUser)} cannot be a mosquitto username`,
    );
  const dir = resolve(o.dir);
  ensurePrivateDir(dir);
  const files = {
    dir,
    conf: join(dir, 'mosquitto.conf'),
    acl: join(dir, 'acl'),
    ca: join(dir, 'ca.crt'),
    cert: join(dir, 'cluster.crt'),
    key: join(dir, 'cluster.key'),
    pidFile: join(dir, 'mosquitto.pid'),
  };
  writePrivateFile(files.ca, id.ca);
  writePrivateFile(files.cert, id.cert);
  writePrivateFile(files.key, id.key);
  writePrivateFile(files.acl, mosquittoAcl(clusterUser));
  writePrivateFile(
    files.conf,
    mosquittoConf(files, {
      port: o.port,
      clusterId: id.clusterId,
      user: userInfo().username,
      ...(o.host !== undefined ? { host: o.host } : {}),
    }),
  );
  return { ...files, clusterUser, command: `mosquitto -c ${files.conf}` };
}

/**
 * The PID of the mosquitto that runs with the configuration in `dir`: the one its PID file names, if that
 * process is a mosquitto started with this mosquitto.conf (a stale PID file may name another process now).
 */
export function mosquittoPid(dir: string): number | undefined {
  const conf = join(resolve(dir), 'mosquitto.conf');
  const pid = Number(readIfExists(join(resolve(dir), 'mosquitto.pid'))?.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    if (basename(readlinkSync(`/proc/${pid}/exe`)) !== 'mosquitto') return undefined;
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.includes(conf) ? pid : undefined;
  } catch {
    return undefined; // no such process, or not ours to look at
  }
}

/**
 * Asks the mosquitto that runs with the configuration in `dir` to reload it (SIGHUP: certificates, key and
 * the access list); false when no such mosquitto runs (see mosquittoPid).
 */
export function reloadMosquitto(dir: string): boolean {
  const pid = mosquittoPid(dir);
  if (pid === undefined) return false;
  try {
    process.kill(pid, 'SIGHUP');
    return true;
  } catch {
    return false;
  }
}

/**
 * What `oaknet cluster --write-mosquitto-config` does: writes the files for `creds` (renewing first a
 * certificate whose CN could be a worker ID), and rewrites them and reloads mosquitto after each renewal.
 */
export async function keepMosquittoConfig(
  creds: ClusterCredentials,
  o: MosquittoConfigOptions,
  log: Logger,
): Promise<MosquittoFiles> {
  if (clusterUserIsWorkerLike(creds.current)) {
    log.info(
      "the cluster certificate's CN could be a worker ID: renewing it before writing mosquitto's files",
    );
    await creds.renew();
  }
  const files = writeMosquittoConfig(creds.current, o);
  log.info({ dir: files.dir, run: files.command }, 'mosquitto configuration written');
  creds.onRenewed((id) => {
    try {
      writeMosquittoConfig(id, o);
      if (reloadMosquitto(files.dir))
        log.info({ dir: files.dir }, 'mosquitto reloaded the renewed certificate');
      else
        log.warn(
          { dir: files.dir },
          'mosquitto files renewed, but no mosquitto runs with them: reload it (SIGHUP) before the old certificate expires',
        );
    } catch (err) {
      log.error({ err: errorMessage(err), dir: files.dir }, 'could not rewrite the mosquitto files');
    }
  });
  return files;
}
