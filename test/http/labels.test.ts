import { expect } from 'chai';
import { daemonPerTest } from '../helpers/daemon.js';
import { OTHER, OWNER, seedCreateBody } from '../helpers/tree.js';

/** Labels (seed 003's key/value metadata): set at create, replaced by update, returned and filtered. */
describe('labels', () => {
  const t = daemonPerTest();

  const names = async (client: string, labels?: Record<string, string>) =>
    ((await t.d.post('accessible', { client_uid: client, ...(labels ? { labels } : {}) }).expect(200)).body as Array<{ name: string }>)
      .map((v) => v.name)
      .sort();

  it('are set at create, replaced as a whole by update, returned by info, and filter accessible (every pair must match)', async () => {
    const a = (await t.d.post('create', seedCreateBody({ name: 'a', labels: { env: 'prod', tier: 'web' } })).expect(200)).body;
    expect(a.labels).to.deep.equal({ env: 'prod', tier: 'web' });
    await t.d.post('create', seedCreateBody({ name: 'b', labels: { env: 'prod' } })).expect(200);
    await t.d.post('create', seedCreateBody({ name: 'c', creatorID: OTHER, private: true, labels: { env: 'prod' } })).expect(200);

    expect(await names(OWNER, { env: 'prod' })).to.deep.equal(['a', 'b']);
    expect(await names(OWNER, { env: 'prod', tier: 'web' })).to.deep.equal(['a']);
    expect(await names(OTHER, { env: 'prod' })).to.deep.equal(['a', 'b', 'c']);
    expect(await names(OWNER, {})).to.deep.equal(['a', 'b']);

    const updated = (await t.d.post('update', { vid: a.vid, creatorID: OWNER, labels: { env: 'dev' } }).expect(200)).body;
    expect(updated.labels).to.deep.equal({ env: 'dev' });
    expect((await t.d.post('info', { volume_id: a.vid }).expect(200)).body.labels).to.deep.equal({ env: 'dev' });
    expect(await names(OWNER, { tier: 'web' })).to.deep.equal([]);
    await t.d.post('update', { vid: a.vid, creatorID: OWNER, labels: { 'bad key': 'x' } }).expect(400);
  });
});
