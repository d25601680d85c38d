import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { iqnFor } from '../../src/exporters/iqn.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bearer, TOKENS, writeTokenFile } from '../helpers/auth.js';
import { freeControlPort, withTgtd } from '../helpers/tgt.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody } from '../helpers/tree.js';

const THIRD = 'abcdefabcdefabcdefabcdefabcdefab';
const DEAD_OP = '0000000000000000000000000000dead';

/** Live migration against a real tgtd: prepare, conclude, revert, their repeats, and a crash between steps. */
describe('live migration (real tgtd)', function () {
  const tgt = withTgtd();
  let mnt: string;
  let d: TestDaemon | undefined;
  const volDir = (vid: string) => path.join(mnt, 'a', `vid.${vid}.elimg`);
  const start = async () => (d = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: tgt().controlPort, iscsiPortal: tgt().portal }));
  const markers = async (vid: string) => (await fs.readdir(volDir(vid))).filter((f) => f.endsWith('.exported')).sort();
  const targets = async () => (await tgt().targets()).sort();

  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    await start();
  });
  afterEach(async () => {
    await d?.stop();
    d = undefined;
    await tgt().removeTargets();
    await removeTree(mnt);
  });

  /** A volume (not shareable unless asked) exported to its owner, the source of the migration. */
  async function exportedVolume(body: Record<string, unknown> = {}): Promise<string> {
    const vid = (await d!.post('create', seedCreateBody({ format: 'raw', size: 0.01, ...body })).expect(200)).body.vid;
    await d!.post('export', { volume_id: vid, client_uid: OWNER }).expect(200);
    return vid;
  }

  it('prepare exports to the destination too (not shareable), conclude removes the source; repeats answer the same', async () => {
    const vid = await exportedVolume();
    const prepared = {
      vid,
      client_uid: OTHER,
      iqn: iqnFor(OTHER, vid),
      portal: tgt().portal,
      lun: 1,
      format: 'raw',
      readonly: false,
      source_client_uid: OWNER,
      migration: 'prepared',
    };
    expect((await d!.post('migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(200)).body).to.deep.equal(prepared);
    expect((await d!.post('migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(200)).body).to.deep.equal(prepared);
    expect(await targets()).to.deep.equal([iqnFor(OWNER, vid), iqnFor(OTHER, vid)].sort());
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'migration.json'), 'utf8'))).to.include({ source: OWNER, destination: OTHER, phase: 'prepared' });
    // The export rule still holds for anyone else while the migration runs.
    await d!.post('export', { volume_id: vid, client_uid: THIRD }).expect(409);
    await d!.post('destroy', { volume_id: vid }).expect(409);

    const concluded = { vid, client_uid: OTHER, source_client_uid: OWNER, migration: 'concluded' };
    expect((await d!.post('migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(200)).body).to.deep.equal(concluded);
    expect((await d!.post('migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(200)).body).to.deep.equal(concluded);
    expect(await targets()).to.deep.equal([iqnFor(OTHER, vid)]);
    expect(await markers(vid)).to.deep.equal([`${iqnFor(OTHER, vid)}.exported`]);
    expect(await fs.readdir(volDir(vid))).to.not.include('migration.json');
  });

  it('revert removes the destination export and keeps the source; a repeat answers the same', async () => {
    const vid = await exportedVolume();
    await d!.post('livemigration/prepare', { volume_id: vid, client_uid: OTHER }).expect(200);
    const reverted = { vid, client_uid: OTHER, source_client_uid: OWNER, migration: 'reverted' };
    expect((await d!.post('livemigration/revert', { volume_id: vid, client_uid: OTHER }).expect(200)).body).to.deep.equal(reverted);
    expect((await d!.post('livemigration/revert', { volume_id: vid, client_uid: OTHER }).expect(200)).body).to.deep.equal(reverted);
    expect(await targets()).to.deep.equal([iqnFor(OWNER, vid)]);
    expect(await markers(vid)).to.deep.equal([`${iqnFor(OWNER, vid)}.exported`]);
    // After a revert, a new migration can start.
    await d!.post('livemigration/prepare', { volume_id: vid, client_uid: THIRD }).expect(200);
  });

  it('takes source_client_uid when the source is not the owner, and leaves an export the destination had before', async () => {
    const vid = await exportedVolume({ shareable: true });
    await d!.post('export', { volume_id: vid, client_uid: OTHER }).expect(200);
    await d!.post('export', { volume_id: vid, client_uid: THIRD }).expect(200);
    await d!.post('migration/prepare', { volume_id: vid, client_uid: THIRD, source_client_uid: OTHER }).expect(200);
    await d!.post('migration/revert', { volume_id: vid, client_uid: THIRD }).expect(200);
    expect(await targets()).to.deep.equal([OWNER, OTHER, THIRD].map((c) => iqnFor(c, vid)).sort());
    await d!.post('migration/prepare', { volume_id: vid, client_uid: THIRD, source_client_uid: OTHER }).expect(200);
    await d!.post('migration/conclude', { volume_id: vid, client_uid: THIRD, source_client_uid: OTHER }).expect(200);
    expect(await targets()).to.deep.equal([OWNER, THIRD].map((c) => iqnFor(c, vid)).sort());
  });

  it('refuses what cannot be migrated, saying why', async () => {
    const vid = await exportedVolume();
    const notExported = (await d!.post('create', seedCreateBody({ format: 'raw', size: 0.01 })).expect(200)).body.vid;
    expect((await d!.post('migration/prepare', { volume_id: notExported, client_uid: OTHER }).expect(409)).body.error).to.equal(
      `volume ${notExported} is not exported to the source client ${OWNER}, so there is nothing to migrate`,
    );
    expect((await d!.post('migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(409)).body.error).to.equal(`no migration of volume ${vid} is in progress`);
    await d!.post('migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(200);
    expect((await d!.post('migration/prepare', { volume_id: vid, client_uid: THIRD }).expect(409)).body.error).to.equal(
      `volume ${vid} is already being migrated from ${OWNER} to ${OTHER}`,
    );
    expect((await d!.post('migration/conclude', { volume_id: vid, client_uid: THIRD }).expect(409)).body.error).to.equal(
      `volume ${vid} is being migrated to ${OTHER}, not to ${THIRD}`,
    );
    const priv = await exportedVolume({ private: true });
    expect((await d!.post('migration/prepare', { volume_id: priv, client_uid: OTHER }).expect(403)).body.rule).to.equal('private');
    expect((await d!.post('migration/prepare', { volume_id: vid, client_uid: 'nothex' }).expect(400)).body.field).to.equal('client_uid');
  });

  it('a prepare that fails leaves no migration behind, and a conclude is refused before the prepare finished', async () => {
    const vid = await exportedVolume();
    const before = await fs.readdir(volDir(vid));
    const cut = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: await freeControlPort(), iscsiPortal: tgt().portal });
    try {
      await cut.post('migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(503);
    } finally {
      await cut.stop();
    }
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(before.sort());
    expect((await d!.post('migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(409)).body.error).to.equal(`no migration of volume ${vid} is in progress`);

    // A prepare cut short (as a crash mid-way leaves it until the lock is recovered): conclude would leave the volume exported to no one.
    const state = { source: OWNER, destination: OTHER, phase: 'preparing', destinationWasExported: false, started: new Date().toISOString() };
    await fs.writeFile(path.join(volDir(vid), 'migration.json'), JSON.stringify(state));
    const refused = (await d!.post('migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(409)).body;
    expect(refused).to.include({ error: `the migration of volume ${vid} is preparing, so it cannot be concluded now`, phase: 'preparing' });
    expect(await targets()).to.deep.equal([iqnFor(OWNER, vid)]);
    await d!.post('migration/revert', { volume_id: vid, client_uid: OTHER }).expect(200);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(before.sort());

    await fs.writeFile(path.join(volDir(vid), 'migration.json'), JSON.stringify({ ...state, phase: 'reverting' }));
    expect((await d!.post('migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(409)).body.error).to.equal(
      `the migration of volume ${vid} is reverting: repeat migration/revert to finish it`,
    );
    await d!.post('migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(409);
    await d!.post('migration/revert', { volume_id: vid, client_uid: OTHER }).expect(200);
    expect(await markers(vid)).to.deep.equal([`${iqnFor(OWNER, vid)}.exported`]);
  });

  it('with API tokens, only the owner or an admin migrates a volume: another client cannot take over its export', async () => {
    await d!.stop();
    d = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: tgt().controlPort, iscsiPortal: tgt().portal, tokensFile: await writeTokenFile(mnt) });
    const asToken = (token: keyof typeof TOKENS, endpoint: string, body: object) => d!.post(endpoint, body).set(bearer(TOKENS[token]));
    const vid = (await asToken('owner', 'create', seedCreateBody({ format: 'raw', size: 0.01 })).expect(200)).body.vid;
    await asToken('owner', 'export', { volume_id: vid, client_uid: OWNER }).expect(200);
    await asToken('other', 'export', { volume_id: vid, client_uid: OTHER }).expect(409);
    const before = (await fs.readdir(volDir(vid))).sort();
    for (const step of ['prepare', 'conclude', 'revert'])
      expect((await asToken('other', `migration/${step}`, { volume_id: vid, client_uid: OTHER }).expect(403)).body.error).to.equal(`only the creator of volume ${vid} may migrate it`);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(before);
    expect(await targets()).to.deep.equal([iqnFor(OWNER, vid)]);
    await asToken('admin', 'migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(200);
    await asToken('admin', 'migration/conclude', { volume_id: vid, client_uid: OTHER }).expect(200);
    expect(await targets()).to.deep.equal([iqnFor(OTHER, vid)]);
  });

  for (const [phase, survivor, outcome] of [
    ['preparing', OWNER, 'reverted'],
    ['concluding', OTHER, 'finished'],
    ['reverting', OWNER, 'finished'],
  ] as const)
    it(`a crash while ${phase} is ${outcome} at the next start: only the ${survivor === OWNER ? 'source' : 'destination'} stays exported`, async () => {
      const vid = await exportedVolume();
      await d!.post('migration/prepare', { volume_id: vid, client_uid: OTHER }).expect(200);
      await d!.stop();
      d = undefined;
      // What the dying step left: its lock marker and its phase, both exports still in place.
      const state = JSON.parse(await fs.readFile(path.join(volDir(vid), 'migration.json'), 'utf8'));
      await fs.writeFile(path.join(volDir(vid), 'migration.json'), JSON.stringify({ ...state, phase }));
      await fs.writeFile(path.join(volDir(vid), `elemento.migrate.${DEAD_OP}.ignore`), '{}');
      expect(await targets()).to.have.length(2);

      await start();
      expect(await targets()).to.deep.equal([iqnFor(survivor, vid)]);
      expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.img', 'meta.json', `${iqnFor(survivor, vid)}.exported`].sort());
      // The volume works normally again: a new migration can start from whichever client kept the export.
      await d!.post('migration/prepare', { volume_id: vid, client_uid: THIRD, source_client_uid: survivor }).expect(200);
    });
});
