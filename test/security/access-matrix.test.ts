import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { bearer, TOKENS, writeTokenFile } from '../helpers/auth.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { ACTORS, actorIdentity, ENDPOINTS, expectedStatus, renderMatrix, type Endpoint, type Fixture } from '../helpers/endpoints.js';
import { makeTree, OTHER, OWNER, removeTree, snapshotTree, waitFor } from '../helpers/tree.js';

/** Every endpoint × every kind of caller, with tokens configured (the table is test/helpers/endpoints.ts). */
describe('access matrix (API tokens)', () => {
  let mnt: string;
  let d: TestDaemon;
  let shared: Fixture;
  let jobId: string;

  const asAdmin = (endpoint: string, body: object) => d.post(endpoint, body).set(bearer(TOKENS.admin));
  const makeVolume = async (priv: boolean) =>
    (await asAdmin('create', { creatorID: OWNER, name: priv ? 'private' : 'public', private: priv, size: 0.01, format: 'raw' }).expect(200)).body.vid as string;
  const freshFixture = async (): Promise<Fixture> => ({ privateVid: await makeVolume(true), publicVid: await makeVolume(false), jobId });

  function send(endpoint: Endpoint, fx: Fixture, actor: (typeof ACTORS)[number]) {
    const { self, token } = actorIdentity(actor);
    const url = `/api/v1.0/${endpoint.path(fx)}`;
    const req = endpoint.method === 'GET' ? d.api.get(url) : endpoint.method === 'DELETE' ? d.api.delete(url) : d.api.post(url);
    if (token) req.set(bearer(TOKENS[token]));
    return endpoint.body ? req.send(endpoint.body(fx, self)) : req;
  }

  before(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt, { tokensFile: await writeTokenFile(mnt) });
    const convertMe = await makeVolume(true);
    jobId = (await d.post('update/convert', { vid: convertMe, creatorID: OWNER, format: 'qcow2', async: true }).set(bearer(TOKENS.owner)).expect(202)).body.job;
    await waitFor(async () => (await d.api.get(`/api/v1.0/jobs/${jobId}`).set(bearer(TOKENS.admin))).body.state === 'done', 10_000, 'the job');
    shared = await freshFixture();
  });
  after(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  for (const endpoint of ENDPOINTS)
    for (const actor of ACTORS) {
      const status = expectedStatus(endpoint, actor);
      it(`${endpoint.name} by ${actor} → ${status}`, async () => {
        const fx = endpoint.mutates ? await freshFixture() : shared;
        const before = await snapshotTree(mnt);
        const res = await send(endpoint, fx, actor);
        expect(res.status, JSON.stringify(res.body)).to.equal(status);
        expect(res.headers['content-type']).to.match(/json/);
        if (status >= 400) {
          expect(res.body).to.include.keys('error', 'code');
          expect(['error', 'code', 'vid', 'field']).to.include.members(Object.keys(res.body));
          expect(await snapshotTree(mnt)).to.deep.equal(before);
        }
      });
    }

  it('answers a request without a token with the whole 401 body and a WWW-Authenticate challenge', async () => {
    const res = await d.post('info', { volume_id: shared.publicVid }).expect(401);
    expect(res.body).to.deep.equal({ error: 'an API token is required (Authorization: Bearer <token>)', code: 'unauthorized' });
    expect(res.headers['www-authenticate']).to.equal('Bearer realm="elemento-storage"');
  });

  for (const header of ['Bearer not-a-token-of-this-daemon', `Basic ${Buffer.from('admin:admin').toString('base64')}`, 'Bearer', `Bearer ${TOKENS.admin}x`, `Bearer ${TOKENS.admin.slice(0, -1)}`, `${TOKENS.admin}`])
    it(`answers Authorization: ${header.slice(0, 24)}… with 401 invalid_token`, async () => {
      const res = await d.post('info', { volume_id: shared.publicVid }).set('Authorization', header).expect(401);
      expect(res.body).to.deep.equal({ error: 'the API token is not valid', code: 'unauthorized' });
      expect(res.headers['www-authenticate']).to.equal('Bearer realm="elemento-storage", error="invalid_token"');
    });

  it('accepts the scheme in any case, and the client_uid of the token file in any case', async () => {
    await d.post('accessible', { client_uid: OTHER }).set('Authorization', `bearer ${TOKENS.other}`).expect(200);
    await d.post('accessible', { client_uid: OTHER.toUpperCase() }).set('Authorization', `BEARER ${TOKENS.other}`).expect(200);
  });

  it("refuses a client token whose body names another client, with the whole 403 body", async () => {
    const res = await d.post('update', { vid: shared.publicVid, creatorID: OWNER, name: 'stolen' }).set(bearer(TOKENS.other)).expect(403);
    expect(res.body).to.deep.equal({ error: `this token acts for client ${OTHER} only, and 'creatorID' names another client`, code: 'forbidden', field: 'creatorID' });
    const res2 = await d.post('info', { volume_id: shared.privateVid, client_uid: OWNER }).set(bearer(TOKENS.other)).expect(403);
    expect(res2.body.field).to.equal('client_uid');
  });

  it('refuses a client token naming another client in an upload\'s query or multipart fields, or a cloud-init set\'s, changing nothing', async () => {
    const before = await snapshotTree(mnt);
    const denied = { error: `this token acts for client ${OTHER} only, and 'creatorID' names another client`, code: 'forbidden', field: 'creatorID' };
    const raw = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&private=true&format=raw`).set(bearer(TOKENS.other))
      .set('Content-Type', 'application/octet-stream').send(Buffer.alloc(1024 * 1024)).expect(403);
    expect(raw.body).to.deep.equal(denied);
    const multipart = await d.api.post('/api/v1.0/create/upload').set(bearer(TOKENS.other))
      .field('creatorID', OWNER).field('format', 'raw').attach('file', Buffer.alloc(1024 * 1024), 'disk.img').expect(403);
    expect(multipart.body).to.deep.equal(denied);
    const seed = await d.api.post('/api/v1.0/cloudinit/metadata').set(bearer(TOKENS.other))
      .field('fields', JSON.stringify({ creatorID: OWNER, name: 'x', private: true, expectedFiles: 2 })).attach('file', Buffer.from('#cloud-config\n'), 'user-data').expect(403);
    expect(seed.body).to.deep.equal(denied);
    expect(await snapshotTree(mnt)).to.deep.equal(before);
  });

  it("hides another client's private cloud-init set being filled (404, as its volume), and refuses a public one (403)", async () => {
    const begin = (priv: boolean) =>
      d.api.post('/api/v1.0/cloudinit/metadata').set(bearer(TOKENS.owner))
        .field('fields', JSON.stringify({ creatorID: OWNER, name: 'seed', private: priv, expectedFiles: 2 })).attach('file', Buffer.from('#cloud-config\n'), 'user-data').expect(206);
    const add = (vid: string) =>
      d.api.post('/api/v1.0/cloudinit/metadata').set(bearer(TOKENS.other)).field('fields', JSON.stringify({ creatorID: OTHER, vid })).attach('file', Buffer.from('x'), 'meta-data');
    const hidden = (await begin(true)).body.vid;
    expect((await add(hidden).expect(404)).body).to.deep.equal({ error: `volume ${hidden} does not exist`, code: 'not_found', vid: hidden });
    const shown = (await begin(false)).body.vid;
    expect((await add(shown).expect(403)).body.code).to.equal('forbidden');
  });

  it('answers a client on GET status with the whole 403 body', async () => {
    const res = await d.api.get('/api/v1.0/status').set(bearer(TOKENS.owner)).expect(403);
    expect(res.body).to.deep.equal({ error: 'GET /status needs an admin token', code: 'forbidden' });
  });

  it("hides another client's private volume as not existing (whole 404 body)", async () => {
    const res = await d.post('info', { volume_id: shared.privateVid }).set(bearer(TOKENS.other)).expect(404);
    expect(res.body).to.deep.equal({ error: `volume ${shared.privateVid} does not exist`, code: 'not_found', vid: shared.privateVid });
  });

  it('a client token acts as its client even when the body names nobody', async () => {
    const mine = (await d.post('accessible', { client_uid: OTHER }).set(bearer(TOKENS.other)).expect(200)).body as Array<{ volumeID: string; own: boolean }>;
    expect(mine.map((v) => v.volumeID)).to.include(shared.publicVid).and.not.include(shared.privateVid);
    expect((await d.post('has', { volume_id: shared.privateVid }).set(bearer(TOKENS.other)).expect(200)).body).to.deep.equal({ vid: shared.privateVid, has: false });
    const res = await d.post('destroy', { volume_id: shared.publicVid }).set(bearer(TOKENS.other)).expect(403);
    expect(res.body.error).to.equal(`only the creator of volume ${shared.publicVid} may destroy it`);
  });

  it('an admin token acts as the controller when the body names nobody, and as the named client otherwise', async () => {
    const all = (await d.api.get('/api/v1.0/status').set(bearer(TOKENS.admin)).expect(200)).body;
    expect(all.volumes).to.be.greaterThan(2);
    await d.post('info', { volume_id: shared.privateVid }).set(bearer(TOKENS.admin)).expect(200);
    await d.post('info', { volume_id: shared.privateVid, client_uid: OTHER }).set(bearer(TOKENS.admin)).expect(404);
  });

  it('lists to a client only the jobs it started', async () => {
    const ids = (token: string) => d.api.get('/api/v1.0/jobs').set(bearer(token)).then((r) => (r.body as Array<{ id: string }>).map((j) => j.id));
    const owners = await ids(TOKENS.owner);
    const others = await ids(TOKENS.other);
    expect(owners).to.include(jobId);
    expect(others).to.not.include(jobId);
    expect(owners.filter((id) => others.includes(id))).to.deep.equal([]);
    expect(await ids(TOKENS.admin)).to.include.members([...owners, ...others]);
  });

  it('docs/SECURITY.md shows this matrix', async () => {
    const page = await fs.readFile(path.resolve('docs/SECURITY.md'), 'utf8');
    expect(page, `docs/SECURITY.md should contain:\n${renderMatrix()}`).to.include(renderMatrix());
  });
});
