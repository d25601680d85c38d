import { promises as fs } from 'node:fs';
import path from 'node:path';
import { clientOfIqn } from '../../../src/exporters/iqn.js';
import { MIGRATION_FILE } from '../../../src/store/layout.js';
import { EXPORT_MARKER_RE } from '../../../src/store/volume-record.js';
import { OTHER, OWNER } from '../tree.js';
import type { Api } from './invariants.js';
import { createVolume, expectOk, volumeDir, type CrashOperation, type Subject } from './operations.js';

/**
 * The operations of the crash harness that change exports: they need a real exporter (a tgtd), so
 * they run in their own suite (test/integration/crash-exports.test.ts) and with `npm run soak -- --exports`.
 * The owner exports first; a migration moves the volume from the owner (source) to OTHER (destination).
 */

/** A raw volume exported to its owner. */
async function exportedVolume(api: Api): Promise<Subject> {
  const vid = await createVolume(api, 'raw');
  await expectOk(api.post('export', { volume_id: vid, client_uid: OWNER }), 'export');
  return { vid };
}

/** An exported volume whose migration to OTHER is prepared. */
async function preparedMigration(api: Api): Promise<Subject> {
  const subject = await exportedVolume(api);
  await expectOk(api.post('migration/prepare', { volume_id: subject.vid, client_uid: OTHER }), 'migration/prepare');
  return subject;
}

/** Who the volume is exported to (sorted, `owner`/`other`), and the phase of its migration, if any: `owner+other prepared`. */
async function exportState(api: Api, vid: string): Promise<string> {
  const dir = await volumeDir(api, vid);
  const files = await fs.readdir(dir);
  const clients = files.map((f) => EXPORT_MARKER_RE.exec(f)?.[1]).filter((iqn): iqn is string => !!iqn).map((iqn) => clientOfIqn(iqn, vid));
  const names = clients.map((c) => (c === OWNER ? 'owner' : c === OTHER ? 'other' : c)).sort();
  const state = files.includes(MIGRATION_FILE) ? ` ${JSON.parse(await fs.readFile(path.join(dir, MIGRATION_FILE), 'utf8')).phase}` : '';
  return `${names.join('+') || 'none'}${state}`;
}

/** The step happened entirely or not at all: the volume is in one of `allowed` export states (see exportState). */
const oneSide =
  (...allowed: string[]) =>
  async (api: Api, s: Subject): Promise<string[]> => {
    const found = await exportState(api, s.vid!);
    return allowed.includes(found) ? [] : [`volume ${s.vid} is exported as "${found}", expected one of ${allowed.map((a) => `"${a}"`).join(', ')}`];
  };

export const EXPORT_CRASH_OPERATIONS: CrashOperation[] = [
  {
    name: 'export',
    points: ['lock.after-marker', 'publish.after-marker', 'lock.before-mutex-release'],
    setup: async (api) => ({ vid: await createVolume(api, 'raw') }),
    run: (api, s) => api.post('export', { volume_id: s.vid, client_uid: OWNER }),
    verify: oneSide('none', 'owner'),
  },
  {
    name: 'unexport',
    points: ['withdraw.after-marker-removed', 'lock.before-mutex-release'],
    setup: exportedVolume,
    run: (api, s) => api.post('unexport', { volume_id: s.vid, client_uid: OWNER }),
    verify: oneSide('none', 'owner'),
  },
  {
    name: 'migration-prepare',
    points: ['migration.after-preparing', 'publish.after-marker', 'migration.after-publish', 'lock.before-mutex-release'],
    setup: exportedVolume,
    run: (api, s) => api.post('migration/prepare', { volume_id: s.vid, client_uid: OTHER }),
    verify: oneSide('owner', 'other+owner prepared'),
  },
  ...(['conclude', 'revert'] as const).map((step) => ({
    name: `migration-${step}`,
    points: [`migration.after-${step === 'conclude' ? 'concluding' : 'reverting'}`, 'withdraw.after-marker-removed', `migration.after-${step}-withdraw`, 'lock.before-mutex-release'],
    setup: preparedMigration,
    run: (api: Api, s: Subject) => api.post(`migration/${step}`, { volume_id: s.vid, client_uid: OTHER }),
    verify: oneSide(step === 'conclude' ? 'other' : 'owner', 'other+owner prepared'),
  })),
];
