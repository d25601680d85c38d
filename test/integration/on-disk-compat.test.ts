import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { daemonPerTest, startTestDaemon } from '../helpers/daemon.js';
import { OWNER, snapshotTree } from '../helpers/tree.js';

/**
 * Trees written by others: the original Elemento daemon, an operator by hand, another tool. What the
 * daemon serves from them as they are, and what it reports broken, naming why.
 */
describe('trees written by others', () => {
  const env = daemonPerTest({ a: {} });
  const root = () => path.join(env.mnt, 'a');

  /** A volume directory made by hand with `meta` (text, as written) and a data file made by `qemu-img create -f <kind>`. */
  async function handMade(uid: string, meta: string, dataName: string, kind: 'raw' | 'qcow2', size = '1M'): Promise<string> {
    const dir = path.join(root(), `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    await execa('qemu-img', ['create', '-q', '-f', kind, path.join(dir, dataName), size]);
    await fs.writeFile(path.join(dir, 'meta.json'), meta);
    await env.d.daemon.ctx.index.reloadDir(dir);
    return dir;
  }

  it('answers 409 naming the lie when data.qcow2 is not a qcow2 image, and never lets qemu-img guess', async () => {
    const uid = '1'.repeat(32);
    const dir = await handMade(uid, JSON.stringify({ creatorID: OWNER, format: 'qcow2', size: 1048576 }), 'data.qcow2', 'raw');
    const before = await snapshotTree(env.mnt);
    const why = `volume ${uid} is broken: data.qcow2 is not a qcow2 image, as its name and meta.json's format say: correct one or the other by hand`;
    for (const [endpoint, body] of [
      ['update/resize', { vid: uid, creatorID: OWNER, size: 0.002 }],
      ['update/convert', { vid: uid, creatorID: OWNER, format: 'raw' }],
      ['clone', { volume_id: uid, creatorID: OWNER, name: 'copy' }],
      ['clone', { volume_id: uid, creatorID: OWNER, name: 'linked', alg: 'overlay' }],
      ['snapshot/create', { vid: uid, creatorID: OWNER, name: 's1' }],
      ['snapshot/list', { vid: uid, creatorID: OWNER }],
    ] as const) {
      const res = await env.d.post(endpoint, body);
      expect([endpoint, res.status, res.body.error]).to.deep.equal([endpoint, 409, why]);
    }
    const download = await env.d.api.get(`/api/v1.0/volumes/${uid}/data`);
    expect([download.status, download.body.error]).to.deep.equal([409, why]);
    expect(await snapshotTree(env.mnt)).to.deep.equal(before);
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.qcow2', 'meta.json']);
  });

  it('serves a qcow2 image an operator named data.img (format raw) as the raw bytes it holds, never as qcow2', async () => {
    const uid = '2'.repeat(32);
    await handMade(uid, JSON.stringify({ creatorID: OWNER, format: 'raw' }), 'data.img', 'qcow2', '1G');
    const info = (await env.d.post('info', { volume_id: uid }).expect(200)).body;
    const length = (await fs.stat(path.join(root(), `vid.${uid}.elimg`, 'data.img'))).size;
    expect(info).to.include({ format: 'raw', size: length });
    const download = await env.d.api.get(`/api/v1.0/volumes/${uid}/data`).buffer(true).parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => cb(null, Buffer.concat(chunks)));
    }).expect(200);
    expect(download.headers['x-image-format']).to.equal('raw');
    expect((download.body as Buffer).length).to.equal(length);
  });
});

