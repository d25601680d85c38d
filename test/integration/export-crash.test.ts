import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa, type ResultPromise } from 'execa';
import { iqnFor } from '../../src/exporters/iqn.js';
import { MAIN, spawnDaemon } from '../helpers/process.js';
import { freeControlPort, freePortalPort, iscsiUrl, missingIscsiTool, qemuIo, startTgtd, stopTgtdOn, tgtadmOn, type TestTgtd } from '../helpers/tgt.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, skipBecause, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;
const THIRD = 'abcdefabcdefabcdefabcdefabcdefab';

async function post(port: number, endpoint: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1.0/${endpoint}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

/** The real daemon process, killed with SIGKILL and restarted: every export kept, none leaked. */
describe('exports across a SIGKILL of the daemon (real process, real tgtd)', function () {
  let mnt: string;
  let child: ResultPromise | undefined;
  const volDir = (vid: string) => path.join(mnt, 'a', `vid.${vid}.elimg`);

  before(function () {
    const missing = missingIscsiTool();
    if (missing) skipBecause(this, missing);
  });
  beforeEach(async () => (mnt = await makeTree({ a: {} })));
  afterEach(async () => {
    child?.kill('SIGKILL');
    await child;
    child = undefined;
    await removeTree(mnt);
  });

  describe('with a tgtd the daemon does not own', () => {
    let tgtd: TestTgtd | undefined;
    before(async () => (tgtd = await startTgtd()));
    after(async () => tgtd?.stop());
    afterEach(async () => tgtd?.removeTargets());

    const env = () => ({
      ELEMENTO_EXPORTER: 'tgt',
      ELEMENTO_TGT_CONTROL_PORT: String(tgtd!.controlPort),
      ELEMENTO_ISCSI_PORTAL: tgtd!.portal,
      ELEMENTO_EXPORT_HEARTBEAT_MS: '200',
      ELEMENTO_EXPORT_STALE_MS: '60000',
    });

    it('recreates a lost target, removes a leaked one, drops a long-dead marker, keeps foreign targets', async () => {
      let daemon = await spawnDaemon(['--mnt', mnt], env());
      child = daemon.child;
      const vids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const { body } = await post(daemon.port, 'create', seedCreateBody({ format: 'raw', size: 0.01, shareable: true }));
        vids.push(body.vid as string);
        expect((await post(daemon.port, 'export', { volume_id: body.vid, client_uid: OWNER })).status).to.equal(200);
      }
      expect((await post(daemon.port, 'export', { volume_id: vids[0], client_uid: OTHER })).status).to.equal(200);
      const wanted = [...vids.map((v) => iqnFor(OWNER, v)), iqnFor(OTHER, vids[0])].sort();
      expect((await tgtd!.targets()).sort()).to.deep.equal(wanted);

      child.kill('SIGKILL');
      await child;
      // tgtd outlives the daemon: every export still serves.
      expect((await tgtd!.targets()).sort()).to.deep.equal(wanted);
      expect((await qemuIo(iscsiUrl(tgtd!, iqnFor(OWNER, vids[1])), 'raw', `write -P 0x77 0 ${MB}`)).ok).to.equal(true);

      // While it is down: tgtd loses one target, one leaks (its unexport died after removing the marker),
      // an old export's marker is long dead with no target, and someone else's target appears.
      const show = await tgtadmOn(tgtd!.controlPort, ['--op', 'show', '--mode', 'target']);
      const tidOf = (iqn: string) => new RegExp(`^Target (\\d+): ${iqn.replace(/\./g, '\\.')}$`, 'm').exec(show)![1];
      await tgtd!.tgtadm(['--op', 'delete', '--mode', 'target', '--tid', tidOf(iqnFor(OWNER, vids[2])), '--force']);
      await fs.rm(path.join(volDir(vids[0]), `${iqnFor(OTHER, vids[0])}.exported`));
      const dead = path.join(volDir(vids[1]), `${iqnFor(THIRD, vids[1])}.exported`);
      await fs.writeFile(dead, '');
      const longAgo = new Date(Date.now() - 3_600_000);
      await fs.utimes(dead, longAgo, longAgo);
      await tgtd!.tgtadm(['--op', 'new', '--mode', 'target', '--tid', '90', '-T', 'iqn.2003-01.org.example:someone-else']);

      daemon = await spawnDaemon(['--mnt', mnt], env());
      child = daemon.child;
      const expected = [...vids.map((v) => iqnFor(OWNER, v)), 'iqn.2003-01.org.example:someone-else'].sort();
      await waitFor(async () => JSON.stringify((await tgtd!.targets()).sort()) === JSON.stringify(expected), 5000, 'the targets to be reconciled');
      await waitFor(async () => !(await fs.readdir(volDir(vids[1]))).includes(path.basename(dead)), 5000, 'the dead marker to be dropped');
      for (const vid of vids) expect((await fs.readdir(volDir(vid))).filter((f) => f.endsWith('.exported'))).to.deep.equal([`${iqnFor(OWNER, vid)}.exported`]);
      // The recreated target serves the same data file, and the bytes written before the crash are there.
      expect((await qemuIo(iscsiUrl(tgtd!, iqnFor(OWNER, vids[1])), 'raw', `read -P 0x77 0 ${MB}`)).ok).to.equal(true);
      expect((await qemuIo(iscsiUrl(tgtd!, iqnFor(OWNER, vids[2])), 'raw', `write -P 0x33 0 ${MB}`)).ok).to.equal(true);
      expect((await post(daemon.port, 'info', { volume_id: vids[2] })).body.exported).to.equal(true);
    });

    it('says once, not at every heartbeat, that a marker cannot get its target back, and says when it can again', async () => {
      const daemon = await spawnDaemon(['--mnt', mnt], env());
      child = daemon.child;
      const { body } = await post(daemon.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }));
      const { iqn } = (await post(daemon.port, 'export', { volume_id: body.vid, client_uid: OWNER })).body as { iqn: string };
      const data = path.join(volDir(body.vid as string), 'data.img');
      await fs.rename(data, `${data}.away`);
      await tgtd!.removeTargets();
      const said = (message: string) => daemon.lines.filter((l) => l.includes(message) && l.includes(iqn));
      await waitFor(() => said('export marker not reconciled').length > 0, 5000, 'the failure to be logged');
      // Ten heartbeats more.
      await new Promise((r) => setTimeout(r, 2000));
      expect(said('export marker not reconciled')).to.have.length(1);
      await fs.rename(`${data}.away`, data);
      await waitFor(() => said('export marker reconciled again').length === 1, 5000, 'the recovery to be logged');
      expect(await tgtd!.targets()).to.deep.equal([iqn]);
    });

    it('says a tgtd outage once in its log, not at every heartbeat, and its end once', async () => {
      const own = await startTgtd();
      try {
        const daemon = await spawnDaemon(['--mnt', mnt], { ...env(), ELEMENTO_TGT_CONTROL_PORT: String(own.controlPort), ELEMENTO_ISCSI_PORTAL: own.portal });
        child = daemon.child;
        const said = (message: string) => daemon.lines.filter((l) => l.includes(message));
        await own.stop();
        await waitFor(() => said('the export backend cannot be reached').length > 0, 5000, 'the outage to be logged');
        await new Promise((r) => setTimeout(r, 2000));
        expect(said('the export backend cannot be reached')).to.have.length(1);
        const back = execa('tgtd', ['-f', '-C', String(own.controlPort), '--iscsi', `portal=${own.portal}`], { reject: false, stdio: 'ignore' });
        try {
          await waitFor(() => said('the export backend answers again').length === 1, 5000, 'the end of the outage to be logged');
        } finally {
          back.kill('SIGKILL');
          await back;
          await stopTgtdOn(own.controlPort);
        }
      } finally {
        await own.stop().catch(() => undefined);
      }
    });

    it('touches the markers of live exports as a heartbeat', async () => {
      const daemon = await spawnDaemon(['--mnt', mnt], env());
      child = daemon.child;
      const { body } = await post(daemon.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }));
      await post(daemon.port, 'export', { volume_id: body.vid, client_uid: OWNER });
      const marker = path.join(volDir(body.vid as string), `${iqnFor(OWNER, body.vid as string)}.exported`);
      const old = new Date(Date.now() - 600_000);
      await fs.utimes(marker, old, old);
      await waitFor(async () => (await fs.stat(marker)).mtimeMs > Date.now() - 60_000, 3000, 'the marker to be touched');
    });
  });

  describe('with ELEMENTO_TGT_MANAGE=1 (the daemon owns its tgtd)', () => {
    let controlPort = 0;
    let portal = '';
    before(async () => {
      controlPort = await freeControlPort();
      portal = `127.0.0.1:${await freePortalPort()}`;
    });
    after(async () => stopTgtdOn(controlPort));

    it('starts tgtd, keeps it (and the exports) across a SIGKILL, and stops it on SIGTERM', async () => {
      const env = { ELEMENTO_EXPORTER: 'tgt', ELEMENTO_TGT_MANAGE: '1', ELEMENTO_TGT_CONTROL_PORT: String(controlPort), ELEMENTO_ISCSI_PORTAL: portal };
      let daemon = await spawnDaemon(['--mnt', mnt], env);
      child = daemon.child;
      const { body } = await post(daemon.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }));
      const exported = await post(daemon.port, 'export', { volume_id: body.vid, client_uid: OWNER });
      expect(exported.body.portal).to.equal(portal);
      const url = `iscsi://${portal}/${exported.body.iqn}/1`;
      expect((await qemuIo(url, 'raw', `write -P 0x42 0 ${MB}`)).ok).to.equal(true);

      child.kill('SIGKILL');
      await child;
      expect((await qemuIo(url, 'raw', `read -P 0x42 0 ${MB}`)).ok).to.equal(true);
      daemon = await spawnDaemon(['--mnt', mnt], env);
      child = daemon.child;
      expect((await post(daemon.port, 'info', { volume_id: body.vid })).body.exported).to.equal(true);
      expect((await qemuIo(url, 'raw', `read -P 0x42 0 ${MB}`)).ok).to.equal(true);

      child.kill('SIGTERM');
      expect((await child).exitCode).to.equal(0);
      child = undefined;
      let answered = true;
      await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'system']).catch(() => (answered = false));
      expect(answered).to.equal(false);
      // The marker stays: it is the truth, and the next start makes the target again.
      expect(await fs.readdir(volDir(body.vid as string))).to.include(`${iqnFor(OWNER, body.vid as string)}.exported`);
      daemon = await spawnDaemon(['--mnt', mnt], env);
      child = daemon.child;
      expect((await qemuIo(url, 'raw', `read -P 0x42 0 ${MB}`)).ok).to.equal(true);
    });

    it('starts its tgtd again when it dies (the exports come back, their markers kept alive meanwhile), and on SIGTERM leaves other software\'s targets running', async () => {
      const env = {
        ELEMENTO_EXPORTER: 'tgt', ELEMENTO_TGT_MANAGE: '1', ELEMENTO_TGT_CONTROL_PORT: String(controlPort), ELEMENTO_ISCSI_PORTAL: portal,
        ELEMENTO_EXPORT_HEARTBEAT_MS: '200', ELEMENTO_EXPORT_STALE_MS: '1500',
      };
      const daemon = await spawnDaemon(['--mnt', mnt], env);
      child = daemon.child;
      const { body } = await post(daemon.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }));
      const { iqn } = (await post(daemon.port, 'export', { volume_id: body.vid, client_uid: OWNER })).body as { iqn: string };
      const marker = path.join(volDir(body.vid as string), `${iqn}.exported`);
      await execa('pkill', ['-KILL', '-f', `tgtd -C ${controlPort} --iscsi`]);
      // Longer than the stale limit: a marker not touched while tgtd was gone would be dropped when it comes back.
      await new Promise((r) => setTimeout(r, 2000));
      await waitFor(async () => (await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target']).catch(() => '')).includes(iqn), 10_000, 'tgtd and the target back');
      expect(await fs.readdir(volDir(body.vid as string))).to.include(path.basename(marker));
      expect((await qemuIo(`iscsi://${portal}/${iqn}/1`, 'raw', `read 0 ${MB}`)).ok).to.equal(true);

      const foreign = 'iqn.2020-01.org.other:foreign';
      await tgtadmOn(controlPort, ['--op', 'new', '--mode', 'target', '--tid', '90', '-T', foreign]);
      child.kill('SIGTERM');
      expect((await child).exitCode).to.equal(0);
      child = undefined;
      const left = await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target']);
      expect(left).to.include(foreign);
      expect(left).to.not.include(iqn);
    });

    /** A daemon managing its own tgtd, with a small raw volume exported to OWNER. */
    const managingWithAnExport = async () => {
      const env = { ELEMENTO_EXPORTER: 'tgt', ELEMENTO_TGT_MANAGE: '1', ELEMENTO_TGT_CONTROL_PORT: String(controlPort), ELEMENTO_ISCSI_PORTAL: portal };
      const daemon = await spawnDaemon(['--mnt', mnt], env);
      child = daemon.child;
      const { body } = await post(daemon.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }));
      const { iqn } = (await post(daemon.port, 'export', { volume_id: body.vid, client_uid: OWNER })).body as { iqn: string };
      return { env, daemon, iqn };
    };

    it('stops cleanly on SIGTERM while the tgtd it manages is dead (the exports come back at the next start)', async () => {
      const first = await managingWithAnExport();
      const { env, iqn } = first;
      let { daemon } = first;
      await execa('pkill', ['-KILL', '-f', `tgtd -C ${controlPort} --iscsi`]);
      await waitFor(async () => !(await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'system']).then(() => true, () => false)), 5000, 'tgtd to die');
      process.kill(daemon.child.pid!, 'SIGTERM');
      const ended = await daemon.exited;
      child = undefined;
      expect(ended.exitCode).to.equal(0);
      expect(daemon.lines.some((l) => l.includes('"message":"stopped"'))).to.equal(true);
      daemon = await spawnDaemon(['--mnt', mnt], env);
      child = daemon.child;
      expect(await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target'])).to.include(iqn);
    });

    it('on SIGTERM leaves running the exports another daemon of this host made on its tgtd (another tree)', async () => {
      const env = { ELEMENTO_EXPORTER: 'tgt', ELEMENTO_TGT_CONTROL_PORT: String(controlPort), ELEMENTO_ISCSI_PORTAL: portal };
      const owner = await spawnDaemon(['--mnt', mnt], { ...env, ELEMENTO_TGT_MANAGE: '1' });
      child = owner.child;
      const otherMnt = await makeTree({ a: {} });
      const other = await spawnDaemon(['--mnt', otherMnt], env);
      try {
        const mine = (await post(owner.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }))).body.vid as string;
        const theirs = (await post(other.port, 'create', seedCreateBody({ format: 'raw', size: 0.01 }))).body.vid as string;
        expect((await post(owner.port, 'export', { volume_id: mine, client_uid: OWNER })).status).to.equal(200);
        const { iqn } = (await post(other.port, 'export', { volume_id: theirs, client_uid: OWNER })).body as { iqn: string };
        expect((await qemuIo(`iscsi://${portal}/${iqn}/1`, 'raw', `write -P 0x42 0 ${MB}`)).ok).to.equal(true);

        child.kill('SIGTERM');
        expect((await child).exitCode).to.equal(0);
        child = undefined;
        const left = await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target']);
        expect(left).to.include(iqn);
        expect(left).to.not.include(iqnFor(OWNER, mine));
        expect((await qemuIo(`iscsi://${portal}/${iqn}/1`, 'raw', `read -P 0x42 0 ${MB}`)).ok).to.equal(true);
        expect((await post(other.port, 'info', { volume_id: theirs })).body.exported).to.equal(true);
      } finally {
        other.child.kill('SIGKILL');
        await other.exited;
        await removeTree(otherMnt);
      }
    });

    it('a second daemon started by mistake on the same port (same tree, same settings) exits at once, leaving the tgtd and the exports running', async () => {
      const { env, daemon, iqn } = await managingWithAnExport();
      const second = await execa('node', ['--import', 'tsx/esm', MAIN, '--mnt', mnt, '--port', String(daemon.port), '--log-format', 'json'], { env, reject: false, all: true });
      expect(second.exitCode).to.equal(1);
      expect(second.stderr).to.equal(`elemento-storage: port ${daemon.port} on 127.0.0.1 is already in use (another elemento-storage?)`);
      // It read nothing and touched nothing: the first daemon's tgtd still serves its export.
      expect(second.stdout).to.not.include('tree loaded');
      expect(await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target'])).to.include(iqn);
      expect((await qemuIo(`iscsi://${portal}/${iqn}/1`, 'raw', `read 0 ${MB}`)).ok).to.equal(true);
    });
  });
});
