import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { asyncReader, blockingReader, firstScanReader } from '../../src/store/tree-reader.js';
import fse from 'fs-extra';
import { spawnDaemon, stopDaemon, type Answer, type DaemonProcess } from '../helpers/process.js';
import { settledViolations, treeViolations } from '../helpers/crash/invariants.js';
import { makeTree, OWNER, removeTree, seedCreateBody, skipBecause, waitFor } from '../helpers/tree.js';
import { startGluster } from '../helpers/gluster.js';

/**
 * Requests that make a new volume in a root, raced by both daemons. A maker with a `template` first
 * makes the volume its requests copy (in the same root, so one volume fewer fits); a clone holds its
 * source's lock, so the clones of one template answer 409 to each other and are sent again, as a client would.
 */
const VOLUME_MAKERS: Array<{ name: string; endpoint: string; template?: (d: DaemonProcess) => Promise<string>; body: (template?: string) => object }> = [
  { name: 'create', endpoint: 'create', body: () => seedCreateBody({ format: 'qcow2', size: 0.01 }) },
  {
    name: 'clone',
    endpoint: 'clone',
    template: async (d) => (await d.post('create', seedCreateBody({ format: 'qcow2', size: 0.01, clonable: true, readonly: true }))).body.vid,
    body: (template) => ({ volume_id: template, creatorID: OWNER, alg: 'cp' }),
  },
];

/** Sends a request until it answers something other than 409 (the source's lock held by another clone). */
async function untilNot409(send: () => Promise<Answer>): Promise<Answer> {
  for (;;) {
    const res = await send();
    if (res.status !== 409) return res;
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 50));
  }
}

const vidDirs = async (root: string) => (await fs.readdir(root)).filter((n) => n.startsWith('vid.'));

/** Counts the volume directories of `root` every 10 ms until stopped; `stop` answers the most seen at once. */
function countVolumesMeanwhile(root: string): { stop(): Promise<number> } {
  let most = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      most = Math.max(most, (await vidDirs(root)).length);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    stop: async () => {
      polling = false;
      await poller;
      return most;
    },
  };
}

