import { ConflictError, ForbiddenError } from '../errors.js';
import { faultPoint } from '../faults.js';
import { writeMeta, type VolumeMeta } from '../store/meta.js';
import { findVolume, readLockedMeta, requireNoOverlays } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { checkTenantUse } from './export-rules.js';

/** One VM using a volume, as seed 004's attach records it; kept in meta.json's `attachments`. */
export interface Attachment {
  client_uid: string;
  node: string;
  vm_id: string;
  target?: string;
  attached: string;
}

export interface AttachRequest {
  volume_id: string;
  client_uid: string;
  node: string;
  vm_id: string | number;
  target?: string;
}

export function attachmentsOf(meta: VolumeMeta): Attachment[] {
  return Array.isArray(meta.attachments) ? (meta.attachments as Attachment[]) : [];
}

/** Seed 004's disk user limit: 1, or ELEMENTO_SHAREABLE_USER_LIMIT for a shareable volume. */
export function userLimit(ctx: StoreContext, meta: VolumeMeta): number {
  return meta.shareable ? ctx.config.shareableUserLimit : 1;
}

/** The `X-DiskUser-Limit` / `X-DiskUser-Remaining` headers seed 004 sends with a disk's description. */
export function userLimitHeaders(ctx: StoreContext, meta: VolumeMeta): Record<string, string> {
  const limit = userLimit(ctx, meta);
  return { 'X-DiskUser-Limit': String(limit), 'X-DiskUser-Remaining': String(Math.max(0, limit - attachmentsOf(meta).length)) };
}

/** Every volume attached to the VM `vm_id` on `node` (seed 004 answers them as `uuid`). */
function volumesOfVm(ctx: StoreContext, node: string, vmId: string): string[] {
  const out: string[] = [];
  for (const record of ctx.index.all())
    if (record.meta && attachmentsOf(record.meta).some((a) => a.node === node && a.vm_id === vmId)) out.push(record.uid);
  return out.sort();
}

const sameVm = (a: Attachment, node: string, vmId: string) => a.node === node && a.vm_id === vmId;

/** A VM's attachment is changed only by the client that made it or the volume's owner. */
function requireMayChange(meta: VolumeMeta, entry: Attachment | undefined, client: string, action: string): void {
  if (entry && entry.client_uid !== client && meta.creatorID !== client)
    throw new ForbiddenError(`VM ${entry.vm_id} on ${entry.node} was attached to volume ${meta.volumeID} by another client, which alone (or the owner) may ${action} it`, { vid: meta.volumeID });
}

/**
 * Changes a volume's attachments under its lock (meta.json re-read inside it), then reloads the
 * index. `seenBy` looks the volume up as that client (a private volume of another is 404), or as the controller.
 */
async function changeAttachments(
  ctx: StoreContext,
  vid: string,
  purpose: string,
  seenBy: Caller,
  fn: (meta: VolumeMeta, list: Attachment[], dir: string) => Promise<Attachment[] | null> | Attachment[] | null,
) {
  const record = await findVolume(ctx, vid, seenBy);
  try {
    await ctx.locks.withVolumeLock(record.dir, purpose, vid, async () => {
      const meta = await readLockedMeta(record.dir, vid);
      const next = await fn(meta, attachmentsOf(meta), record.dir);
      if (next) await writeMeta(record.dir, { ...meta, attachments: next });
      faultPoint(`${purpose}.after-meta`);
    });
  } finally {
    await ctx.index.reloadDir(record.dir);
  }
}

/**
 * `attach`: records that VM `vm_id` on `node` uses the volume, within its user limit. A private
 * volume only for its owner (as exports). A repeat for the same VM updates its target.
 */
export async function attachVolume(ctx: StoreContext, req: AttachRequest, seenBy: Caller = null) {
  const vmId = String(req.vm_id);
  // Looked up as the controller: a private volume of someone else is refused naming the rule, as an export is;
  // to a client token (`seenBy`) it does not exist (404), as everywhere else.
  await changeAttachments(ctx, req.volume_id, 'attach', seenBy, async (meta, list, dir) => {
    if (meta.private && req.client_uid !== meta.creatorID)
      throw new ForbiddenError(`volume ${meta.volumeID} is private and can only be attached by its owner`, { vid: meta.volumeID, rule: 'private' });
    checkTenantUse(meta, seenBy, 'attach');
    requireMayChange(meta, list.find((a) => sameVm(a, req.node, vmId)), req.client_uid, 'change');
    // As for an export: a VM writing to a base would corrupt every linked clone reading through to it.
    if (!meta.readonly) {
      await requireNoOverlays(ctx, meta, 'attached writable');
      // A download under way would get the bytes the VM writes mixed into the old ones.
      ctx.locks.rewriteInPlace(dir, meta.volumeID, 'attached writable');
    }
    const others = list.filter((a) => !sameVm(a, req.node, vmId));
    const limit = userLimit(ctx, meta);
    if (others.length >= limit)
      throw new ConflictError(`volume ${meta.volumeID} has reached its user limit of ${limit}`, { vid: meta.volumeID, rule: 'user_limit', limit });
    const entry: Attachment = { client_uid: req.client_uid, node: req.node, vm_id: vmId, ...(req.target ? { target: req.target } : {}), attached: new Date().toISOString() };
    return [...others, entry];
  });
  ctx.log.info('volume attached', { vid: req.volume_id, node: req.node, vm_id: vmId });
  return { node: req.node, vm_id: vmId, ...(req.target ? { target: req.target } : {}), uuid: volumesOfVm(ctx, req.node, vmId) };
}

/** `detach`: forgets the VM's use of the volume; answers the volumes still attached to that VM. */
export async function detachVolume(ctx: StoreContext, req: AttachRequest) {
  const vmId = String(req.vm_id);
  await changeAttachments(ctx, req.volume_id, 'detach', req.client_uid, (meta, list) => {
    requireMayChange(meta, list.find((a) => sameVm(a, req.node, vmId)), req.client_uid, 'detach');
    const rest = list.filter((a) => !sameVm(a, req.node, vmId));
    return rest.length === list.length ? null : rest;
  });
  ctx.log.info('volume detached', { vid: req.volume_id, node: req.node, vm_id: vmId });
  return { node: req.node, vm_id: vmId, ...(req.target ? { target: req.target } : {}), uuid: volumesOfVm(ctx, req.node, vmId) };
}
