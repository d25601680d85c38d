import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { iqnFor } from '../../src/exporters/iqn.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { freeControlPort, iscsiLs, iscsiUrl, qemuIo, withTgtd } from '../helpers/tgt.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody } from '../helpers/tree.js';
import { execa } from 'execa';

const MB = 1024 * 1024;
const THIRD = 'abcdefabcdefabcdefabcdefabcdefab';

/** Exports through a real tgtd on 127.0.0.1, read and written by real initiators. */
describe('exports to hypervisors (real tgtd, qemu-io, iscsi-ls)', function () {
  const tgt = withTgtd();
  let mnt: string;
  let d: TestDaemon;
  const volDir = (vid: string) => path.join(mnt, 'a', `vid.${vid}.elimg`);

  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: tgt().controlPort, iscsiPortal: tgt().portal });
  });
  afterEach(async () => {
    await d.stop();
    await tgt().removeTargets();
    await removeTree(mnt);
  });

  async function create(body: Record<string, unknown> = {}): Promise<string> {
    return (await d.post('create', seedCreateBody({ format: 'raw', size: 0.01, ...body })).expect(200)).body.vid;
  }

  it('exports a raw volume: bytes written over iSCSI land in the data file, and back', async () => {
    const vid = await create();
    const res = await d.post('export', { volume_id: vid, client_uid: OTHER }).expect(200);
    const iqn = iqnFor(OTHER, vid);
    expect(res.body).to.deep.equal({ vid, client_uid: OTHER, iqn, portal: tgt().portal, lun: 1, format: 'raw', readonly: false });
    expect(await fs.readdir(volDir(vid))).to.include(`${iqn}.exported`);
    const marker = JSON.parse(await fs.readFile(path.join(volDir(vid), `${iqn}.exported`), 'utf8'));
    expect(marker).to.include({ client_uid: OTHER, portal: tgt().portal });

    expect(await iscsiLs(tgt())).to.include(`Target:${iqn} Portal:${tgt().portal}`);
    expect((await qemuIo(iscsiUrl(tgt(), iqn), 'raw', `write -P 0xab ${MB} ${MB}`)).ok).to.equal(true);
    expect(await hasPattern(path.join(volDir(vid), 'data.img'), 'raw', 0xab, MB, MB)).to.equal(true);
    await writePattern(path.join(volDir(vid), 'data.img'), 'raw', 0xcd, 4 * MB, MB);
    expect((await qemuIo(iscsiUrl(tgt(), iqn), 'raw', `read -P 0xcd ${4 * MB} ${MB}`)).ok).to.equal(true);

    const info = (await d.post('info', { volume_id: vid }).expect(200)).body;
    expect(info.exported).to.equal(true);
    expect((await d.post('accessible', { client_uid: OWNER }).expect(200)).body[0].exported).to.equal(true);
  });

  it('exports a qcow2 volume as its file: the hypervisor opens it with format qcow2', async () => {
    const vid = await create({ format: 'qcow2', size: 0.05 });
    const { iqn, format } = (await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body;
    expect(format).to.equal('qcow2');
    const { stdout } = await execa('qemu-img', ['info', '--output=json', iscsiUrl(tgt(), iqn)]);
    expect(JSON.parse(stdout)).to.include({ format: 'qcow2', 'virtual-size': 50_000_384 });
  });

  it('exports a read-only volume read-only', async () => {
    const vid = await create({ readonly: true });
    await writePattern(path.join(volDir(vid), 'data.img'), 'raw', 0x5a, 0, MB);
    const { iqn, readonly } = (await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body;
    expect(readonly).to.equal(true);
    const write = await qemuIo(iscsiUrl(tgt(), iqn), 'raw', `write -P 0x11 0 ${MB}`);
    expect(write.ok).to.equal(false);
    expect(write.out).to.match(/write protected/i);
    expect((await qemuIo(iscsiUrl(tgt(), iqn), 'raw', `read -P 0x5a 0 ${MB}`, true)).ok).to.equal(true);
    expect(await hasPattern(path.join(volDir(vid), 'data.img'), 'raw', 0x5a, 0, MB)).to.equal(true);
  });

  it('unexport removes target and marker; repeats of export and unexport answer the same', async () => {
    const vid = await create();
    const first = (await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body;
    expect((await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body).to.deep.equal(first);
    expect(await tgt().targets()).to.deep.equal([first.iqn]);
    const off = { vid, client_uid: OWNER, iqn: first.iqn, exported: false };
    expect((await d.post('unexport', { volume_id: vid, client_uid: OWNER }).expect(200)).body).to.deep.equal(off);
    expect((await d.post('unexport', { volume_id: vid, client_uid: OWNER }).expect(200)).body).to.deep.equal(off);
    expect(await tgt().targets()).to.deep.equal([]);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.img', 'meta.json']);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.exported).to.equal(false);
  });

  it('refuses destroy, convert, resize and a change of the flags the export was made on while exported (409), and allows them after unexport', async () => {
    const vid = await create();
    const { iqn } = (await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body;
    const before = (await fs.readdir(volDir(vid))).sort();
    const meta = await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8');
    expect((await d.post('destroy', { volume_id: vid }).expect(409)).body.error).to.equal(`volume ${vid} is exported and cannot be destroyed`);
    expect((await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).expect(409)).body.error).to.equal(
      `volume ${vid} is exported and cannot be converted`,
    );
    // The LUN keeps the size it was made with: a resize under it would not reach the hypervisor.
    expect((await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(409)).body.error).to.equal(`volume ${vid} is exported and cannot be resized`);
    expect((await d.post('update', { vid, creatorID: OWNER, readonly: true }).expect(409)).body.error).to.equal(`volume ${vid} is exported and cannot be made readonly: true`);
    expect((await d.post('update', { vid, creatorID: OWNER, private: true, shareable: true }).expect(409)).body.error).to.equal(
      `volume ${vid} is exported and cannot be made private: true, shareable: true`,
    );
    // What the export does not depend on may change.
    await d.post('update', { vid, creatorID: OWNER, name: 'renamed', readonly: false }).expect(200);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(before);
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8'))).to.deep.equal({ ...JSON.parse(meta), name: 'renamed' });
    expect(await tgt().targets()).to.deep.equal([iqn]);

    await d.post('unexport', { volume_id: vid, client_uid: OWNER }).expect(200);
    await d.post('update', { vid, creatorID: OWNER, readonly: true }).expect(200);
    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(200);
    await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).expect(200);
    await d.post('destroy', { volume_id: vid }).expect(200);
  });

  it('answers 503 when tgtd is out of reach, and a repeat then keeps the marker of the live export', async () => {
    const vid = await create();
    const { iqn } = (await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body;
    const cut = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: await freeControlPort(), iscsiPortal: tgt().portal });
    try {
      const res = await cut.post('export', { volume_id: vid, client_uid: OWNER }).expect(503);
      expect(res.body.error).to.match(/^no tgtd answers on control port \d+ \(start one, or set ELEMENTO_TGT_MANAGE=1\)$/);
      await cut.post('export', { volume_id: vid, client_uid: OTHER }).expect(409);
      const shared = (await cut.post('create', seedCreateBody({ format: 'raw', size: 0.01, shareable: true })).expect(200)).body.vid;
      await cut.post('export', { volume_id: shared, client_uid: OTHER }).expect(503);
      expect((await fs.readdir(volDir(shared))).sort()).to.deep.equal(['data.img', 'meta.json']);
    } finally {
      await cut.stop();
    }
    expect(await fs.readdir(volDir(vid))).to.include(`${iqn}.exported`);
    expect(await tgt().targets()).to.deep.equal([iqn]);
  });

  it('status says whether tgtd answers, since when and why not, and comes back with it', async () => {
    expect((await d.api.get('/api/v1.0/status').expect(200)).body.exporter.backend).to.include({ reachable: true });
    const dead = await freeControlPort();
    const cut = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: dead, iscsiPortal: tgt().portal, exportHeartbeatMs: 100 });
    try {
      const { backend } = (await cut.api.get('/api/v1.0/status').expect(200)).body.exporter;
      expect(backend).to.include({ reachable: false, error: `no tgtd answers on control port ${dead} (start one, or set ELEMENTO_TGT_MANAGE=1)` });
      expect(Date.parse(backend.since)).to.be.closeTo(Date.now(), 10_000);
    } finally {
      await cut.stop();
    }
    const off = await startTestDaemon(mnt, { exporter: 'none' });
    expect((await off.api.get('/api/v1.0/status').expect(200)).body.exporter.backend).to.equal(null);
    await off.stop();
  });

  it('keeps the exports of a root that is unavailable for a while (reconciliation removes only certain orphans)', async () => {
    const vid = await create();
    const { iqn } = (await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(200)).body;
    const settings = path.join(mnt, 'a', 'settings.json');
    await fs.writeFile(settings, '{ broken');
    await d.daemon.ctx.index.scanAll();
    expect(await d.daemon.exports.reconcile()).to.deep.equal({ kept: 0, recreated: 0, removed: 0, dropped: 0 });
    expect(await tgt().targets()).to.deep.equal([iqn]);
    await fs.writeFile(settings, '{}');
    await d.daemon.ctx.index.scanAll();
    expect(await d.daemon.exports.reconcile()).to.deep.equal({ kept: 1, recreated: 0, removed: 0, dropped: 0 });
    // Once its marker is gone from a readable volume, the target is an orphan and goes.
    await fs.rm(path.join(volDir(vid), `${iqn}.exported`));
    expect(await d.daemon.exports.reconcile()).to.deep.equal({ kept: 0, recreated: 0, removed: 1, dropped: 0 });
    expect(await tgt().targets()).to.deep.equal([]);
  });

  it('refuses an export while another operation holds the volume, and says so in status', async () => {
    const vid = await create();
    const lock = await d.daemon.ctx.locks.acquireVolume(volDir(vid), 'convert', vid);
    try {
      const res = await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(409);
      expect(res.body).to.deep.equal({ error: `volume ${vid} is locked by another operation (convert)`, code: 'conflict', vid });
    } finally {
      await lock.release();
    }
    expect(await tgt().targets()).to.deep.equal([]);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.exporter).to.deep.include({ name: 'tgt', capabilities: { readonlyLuns: true, managedDaemon: true, savesConfig: false, rbdLuns: true }, portal: tgt().portal });
  });

  it('refuses a writable export of a base that linked clones read through to, allows it read-only', async () => {
    const base = await create({ format: 'qcow2', clonable: true, alg: 'cp' });
    await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200);
    const res = await d.post('export', { volume_id: base, client_uid: OWNER }).expect(409);
    expect(res.body.error).to.equal(`volume ${base} is the base of 1 linked clone(s) and cannot be exported writable`);
    expect((await fs.readdir(volDir(base))).filter((f) => f.endsWith('.exported'))).to.deep.equal([]);
    await d.post('update', { vid: base, creatorID: OWNER, readonly: true }).expect(200);
    expect((await d.post('export', { volume_id: base, client_uid: OWNER }).expect(200)).body.readonly).to.equal(true);
  });

  describe('the rules of SPEC §4 (private/public × owner/other × shareable/not × exported/not)', () => {
    for (const priv of [true, false])
      for (const owner of [true, false])
        for (const shareable of [true, false])
          for (const exported of [true, false]) {
            const refusal = priv && !owner ? 403 : !shareable && exported ? 409 : null;
            it(`${priv ? 'private' : 'public'}, ${owner ? 'owner' : 'other client'}, ${shareable ? 'shareable' : 'not shareable'}, ${exported ? 'already exported' : 'not exported'}: ${refusal ?? 'exported'}`, async () => {
              // "Already exported" is to a third client (a repeat for the same client is not a second export):
              // exported while public, then made private by hand when the case asks for it (update refuses
              // that while exported, but the tree is the truth and an operator may edit it).
              const vid = await create({ shareable });
              if (exported) await d.post('export', { volume_id: vid, client_uid: THIRD }).expect(200);
              if (priv) {
                const file = path.join(volDir(vid), 'meta.json');
                await fs.writeFile(file, JSON.stringify({ ...JSON.parse(await fs.readFile(file, 'utf8')), private: true }));
              }
              const client = owner ? OWNER : OTHER;
              const before = await tgt().targets();
              const res = await d.post('export', { volume_id: vid, client_uid: client });
              if (refusal === null) {
                expect(res.status).to.equal(200);
                expect(await tgt().targets()).to.include(iqnFor(client, vid));
                return;
              }
              expect(res.status, JSON.stringify(res.body)).to.equal(refusal);
              expect(res.body).to.deep.equal(
                refusal === 403
                  ? { error: `volume ${vid} is private and can only be exported to its owner`, code: 'forbidden', vid, rule: 'private' }
                  : { error: `volume ${vid} is not shareable and is already exported to another client`, code: 'conflict', vid, rule: 'not_shareable' },
              );
              expect(await tgt().targets()).to.deep.equal(before);
              expect(await fs.readdir(volDir(vid))).to.not.include(`${iqnFor(client, vid)}.exported`);
            });
          }
  });
});