/** Where the two daemons' mount directories come from: one local tree, or one Gluster volume mounted twice. */
interface SharedTree {
  mnts: [string, string];
  /** Gluster mounts do not see each other's changes through inotify: the indexes rescan instead. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

const TREES: Array<{ name: string; network?: boolean; make(ctx: Mocha.Context): Promise<SharedTree> }> = [
  {
    name: 'one local tree',
    make: async () => {
      const mnt = await makeTree({});
      return { mnts: [mnt, mnt], env: {}, cleanup: () => removeTree(mnt) };
    },
  },
  {
    name: 'a Gluster volume mounted twice (as two hosts mount it)',
    network: true,
    make: async (ctx) => {
      const base = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-gluster-'));
      const gluster = await startGluster(base);
      if (typeof gluster === 'string') {
        await removeTree(base);
        skipBecause(ctx, gluster);
      }
      return { mnts: gluster.mounts, env: { ELEMENTO_RESCAN_MS: '1000' }, cleanup: async () => (await gluster.stop(), await removeTree(base)) };
    },
  },
];

/**
 * Two daemon processes on one mount tree, as two hosts sharing a Gluster volume: each has its own
 * index; quotas and locks are decided on disk under the root's lock, so they hold across both.
 */
for (const tree of TREES) {
  describe(`two daemons sharing ${tree.name}`, function () {
    this.timeout(90_000);
    let shared: SharedTree | undefined;
    let daemons: DaemonProcess[] = [];
    const root = () => path.join(shared!.mnts[0], 'a');

    before(async function () {
      shared = await tree.make(this);
    });
    after(async () => shared?.cleanup());
    beforeEach(async () => {
      await fs.mkdir(root(), { recursive: true });
      await fs.writeFile(path.join(root(), 'settings.json'), JSON.stringify({ 'max-volumes': 5, 'max-total-size': '10G' }));
      daemons = await Promise.all(shared!.mnts.map((mnt) => spawnDaemon(['--mnt', mnt], { ELEMENTO_LOG_LEVEL: 'info', ELEMENTO_EXPORTER: 'none', ...shared!.env })));
    });
    afterEach(async () => {
      await Promise.all(daemons.map(stopDaemon));
      await fse.emptyDir(root());
    });

    it(`the first scan reads this tree with ${tree.network ? 'asynchronous calls (a network filesystem)' : 'blocking calls (a local filesystem)'}`, async () => {
      expect(await firstScanReader(root())).to.equal(tree.network ? asyncReader : blockingReader);
    });

    for (const maker of VOLUME_MAKERS)
      it(`2 daemons × 12 concurrent ${maker.name}s fill a 5-volume root exactly, never more, each volume claimed once`, async () => {
        const template = await maker.template?.(daemons[0]);
        const room = template ? 4 : 5;
        if (template) await Promise.all(daemons.map((d) => waitFor(async () => (await d.post('info', { volume_id: template })).status === 200, 5000, 'both daemons to know the template')));
        const count = countVolumesMeanwhile(root());
        const answers = await Promise.all(daemons.flatMap((d) => Array.from({ length: 12 }, () => untilNot409(() => d.post(maker.endpoint, maker.body(template))))));
        const most = await count.stop();
        const made = answers.filter((a) => a.status === 200).map((a) => a.body.vid as string);
        expect(made).to.have.length(room);
        expect(new Set(made).size).to.equal(room);
        expect(answers.filter((a) => a.status !== 200).map((a) => a.status)).to.deep.equal(Array(24 - room).fill(507));
        expect(most).to.be.at.most(5);
        expect((await vidDirs(root())).sort()).to.deep.equal([...made, ...(template ? [template] : [])].map((v) => `vid.${v}.elimg`).sort());
        // Each daemon learns of the other's volumes through its watcher (on Gluster, its rescan); both then
        // agree with the disk. It may have counted a directory while it was still being made: look again.
        for (const d of daemons) {
          await waitFor(async () => (await d.get('status')).body.roots[0].volumes === 5, 5000, 'the index to see all 5 volumes');
          expect(await settledViolations(() => treeViolations(d), 5000)).to.deep.equal([]);
          expect((await d.get('status')).body.locksCompromised).to.equal(0);
        }
      });

    it("counts a volume the other daemon has just grown, before its own index hears of it", async () => {
      const [d0, d1] = daemons;
      const vid = (await d0.post('create', seedCreateBody({ size: 4, format: 'raw' }))).body.vid as string;
      await waitFor(async () => (await d1.post('info', { volume_id: vid })).status === 200, 5000, 'the other daemon to know the volume');
      expect((await d0.post('update/resize', { vid, creatorID: OWNER, size: 8 })).status).to.equal(200);
      const refused = await d1.post('create', seedCreateBody({ size: 4, format: 'raw' }));
      expect(refused.status).to.equal(507);
      expect(refused.body.reasons).to.deep.equal([`${root()} has 2000000000 bytes of quota left`.replace(shared!.mnts[0], shared!.mnts[1])]);
      expect((await d1.post('create', seedCreateBody({ size: 2, format: 'raw' }))).status).to.equal(200);
      expect((await d1.post('info', { volume_id: vid })).body.size).to.equal(8e9);
    });

    it("refuses to destroy or resize a base the other daemon has just made a linked clone of, before its own index hears of it", async () => {
      const [d0, d1] = daemons;
      const base = (await d0.post('create', seedCreateBody({ format: 'qcow2', size: 0.01, clonable: true }))).body.vid as string;
      await waitFor(async () => (await d1.post('info', { volume_id: base })).status === 200, 5000, 'the other daemon to know the base');
      const overlay = await d0.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' });
      expect(overlay.status).to.equal(200);
      const resized = await d1.post('update/resize', { vid: base, creatorID: OWNER, size: 0.02 });
      const destroyed = await d1.post('destroy', { volume_id: base });
      expect([resized.status, resized.body.overlays]).to.deep.equal([409, [overlay.body.vid]]);
      expect([destroyed.status, destroyed.body.overlays]).to.deep.equal([409, [overlay.body.vid]]);
      expect(await vidDirs(root())).to.include(`vid.${base}.elimg`);
    });

    it('finds a volume the other daemon has just made (info, has, update) before its own index hears of it', async () => {
      const [d0, d1] = daemons;
      const vid = (await d0.post('create', seedCreateBody({ format: 'raw', size: 0.01 }))).body.vid as string;
      expect((await d1.post('has', { volume_id: vid })).body).to.deep.equal({ vid, has: true });
      const info = await d1.post('info', { volume_id: vid });
      expect(info.body, JSON.stringify(info.body)).to.include({ volumeID: vid });
      expect((await d1.post('update', { vid, creatorID: OWNER, name: 'renamed' })).status).to.equal(200);
      await waitFor(async () => (await d0.post('info', { volume_id: vid })).body.name === 'renamed', 5000, 'the first daemon to see the rename');
      expect((await d0.post('destroy', { volume_id: vid })).status).to.equal(200);
      expect((await d1.post('info', { volume_id: vid })).status).to.equal(404);
      expect((await d1.post('has', { volume_id: vid })).body).to.deep.equal({ vid, has: false });
    });

    it('finds a volume an operator moved into another root through the other mount, at once', async () => {
      const [d0, d1] = daemons;
      const other = path.join(shared!.mnts[0], 'b');
      await fs.mkdir(other);
      await fs.writeFile(path.join(other, 'settings.json'), JSON.stringify({ 'max-volumes': 5 }));
      for (const d of daemons) await waitFor(async () => (await d.get('status')).body.roots.length === 2, 5000, 'both daemons to know root b');
      const vid = (await d1.post('create', seedCreateBody({ format: 'raw', size: 0.01 }))).body.vid as string;
      const [from, to] = (await vidDirs(root())).length ? [root(), other] : [other, root()];
      await fs.rename(path.join(from, `vid.${vid}.elimg`), path.join(to, `vid.${vid}.elimg`));
      expect((await d1.post('update', { vid, creatorID: OWNER, name: 'moved' })).status).to.equal(200);
      expect((await d1.post('info', { volume_id: vid })).body).to.include({ name: 'moved' });
      expect((await d1.post('destroy', { volume_id: vid })).status).to.equal(200);
      await fse.remove(other);
    });

    it("serves a download of the image as the other daemon has just converted it, and 404 once it destroyed it", async () => {
      const [d0, d1] = daemons;
      const vid = (await d0.post('create', seedCreateBody({ format: 'raw', size: 0.01 }))).body.vid as string;
      await waitFor(async () => (await d1.post('info', { volume_id: vid })).status === 200, 5000, 'the other daemon to know the volume');
      expect((await d0.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' })).status).to.equal(200);
      const download = () => fetch(`http://127.0.0.1:${d1.port}/api/v1.0/volumes/${vid}/data`);
      const converted = await download();
      expect([converted.status, converted.headers.get('x-image-format')]).to.deep.equal([200, 'qcow2']);
      expect((await converted.arrayBuffer()).byteLength).to.equal((await fs.stat(path.join(root(), `vid.${vid}.elimg`, 'data.qcow2'))).size);
      expect((await d0.post('destroy', { volume_id: vid })).status).to.equal(200);
      expect((await download()).status).to.equal(404);
    });

    it('a cloud-init file set begun on one daemon and continued on the other is refused saying where it is received, then completes on the first', async () => {
      const [d0, d1] = daemons;
      const send = async (d: DaemonProcess, fields: object, name: string, first: boolean) => {
        const form = new FormData();
        if (first) form.append('fields', JSON.stringify(fields));
        form.append('file', new Blob([name === 'user-data' ? '#cloud-config\n' : 'instance-id: vm1\n']), name);
        const suffix = first ? '' : `/${Buffer.from(JSON.stringify(fields)).toString('base64')}`;
        const res = await fetch(`http://127.0.0.1:${d.port}/api/v1.0/cloudinit/metadata${suffix}`, { method: 'POST', body: form });
        return { status: res.status, body: await res.json() };
      };
      const begun = await send(d0, { creatorID: OWNER, name: 'seed', expectedFiles: 2 }, 'meta-data', true);
      expect(begun.status).to.equal(206);
      const vid = begun.body.vid as string;
      const elsewhere = await send(d1, { creatorID: OWNER, vid }, 'user-data', false);
      expect([elsewhere.status, elsewhere.body.error]).to.deep.equal([409, `the file set of volume ${vid} is being received by another daemon sharing this tree (host ${os.hostname()}): send its remaining files there`]);
      expect((await send(d0, { creatorID: OWNER, vid }, 'user-data', false)).body).to.include({ status: 'OK', received: 2 });
    });

    it("applies at once a quota an operator lowered in settings.json through the other daemon's mount", async () => {
      const [d0, d1] = daemons;
      expect((await d1.post('create', seedCreateBody({ format: 'raw', size: 0.01 }))).status).to.equal(200);
      await fs.writeFile(path.join(root(), 'settings.json'), JSON.stringify({ 'max-volumes': 1, 'max-total-size': '10G' }));
      // Gluster's write-behind makes the other mount see the edit a moment later; the daemon's index sees it only at its rescan.
      await waitFor(async () => (await fs.readFile(path.join(shared!.mnts[1], 'a', 'settings.json'), 'utf8')).includes('"max-volumes":1'), 5000, 'the edit to reach the other mount');
      const refused = await d1.post('create', seedCreateBody({ format: 'raw', size: 0.01 }));
      expect([refused.status, refused.body.reasons]).to.deep.equal([507, [`${path.join(shared!.mnts[1], 'a')} already holds its maximum of 1 volumes`]]);
      expect((await d0.post('create', seedCreateBody({ format: 'raw', size: 0.01 }))).status).to.equal(507);
      expect(await vidDirs(root())).to.have.length(1);
    });

    it("lists a volume's snapshots as the other daemon has just changed them in place", async () => {
      const [d0, d1] = daemons;
      const vid = (await d0.post('create', seedCreateBody({ format: 'qcow2', size: 0.01 }))).body.vid as string;
      const snap = (d: DaemonProcess, action: string, name: string) => d.post(`snapshot/${action}`, { vid, creatorID: OWNER, name });
      expect((await snap(d0, 'create', 'first')).status).to.equal(200);
      expect((await snap(d0, 'create', 'second')).status).to.equal(200);
      await waitFor(async () => (await d1.post('snapshot/list', { vid })).status === 200, 5000, 'the other daemon to list them');
      expect((await snap(d0, 'delete', 'first')).status).to.equal(200);
      expect((await d1.post('snapshot/list', { vid })).body.snapshots.map((s: { name: string }) => s.name)).to.deep.equal(['second']);
      expect((await snap(d1, 'create', 'third')).status).to.equal(200);
      expect((await d0.post('snapshot/list', { vid })).body.snapshots.map((s: { name: string }) => s.name)).to.deep.equal(['second', 'third']);
    });

    it('races creates and destroys from both daemons: the quota holds at every moment, each volume is destroyed once, no lock is broken', async () => {
      const count = countVolumesMeanwhile(root());
      for (let round = 0; round < 3; round++) {
        const created = await Promise.all(daemons.flatMap((d) => Array.from({ length: 6 }, () => d.post('create', seedCreateBody({ format: 'raw', size: 0.01 })))));
        const vids = created.filter((a) => a.status === 200).map((a) => a.body.vid as string);
        expect(vids.length, `round ${round}`).to.equal(5);
        // Both daemons destroy every volume at once (one of them may not know it yet: 404), and create more meanwhile.
        await Promise.all(daemons.map((d) => waitFor(async () => (await d.get('status')).body.volumes === 5, 5000, 'the index to see the volumes')));
        const [destroys, extra] = await Promise.all([
          Promise.all(vids.flatMap((vid) => daemons.map((d) => d.post('destroy', { volume_id: vid })))),
          Promise.all(daemons.map((d) => d.post('create', seedCreateBody({ format: 'raw', size: 0.01 })))),
        ]);
        for (let i = 0; i < vids.length; i++) {
          const [first, second] = destroys.slice(i * 2, i * 2 + 2).map((a) => a.status).sort();
          expect(first, `destroy of ${vids[i]} from both daemons`).to.equal(200);
          expect([404, 409], `destroy of ${vids[i]} from both daemons`).to.include(second);
        }
        for (const [i, a] of extra.entries()) {
          expect([200, 507]).to.include(a.status);
          if (a.status === 200) expect((await daemons[i].post('destroy', { volume_id: a.body.vid })).status).to.equal(200);
        }
        await Promise.all(daemons.map((d) => waitFor(async () => (await d.get('status')).body.volumes === 0, 5000, 'the index to forget them')));
      }
      expect(await count.stop()).to.be.at.most(5);
      for (const d of daemons) {
        expect(await treeViolations(d)).to.deep.equal([]);
        expect((await d.get('status')).body.locksCompromised).to.equal(0);
      }
    });
  });
}
