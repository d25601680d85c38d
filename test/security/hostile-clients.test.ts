import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { fetch as undiciFetch, Response as UndiciResponse } from 'undici';
import { ForbiddenError } from '../../src/errors.js';
import { importTransport } from '../../src/images/fetch.js';
import { publicOnlyDispatcher } from '../../src/images/public-only.js';
import { bearer, TOKENS, writeTokenFile } from '../helpers/auth.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { withTgtd } from '../helpers/tgt.js';
import { makeTree, OTHER, OWNER, removeTree, snapshotTree, waitFor } from '../helpers/tree.js';

/**
 * What an authenticated but hostile tenant (a client token), or a careless client, gets from the
 * requests docs/SECURITY.md says are refused: the answer, and a tree left as it was. Bodies, uploads
 * and the quota: hostile-bodies.test.ts.
 */
describe('hostile and careless clients (API tokens)', () => {
  let mnt: string;
  let d: TestDaemon;
  let server: http.Server;
  let port: number;
  const hits: string[] = [];
  /** The disk image a local service would hand out: 1 MiB of raw bytes. */
  const secret = Buffer.alloc(1024 * 1024, 's');

  before(async () => {
    mnt = await makeTree({ a: { 'max-total-size': '1G' } });
    d = await startTestDaemon(mnt, { tokensFile: await writeTokenFile(mnt) });
    // A service on this host: /secret is the bytes, /to/<url> redirects there.
    server = http.createServer((req, res) => {
      hits.push(req.url ?? '');
      const to = /^\/to\/(.+)$/.exec(req.url ?? '')?.[1];
      if (to) res.writeHead(302, { Location: decodeURIComponent(to) }).end();
      else if (req.url === '/secret') res.writeHead(200, { 'Content-Length': secret.length }).end(secret);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await d.stop();
    await new Promise((resolve) => server.close(resolve));
    await removeTree(mnt);
  });
  beforeEach(() => void hits.splice(0));

  describe('imports from a URL (SSRF)', () => {
    const importAs = (token: string, endpoint: string, url: string, extra: object = {}) =>
      d.post(endpoint, { creatorID: OWNER, url, format: 'raw', private: true, ...extra }).set(bearer(token));

    for (const host of ['127.0.0.1', 'localhost', '[::1]', '[::ffff:127.0.0.1]', '[::127.0.0.1]', '2130706433', '0x7f.1', '169.254.169.254', '10.0.0.1', '172.16.0.1', '100.64.0.1', '192.168.1.1', '0.0.0.0', '[fd12:3456::1]', '[fe80::1]'])
      it(`refuses a client token's create/url from http://${host}/ (403), before connecting, and makes nothing`, async () => {
        const before = await snapshotTree(mnt);
        const res = await importAs(TOKENS.owner, 'create/url', `http://${host}:${port}/secret`);
        expect(res.status, JSON.stringify(res.body)).to.equal(403);
        expect(res.body.code).to.equal('forbidden');
        expect(res.body.field).to.equal('url');
        expect(res.body.error).to.match(/is not a public address: a client token may import only from public addresses$/);
        expect(hits).to.deep.equal([]);
        expect(await snapshotTree(mnt)).to.deep.equal(before);
      });

    it('refuses the same for cloudinit/create and iso/create', async () => {
      const before = await snapshotTree(mnt);
      await importAs(TOKENS.owner, 'cloudinit/create', `http://127.0.0.1:${port}/secret`).expect(403);
      const iso = { creatorID: OWNER, url: `http://127.0.0.1:${port}/secret`, isotype: 'tool', os_family: 'linux' };
      await d.post('iso/create', iso).set(bearer(TOKENS.owner)).expect(403);
      expect(hits).to.deep.equal([]);
      expect(await snapshotTree(mnt)).to.deep.equal(before);
    });

    it('refuses a redirect from a public address to this host (403) before connecting to it', async () => {
      // The public server is played here (no test reaches the Internet): its answer redirects to this host.
      const publicUrl = 'http://93.184.216.34/disk.img';
      const realFetch = importTransport.fetch;
      importTransport.fetch = ((input, init) =>
        String(input) === publicUrl
          ? Promise.resolve(new UndiciResponse(null, { status: 302, headers: { location: `http://127.0.0.1:${port}/secret` } }))
          : realFetch(input, init)) as typeof realFetch;
      try {
        const before = await snapshotTree(mnt);
        const res = await importAs(TOKENS.owner, 'create/url', publicUrl);
        expect([res.status, res.body]).to.deep.equal([403, { error: '127.0.0.1 is not a public address: a client token may import only from public addresses', code: 'forbidden', field: 'url' }]);
        expect(hits).to.deep.equal([]);
        expect(await snapshotTree(mnt)).to.deep.equal(before);
      } finally {
        importTransport.fetch = realFetch;
      }
    });

    it('still lets the controller (admin token) import from its private network, through a redirect', async () => {
      const res = await importAs(TOKENS.admin, 'create/url', `http://127.0.0.1:${port}/to/${encodeURIComponent('/secret')}`).expect(200);
      expect(hits).to.deep.equal([`/to/${encodeURIComponent('/secret')}`, '/secret']);
      const data = await d.api.get(`/api/v1.0/volumes/${res.body.vid}/data`).set(bearer(TOKENS.owner)).buffer(true).parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => cb(null, Buffer.concat(chunks)));
      });
      expect(Buffer.compare(data.body as Buffer, secret)).to.equal(0);
      await d.post('destroy', { volume_id: res.body.vid }).set(bearer(TOKENS.admin)).expect(200);
    });

    for (const target of ['file:///etc/passwd', 'ftp://127.0.0.1/x', 'gopher://127.0.0.1:70/x', 'http://u:p@127.0.0.1/x'])
      it(`answers 502 to a redirect to ${target}, without following it`, async () => {
        const before = await snapshotTree(mnt);
        const res = await importAs(TOKENS.admin, 'create/url', `http://127.0.0.1:${port}/to/${encodeURIComponent(target)}`).expect(502);
        expect(res.body.error).to.equal(`the download from 127.0.0.1:${port} was redirected to a URL that cannot be imported (only http and https, without credentials)`);
        expect(hits).to.have.length(1);
        expect(await snapshotTree(mnt)).to.deep.equal(before);
      });

    it('answers 502 to a redirect loop after 10 hops', async () => {
      let loop = '/secret';
      for (let i = 0; i < 12; i++) loop = `/to/${encodeURIComponent(loop)}`;
      const res = await importAs(TOKENS.admin, 'create/url', `http://127.0.0.1:${port}${loop}`).expect(502);
      expect(res.body.error).to.equal(`the download from 127.0.0.1:${port} was redirected more than 10 times`);
      expect(hits).to.have.length(11);
    });

    it('checks the address again as it connects (DNS rebinding): a name or literal of this host is refused at connect time, nothing reached', async () => {
      // assertPublicHost and the connection resolve separately; a rebinding DNS server (public, then 127.0.0.1)
      // cannot be stood up here, so the connect-time guard is driven alone, with a name that resolves to loopback.
      for (const host of ['localhost', '127.0.0.1', '[::1]']) {
        const err: unknown = await undiciFetch(`http://${host}:${port}/secret`, { dispatcher: publicOnlyDispatcher }).then(
          () => expect.fail(`the connection to ${host} was made`),
          (e: unknown) => e,
        );
        const cause = (err as { cause?: unknown }).cause;
        expect(cause).to.be.instanceOf(ForbiddenError);
        expect((cause as Error).message).to.equal(`${host.replace(/[[\]]/g, '')} is not a public address: a client token may import only from public addresses`);
      }
      expect(hits).to.deep.equal([]);
    });

    it('refuses a URL with credentials (400) without echoing them, where it was a 502 "connection lost"', async () => {
      const before = await snapshotTree(mnt);
      const res = await importAs(TOKENS.admin, 'create/url', `http://user:hunter2@127.0.0.1:${port}/secret`).expect(400);
      expect(res.body).to.deep.equal({ error: 'a URL with credentials (user:password@) cannot be imported; use a URL that needs none', code: 'bad_request', field: 'url' });
      expect(hits).to.deep.equal([]);
      expect(await snapshotTree(mnt)).to.deep.equal(before);
    });
  });

  describe('jobs', () => {
    it("keeps a client's finished job while another client floods the daemon with 1,001 refused clones (each a job)", async function () {
      this.timeout(120_000);
      const vid = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw', private: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const job = (await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).set(bearer(TOKENS.owner)).expect(202)).body.job;
      await waitFor(async () => (await d.api.get(`/api/v1.0/jobs/${job}`).set(bearer(TOKENS.owner))).body.state === 'done', 10_000, 'the convert');
      const unknown = '0'.repeat(32);
      for (let i = 0; i < 1001; i += 50)
        await Promise.all(Array.from({ length: Math.min(50, 1001 - i) }, () => d.post('clone', { volume_id: unknown, creatorID: OTHER }).set(bearer(TOKENS.other)).expect(404)));
      expect((await d.api.get('/api/v1.0/jobs').set(bearer(TOKENS.other)).expect(200)).body).to.have.length(1000);
      const mine = await d.api.get(`/api/v1.0/jobs/${job}`).set(bearer(TOKENS.owner)).expect(200);
      expect(mine.body).to.include({ id: job, state: 'done', vid });
      await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.owner)).expect(200);
    });
  });

  describe("another client's private volume", () => {
    it('does not exist to a client token on export and attach (404, as everywhere), where it was a 403 saying it is private', async () => {
      const vid = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw', private: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const before = await snapshotTree(mnt);
      for (const endpoint of ['export', 'attach']) {
        const res = await d.post(endpoint, { volume_id: vid, client_uid: OTHER, node: 'n1', vm_id: '7' }).set(bearer(TOKENS.other));
        expect([endpoint, res.status, res.body]).to.deep.equal([endpoint, 404, { error: `volume ${vid} does not exist`, code: 'not_found', vid }]);
      }
      // The controller, exporting to a client that is not the owner, is told the rule.
      const ruled = await d.post('attach', { volume_id: vid, client_uid: OTHER, node: 'n1', vm_id: '7' }).set(bearer(TOKENS.admin)).expect(403);
      expect(ruled.body.rule).to.equal('private');
      expect(await snapshotTree(mnt)).to.deep.equal(before);
      await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.owner)).expect(200);
    });
  });

  describe("attach of another client's volume", () => {
    it('refuses a client token the attach of another client\'s writable, not shareable volume (403), as its export', async () => {
      const writable = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw' }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const readonly = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw', readonly: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const before = await snapshotTree(mnt);
      const res = await d.post('attach', { volume_id: writable, client_uid: OTHER, node: 'n1', vm_id: '7' }).set(bearer(TOKENS.other)).expect(403);
      expect(res.body).to.deep.equal({ error: `volume ${writable} belongs to another client and is neither read-only nor shareable: only its owner may attach it`, code: 'forbidden', vid: writable, rule: 'not_owner' });
      expect(await snapshotTree(mnt)).to.deep.equal(before);
      // Its owner attaches it (the slot was not taken); another client attaches a read-only one.
      await d.post('attach', { volume_id: writable, client_uid: OWNER, node: 'n1', vm_id: '1' }).set(bearer(TOKENS.owner)).expect(200);
      await d.post('attach', { volume_id: readonly, client_uid: OTHER, node: 'n2', vm_id: '7' }).set(bearer(TOKENS.other)).expect(200);
      await d.post('detach', { volume_id: writable, client_uid: OWNER, node: 'n1', vm_id: '1' }).set(bearer(TOKENS.owner)).expect(200);
      await d.post('detach', { volume_id: readonly, client_uid: OTHER, node: 'n2', vm_id: '7' }).set(bearer(TOKENS.other)).expect(200);
      for (const vid of [writable, readonly]) await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.owner)).expect(200);
    });
  });

  describe("downloads of another client's volume", () => {
    it('refuses a client token the download of another client\'s writable volume, shareable or not (403): a slow one held off its owner\'s snapshots and exports', async () => {
      const writable = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw' }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const readonly = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw', readonly: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      for (const method of ['get', 'head'] as const) {
        const res = await d.api[method](`/api/v1.0/volumes/${writable}/data`).set(bearer(TOKENS.other)).expect(403);
        if (method === 'get')
          expect(res.body).to.deep.equal({ error: `volume ${writable} belongs to another client and is not read-only: only its owner may download it`, code: 'forbidden', vid: writable, rule: 'not_owner' });
      }
      // Shareable lets another client export or attach it, not download it: the download is as slow as its client.
      const shareable = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw', shareable: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const refused = await d.api.get(`/api/v1.0/volumes/${shareable}/data`).set(bearer(TOKENS.other)).expect(403);
      expect(refused.body).to.deep.equal({ error: `volume ${shareable} belongs to another client and is not read-only: only its owner may download it`, code: 'forbidden', vid: shareable, rule: 'not_owner' });
      await d.api.get(`/api/v1.0/volumes/${readonly}/data`).set(bearer(TOKENS.other)).expect(200);
      await d.api.get(`/api/v1.0/volumes/${writable}/data`).set(bearer(TOKENS.owner)).expect(200);
      await d.api.get(`/api/v1.0/volumes/${writable}/data`).set(bearer(TOKENS.admin)).expect(200);
      for (const vid of [writable, readonly, shareable]) await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.owner)).expect(200);
    });
  });

  describe('linked clones of another client\'s volume', () => {
    it('refuses a client token a linked clone of another client\'s writable volume (403): it would pin it, its owner unable to destroy it', async () => {
      const vid = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'qcow2', private: false, clonable: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const before = await snapshotTree(mnt);
      const res = await d.post('clone', { volume_id: vid, creatorID: OTHER, alg: 'overlay', private: true }).set(bearer(TOKENS.other)).expect(403);
      expect(res.body).to.deep.equal({
        error: `volume ${vid} belongs to another client and is not read-only: a linked clone would keep its owner from destroying, resizing or converting it (clone it with alg cp)`,
        code: 'forbidden', vid, field: 'alg',
      });
      expect(await snapshotTree(mnt)).to.deep.equal(before);
      // A full copy is fine, and the owner keeps its volume.
      const copy = (await d.post('clone', { volume_id: vid, creatorID: OTHER, alg: 'cp' }).set(bearer(TOKENS.other)).expect(200)).body.vid;
      await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.owner)).expect(200);
      await d.post('destroy', { volume_id: copy }).set(bearer(TOKENS.other)).expect(200);
    });

    it('lets a client token link another client\'s read-only volume (a template), its own, and the controller anything', async () => {
      const template = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'qcow2', readonly: true }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const writable = (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'qcow2' }).set(bearer(TOKENS.owner)).expect(200)).body.vid;
      const made = [
        (await d.post('clone', { volume_id: template, creatorID: OTHER, alg: 'overlay' }).set(bearer(TOKENS.other)).expect(200)).body.vid,
        (await d.post('clone', { volume_id: writable, creatorID: OWNER, alg: 'overlay' }).set(bearer(TOKENS.owner)).expect(200)).body.vid,
        (await d.post('clone', { volume_id: writable, creatorID: OTHER, alg: 'overlay' }).set(bearer(TOKENS.admin)).expect(200)).body.vid,
      ];
      for (const vid of made) await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.admin)).expect(200);
      for (const vid of [template, writable]) await d.post('destroy', { volume_id: vid }).set(bearer(TOKENS.owner)).expect(200);
    });
  });

  describe('ids in paths', () => {
    for (const segment of ['%2e%2e', '..%2f..%2fsettings.json', `${OWNER}%00`, `${OWNER}0`, 'x'.repeat(300)])
      it(`answers GET volumes/${segment.slice(0, 40)}/data with 404, where it was a 500`, async () => {
        const res = await d.api.get(`/api/v1.0/volumes/${segment}/data`).set(bearer(TOKENS.owner));
        expect(res.status, JSON.stringify(res.body)).to.equal(404);
        expect(res.body.code).to.equal('not_found');
        expect(res.body.error).to.match(/^volume .* does not exist$/);
      });
  });

  describe('multipart requests', () => {
    const raw = Buffer.alloc(1024 * 1024);

    it('refuses fields past the 100th (400) rather than dropping them: a private=true after 100 others was dropped (a public volume)', async () => {
      const before = await snapshotTree(mnt);
      const req = d.api.post('/api/v1.0/create/upload').set(bearer(TOKENS.owner)).field('creatorID', OWNER);
      for (let i = 0; i < 99; i++) req.field(`note${i}`, 'x');
      const res = await req.field('private', 'true').field('format', 'raw').attach('file', raw, 'disk.img');
      expect(res.status, JSON.stringify(res.body)).to.equal(400);
      expect(res.body).to.deep.equal({ error: 'a request may carry at most 100 fields', code: 'bad_request' });
      expect(await snapshotTree(mnt)).to.deep.equal(before);
      expect((await d.post('accessible', { client_uid: OWNER }).set(bearer(TOKENS.owner)).expect(200)).body).to.deep.equal([]);
    });

    it('refuses a field after the file part (400) rather than ignoring it: a private=true sent last made a public volume', async () => {
      const before = await snapshotTree(mnt);
      const res = await d.api.post('/api/v1.0/create/upload').set(bearer(TOKENS.owner)).field('creatorID', OWNER).attach('file', raw, 'disk.img').field('private', 'true');
      expect(res.status, JSON.stringify(res.body)).to.equal(400);
      expect(res.body).to.deep.equal({ error: "field 'private' comes after a file part: send the fields first, then the file", code: 'bad_request', field: 'private' });
      expect(await snapshotTree(mnt)).to.deep.equal(before);
      const set = await d.api.post('/api/v1.0/cloudinit/metadata').set(bearer(TOKENS.owner)).field('creatorID', OWNER).field('expectedFiles', '2')
        .attach('file', Buffer.from('#cloud-config\n'), 'user-data').field('private', 'true');
      expect(set.status, JSON.stringify(set.body)).to.equal(400);
      expect(await snapshotTree(mnt)).to.deep.equal(before);
    });

    it('refuses a field given twice (400), in the query or the parts: private=true&private=false made a public volume', async () => {
      const before = await snapshotTree(mnt);
      const query = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&private=true&private=false`).set(bearer(TOKENS.owner)).type('application/octet-stream').send(raw);
      expect([query.status, query.body]).to.deep.equal([400, { error: "'private' is given more than once in the query", code: 'bad_request', field: 'private' }]);
      const parts = await d.api.post('/api/v1.0/create/upload').set(bearer(TOKENS.owner)).field('creatorID', OWNER).field('private', 'true')
        .field('fields', JSON.stringify({ private: false })).attach('file', raw, 'disk.img');
      expect([parts.status, parts.body]).to.deep.equal([400, { error: "field 'private' is given more than once", code: 'bad_request', field: 'private' }]);
      expect(await snapshotTree(mnt)).to.deep.equal(before);
    });

    it('takes a query or part named __proto__ as an unknown field, never as the fields\' prototype', async () => {
      const proto = encodeURIComponent(JSON.stringify({ private: true, name: 'via-prototype' }));
      const query = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw&__proto__=${proto}`).set(bearer(TOKENS.owner)).type('application/octet-stream').send(raw).expect(200);
      const parts = await d.api.post('/api/v1.0/create/upload').set(bearer(TOKENS.owner)).field('creatorID', OWNER).field('format', 'raw')
        .field('__proto__', JSON.stringify({ private: true, name: 'via-prototype' })).attach('file', raw, 'disk.img').expect(200);
      for (const res of [query, parts]) {
        expect(res.body).to.include({ private: false, name: '' });
        await d.post('destroy', { volume_id: res.body.vid }).set(bearer(TOKENS.owner)).expect(200);
      }
    });

    it('refuses a field past 1 MB (413) rather than cutting it', async () => {
      const before = await snapshotTree(mnt);
      const res = await d.api.post('/api/v1.0/create/upload').set(bearer(TOKENS.owner)).field('creatorID', OWNER)
        .field('name', 'n'.repeat(1024 * 1024 + 1)).attach('file', raw, 'disk.img');
      expect(res.status, JSON.stringify(res.body)).to.equal(413);
      expect(res.body).to.deep.equal({ error: "field 'name' is larger than the 1048576 bytes accepted", code: 'payload_too_large' });
      expect(await snapshotTree(mnt)).to.deep.equal(before);
    });
  });
});

