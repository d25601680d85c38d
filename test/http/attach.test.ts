import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { iqnFor } from '../../src/exporters/iqn.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

const NODE = 'onehost-2.lal.in2p3.fr';

/** Attach tracking (seed 004): node, VM and target per volume, user limits, headers on info. */
describe('attach tracking (seed 004)', () => {
  let mnt: string;
  let d: TestDaemon;
  const volDir = (vid: string) => path.join(mnt, 'a', `vid.${vid}.elimg`);
  const create = async (body: Record<string, unknown> = {}) => (await d.post('create', seedCreateBody({ format: 'raw', size: 0.01, ...body })).expect(200)).body.vid as string;
  const attach = (vid: string, vm: string | number, extra: Record<string, unknown> = {}) =>
    d.post('attach', { volume_id: vid, client_uid: OWNER, node: NODE, vm_id: vm, target: 'vda', ...extra });

  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt, { shareableUserLimit: 2 });
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('answers the seed shape with every volume attached to the VM, and records it in meta.json', async () => {
    const [a, b] = [await create(), await create()].sort();
    expect((await attach(a, 722).expect(200)).body).to.deep.equal({ node: NODE, vm_id: '722', target: 'vda', uuid: [a] });
    expect((await attach(b, '722', { target: 'vdb' }).expect(200)).body).to.deep.equal({ node: NODE, vm_id: '722', target: 'vdb', uuid: [a, b] });
    const meta = JSON.parse(await fs.readFile(path.join(volDir(a), 'meta.json'), 'utf8'));
    expect(meta.attachments).to.have.length(1);
    expect(meta.attachments[0]).to.include({ client_uid: OWNER, node: NODE, vm_id: '722', target: 'vda' });
    expect((await d.post('detach', { volume_id: a, client_uid: OWNER, node: NODE, vm_id: '722' }).expect(200)).body).to.deep.equal({ node: NODE, vm_id: '722', uuid: [b] });
    expect(JSON.parse(await fs.readFile(path.join(volDir(a), 'meta.json'), 'utf8')).attachments).to.deep.equal([]);
  });

  it('reports the user limit as X-DiskUser-Limit / X-DiskUser-Remaining on info, and enforces it', async () => {
    const single = await create();
    let res = await d.post('info', { volume_id: single }).expect(200);
    expect([res.headers['x-diskuser-limit'], res.headers['x-diskuser-remaining']]).to.deep.equal(['1', '1']);
    await attach(single, 1).expect(200);
    await attach(single, 1, { target: 'vdc' }).expect(200); // the same VM again: an update, not a second user
    res = await d.post('info', { volume_id: single }).expect(200);
    expect([res.headers['x-diskuser-limit'], res.headers['x-diskuser-remaining']]).to.deep.equal(['1', '0']);
    const refused = await attach(single, 2).expect(409);
    expect(refused.body).to.deep.equal({ error: `volume ${single} has reached its user limit of 1`, code: 'conflict', vid: single, rule: 'user_limit', limit: 1 });

    const shared = await create({ shareable: true });
    await attach(shared, 1).expect(200);
    res = await d.post('info', { volume_id: shared }).expect(200);
    expect([res.headers['x-diskuser-limit'], res.headers['x-diskuser-remaining']]).to.deep.equal(['2', '1']);
    await attach(shared, 2).expect(200);
    await attach(shared, 3).expect(409);
  });

  it('refuses destroy and convert while attached (409), and a private volume to another client (403)', async () => {
    const vid = await create();
    await attach(vid, 9).expect(200);
    expect((await d.post('destroy', { volume_id: vid }).expect(409)).body.error).to.equal(`volume ${vid} is attached to a VM and cannot be destroyed`);
    expect((await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).expect(409)).body.error).to.equal(
      `volume ${vid} is attached to a VM and cannot be converted`,
    );
    expect((await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(409)).body.error).to.equal(`volume ${vid} is attached to a VM and cannot be resized`);
    expect((await d.post('update', { vid, creatorID: OWNER, shareable: true }).expect(409)).body.error).to.equal(`volume ${vid} is attached to a VM and cannot be made shareable: true`);
    await d.post('detach', { volume_id: vid, client_uid: OWNER, node: NODE, vm_id: 9 }).expect(200);
    await d.post('detach', { volume_id: vid, client_uid: OWNER, node: NODE, vm_id: 9 }).expect(200);
    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(200);
    await d.post('destroy', { volume_id: vid }).expect(200);

    const priv = await create({ private: true });
    expect((await attach(priv, 1, { client_uid: OTHER }).expect(403)).body.rule).to.equal('private');
    expect((await d.post('attach', { volume_id: priv, client_uid: OWNER, vm_id: 1 }).expect(400)).body.error).to.equal("request was badly formatted. 'node'");
  });

  it("lets only the client that attached a VM (or the owner) detach or change it; another's private volume is 404 to detach", async () => {
    const vid = await create();
    await attach(vid, 5, { client_uid: OTHER }).expect(200);
    const meta = await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8');
    const third = 'abcdefabcdefabcdefabcdefabcdefab';
    const refused = await d.post('detach', { volume_id: vid, client_uid: third, node: NODE, vm_id: 5 }).expect(403);
    expect(refused.body.error).to.equal(`VM 5 on ${NODE} was attached to volume ${vid} by another client, which alone (or the owner) may detach it`);
    await attach(vid, 5, { client_uid: third, target: 'vdz' }).expect(403);
    expect(await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8')).to.equal(meta);
    await d.post('detach', { volume_id: vid, client_uid: OWNER, node: NODE, vm_id: 5 }).expect(200);

    const priv = await create({ private: true });
    await attach(priv, 6).expect(200);
    expect((await d.post('detach', { volume_id: priv, client_uid: OTHER, node: NODE, vm_id: 6 }).expect(404)).body.error).to.equal(`volume ${priv} does not exist`);
    expect(JSON.parse(await fs.readFile(path.join(volDir(priv), 'meta.json'), 'utf8')).attachments).to.have.length(1);
  });

  it('refuses to attach a base that linked clones read through to, unless it is read-only (a VM writing it would corrupt them)', async () => {
    const base = await create({ format: 'qcow2', clonable: true });
    await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200);
    expect((await attach(base, 3).expect(409)).body.error).to.equal(`volume ${base} is the base of 1 linked clone(s) and cannot be attached writable`);
    await d.post('update', { vid: base, creatorID: OWNER, readonly: true }).expect(200);
    await attach(base, 3).expect(200);
  });

  it('answers 501 to an export or unexport when exports are switched off, leaving the markers as they are', async () => {
    const vid = await create();
    const res = await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(501);
    expect(res.body).to.include({ error: 'exports are switched off on this storage host (ELEMENTO_EXPORTER=none)', code: 'not_supported' });
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.img', 'meta.json']);
    // A marker left from when exports were on (another daemon's, or this one's before a change of configuration).
    const marker = `${iqnFor(OWNER, vid)}.exported`;
    await fs.writeFile(path.join(volDir(vid), marker), '');
    await d.post('unexport', { volume_id: vid, client_uid: OWNER }).expect(501);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.img', marker, 'meta.json']);
  });

  it("counts only markers of the daemon's form (iqn.2004-10.cloud.elemento:01:<client XOR volume>.exported) as exports, as info reports them", async () => {
    const vid = await create();
    await fs.writeFile(path.join(volDir(vid), 'iqn.1234.exported'), '');
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.exported).to.equal(false);
    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(200);
    await fs.writeFile(path.join(volDir(vid), `${iqnFor(OTHER, vid)}.exported`), '');
    await waitFor(async () => (await d.post('info', { volume_id: vid }).expect(200)).body.exported === true, 5000, 'the index to see the marker');
    await d.post('destroy', { volume_id: vid }).expect(409);
  });
});