describe('meta.json and settings.json as editors write them', () => {
  const BOM = '\ufeff';
  const env = daemonPerTest({ a: `${BOM}{\r\n  "max-volumes": 6,\r\n  "max-total-size": "200G"\r\n}\r\n` });

  it('reads both with a byte order mark, CRLF line ends and indentation (a Windows editor), and keeps what it does not know on update', async () => {
    const status = (await env.d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.skipped).to.deep.equal([]);
    expect(status.roots.map((r: { maxVolumes: number }) => r.maxVolumes)).to.deep.equal([6]);
    const uid = '3'.repeat(32);
    const dir = path.join(env.mnt, 'a', `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'data.img'), '1M']);
    await fs.writeFile(path.join(dir, 'meta.json'), `${BOM}{\r\n  "creatorID": "${OWNER}",\r\n  "name": "café disk",\r\n  "host_note": {"by": "ops"}\r\n}\r\n`);
    await env.d.daemon.ctx.index.reloadDir(dir);
    expect((await env.d.post('info', { volume_id: uid }).expect(200)).body).to.include({ name: 'café disk', size: 1048576 });
    await env.d.post('update', { vid: uid, creatorID: OWNER, name: 'renamed' }).expect(200);
    const written = await fs.readFile(path.join(dir, 'meta.json'), 'utf8');
    expect(JSON.parse(written)).to.deep.include({ name: 'renamed', host_note: { by: 'ops' } });
  });
});

describe('roots an operator linked or mounted twice', () => {
  let outside: string;
  const env = daemonPerTest({ a: {} });
  beforeEach(async () => {
    outside = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-outside-'));
  });
  afterEach(() => fs.rm(outside, { recursive: true, force: true }));

  it('serves a root that is a symbolic link (/mnt/pool -> /srv/pool) as a root, with its volumes', async () => {
    const target = path.join(outside, 'pool');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'settings.json'), '{"max-volumes": 3}');
    const uid = '4'.repeat(32);
    const dir = path.join(target, `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'data.img'), '1M']);
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ creatorID: OWNER }));
    await fs.symlink(target, path.join(env.mnt, 'pool'));
    await env.d.stop();
    env.d = await startTestDaemon(env.mnt);
    const status = (await env.d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots.map((r: { path: string }) => r.path).sort()).to.deep.equal([path.join(env.mnt, 'a'), path.join(env.mnt, 'pool')]);
    expect((await env.d.post('has', { volume_id: uid }).expect(200)).body.has).to.equal(true);
    await env.d.post('update/resize', { vid: uid, creatorID: OWNER, size: 0.002 }).expect(200);
  });

  it('serves a directory reached under two names (a link into the mount directory, links to nested directories) once, and says why not the other', async () => {
    const { vid } = (await env.d.post('create', { creatorID: OWNER, name: 'v', size: 0.001, format: 'raw' }).expect(200)).body;
    await fs.symlink(path.join(env.mnt, 'a'), path.join(env.mnt, 'b'));
    await fs.mkdir(path.join(outside, 'pool', 'sub'), { recursive: true });
    await fs.writeFile(path.join(outside, 'pool', 'settings.json'), '{}');
    await fs.writeFile(path.join(outside, 'pool', 'sub', 'settings.json'), '{}');
    await fs.symlink(path.join(outside, 'pool'), path.join(env.mnt, 'p'));
    await fs.symlink(path.join(outside, 'pool', 'sub'), path.join(env.mnt, 'q'));
    await env.d.stop();
    env.d = await startTestDaemon(env.mnt);
    const status = (await env.d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots.map((r: { path: string }) => r.path)).to.deep.equal([path.join(env.mnt, 'a'), path.join(env.mnt, 'p')]);
    expect(status.skipped).to.deep.equal([
      { path: path.join(env.mnt, 'b'), reason: `a symbolic link to ${path.join(await fs.realpath(env.mnt), 'a')}, which is inside the mount directory: not followed (it would serve a directory under two names)` },
      { path: path.join(env.mnt, 'q'), reason: `the same directory as the root ${path.join(env.mnt, 'p')}, or one nested with it (a link or a second mount)` },
    ]);
    expect(status.broken).to.deep.equal([]);
    await env.d.post('info', { volume_id: vid }).expect(200);
  });
});

