import { ConflictError, ForbiddenError } from '../errors.js';
import type { VolumeMeta } from '../store/meta.js';

/**
 * SPEC §4 (seed 002's graph): may `meta`'s volume be exported to `client`, given the clients it is
 * exported to already? A private volume only to its owner; a shareable one to any number of
 * clients; one that is not shareable only while it is not exported (to another client: a repeat
 * for the same client is not a second export). `migrating` lifts the last rule for the
 * destination of a live migration. Throws the refusal naming the rule, or returns.
 */
export function checkExportRules(meta: VolumeMeta, client: string, exportedTo: string[], opts: { migrating?: boolean } = {}): void {
  if (meta.private && client !== meta.creatorID)
    throw new ForbiddenError(`volume ${meta.volumeID} is private and can only be exported to its owner`, { vid: meta.volumeID, rule: 'private' });
  if (meta.shareable || opts.migrating) return;
  const others = exportedTo.filter((c) => c !== client);
  if (others.length)
    throw new ConflictError(`volume ${meta.volumeID} is not shareable and is already exported to another client`, {
      vid: meta.volumeID,
      rule: 'not_shareable',
    });
}

/**
 * With API tokens, a client token (`tenant`) may read another client's volume, not change it nor hold it
 * against its owner: it exports or attaches it only when it is read-only, or shareable (its owner's consent to
 * several clients at once), and downloads it only when it is read-only (a download, paced by its client, holds
 * off the owner's snapshots, resizes and writable exports). 403 `not_owner`; null (the controller, no tokens)
 * may do anything SPEC §4 allows.
 */
export function checkTenantUse(meta: VolumeMeta, tenant: string | null, verb: 'export' | 'attach' | 'download'): void {
  const shared = verb !== 'download' && meta.shareable;
  if (tenant === null || meta.creatorID === tenant || meta.readonly || shared) return;
  const why = verb === 'download' ? 'is not read-only' : 'is neither read-only nor shareable';
  throw new ForbiddenError(`volume ${meta.volumeID} belongs to another client and ${why}: only its owner may ${verb} it`, { vid: meta.volumeID, rule: 'not_owner' });
}
