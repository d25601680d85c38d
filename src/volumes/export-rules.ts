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