describe('data files that disagree with meta.json', () => {
  const env = daemonPerTest({ a: {} });
  const root = () => path.join(env.mnt, 'a');

  async function volume(uid: string, meta: object, files: Record<string, 'raw' | 'qcow2' | string>, size = '10M'): Promise<string> {
    const dir = path.join(root(), `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    for (const [name, kind] of Object.entries(files))
      if (kind === 'raw' || kind === 'qcow2') await execa('qemu-img', ['create', '-q', '-f', kind, path.join(dir, name), size]);
      else await fs.writeFile(path.join(dir, name), kind);
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ creatorID: OWNER, ...meta }));
    await env.d.daemon.ctx.index.reloadDir(dir);
    return dir;
  }

  for (const format of ['raw', 'qcow2'] as const)
    it(`refuses (409, naming both sizes) to resize a ${format} volume whose image an operator grew past meta.json's size, and leaves the image whole`, async () => {
      const uid = (format === 'raw' ? '5' : '6').repeat(32);
      const name = format === 'raw' ? 'data.img' : 'data.qcow2';
      const dir = await volume(uid, { format, size: 1048576 }, { [name]: format });
      const res = await env.d.post('update/resize', { vid: uid, creatorID: OWNER, size: 0.002 });
      expect([res.status, res.body.error]).to.deep.equal([
        409,
        `volume ${uid}: ${name} holds 10485760 bytes, more than the 1048576 of meta.json and the 2000384 asked; volumes only grow: ask for 0.01048576 GB or more, or correct meta.json's size by hand`,
      ]);
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-f', format, path.join(dir, name)])).stdout);
      expect(info['virtual-size']).to.equal(10485760);
      await env.d.post('update/resize', { vid: uid, creatorID: OWNER, size: 0.02 }).expect(200);
      expect(JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).size).to.equal(20000256);
    });

  it("refuses to convert onto a data file of the target format an operator left in the volume, which the convert would replace", async () => {
    const uid = '7'.repeat(32);
    const dir = await volume(uid, { format: 'raw' }, { 'data.img': 'raw', 'data.qcow2': 'an operator backup' }, '1M');
    const res = await env.d.post('update/convert', { vid: uid, creatorID: OWNER, format: 'qcow2' });
    expect([res.status, res.body.error]).to.deep.equal([
      409,
      `volume ${uid} holds a data.qcow2 that its meta.json does not name (format raw): move it out of the volume first, the convert would replace it`,
    ]);
    expect(await fs.readFile(path.join(dir, 'data.qcow2'), 'utf8')).to.equal('an operator backup');
    expect(JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).format).to.equal('raw');
  });
});

describe('meta.json values typed otherwise than the seed types them', () => {
  const env = daemonPerTest({ a: {} });

  it('lists the volume broken naming the field, what it must be and the value found (never coerced: "false" is true to the original daemon)', async () => {
    const cases: Array<[string, object, string]> = [
      ['8'.repeat(32), { private: 'false' }, `'private' must be boolean, not "false"`],
      ['9'.repeat(32), { bootable: 1 }, `'bootable' must be boolean, not 1`],
      ['a'.repeat(32), { size: '4000000000' }, `'size' must be integer, not "4000000000"`],
      ['b'.repeat(32), { format: 'rdb' }, `'format' must be one of raw, qcow2, iso, rbd, not "rdb"`],
      ['c'.repeat(32), { bus: 'VIRTIO' }, `'bus' must be one of virtio, scsi, sata, ide, not "VIRTIO"`],
    ];
    for (const [uid, fields] of cases) {
      const dir = path.join(env.mnt, 'a', `vid.${uid}.elimg`);
      await fs.mkdir(dir);
      await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'data.img'), '1M']);
      await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ creatorID: OWNER, ...fields }));
      await env.d.daemon.ctx.index.reloadDir(dir);
    }
    const broken = (await env.d.api.get('/api/v1.0/status').expect(200)).body.broken as Array<{ vid: string; problem: string }>;
    expect(broken.map((b) => [b.vid, b.problem]).sort()).to.deep.equal(cases.map(([uid, , why]) => [uid, `meta.json is invalid: ${why}`]).sort());
    const info = await env.d.post('info', { volume_id: cases[0][0] }).expect(409);
    expect(info.body.error).to.equal(`volume ${cases[0][0]} is broken: meta.json is invalid: ${cases[0][2]}`);
  });
});