describe("exports of another client's volume (real tgtd, API tokens)", function () {
  this.timeout(60_000);
  const tgt = withTgtd();
  let mnt: string;
  let d: TestDaemon;

  before(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt, { exporter: 'tgt', tgtControlPort: tgt().controlPort, iscsiPortal: tgt().portal, tokensFile: await writeTokenFile(mnt) });
  });
  after(async () => {
    await d.stop();
    await removeTree(mnt);
  });
  const create = async (body: object) => (await d.post('create', { creatorID: OWNER, size: 0.01, format: 'raw', ...body }).set(bearer(TOKENS.owner)).expect(200)).body.vid as string;

  it("refuses a client token a writable export of another client's public volume (403): it could write it, and hold it against its owner", async () => {
    const vid = await create({});
    const before = await snapshotTree(mnt);
    const res = await d.post('export', { volume_id: vid, client_uid: OTHER }).set(bearer(TOKENS.other)).expect(403);
    expect(res.body).to.deep.equal({ error: `volume ${vid} belongs to another client and is neither read-only nor shareable: only its owner may export it`, code: 'forbidden', vid, rule: 'not_owner' });
    expect(await snapshotTree(mnt)).to.deep.equal(before);
    // Its owner exports it as before.
    await d.post('export', { volume_id: vid, client_uid: OWNER }).set(bearer(TOKENS.owner)).expect(200);
    await d.post('unexport', { volume_id: vid, client_uid: OWNER }).set(bearer(TOKENS.owner)).expect(200);
  });

  it('exports to another client a read-only volume (read-only) and a shareable one, and the controller anything', async () => {
    const readonly = await create({ readonly: true });
    const shareable = await create({ shareable: true });
    const writable = await create({});
    expect((await d.post('export', { volume_id: readonly, client_uid: OTHER }).set(bearer(TOKENS.other)).expect(200)).body.readonly).to.equal(true);
    expect((await d.post('export', { volume_id: shareable, client_uid: OTHER }).set(bearer(TOKENS.other)).expect(200)).body.readonly).to.equal(false);
    expect((await d.post('export', { volume_id: writable, client_uid: OTHER }).set(bearer(TOKENS.admin)).expect(200)).body.readonly).to.equal(false);
    for (const vid of [readonly, shareable]) await d.post('unexport', { volume_id: vid, client_uid: OTHER }).set(bearer(TOKENS.other)).expect(200);
    await d.post('unexport', { volume_id: writable, client_uid: OTHER }).set(bearer(TOKENS.admin)).expect(200);
  });
});
