import { existsSync } from 'node:fs';
import path from 'node:path';
import { validateOrThrow, validatorFor } from './schemas.js';

export interface Config {
  readonly port: number;
  /** 127.0.0.1 unless told otherwise: without tokens the daemon trusts its callers. */
  readonly host: string;
  /** The mount directory whose roots hold the volumes. */
  readonly mnt: string;
  readonly logLevel: 'error' | 'warn' | 'info' | 'debug' | 'silent';
  readonly logFormat?: 'json' | 'pretty';
  /** A volume or root lock whose holder stopped refreshing it this long ago is stale (recovered). */
  readonly lockStaleMs: number;
  /** Full rescans of the tree on top of the watcher (network filesystems miss inotify events); 0 = never. */
  readonly rescanIntervalMs: number;
  /** The longest any external tool may run. */
  readonly toolTimeoutMs: number;
  /** A download from a URL, or an upload's body, that sends nothing for this long fails; a JSON body must arrive whole within it (408). */
  readonly transferIdleTimeoutMs: number;
  /** A resumable upload or a cloud-init file set untouched this long is abandoned (its volume removed). */
  readonly uploadIdleTimeoutMs: number;
  /** Watch the tree for changes made by hand (off only in benchmarks of the baseline). */
  readonly watch: boolean;
  /** The iSCSI backend; detected when not set (LIO when configfs has a target directory); `none` disables exports. */
  readonly exporter?: 'lio' | 'tgt' | 'none';
  /** `address:port` the targets listen on, given to hypervisors in the export answer. */
  readonly iscsiPortal: string;
  /** tgtd's control port (`tgtd -C`, `tgtadm -C`); tgt's own default when not set. */
  readonly tgtControlPort?: number;
  /** The daemon starts its own tgtd (when none answers) and stops it when it stops. */
  readonly tgtManage: boolean;
  /** How often export markers are touched and markers and targets reconciled. */
  readonly exportHeartbeatMs: number;
  /** A marker not touched for this long, whose target is gone, belongs to a dead export and is dropped. */
  readonly exportStaleMs: number;
  /** Attach user limit of a shareable volume (a volume that is not shareable has 1). */
  readonly shareableUserLimit: number;
  /** The API token file (schemas/tokens.json); without it every caller is trusted. */
  readonly tokensFile?: string;
  /** Listen beyond loopback even without tokens (the operator accepts that callers are trusted). */
  readonly allowInsecure: boolean;
  /** The RBD pool of Ceph volumes; Ceph volumes are refused (501) without it. */
  readonly cephPool?: string;
  /** The ceph.conf the `rbd` tool and tgt's rbd backing store read (cluster address, keyring). */
  readonly cephConf: string;
  /** The client id (`client.<id>`) the daemon acts as in the cluster. */
  readonly cephId: string;
}

export const DEFAULT_PORT = 7772;
export const DEFAULT_HOST = '127.0.0.1';

/** Flags win over environment variables; both are optional. */
export interface ConfigSources {
  flags: { port?: string; host?: string; mnt?: string; logLevel?: string; logFormat?: string; tokens?: string; allowInsecure?: boolean };
  env: NodeJS.ProcessEnv;
  /** The mount directory used when neither --mnt nor ELEMENTO_MNT says one. */
  defaultMnt: string;
}

type Flags = ConfigSources['flags'];

/**
 * Every setting: the environment variable (and the flag, which wins) the operator sets it with, how its
 * text is read, and its value when unset (else the schema's default, or none).
 */
const SETTINGS: Record<string, { env: string; flag?: keyof Flags; read: 'int' | 'text' | 'path' | 'bool'; unset?: (defaultMnt: string) => unknown }> = {
  port: { env: 'ELEMENTO_PORT', flag: 'port', read: 'int', unset: () => DEFAULT_PORT },
  host: { env: 'ELEMENTO_HOST', flag: 'host', read: 'text', unset: () => DEFAULT_HOST },
  mnt: { env: 'ELEMENTO_MNT', flag: 'mnt', read: 'path', unset: (defaultMnt) => path.resolve(defaultMnt) },
  logLevel: { env: 'ELEMENTO_LOG_LEVEL', flag: 'logLevel', read: 'text', unset: () => 'info' },
  logFormat: { env: 'ELEMENTO_LOG_FORMAT', flag: 'logFormat', read: 'text' },
  lockStaleMs: { env: 'ELEMENTO_LOCK_STALE_MS', read: 'int' },
  rescanIntervalMs: { env: 'ELEMENTO_RESCAN_MS', read: 'int' },
  toolTimeoutMs: { env: 'ELEMENTO_TOOL_TIMEOUT_MS', read: 'int' },
  exporter: { env: 'ELEMENTO_EXPORTER', read: 'text' },
  iscsiPortal: { env: 'ELEMENTO_ISCSI_PORTAL', read: 'text' },
  tgtControlPort: { env: 'ELEMENTO_TGT_CONTROL_PORT', read: 'int' },
  tgtManage: { env: 'ELEMENTO_TGT_MANAGE', read: 'bool' },
  exportHeartbeatMs: { env: 'ELEMENTO_EXPORT_HEARTBEAT_MS', read: 'int' },
  exportStaleMs: { env: 'ELEMENTO_EXPORT_STALE_MS', read: 'int' },
  shareableUserLimit: { env: 'ELEMENTO_SHAREABLE_USER_LIMIT', read: 'int' },
  transferIdleTimeoutMs: { env: 'ELEMENTO_TRANSFER_IDLE_TIMEOUT_MS', read: 'int' },
  uploadIdleTimeoutMs: { env: 'ELEMENTO_UPLOAD_IDLE_TIMEOUT_MS', read: 'int' },
  tokensFile: { env: 'ELEMENTO_TOKENS', flag: 'tokens', read: 'path' },
  allowInsecure: { env: 'ELEMENTO_ALLOW_INSECURE', flag: 'allowInsecure', read: 'bool' },
  cephPool: { env: 'ELEMENTO_CEPH_POOL', read: 'text' },
  cephConf: { env: 'ELEMENTO_CEPH_CONF', read: 'path' },
  cephId: { env: 'ELEMENTO_CEPH_ID', read: 'text' },
};