describe('a meta.json that is not a description', () => {
  const env = daemonPerTest({ a: {} });

  it('is listed broken by its size, without being read whole (an image copied over it by mistake)', async () => {
    const uid = 'd'.repeat(32);
    const dir = path.join(env.mnt, 'a', `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'data.img'), '1M']);
    await execa('truncate', ['-s', '600M', path.join(dir, 'meta.json')]);
    await env.d.daemon.ctx.index.reloadDir(dir);
    const broken = (await env.d.api.get('/api/v1.0/status').expect(200)).body.broken;
    expect(broken).to.deep.equal([
      { vid: uid, dir, problem: 'meta.json is 629145600 bytes, too large for a volume description (at most 1048576): was an image copied over it?' },
    ]);
  });
});

describe('a meta.json that breaks a rule the daemon keeps', () => {
  const env = daemonPerTest({ a: {} });

  async function handMade(uid: string, meta: object, data: string, kind: 'raw' | 'iso'): Promise<string> {
    const dir = path.join(env.mnt, 'a', `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    if (kind === 'raw') await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, data), '1M']);
    else await fs.writeFile(path.join(dir, data), Buffer.alloc(2048));
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ creatorID: OWNER, ...meta }));
    await env.d.daemon.ctx.index.reloadDir(dir);
    return dir;
  }

  it('answers an update that does not touch the broken rule with 409 naming meta.json, not a 400 blaming the request', async () => {
    const both = 'e'.repeat(32);
    await handMade(both, { bootable: true, shareable: true }, 'data.img', 'raw');
    const rename = await env.d.post('update', { vid: both, creatorID: OWNER, name: 'renamed' });
    expect([rename.status, rename.body.error]).to.deep.equal([
      409,
      `volume ${both} is both bootable and shareable, as its meta.json says (the daemon never makes one so): send bootable or shareable false with the update, or correct meta.json by hand`,
    ]);
    await env.d.post('update', { vid: both, creatorID: OWNER, shareable: false, name: 'renamed' }).expect(200);
    const writable = 'f'.repeat(32);
    await handMade(writable, { format: 'iso', readonly: false }, 'data.iso', 'iso');
    const relabel = await env.d.post('update', { vid: writable, creatorID: OWNER, labels: { os: 'debian' } });
    expect([relabel.status, relabel.body.error]).to.deep.equal([
      409,
      `volume ${writable} is an ISO image that its meta.json says is not read-only: send readonly true with the update, or correct meta.json by hand`,
    ]);
    await env.d.post('update', { vid: writable, creatorID: OWNER, labels: { os: 'debian' }, readonly: true }).expect(200);
  });
});

describe('a linked clone whose backing file an operator pointed elsewhere', () => {
  const env = daemonPerTest({ a: {} });

  it('is not copied (409 before anything is claimed): the copy would read its meta.json base, not the file its source reads', async () => {
    const base = (await env.d.post('create', { creatorID: OWNER, name: 'tmpl', size: 0.01, format: 'qcow2' }).expect(200)).body.vid;
    const overlay = (await env.d.post('clone', { volume_id: base, creatorID: OWNER, name: 'ov', alg: 'overlay' }).expect(200)).body.vid;
    const other = path.join(env.mnt, 'other-template.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', other, '10000384']);
    const image = path.join(env.mnt, 'a', `vid.${overlay}.elimg`, 'data.qcow2');
    await execa('qemu-img', ['rebase', '-u', '-b', other, '-F', 'qcow2', image]);
    const before = await snapshotTree(env.mnt);
    const res = await env.d.post('clone', { volume_id: overlay, creatorID: OWNER, name: 'copy' });
    expect([res.status, res.body.error]).to.deep.equal([
      409,
      `volume ${overlay} is a linked clone of ${base} (its meta.json's base), but its image reads through another file: its backing file was changed by hand; correct meta.json's base or the image before cloning it`,
    ]);
    expect(await snapshotTree(env.mnt)).to.deep.equal(before);
    // Its own linked clone reads through it, whatever it reads through: still made.
    await env.d.post('clone', { volume_id: overlay, creatorID: OWNER, name: 'ov2', alg: 'overlay' }).expect(200);
  });
});

describe('a mount directory laid out as its own root (the seed allows /mnt itself, SPEC §3 does not)', () => {
  const env = daemonPerTest({});

  it('is no root, and status says why instead of nothing', async () => {
    await fs.writeFile(path.join(env.mnt, 'settings.json'), '{}');
    await env.d.stop();
    env.d = await startTestDaemon(env.mnt);
    const status = (await env.d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots).to.deep.equal([]);
    expect(status.skipped).to.deep.equal([
      {
        path: env.mnt,
        reason: 'the mount directory holds a settings.json, but roots are the directories one or two levels below it (SPEC §3): the volumes beside it are not served; move them and settings.json into a directory below it',
      },
    ]);
  });
});

