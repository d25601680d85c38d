import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { daemonPerTest, startTestDaemon } from '../helpers/daemon.js';
import { startImageServer } from '../helpers/image-server.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody } from '../helpers/tree.js';

const FILES: Record<string, string> = {
  'user-data': '#cloud-config\nhostname: vm1\nruncmd:\n  - [sh, -c, "mount -r LABEL=cidata /mnt && sh /mnt/setup.sh"]\n',
  'meta-data': 'instance-id: iid-vm1\nlocal-hostname: vm1\n',
  'network-config': 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n',
  'setup.sh': '#!/bin/sh\necho configured > /root/done\n',
};
const FIRST = { creatorID: OWNER, name: 'seed-vm1', private: false, expectedFiles: 4 };

/** A file read back from the ISO with isoinfo (Rock Ridge names). */
async function fromIso(iso: string, name: string): Promise<string> {
  return (await execa('isoinfo', ['-R', '-i', iso, '-x', `/${name}`])).stdout + '\n';
}

describe('cloud-init seed volumes (cloud-localds, xorriso, isoinfo)', function () {
  this.timeout(60_000);
  const env = daemonPerTest();
  const volDir = (vid: string) => path.join(env.mnt, 'a', `vid.${vid}.elimg`);
  const send = (fields: object, ...names: string[]) => {
    let req = env.d.api.post('/api/v1.0/cloudinit/metadata').field('fields', JSON.stringify(fields));
    for (const n of names) req = req.attach('file', Buffer.from(FILES[n] ?? 'x'), n);
    return req;
  };
  const volumeDirs = async () => (await fs.readdir(path.join(env.mnt, 'a'))).filter((n) => n.startsWith('vid.'));


  it('answers 206 CONTINUE until the set is complete, then 200 OK with a cidata ISO holding the files', async () => {
    const first = await send(FIRST, 'user-data').expect(206);
    const vid = first.body.vid;
    expect(first.body).to.deep.equal({ status: 'CONTINUE', vid, received: 1, expected: 4 });
    expect((await fs.readdir(path.join(volDir(vid), 'cloud-init-metadata'))).sort()).to.deep.equal(['elemento.4.expected', 'user-data']);
    // The client's other form: the JSON fields base64-encoded in the path.
    const encoded = Buffer.from(JSON.stringify({ creatorID: OWNER, vid })).toString('base64');
    const second = await env.d.api.post(`/api/v1.0/cloudinit/metadata/${encoded}`).attach('file', Buffer.from(FILES['meta-data']), 'meta-data').expect(206);
    expect(second.body).to.deep.equal({ status: 'CONTINUE', vid, received: 2, expected: 4 });
    const last = await send({ creatorID: OWNER, vid }, 'network-config', 'setup.sh').expect(200);
    expect(last.body).to.deep.equal({ status: 'OK', vid, received: 4, expected: 4 });

    const iso = path.join(volDir(vid), 'data.iso');
    expect((await execa('isoinfo', ['-d', '-i', iso])).stdout).to.match(/Volume id: cidata/);
    for (const name of Object.keys(FILES)) expect(await fromIso(iso, name)).to.equal(FILES[name]);
    expect((await fs.readdir(path.join(volDir(vid), 'cloud-init-metadata'))).sort()).to.deep.equal(['elemento.4.expected', 'meta-data', 'network-config', 'setup.sh', 'user-data']);
    const { body: info } = await env.d.post('info', { volume_id: vid }).expect(200);
    expect(info).to.include({ format: 'iso', cloudinit: true, readonly: true, bootable: false, size: (await fs.stat(iso)).size });
  });

  const metadataFiles = async (vid: string) => (await fs.readdir(path.join(volDir(vid), 'cloud-init-metadata'))).sort();

  it('refuses one file too many; the failed call stores nothing, and the set can still be completed', async () => {
    const { vid } = (await send({ ...FIRST, expectedFiles: 3 }, 'user-data').expect(206)).body;
    const res = await send({ creatorID: OWNER, vid }, 'meta-data', 'network-config', 'setup.sh').expect(400);
    expect(res.body.error).to.equal(`volume ${vid} expects 3 files and has them all; 'setup.sh' is one too many`);
    expect(await metadataFiles(vid)).to.deep.equal(['elemento.3.expected', 'user-data']);
    expect((await send({ creatorID: OWNER, vid }, 'meta-data', 'network-config').expect(200)).body).to.deep.equal({ status: 'OK', vid, received: 3, expected: 3 });
    expect(await fs.readFile(path.join(volDir(vid), 'data.iso'))).to.have.length.above(0);
  });

  it('keeps the last place of a set for user-data: a first call without it leaves no volume, a later one leaves the set as it was', async () => {
    const res = await send({ ...FIRST, expectedFiles: 2 }, 'meta-data', 'network-config').expect(400);
    expect(res.body.error).to.match(/one file left to receive and no user-data yet; 'network-config' cannot take its place$/);
    expect(await volumeDirs()).to.deep.equal([]);

    const { vid } = (await send({ ...FIRST, expectedFiles: 2 }, 'meta-data').expect(206)).body;
    expect((await send({ creatorID: OWNER, vid }, 'network-config').expect(400)).body.field).to.equal('file');
    expect(await metadataFiles(vid)).to.deep.equal(['elemento.2.expected', 'meta-data']);
    await send({ creatorID: OWNER, vid }, 'user-data').expect(200);
  });

  it("refuses network-data beside network-config (one file under two names), and a call naming both expectedFiles and vid", async () => {
    const { vid } = (await send({ ...FIRST, expectedFiles: 3 }, 'user-data', 'network-config').expect(206)).body;
    const res = await send({ creatorID: OWNER, vid }, 'network-data').expect(400);
    expect(res.body).to.deep.equal({
      error: `'network-data' is 'network-config' under its other name, and volume ${vid} already has 'network-config'`, code: 'bad_request', field: 'file',
    });
    expect(await metadataFiles(vid)).to.deep.equal(['elemento.3.expected', 'network-config', 'user-data']);
    const both = await send({ creatorID: OWNER, vid, expectedFiles: 3 }, 'meta-data').expect(400);
    expect(both.body).to.deep.equal({
      error: "a first call names 'expectedFiles' (and creates the volume), a later one its 'vid': not both", code: 'bad_request', field: 'vid',
    });
    expect(await metadataFiles(vid)).to.deep.equal(['elemento.3.expected', 'network-config', 'user-data']);
    expect((await send({ creatorID: OWNER, vid }, 'meta-data').expect(200)).body).to.include({ status: 'OK', received: 3 });
    expect(await volumeDirs()).to.deep.equal([`vid.${vid}.elimg`]);
  });

  it('clear errors: unknown volume 404, not a cloud-init volume 400, complete set or no tracker 409, another owner 403, bad fields 400', async () => {
    const unknown = 'abcdefabcdefabcdefabcdefabcdefab';
    expect((await send({ creatorID: OWNER, vid: unknown }, 'user-data').expect(404)).body).to.deep.equal({ error: `volume ${unknown} does not exist`, code: 'not_found', vid: unknown });
    const { vid: disk } = (await env.d.post('create', seedCreateBody({ size: 0.01 })).expect(200)).body;
    expect((await send({ creatorID: OWNER, vid: disk }, 'user-data').expect(400)).body.error).to.equal(`volume ${disk} is not a cloud-init metadata volume`);
    const { vid } = (await send({ ...FIRST, expectedFiles: 2 }, 'user-data').expect(206)).body;
    expect((await send({ creatorID: OTHER, vid }, 'meta-data').expect(403)).body.code).to.equal('forbidden');
    await send({ creatorID: OWNER, vid }, 'meta-data').expect(200);
    expect((await send({ creatorID: OWNER, vid }, 'meta-data').expect(409)).body.error).to.match(/already complete \(elemento\.2\.expected\)/);
    await fs.rm(path.join(volDir(vid), 'cloud-init-metadata', 'elemento.2.expected'));
    expect((await send({ creatorID: OWNER, vid }, 'meta-data').expect(409)).body.error).to.match(/has no file set tracker/);
    expect((await send({ creatorID: OWNER, name: 'x', expectedFiles: 1 }, 'user-data').expect(400)).body.field).to.equal('expectedFiles');
    expect((await env.d.post('cloudinit/metadata', FIRST).expect(400)).body.error).to.match(/multipart/);
  });
});