/** The name the operator wrote a setting under: its flag when given, else its variable. */
function nameOf(key: string, flags: Flags): string {
  const { flag, env } = SETTINGS[key] ?? { env: key };
  return flag && flags[flag] !== undefined ? `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : env;
}

/** A setting's text as its kind reads it; undefined when unset. */
function readSetting(name: string, read: 'int' | 'text' | 'path' | 'bool', value: string | boolean | undefined): unknown {
  if (typeof value === 'boolean') return value;
  if (value === undefined || value === '') return undefined;
  if (read === 'path') return path.resolve(value);
  if (read === 'int') {
    if (!/^\d+$/.test(value)) throw new Error(`invalid configuration: ${name} must be a whole number, not '${value}'`);
    return Number(value);
  }
  if (read === 'bool') {
    if (/^(1|true|yes)$/i.test(value)) return true;
    if (/^(0|false|no)$/i.test(value)) return false;
    throw new Error(`invalid configuration: ${name} must be 1 or 0, not '${value}'`);
  }
  return value;
}

/** One sentence for the first schema error of `raw`, naming the flag or variable the operator set and the value refused. */
function configError(raw: Record<string, unknown>, flags: Flags): Error {
  const err = validatorFor('config').errors![0];
  const key = err.instancePath.replace(/^\//, '');
  const allowed = (err.params as { allowedValues?: unknown[] }).allowedValues;
  const rule = allowed ? `must be one of ${allowed.join(', ')}` : err.keyword === 'pattern' ? 'is not of the accepted form' : (err.message ?? 'is invalid');
  return new Error(`invalid configuration: ${nameOf(key, flags)} ${rule}, not '${String(raw[key])}'`);
}

/** Builds the configuration, checks it against schemas/config.json and freezes it. */
export function loadConfig({ flags, env, defaultMnt }: ConfigSources): Config {
  // An empty variable is unset (as in a systemd unit); an empty flag is a mistake, not the working directory.
  // (--tokens "$UNSET" would otherwise run the daemon without tokens, --log-level "" at the default, without a word.)
  for (const [key, value] of Object.entries(flags))
    if (value === '') throw new Error(`invalid configuration: --${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must not be empty`);
  const raw: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SETTINGS)) {
    const given = (setting.flag ? flags[setting.flag] : undefined) ?? env[setting.env];
    const value = readSetting(nameOf(key, flags), setting.read, given) ?? setting.unset?.(defaultMnt);
    if (value !== undefined) raw[key] = value;
  }
  refuseUnknown(env);
  if (!validatorFor('config')(raw)) throw configError(raw, flags);
  refuseConflicts(raw as unknown as Config, env);
  return Object.freeze(raw as unknown as Config);
}

/** ELEMENTO_* variables that are not settings of the daemon: the crash tests' fault points and the test and bench harnesses' own. */
const NOT_SETTINGS = /^ELEMENTO_(FAULTS$|TEST_|FUZZ_|BENCH_)/;

/** A misspelt variable (ELEMENTO_RESCAN_INTERVAL_MS) would otherwise be ignored without a word. */
function refuseUnknown(env: NodeJS.ProcessEnv): void {
  const known = new Set(Object.values(SETTINGS).map((s) => s.env));
  for (const [name, value] of Object.entries(env))
    if (name.startsWith('ELEMENTO_') && value !== '' && !known.has(name) && !NOT_SETTINGS.test(name))
      throw new Error(`invalid configuration: ${name} is not a setting of the daemon (misspelt?); its value is not repeated here, in case it is a secret`);
}

/** Settings that contradict each other, or that could only be ignored: each named with the one it needs. */
function refuseConflicts(config: Config, env: NodeJS.ProcessEnv): void {
  const portalPort = Number(config.iscsiPortal.slice(config.iscsiPortal.lastIndexOf(':') + 1));
  if (portalPort < 1 || portalPort > 65535)
    throw new Error(`invalid configuration: ELEMENTO_ISCSI_PORTAL's port must be 1 to 65535, not '${config.iscsiPortal}'`);
  if (config.exporter && config.exporter !== 'tgt')
    for (const name of ['ELEMENTO_TGT_MANAGE', 'ELEMENTO_TGT_CONTROL_PORT'])
      if (env[name]) throw new Error(`invalid configuration: ${name} applies to the tgt exporter, not to ELEMENTO_EXPORTER='${config.exporter}'`);
  if (!config.cephPool)
    for (const name of ['ELEMENTO_CEPH_CONF', 'ELEMENTO_CEPH_ID'])
      if (env[name]) throw new Error(`invalid configuration: ${name} is set but ELEMENTO_CEPH_POOL is not (Ceph volumes are off without a pool), not '${env[name]}'`);
  if (config.cephPool && env.ELEMENTO_CEPH_CONF && !existsSync(config.cephConf))
    throw new Error(`invalid configuration: ELEMENTO_CEPH_CONF names no file, not '${env.ELEMENTO_CEPH_CONF}'`);
}

/** A full configuration for tests and embedding, with the defaults filled in. */
export function configWith(overrides: Partial<Config> & { mnt: string }): Config {
  return Object.freeze(validateOrThrow<Config>('config', { port: 0, host: DEFAULT_HOST, ...overrides }));
}
