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
  /** A download from a URL that sends nothing for this long fails (502). */
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

function intOrUndefined(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new Error(`${name} must be a whole number, not '${value}'`);
  return Number(value);
}

function flagOrUndefined(name: string, value: string | undefined): boolean | undefined {
  if (value === undefined || value === '') return undefined;
  if (/^(1|true|yes)$/i.test(value)) return true;
  if (/^(0|false|no)$/i.test(value)) return false;
  throw new Error(`${name} must be 1 or 0, not '${value}'`);
}

/** What the operator writes for each setting: its flag (when it has one) and its environment variable. */
const NAMES: Record<string, [flag: keyof ConfigSources['flags'] | null, variable: string]> = {
  port: ['port', 'ELEMENTO_PORT'],
  host: ['host', 'ELEMENTO_HOST'],
  mnt: ['mnt', 'ELEMENTO_MNT'],
  logLevel: ['logLevel', 'ELEMENTO_LOG_LEVEL'],
  logFormat: ['logFormat', 'ELEMENTO_LOG_FORMAT'],
  lockStaleMs: [null, 'ELEMENTO_LOCK_STALE_MS'],
  rescanIntervalMs: [null, 'ELEMENTO_RESCAN_MS'],
  toolTimeoutMs: [null, 'ELEMENTO_TOOL_TIMEOUT_MS'],
  exporter: [null, 'ELEMENTO_EXPORTER'],
  iscsiPortal: [null, 'ELEMENTO_ISCSI_PORTAL'],
  tgtControlPort: [null, 'ELEMENTO_TGT_CONTROL_PORT'],
  exportHeartbeatMs: [null, 'ELEMENTO_EXPORT_HEARTBEAT_MS'],
  exportStaleMs: [null, 'ELEMENTO_EXPORT_STALE_MS'],
  shareableUserLimit: [null, 'ELEMENTO_SHAREABLE_USER_LIMIT'],
  transferIdleTimeoutMs: [null, 'ELEMENTO_TRANSFER_IDLE_TIMEOUT_MS'],
  uploadIdleTimeoutMs: [null, 'ELEMENTO_UPLOAD_IDLE_TIMEOUT_MS'],
  tokensFile: ['tokens', 'ELEMENTO_TOKENS'],
  cephPool: [null, 'ELEMENTO_CEPH_POOL'],
  cephConf: [null, 'ELEMENTO_CEPH_CONF'],
  cephId: [null, 'ELEMENTO_CEPH_ID'],
};

/** One sentence for the first schema error of `raw`, naming the flag or variable the operator set and the value refused. */
function configError(raw: Record<string, unknown>, flags: ConfigSources['flags']): Error {
  const err = validatorFor('config').errors![0];
  const key = err.instancePath.replace(/^\//, '');
  const [flag, variable] = NAMES[key] ?? [null, key];
  const name = flag && flags[flag] !== undefined ? `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : variable;
  const allowed = (err.params as { allowedValues?: unknown[] }).allowedValues;
  const rule = allowed ? `must be one of ${allowed.join(', ')}` : err.keyword === 'pattern' ? 'is not of the accepted form' : (err.message ?? 'is invalid');
  return new Error(`invalid configuration: ${name} ${rule}, not '${String(raw[key])}'`);
}

/** Builds the configuration, checks it against schemas/config.json and freezes it. */
export function loadConfig({ flags, env, defaultMnt }: ConfigSources): Config {
  // An empty variable is unset (as in a systemd unit); an empty flag is a mistake, not the working directory.
  for (const [flag, value] of [['--port', flags.port], ['--host', flags.host], ['--mnt', flags.mnt]] as const)
    if (value === '') throw new Error(`invalid configuration: ${flag} must not be empty`);
  const raw: Record<string, unknown> = {
    port: intOrUndefined('the port', flags.port ?? env.ELEMENTO_PORT) ?? DEFAULT_PORT,
    host: flags.host ?? (env.ELEMENTO_HOST || undefined) ?? DEFAULT_HOST,
    mnt: path.resolve(flags.mnt ?? (env.ELEMENTO_MNT || undefined) ?? defaultMnt),
    logLevel: flags.logLevel ?? (env.ELEMENTO_LOG_LEVEL || undefined) ?? 'info',
    logFormat: flags.logFormat ?? (env.ELEMENTO_LOG_FORMAT || undefined),
    lockStaleMs: intOrUndefined('ELEMENTO_LOCK_STALE_MS', env.ELEMENTO_LOCK_STALE_MS),
    rescanIntervalMs: intOrUndefined('ELEMENTO_RESCAN_MS', env.ELEMENTO_RESCAN_MS),
    toolTimeoutMs: intOrUndefined('ELEMENTO_TOOL_TIMEOUT_MS', env.ELEMENTO_TOOL_TIMEOUT_MS),
    exporter: env.ELEMENTO_EXPORTER || undefined,
    iscsiPortal: env.ELEMENTO_ISCSI_PORTAL || undefined,
    tgtControlPort: intOrUndefined('ELEMENTO_TGT_CONTROL_PORT', env.ELEMENTO_TGT_CONTROL_PORT),
    tgtManage: flagOrUndefined('ELEMENTO_TGT_MANAGE', env.ELEMENTO_TGT_MANAGE),
    exportHeartbeatMs: intOrUndefined('ELEMENTO_EXPORT_HEARTBEAT_MS', env.ELEMENTO_EXPORT_HEARTBEAT_MS),
    exportStaleMs: intOrUndefined('ELEMENTO_EXPORT_STALE_MS', env.ELEMENTO_EXPORT_STALE_MS),
    shareableUserLimit: intOrUndefined('ELEMENTO_SHAREABLE_USER_LIMIT', env.ELEMENTO_SHAREABLE_USER_LIMIT),
    transferIdleTimeoutMs: intOrUndefined('ELEMENTO_TRANSFER_IDLE_TIMEOUT_MS', env.ELEMENTO_TRANSFER_IDLE_TIMEOUT_MS),
    uploadIdleTimeoutMs: intOrUndefined('ELEMENTO_UPLOAD_IDLE_TIMEOUT_MS', env.ELEMENTO_UPLOAD_IDLE_TIMEOUT_MS),
    tokensFile: (flags.tokens ?? env.ELEMENTO_TOKENS) ? path.resolve(flags.tokens ?? env.ELEMENTO_TOKENS!) : undefined,
    allowInsecure: flags.allowInsecure ?? flagOrUndefined('ELEMENTO_ALLOW_INSECURE', env.ELEMENTO_ALLOW_INSECURE),
    cephPool: env.ELEMENTO_CEPH_POOL || undefined,
    cephConf: env.ELEMENTO_CEPH_CONF ? path.resolve(env.ELEMENTO_CEPH_CONF) : undefined,
    cephId: env.ELEMENTO_CEPH_ID || undefined,
  };
  for (const key of Object.keys(raw)) if (raw[key] === undefined) delete raw[key];
  if (!validatorFor('config')(raw)) throw configError(raw, flags);
  return Object.freeze(raw as unknown as Config);
}

/** A full configuration for tests and embedding, with the defaults filled in. */
export function configWith(overrides: Partial<Config> & { mnt: string }): Config {
  return Object.freeze(validateOrThrow<Config>('config', { port: 0, host: DEFAULT_HOST, ...overrides }));
}
