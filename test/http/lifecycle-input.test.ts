import { expect } from 'chai';
import { daemonPerTest } from '../helpers/daemon.js';
import { OWNER, seedCreateBody, snapshotTree } from '../helpers/tree.js';

const VID = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';

/** Bad bodies for the lifecycle endpoints: 400 naming the field, nothing changed in the tree. */
describe('lifecycle endpoints: bad input', () => {
  const t = daemonPerTest();

  const cases: Array<[string, Record<string, unknown>, number, RegExp]> = [
    ['clone', { creatorID: OWNER }, 400, /^request was badly formatted\. 'volume_id'$/],
    ['clone', { volume_id: VID }, 400, /^request was badly formatted\. 'creatorID'$/],
    ['clone', { volume_id: VID, creatorID: OWNER, alg: 'dd' }, 400, /'alg'/],
    ['clone', { volume_id: VID, creatorID: OWNER, labels: { k: 1 } }, 400, /'labels\.k' must be string/],
    ['clone', { volume_id: VID, creatorID: OWNER }, 404, /^volume a{32} does not exist$/],
    ['overlay/compact', { creatorID: OWNER }, 400, /^request was badly formatted\. 'vid'$/],
    ['overlay/compact', { vid: VID, creatorID: OWNER, async: 'yes' }, 400, /'async'/],
    ['snapshot/create', { vid: VID, creatorID: OWNER }, 400, /^request was badly formatted\. 'name'$/],
    ['snapshot/create', { vid: VID, creatorID: OWNER, name: 'has space' }, 400, /'name'/],
    ['snapshot/revert', { vid: VID, name: 'x' }, 400, /^request was badly formatted\. 'creatorID'$/],
    ['snapshot/delete', { vid: VID, creatorID: OWNER, name: 'x'.repeat(65) }, 400, /'name'/],
    ['snapshot/list', {}, 400, /^request was badly formatted\. 'vid'$/],
    ['snapshot/list', { vid: VID }, 404, /^volume a{32} does not exist$/],
    ['update/transfer', { vid: VID, creatorID: OWNER }, 400, /^request was badly formatted\. 'new_creatorID'$/],
    ['transfer', { vid: VID, creatorID: OWNER, new_creatorID: 'nobody' }, 400, /'new_creatorID'/],
    ['transfer', { vid: VID, creatorID: OWNER, new_creatorID: OWNER }, 404, /^volume a{32} does not exist$/],
  ];

  it('answers every bad body with its status and one sentence, changing nothing', async () => {
    await t.d.post('create', seedCreateBody()).expect(200);
    const before = await snapshotTree(t.mnt);
    for (const [endpoint, body, status, message] of cases) {
      const res = await t.d.post(endpoint, body);
      expect(res.status, `${endpoint} ${JSON.stringify(body)}`).to.equal(status);
      expect(res.body.error, `${endpoint} ${JSON.stringify(body)}`).to.match(message);
    }
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });

  it('refuses an update that changes the format or the cloud-init flag (400 naming the field), changing nothing', async () => {
    const { vid } = (await t.d.post('create', seedCreateBody({ format: 'raw' })).expect(200)).body;
    const before = await snapshotTree(t.mnt);
    const format = await t.d.post('update', { vid, creatorID: OWNER, format: 'qcow2' }).expect(400);
    expect(format.body).to.deep.equal({ error: 'the format of a volume cannot be changed by update (use update/convert)', code: 'bad_request', field: 'format' });
    const cloudinit = await t.d.post('update', { vid, creatorID: OWNER, cloudinit: true }).expect(400);
    expect(cloudinit.body).to.deep.equal({ error: 'whether a volume is a cloud-init volume cannot be changed', code: 'bad_request', field: 'cloudinit' });
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });
});