describe('images half-made by a daemon that died', () => {
  it('removes a pending cloud-init set and a pending upload at the next start', async () => {
    const mnt = await makeTree({ a: {} });
    const dead = '0000000000000000000000000000dead';
    for (const [vid, extra] of [['c'.repeat(32), 'cloud-init-metadata'], ['e'.repeat(32), `.upload.tmp-${dead.slice(0, 12)}`]]) {
      const dir = path.join(mnt, 'a', `vid.${vid}.elimg`);
      await fs.mkdir(dir);
      await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ volumeID: vid, creatorID: OWNER, size: 0, format: 'iso', cloudinit: true }));
      await fs.writeFile(path.join(dir, `elemento.create.${dead}.ignore`), '{}');
      if (extra === 'cloud-init-metadata') {
        await fs.mkdir(path.join(dir, extra));
        await fs.writeFile(path.join(dir, extra, 'elemento.3.expected'), '');
        await fs.writeFile(path.join(dir, extra, 'user-data'), FILES['user-data']);
      } else {
        await fs.mkdir(path.join(dir, extra));
        await fs.writeFile(path.join(dir, extra, 'part'), 'half an image');
      }
    }
    const d = await startTestDaemon(mnt);
    try {
      expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([]);
    } finally {
      await d.stop();
      await removeTree(mnt);
    }
  });
});

describe('cloudinit/create (local HTTP server)', function () {
  this.timeout(60_000);
  it('makes a bootable cloud-image volume marked cloudinit from a URL', async () => {
    const src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-ci-'));
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(src, 'cloud.qcow2'), '32M']);
    const server = await startImageServer(src);
    const mnt = await makeTree({ a: {} });
    const d = await startTestDaemon(mnt);
    try {
      const res = await d.post('cloudinit/create', { creatorID: OWNER, name: 'ubuntu', url: server.url('cloud.qcow2') }).expect(200);
      const { body: info } = await d.post('info', { volume_id: res.body.vid }).expect(200);
      expect(info).to.include({ cloudinit: true, bootable: true, format: 'qcow2', size: 32 * 1024 * 1024, name: 'ubuntu' });
    } finally {
      await d.stop();
      await server.close();
      await removeTree(mnt);
      await removeTree(src);
    }
  });
});
