import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody } from '../helpers/tree.js';

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
    await d.post('detach', { volume_id: vid, client_uid: OWNER, node: NODE, vm_id: 9 }).expect(200);
    await d.post('detach', { volume_id: vid, client_uid: OWNER, node: NODE, vm_id: 9 }).expect(200);
    await d.post('destroy', { volume_id: vid }).expect(200);

    const priv = await create({ private: true });
    expect((await attach(priv, 1, { client_uid: OTHER }).expect(403)).body.rule).to.equal('private');
    expect((await d.post('attach', { volume_id: priv, client_uid: OWNER, vm_id: 1 }).expect(400)).body.error).to.equal("request was badly formatted. 'node'");
  });

  it('answers 501 to an export when exports are switched off', async () => {
    const vid = await create();
    const res = await d.post('export', { volume_id: vid, client_uid: OWNER }).expect(501);
    expect(res.body).to.include({ error: 'exports are switched off on this storage host (ELEMENTO_EXPORTER=none)', code: 'not_supported' });
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.img', 'meta.json']);
  });
});
