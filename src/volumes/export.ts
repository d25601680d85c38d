import { promises as fs } from 'node:fs';
import { NotSupportedError } from '../errors.js';
import { clientOfIqn, iqnFor } from '../exporters/iqn.js';
import type { ExportService } from '../exporters/service.js';
import type { VolumeMeta } from '../store/meta.js';
import { EXPORT_MARKER_RE } from '../store/volume-record.js';
import { findVolume, readLockedMeta, requireNoOverlays } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { checkExportRules, checkTenantUse } from './export-rules.js';

/** What a hypervisor needs to attach an exported volume. */
export interface ExportAnswer {
  vid: string;
  client_uid: string;
  iqn: string;
  portal: string;
  lun: number;
  format: string;
  readonly: boolean;
}

/** The clients a volume directory's `.exported` markers name. */
export function exportedClients(files: string[], vid: string): string[] {
  return files
    .map((f) => EXPORT_MARKER_RE.exec(f)?.[1])
    .map((iqn) => (iqn ? clientOfIqn(iqn, vid) : null))
    .filter((c): c is string => c !== null);
}

export function exportAnswer(ctx: StoreContext, exports: ExportService, meta: VolumeMeta, client: string): ExportAnswer {
  return {
    vid: meta.volumeID,
    client_uid: client,
    iqn: iqnFor(client, meta.volumeID),
    portal: ctx.config.iscsiPortal,
    lun: exports.exporter.lun,
    // A Ceph volume's LUN serves the RBD image's bytes: the hypervisor opens it as raw.
    format: meta.format === 'rbd' ? 'raw' : meta.format,
    readonly: meta.readonly,
  };
}

/**
 * The volume `vid` under its lock, with meta.json and the directory read afresh, looked up as
 * `seenBy`. An export looks it up as the controller: a private volume of someone else is refused by
 * the rules (403 naming the rule), as SPEC §4 asks, rather than hidden; unexport and migration as
 * their caller (a private volume of another is 404).
 */
export async function withExportLock<T>(
  ctx: StoreContext,
  vid: string,
  purpose: string,
  seenBy: Caller,
  fn: (dir: string, meta: VolumeMeta, files: string[]) => Promise<T>,
): Promise<T> {
  const record = await findVolume(ctx, vid, seenBy);
  try {
    return await ctx.locks.withVolumeLock(record.dir, purpose, vid, async () => {
      const meta = await readLockedMeta(record.dir, vid);
      return fn(record.dir, meta, await fs.readdir(record.dir));
    });
  } finally {
    await ctx.index.reloadDir(record.dir);
  }
}

/**
 * `export`: SPEC §4's rules, then the marker and the target. A repeat for the same client answers the same.
 * `seenBy`: a client token's client, to whom another's private volume does not exist (404, not the rule's 403).
 */
export async function exportVolume(ctx: StoreContext, exports: ExportService, vid: string, client: string, seenBy: Caller = null): Promise<ExportAnswer> {
  const meta = await withExportLock(ctx, vid, 'export', seenBy, async (dir, meta, files) => {
    if (meta.format === 'rbd' && !exports.exporter.capabilities.rbdLuns)
      throw new NotSupportedError(`volume ${vid} lives in Ceph, and the ${exports.exporter.name} exporter does not serve RBD images`);
    checkExportRules(meta, client, exportedClients(files, vid));
    checkTenantUse(meta, seenBy, 'export');
    // A hypervisor writing to a base would corrupt every linked clone that reads through to it.
    if (!meta.readonly) {
      await requireNoOverlays(ctx, meta, 'exported writable');
      // A download under way would get the bytes the hypervisor writes mixed into the old ones.
      ctx.locks.rewriteInPlace(dir, vid, 'exported writable');
    }
    await exports.publish(dir, meta, client, iqnFor(client, vid));
    return meta;
  });
  ctx.log.info('volume exported', { vid, client, iqn: iqnFor(client, vid) });
  return exportAnswer(ctx, exports, meta, client);
}

/** `unexport`: removes the export to `client`; a volume not exported to it answers the same. */
export async function unexportVolume(ctx: StoreContext, exports: ExportService, vid: string, client: string) {
  await withExportLock(ctx, vid, 'unexport', client, (dir) => exports.withdraw(dir, iqnFor(client, vid)));
  ctx.log.info('volume unexported', { vid, client });
  return { vid, client_uid: client, iqn: iqnFor(client, vid), exported: false };
}
