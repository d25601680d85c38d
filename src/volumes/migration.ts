import { ConflictError } from '../errors.js';
import { faultPoint } from '../faults.js';
import { iqnFor } from '../exporters/iqn.js';
import type { ExportService } from '../exporters/service.js';
import { clearMigration, readMigration, writeMigration } from '../store/migration-state.js';
import type { Caller, StoreContext } from './context.js';
import { requireOwnedAfresh } from './access.js';
import { checkExportRules } from './export-rules.js';
import { exportAnswer, exportedClients, withExportLock } from './export.js';

/** `migration/*` and `livemigration/*` bodies: the destination, and the source when it is not the owner. */
export interface MigrationRequest {
  volume_id: string;
  client_uid: string;
  source_client_uid?: string;
}

/**
 * `prepare`: the volume is exported to the destination as well, while the source keeps its export,
 * even when it is not shareable. Steps: state `preparing`, the destination's export, state
 * `prepared`; a repeat with the same clients answers the same; a crash reverts it (recoverMigration).
 */
export async function prepareMigration(ctx: StoreContext, exports: ExportService, req: MigrationRequest, caller: Caller) {
  const vid = req.volume_id;
  const destination = req.client_uid;
  return withExportLock(ctx, vid, 'migrate', caller, async (dir, meta, files) => {
    requireOwnedAfresh(meta, caller, 'migrate');
    const source = req.source_client_uid ?? meta.creatorID;
    const state = await readMigration(dir);
    if (state && (state.source !== source || state.destination !== destination))
      throw new ConflictError(`volume ${vid} is already being migrated from ${state.source} to ${state.destination}`, { vid });
    if (state && (state.phase === 'concluding' || state.phase === 'reverting'))
      throw new ConflictError(`the migration of volume ${vid} is ${state.phase}: repeat migration/${state.phase === 'concluding' ? 'conclude' : 'revert'} to finish it`, { vid, phase: state.phase });
    const exported = exportedClients(files, vid);
    if (!state) {
      if (source === destination) throw new ConflictError(`a migration needs a destination other than the source ${source}`, { vid });
      if (!exported.includes(source))
        throw new ConflictError(`volume ${vid} is not exported to the source client ${source}, so there is nothing to migrate`, { vid });
      checkExportRules(meta, destination, exported, { migrating: true });
    }
    const next = state ?? { source, destination, phase: 'preparing' as const, destinationWasExported: exported.includes(destination), started: new Date().toISOString() };
    await writeMigration(dir, { ...next, phase: 'preparing' });
    faultPoint('migration.after-preparing');
    try {
      await exports.publish(dir, meta, destination, iqnFor(destination, vid));
    } catch (err) {
      // publish took back a new destination marker; the state goes back to what it was before the call.
      await (state ? writeMigration(dir, state) : clearMigration(dir));
      throw err;
    }
    faultPoint('migration.after-publish');
    await writeMigration(dir, { ...next, phase: 'prepared' });
    ctx.log.info('migration prepared', { vid, source, destination });
    return { ...exportAnswer(ctx, exports, meta, destination), source_client_uid: source, migration: 'prepared' };
  });
}

/**
 * `conclude` (the VM runs on the destination) removes the source's export; `revert` (the
 * migration failed) removes the destination's, unless it was exported before prepare. The step is
 * written to the state first, so a crash is finished by recoverMigration. Without a migration in
 * progress, a repeat of the step that already happened answers the same; anything else is a 409.
 */
export async function finishMigration(ctx: StoreContext, exports: ExportService, req: MigrationRequest, step: 'conclude' | 'revert', caller: Caller) {
  const vid = req.volume_id;
  const destination = req.client_uid;
  return withExportLock(ctx, vid, 'migrate', caller, async (dir, meta, files) => {
    requireOwnedAfresh(meta, caller, 'migrate');
    const state = await readMigration(dir);
    const source = state?.source ?? req.source_client_uid ?? meta.creatorID;
    const answer = { vid, client_uid: destination, source_client_uid: source, migration: step === 'conclude' ? 'concluded' : 'reverted' };
    if (!state) {
      const exported = exportedClients(files, vid);
      const done = step === 'conclude' ? exported.includes(destination) && !exported.includes(source) : exported.includes(source);
      if (done) return answer;
      throw new ConflictError(`no migration of volume ${vid} is in progress`, { vid });
    }
    if (state.destination !== destination)
      throw new ConflictError(`volume ${vid} is being migrated to ${state.destination}, not to ${destination}`, { vid });
    const phase = step === 'conclude' ? 'concluding' : 'reverting';
    // conclude needs the destination's export made (prepared); revert undoes a prepare whatever its state; neither undoes the other.
    const allowed = step === 'conclude' ? ['prepared', 'concluding'] : ['preparing', 'prepared', 'reverting'];
    if (!allowed.includes(state.phase))
      throw new ConflictError(`the migration of volume ${vid} is ${state.phase}, so it cannot be ${step === 'conclude' ? 'concluded' : 'reverted'} now`, { vid, phase: state.phase });
    await writeMigration(dir, { ...state, phase });
    faultPoint(`migration.after-${phase}`);
    if (step === 'conclude') await exports.withdraw(dir, iqnFor(state.source, vid));
    else if (!state.destinationWasExported) await exports.withdraw(dir, iqnFor(destination, vid));
    faultPoint(`migration.after-${step}-withdraw`);
    await clearMigration(dir);
    ctx.log.info(`migration ${answer.migration}`, { vid, source: state.source, destination });
    return answer;
  });
}
