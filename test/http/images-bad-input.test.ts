import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTree, OWNER, removeTree, snapshotTree } from '../helpers/tree.js';

const ISO = { creatorID: OWNER, name: 'x', isotype: 'tool', os_family: 'windows', url: 'http://127.0.0.1:1/x.iso' };

/** Bad requests to the image endpoints: a 4xx JSON error naming the problem, and the tree unchanged. */
describe('bad input to the image endpoints', () => {
  let mnt: string;
  let d: TestDaemon;
  let before_: Record<string, string>;

  before(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
    before_ = await snapshotTree(mnt);
  });
  after(async () => {
    expect(await snapshotTree(mnt)).to.deep.equal(before_);
    await d.stop();
    await removeTree(mnt);
  });

  const cases: Array<[string, string, unknown, number, string | RegExp]> = [
    ['create/url', 'missing url', { creatorID: OWNER }, 400, "request was badly formatted. 'url'"],
    ['create/url', 'an ftp url', { creatorID: OWNER, url: 'ftp://127.0.0.1/x.img' }, 400, /'url' must match pattern/],
    ['create/url', 'a file url', { creatorID: OWNER, url: 'file:///etc/passwd' }, 400, /'url' must match pattern/],
    ['create/url', 'format iso', { creatorID: OWNER, url: 'http://127.0.0.1:1/x', format: 'iso' }, 400, /'format' must be equal to one of/],
    ['cloudinit/create', 'cloudinit false', { creatorID: OWNER, url: 'http://127.0.0.1:1/x', cloudinit: false }, 400, /'cloudinit' must be equal to constant/],
    ['iso/create', 'missing isotype', { ...ISO, isotype: undefined }, 400, "request was badly formatted. 'isotype'"],
    ['iso/create', 'unknown isotype', { ...ISO, isotype: 'game' }, 400, /'isotype' must be equal to one of/],
    ['iso/create', 'missing os_family', { ...ISO, os_family: undefined }, 400, "request was badly formatted. 'os_family'"],
    ['create/upload', 'a JSON body', { creatorID: OWNER }, 400, /create\/upload takes multipart\/form-data/],
    ['cloudinit/metadata', 'a JSON body', { creatorID: OWNER, expectedFiles: 2 }, 400, /takes multipart\/form-data/],
  ];
  for (const [endpoint, what, body, status, message] of cases)
    it(`${endpoint}: ${what} → ${status}`, async () => {
      const res = await d.post(endpoint, body).expect(status);
      if (typeof message === 'string') expect(res.body.error).to.equal(message);
      else expect(res.body.error).to.match(message);
    });

  it('cloudinit/metadata with a path that is not base64 JSON → 400', async () => {
    const res = await d.api.post('/api/v1.0/cloudinit/metadata/not-json').attach('file', Buffer.from('x'), 'user-data').expect(400);
    expect(res.body).to.deep.equal({ error: 'the path after cloudinit/metadata/ must be the base64 of a JSON object of fields', code: 'bad_request' });
  });

  it('download of an unknown volume → 404; tus without Tus-Resumable → 412', async () => {
    const res = await d.api.get(`/api/v1.0/volumes/${'b'.repeat(32)}/data`).expect(404);
    expect(res.body).to.deep.equal({ error: `volume ${'b'.repeat(32)} does not exist`, code: 'not_found', vid: 'b'.repeat(32) });
    await d.api.post('/api/v1.0/files').set('Upload-Length', '10').expect(412);
  });
});
