import { promises as fs } from 'node:fs';
import path from 'node:path';
import { iqnFor } from '../exporters/iqn.js';
import type { Logger } from '../log.js';
import { writeJsonAtomic } from './atomic.js';
import { removeMarker } from './export-marker.js';
import { MIGRATION_FILE } from './layout.js';

/**
 * `migration.json` in a volume directory: a live migration from `source` to `destination`.
 * `preparing`, `concluding` and `reverting` are written before a step changes the exports and
 * replaced when it is done, so a crash leaves the step that was running on disk.
 */
export interface MigrationState {
  source: string;
  destination: string;
  phase: 'preparing' | 'prepared' | 'concluding' | 'reverting';
  /** The destination was exported before prepare (a shareable volume): revert leaves that export. */
  destinationWasExported: boolean;
  started: string;
}

export async function readMigration(dir: string): Promise<MigrationState | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(dir, MIGRATION_FILE), 'utf8')) as MigrationState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Caller holds the volume's lock. */
export async function writeMigration(dir: string, state: MigrationState): Promise<void> {
  await writeJsonAtomic(path.join(dir, MIGRATION_FILE), state);
}

export async function clearMigration(dir: string): Promise<void> {
  await fs.rm(path.join(dir, MIGRATION_FILE), { force: true });
}

/**
 * Finishes a migration step a crash interrupted (called by recoverVolume, volume mutex held):
 * a `preparing` is reverted (the destination never got its answer), a `concluding` or `reverting`
 * is finished. Only the markers are removed here: the reconciliation of exports then removes the
 * targets that no marker claims.
 */
export async function recoverMigration(dir: string, vid: string, log: Logger): Promise<void> {
  const state = await readMigration(dir).catch(() => null);
  if (!state || state.phase === 'prepared') return;
  log.warn('finishing a migration step interrupted by a crash', { vid, phase: state.phase, source: state.source, destination: state.destination });
  if (state.phase === 'concluding') {
    if (state.source !== state.destination) await removeMarker(dir, iqnFor(state.source, vid));
  } else if (!state.destinationWasExported) {
    await removeMarker(dir, iqnFor(state.destination, vid));
  }
  await clearMigration(dir);
}