describe('a meta.json size written in GB instead of bytes', () => {
  const env = daemonPerTest({ a: { 'max-total-size': '2M' } });

  it('counts a raw volume by its data file at least, so a size of 4 for a 4 GB image does not free the quota', async () => {
    const uid = '1'.repeat(31) + '2';
    const dir = path.join(env.mnt, 'a', `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'data.img'), '1500000']);
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ creatorID: OWNER, size: 1 }));
    await env.d.daemon.ctx.index.reloadDir(dir);
    const status = (await env.d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots[0].usedBytes).to.equal(1500160); // qemu-img rounds up to whole sectors
    await env.d.post('create', { creatorID: OWNER, name: 'n', size: 0.001, format: 'raw' }).expect(507);
  });
});

/** Removes the backing format header extension from a qcow2 (what an overlay made before qemu 6.1 lacks). */
async function dropBackingFormat(file: string): Promise<void> {
  const d = await fs.readFile(file);
  const headerLength = d.readUInt32BE(100);
  for (let off = headerLength; ; ) {
    const magic = d.readUInt32BE(off);
    const length = d.readUInt32BE(off + 4);
    if (magic === 0) throw new Error('no backing format extension');
    const next = off + 8 + Math.ceil(length / 8) * 8;
    if (magic === 0xe2792aca) {
      d.copy(d, off, next);
      d.writeBigUInt64BE(d.readBigUInt64BE(8) - BigInt(next - off), 8);
      await fs.writeFile(file, d);
      return;
    }
    off = next;
  }
}

describe('an overlay made by an older qemu, without its backing format', () => {
  const env = daemonPerTest({ a: {} });

  it("is not converted or compacted (409): qemu-img would probe its backing file, and a guest's raw bytes can name a host file", async () => {
    const secret = path.join(env.mnt, 'host-secret.txt');
    await fs.writeFile(secret, 'TOP SECRET of the storage host'.padEnd(1048576, '.'));
    const base = (await env.d.post('create', { creatorID: OWNER, name: 'guest disk', size: 0.001048576, format: 'raw' }).expect(200)).body.vid;
    const baseData = path.join(env.mnt, 'a', `vid.${base}.elimg`, 'data.img');
    // What a guest may write into its own raw disk: a qcow2 header whose backing file is a host file.
    const forged = path.join(env.mnt, 'forged.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', secret, '-F', 'raw', forged, '1M']);
    await execa('dd', [`if=${forged}`, `of=${baseData}`, 'conv=notrunc', 'status=none']);
    const uid = '3'.repeat(31) + '4';
    const dir = path.join(env.mnt, 'a', `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `../vid.${base}.elimg/data.img`, '-F', 'raw', path.join(dir, 'data.qcow2'), '1M']);
    await dropBackingFormat(path.join(dir, 'data.qcow2'));
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ creatorID: OWNER, format: 'qcow2', base }));
    await env.d.daemon.ctx.index.reloadDir(dir);
    const why = `volume ${uid} reads through a backing file whose format its image does not record: qemu-img would guess it, which a guest's bytes can fool; record it by hand (qemu-img rebase -u -F <format> -b <same backing file>)`;
    for (const [endpoint, body] of [
      ['update/convert', { vid: uid, creatorID: OWNER, format: 'raw' }],
      ['overlay/compact', { vid: uid, creatorID: OWNER }],
    ] as const) {
      const res = await env.d.post(endpoint, body);
      expect([endpoint, res.status, res.body.error]).to.deep.equal([endpoint, 409, why]);
    }
    for (const name of await fs.readdir(dir)) expect(await fs.readFile(path.join(dir, name), 'latin1')).to.not.include('TOP SECRET');
  });
});

describe('names in a root that look like volumes and are not', () => {
  const env = daemonPerTest({ a: { 'max-volumes': 1 } });

  it('neither lists nor counts them: a file named vid.<uid>.elimg, vid..elimg, vid.x.elimg', async () => {
    await fs.writeFile(path.join(env.mnt, 'a', `vid.${'5'.repeat(32)}.elimg`), 'a tarball of a volume, say');
    await fs.mkdir(path.join(env.mnt, 'a', 'vid..elimg'));
    await fs.writeFile(path.join(env.mnt, 'a', 'vid.x.elimg'), '');
    await env.d.stop();
    env.d = await startTestDaemon(env.mnt);
    const status = (await env.d.api.get('/api/v1.0/status').expect(200)).body;
    expect([status.volumes, status.roots[0].volumes, status.broken]).to.deep.equal([0, 0, []]);
    expect((await env.d.post('cancreate', { size: 0.001 }).expect(200)).body.cancreate).to.equal(true);
    await env.d.post('create', { creatorID: OWNER, name: 'the one', size: 0.001, format: 'raw' }).expect(200);
  });
});
