import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTree, OWNER, removeTree, seedCreateBody, snapshotTree } from '../helpers/tree.js';

/** Every bad request gets a 4xx JSON error naming the problem, and the tree stays as it was. */
describe('bad input', () => {
  let mnt: string;
  let d: TestDaemon;
  let vid: string;

  before(async () => {
    mnt = await makeTree({ a: { 'max-volumes': 3 } });
    d = await startTestDaemon(mnt);
    vid = (await d.post('create', seedCreateBody()).expect(200)).body.vid;
  });
  after(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  const cases: Array<[string, string, unknown, number, string | RegExp]> = [
    ['create', 'missing creatorID', { ...seedCreateBody(), creatorID: undefined }, 400, "request was badly formatted. 'creatorID'"],
    ['create', 'missing size', { ...seedCreateBody(), size: undefined }, 400, "request was badly formatted. 'size'"],
    ['create', 'size as a string', seedCreateBody({ size: '1' }), 400, "request was badly formatted. 'size' must be number"],
    ['create', 'negative size', seedCreateBody({ size: -1 }), 400, "request was badly formatted. 'size' must be > 0"],
    ['create', 'unknown format', seedCreateBody({ format: 'vmdk' }), 400, /'format' must be equal to one of the allowed values/],
    ['create', 'private as a string', seedCreateBody({ private: 'no' }), 400, "request was badly formatted. 'private' must be boolean"],
    ['create', 'creatorID with ../', seedCreateBody({ creatorID: '../../../../etc/passwd' }), 400, /'creatorID' must match pattern/],
    ['create', 'a JSON array', [seedCreateBody()], 400, /must be a JSON object/],
    ['create', 'alg overlay (a clone request\'s alg, not a volume\'s)', seedCreateBody({ alg: 'overlay' }), 400, /'alg' must be equal to one of the allowed values/],
    ['create', 'labels not strings', seedCreateBody({ labels: { a: 1 } }), 400, /'labels.a' must be string/],
    ['info', 'missing volume_id', {}, 400, "request was badly formatted. 'volume_id'"],
    ['info', 'volume_id with ../', { volume_id: '../a' }, 400, /'volume_id' must match pattern/],
    ['info', 'unknown volume', { volume_id: 'b'.repeat(32) }, 404, `volume ${'b'.repeat(32)} does not exist`],
    ['destroy', 'unknown volume', { volume_id: 'b'.repeat(32) }, 404, `volume ${'b'.repeat(32)} does not exist`],
    ['destroy', 'volume_id as a number', { volume_id: 12 }, 400, "request was badly formatted. 'volume_id' must be string"],
    ['update', 'missing vid', { creatorID: OWNER }, 400, "request was badly formatted. 'vid'"],
    ['update/resize', 'unknown volume', { vid: 'c'.repeat(32), creatorID: OWNER, size: 2 }, 404, `volume ${'c'.repeat(32)} does not exist`],
    ['update/resize', 'size 0', { vid: 'c'.repeat(32), creatorID: OWNER, size: 0 }, 400, "request was badly formatted. 'size' must be > 0"],
    ['update/convert', 'to iso', { vid: 'c'.repeat(32), creatorID: OWNER, format: 'iso' }, 400, /'format' must be equal to one of/],
    ['accessible', 'missing client_uid', {}, 400, "request was badly formatted. 'client_uid'"],
    ['cancreate', 'size null', { size: null }, 400, "request was badly formatted. 'size' must be number"],
  ];

  for (const [endpoint, what, body, status, message] of cases)
    it(`${endpoint}: ${what} → ${status}`, async () => {
      const before = await snapshotTree(mnt);
      const res = await d.post(endpoint, body).expect(status).expect('content-type', /json/);
      if (typeof message === 'string') expect(res.body.error).to.equal(message);
      else expect(res.body.error).to.match(message);
      expect(await snapshotTree(mnt)).to.deep.equal(before);
    });

  it('answers malformed JSON with 400', async () => {
    const before = await snapshotTree(mnt);
    const res = await d.api.post('/api/v1.0/create').set('content-type', 'application/json').send('{"creatorID": ').expect(400);
    expect(res.body).to.deep.equal({ error: 'request body is not valid JSON', code: 'bad_request' });
    expect(await snapshotTree(mnt)).to.deep.equal(before);
  });

  it('answers a body without a JSON content type with 400', async () => {
    const res = await d.api.post('/api/v1.0/create').set('content-type', 'text/plain').send('hello').expect(400);
    expect(res.body.error).to.equal('request body must be a JSON object (send Content-Type: application/json)');
  });

  it('answers an oversized body with 413', async () => {
    const res = await d.post('create', seedCreateBody({ name: 'x'.repeat(2 * 1024 * 1024) })).expect(413);
    expect(res.body.code).to.equal('payload_too_large');
  });

  it('answers unknown paths and ids smuggled into paths with 404 JSON', async () => {
    expect((await d.api.post('/api/v1.0/nothing').send({}).expect(404)).body.error).to.equal('no endpoint POST /nothing');
    await d.api.get('/api/v1.0/../../etc/passwd').expect(404);
    await d.api.post(`/api/v1.0/info/../destroy`).send({ volume_id: vid }).expect(404);
    await d.post('info', { volume_id: vid }).expect(200);
  });
});
