import { expect } from 'chai';
import { ConflictError, ForbiddenError } from '../../src/errors.js';
import { clientOfIqn, iqnFor, IQN_PREFIX, splitPortal, xorUids } from '../../src/exporters/iqn.js';
import { backstoreName, LioExporter } from '../../src/exporters/lio.js';
import { exporterKind } from '../../src/exporters/select.js';
import { freeTid, TgtExporter } from '../../src/exporters/tgt.js';
import { configWith } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import type { VolumeMeta } from '../../src/store/meta.js';
import { parseFileioBackstores, parseIscsiTree, parseTree, Targetcli } from '../../src/tools/targetcli.js';
import { parseTgtTargets, Tgtadm } from '../../src/tools/tgtadm.js';
import { checkExportRules } from '../../src/volumes/export-rules.js';
import { lsFileio, lsIscsi, RecordedRunner, renderTree } from '../helpers/fake-runner.js';

const log = createLogger({ level: 'silent', format: 'json' });
const VID = '00112233445566778899aabbccddeeff';
const CLIENT = 'ffffffffffffffffffffffffffffffff';
const IQN = iqnFor(CLIENT, VID);
const FILE = `/mnt/a/vid.${VID}.elimg/data.img`;
const BS = backstoreName(FILE);

describe('target names', () => {
  it('XORs the client and volume uids into the IQN, and undoes it', () => {
    expect(xorUids('0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f', 'ffffffffffffffffffffffffffffffff')).to.equal('f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0');
    expect(IQN).to.equal('iqn.2004-10.cloud.elemento:01:ffeeddccbbaa99887766554433221100');
    expect(clientOfIqn(IQN, VID)).to.equal(CLIENT);
    expect(clientOfIqn('iqn.2003-01.org.linux-iscsi.x:sn.1', VID)).to.equal(null);
    expect(BS).to.match(/^elemento_[0-9a-f]{32}$/);
    expect(backstoreName(FILE)).to.equal(BS);
    expect(backstoreName('/mnt/a/other/data.img')).to.not.equal(BS);
    expect(splitPortal('127.0.0.1:13260')).to.deep.equal({ address: '127.0.0.1', port: 13260 });
    expect(splitPortal('[::1]:3260')).to.deep.equal({ address: '::1', port: 3260 });
  });

  it('picks LIO when configfs has a target directory, tgt otherwise, and obeys ELEMENTO_EXPORTER', () => {
    const config = configWith({ mnt: '/tmp' });
    expect(exporterKind(config, '/')).to.equal('lio');
    expect(exporterKind(config, '/nonexistent/target')).to.equal('tgt');
    expect(exporterKind(configWith({ mnt: '/tmp', exporter: 'tgt' }), '/')).to.equal('tgt');
  });
});

describe('export rules (SPEC §4), table-driven', () => {
  const meta = (m: Partial<VolumeMeta>) => ({ volumeID: VID, creatorID: CLIENT, private: false, shareable: false, ...m }) as VolumeMeta;
  const OTHER = '0123456789abcdef0123456789abcdef';
  const cases: Array<[string, Partial<VolumeMeta>, string, string[], 'ok' | 403 | 409]> = [
    ['private, owner, not exported', { private: true }, CLIENT, [], 'ok'],
    ['private, other client', { private: true, shareable: true }, OTHER, [], 403],
    ['public, not shareable, exported to another', {}, OTHER, [CLIENT], 409],
    ['public, not shareable, a repeat for the same client', {}, OTHER, [OTHER], 'ok'],
    ['public, shareable, exported twice already', { shareable: true }, OTHER, [CLIENT, 'a'.repeat(32)], 'ok'],
    ['private, owner, not shareable, exported to another', { private: true }, CLIENT, [OTHER], 409],
  ];
  for (const [name, m, client, exported, want] of cases)
    it(`${name}: ${want}`, () => {
      const run = () => checkExportRules(meta(m), client, exported);
      if (want === 'ok') expect(run).to.not.throw();
      else expect(run).to.throw(want === 403 ? ForbiddenError : ConflictError);
    });

  it('a migration destination may be added to a volume that is not shareable, never to a private one of someone else', () => {
    expect(() => checkExportRules(meta({}), OTHER, [CLIENT], { migrating: true })).to.not.throw();
    expect(() => checkExportRules(meta({ private: true }), OTHER, [CLIENT], { migrating: true })).to.throw(ForbiddenError);
  });
});

/** Output recorded from tgtadm 1.0.85 (Debian 12) for one read-write and one read-only export. */
const TGT_SHOW = `Target 1: ${IQN}
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Readonly: No
            Backing store type: null
            Backing store path: None
        LUN: 1
            Type: disk
            Readonly: No
            Backing store type: rdwr
            Backing store path: ${FILE}
            Backing store flags: 
    Account information:
    ACL information:
        ALL
Target 3: iqn.2004-10.cloud.elemento:01:0000000000000000000000000000000a
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
        LUN: 1
            Type: disk
            Readonly: Yes
            Backing store path: /mnt/a/x/data.img
`;

describe('tgt backend (tgtadm)', () => {
  it('reads targets, tids, LUN files and read-only flags from tgtadm --op show', () => {
    expect(parseTgtTargets(TGT_SHOW)).to.deep.equal([
      { tid: 1, iqn: IQN, luns: [{ lun: 1, path: FILE, readonly: false }] },
      { tid: 3, iqn: 'iqn.2004-10.cloud.elemento:01:0000000000000000000000000000000a', luns: [{ lun: 1, path: '/mnt/a/x/data.img', readonly: true }] },
    ]);
    expect(parseTgtTargets('')).to.deep.equal([]);
  });

  it('picks the smallest free tid', () => {
    expect(freeTid([])).to.equal(1);
    expect(freeTid([1, 3])).to.equal(2);
    expect(freeTid([2, 1, 3])).to.equal(4);
  });

  it('makes a read-only target in order (bound last), on its control port', async () => {
    const c = 'tgtadm -C 21001 --lld iscsi';
    const runner = new RecordedRunner([
      { cmd: `${c} --op show --mode target`, stdout: TGT_SHOW.replace(`Target 1: ${IQN}`, 'Target 1: iqn.x:other') },
      { cmd: `${c} --op new --mode target --tid 2 -T ${IQN}` },
      { cmd: `${c} --op new --mode logicalunit --tid 2 --lun 1 -b ${FILE}` },
      { cmd: `${c} --op update --mode logicalunit --tid 2 --lun 1 --params readonly=1` },
      { cmd: `${c} --op bind --mode target --tid 2 -I ALL` },
    ]);
    await new TgtExporter(new Tgtadm(runner, 21001), { manage: false, portal: '127.0.0.1:3260', controlPort: 21001 }, log).ensure({ iqn: IQN, file: FILE, readonly: true });
    expect(runner.done).to.equal(true);
  });

  it('reads the targets again when its tid was taken meanwhile, and undoes a target whose LUN failed', async () => {
    const c = '--lld iscsi';
    const taken = { exitCode: 22, stderr: 'tgtadm: this target already exists' };
    const runner = new RecordedRunner([
      { cmd: `tgtadm ${c} --op show --mode target`, stdout: '' },
      { cmd: `tgtadm ${c} --op new --mode target --tid 1 -T ${IQN}`, fail: taken },
      { cmd: `tgtadm ${c} --op show --mode target`, stdout: 'Target 1: iqn.x:other\n' },
      { cmd: `tgtadm ${c} --op new --mode target --tid 2 -T ${IQN}` },
      { cmd: `tgtadm ${c} --op new --mode logicalunit --tid 2 --lun 1 -b ${FILE}`, fail: { exitCode: 22, stderr: "tgtadm: can't find the logical unit" } },
      { cmd: `tgtadm ${c} --op delete --mode target --tid 2 --force` },
    ]);
    const exporter = new TgtExporter(new Tgtadm(runner, undefined), { manage: false, portal: '127.0.0.1:3260' }, log);
    let error: Error | undefined;
    await exporter.ensure({ iqn: IQN, file: FILE, readonly: false }).catch((err) => (error = err));
    expect(error?.message).to.equal('tgtadm failed');
    expect(runner.done).to.equal(true);
  });

  it('tells a daemon not run as root that tgtd cannot answer it, rather than to start one', async () => {
    const c = 'tgtadm -C 21003 --lld iscsi';
    const runner = new RecordedRunner([{ cmd: `${c} --op show --mode system`, fail: { exitCode: 107, stderr: 'tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected' } }]);
    const exporter = new TgtExporter(new Tgtadm(runner, 21003), { manage: true, portal: '127.0.0.1:13261', controlPort: 21003 }, log);
    const getuid = process.getuid;
    process.getuid = () => 65534;
    try {
      let error: Error | undefined;
      await exporter.start().catch((err) => (error = err));
      expect(error?.message).to.equal("no tgtd answers on control port 21003 to this daemon's user (uid 65534): tgtd's control socket is root's; exports need the daemon run as root");
    } finally {
      process.getuid = getuid;
    }
    expect(runner.done).to.equal(true);
  });

  it('stops a tgtd it manages: its targets first, then the system (tgtd ignores SIGTERM)', async () => {
    const c = 'tgtadm -C 21002 --lld iscsi';
    const runner = new RecordedRunner([
      { cmd: `${c} --op show --mode system`, fail: { exitCode: 107, stderr: 'tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected' } },
      { cmd: 'tgtd -C 21002 --iscsi portal=127.0.0.1:13261' },
      { cmd: `${c} --op show --mode system`, stdout: 'System:\n    State: ready\n' },
      { cmd: `${c} --op show --mode system`, stdout: 'System:\n    State: ready\n' },
      { cmd: `${c} --op show --mode target`, stdout: TGT_SHOW },
      { cmd: `${c} --op delete --mode target --tid 1 --force` },
      { cmd: `${c} --op delete --mode target --tid 3 --force` },
      { cmd: `${c} --op show --mode target`, stdout: '' },
      { cmd: `${c} --op delete --mode system` },
    ]);
    const exporter = new TgtExporter(new Tgtadm(runner, 21002), { manage: true, portal: '127.0.0.1:13261', controlPort: 21002 }, log);
    await exporter.start();
    await exporter.stop((t) => t.iqn.startsWith(IQN_PREFIX));
    expect(runner.done).to.equal(true);
  });
});

describe('LIO backend (targetcli), against recorded command sequences', () => {
  const make = (runner: RecordedRunner) => new LioExporter(new Targetcli(runner), '10.0.0.5:3260', log);
  const OTHER_IQN = iqnFor('0123456789abcdef0123456789abcdef', VID);
  const target = (iqn: string, backstore = BS) => ({ iqn, backstore, file: FILE, portal: '10.0.0.5:3260' });

  it('parses targetcli ls of /iscsi (4 levels) and /backstores/fileio', () => {
    expect(parseIscsiTree(lsIscsi([target(IQN), { iqn: 'iqn.2003-01.org.linux-iscsi.host:sn.1' }]))).to.deep.equal([
      { iqn: 'iqn.2003-01.org.linux-iscsi.host:sn.1', backstores: [] },
      { iqn: IQN, backstores: [BS] },
    ]);
    expect(parseFileioBackstores(lsFileio([{ name: BS, file: FILE }]))).to.deep.equal([{ name: BS, file: FILE }]);
    expect(parseIscsiTree(lsIscsi([]))).to.deep.equal([]);
    expect(parseFileioBackstores(lsFileio([]))).to.deep.equal([]);
  });

  it('parses the tree as configshell prints it: margins with pipes, no dots on a long line, colours, no root line', () => {
    // Lines as targetcli-fb 2.1.53 prints them (margins and summaries from configshell-fb node.py and ui_target.py).
    const text = [
      'o- iscsi .............................................................................................................. [Targets: 2]',
      `  o- ${IQN} ............................................................................... [TPGs: 2]`,
      '  | o- tpg1 ............................................................................................... [gen-acls, no-auth]',
      '  | | o- acls ............................................................................................................ [ACLs: 1]',
      '  | | | o- iqn.1994-05.com.redhat:client ......................................................................... [Mapped LUNs: 1]',
      '  | | o- luns ............................................................................................................ [LUNs: 2]',
      `  | | | o- lun0 ....................... [fileio/${BS} (/mnt/a/a very long directory name/of a volume/data.img) (default_tg_pt_gp)]`,
      '  | | | o- lun1 ................................................. [block/disk1 (/dev/sdb) (default_tg_pt_gp)]',
      '  | | o- portals ...................................................................................................... [Portals: 1]',
      '  | |   o- 10.0.0.5:3260 ........................................................................................................ [OK]',
      '  | o- tpg2 ........................................................................................................... [disabled]',
      '  |   o- luns ............................................................................................................ [LUNs: 1]',
      '  |     o- lun0 ......................................................................... [fileio/elemento_x (/x) (default_tg_pt_gp)]',
      '  o- iqn.2003-01.org.linux-iscsi.host:sn.1 ............................................................................. [TPGs: 1]',
    ].join('\n');
    expect(parseIscsiTree(text)).to.deep.equal([
      { iqn: IQN, backstores: [BS, 'elemento_x'] },
      { iqn: 'iqn.2003-01.org.linux-iscsi.host:sn.1', backstores: [] },
    ]);
    const long = `/mnt/a/${'d'.repeat(90)}/data.img`;
    const fileio = renderTree({ name: 'fileio', summary: 'Storage Objects: 1', children: [{ name: BS, summary: `${long} (10.0GiB) write-thru deactivated` }] }, 1);
    expect(fileio).to.include(`o- ${BS}  [${long}`);
    expect(parseFileioBackstores(fileio)).to.deep.equal([{ name: BS, file: long }]);
    const coloured = '\x1b[1m\x1b[4mo- fileio\x1b[0m ..... [Storage Objects: 1]\n  o- \x1b[1mname\x1b[0m ..... [/a b/c (1.0MiB) write-back activated]\n';
    expect(parseFileioBackstores(coloured)).to.deep.equal([{ name: 'name', file: '/a b/c' }]);
    expect(parseTree(`o- ${IQN} ... [TPGs: 1]\n  o- tpg1 ... [gen-acls]\n`, 'iscsi').map((n) => n.depth)).to.deep.equal([1, 2]);
  });

  it('start turns off the default portal on every address', async () => {
    const runner = new RecordedRunner([{ cmd: 'targetcli set global auto_add_default_portal=false' }]);
    await make(runner).start();
    expect(runner.done).to.equal(true);
  });

  it('ensure: backstore, target, LUN, portal, demo-mode attributes, then saveconfig', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([]) },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([]) },
      { cmd: `targetcli /backstores/fileio create name=${BS} file_or_dev=${FILE}` },
      { cmd: `targetcli /iscsi create ${IQN}` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1/luns create /backstores/fileio/${BS}` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1/portals create 10.0.0.5 3260` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1 set attribute authentication=0 generate_node_acls=1 cache_dynamic_acls=1 demo_mode_write_protect=1` },
      { cmd: 'targetcli saveconfig' },
    ]);
    await make(runner).ensure({ iqn: IQN, file: FILE, readonly: true });
    expect(runner.done).to.equal(true);
  });

  it('a second target of the same file uses the backstore of the first (targetcli refuses a second one on a file)', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([target(IQN, 'elemento_legacy')]) },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([{ name: 'elemento_legacy', file: FILE }]) },
      { cmd: `targetcli /iscsi create ${OTHER_IQN}` },
      { cmd: `targetcli /iscsi/${OTHER_IQN}/tpg1/luns create /backstores/fileio/elemento_legacy` },
      { cmd: `targetcli /iscsi/${OTHER_IQN}/tpg1/portals create 10.0.0.5 3260`, fail: { exitCode: 1, stderr: 'Could not create NetworkPortal in configFS' } },
      { cmd: `targetcli /iscsi delete ${OTHER_IQN}` },
      { cmd: 'targetcli saveconfig' },
    ]);
    const err = await make(runner).ensure({ iqn: OTHER_IQN, file: FILE, readonly: false }).catch((e) => e);
    expect(err?.message).to.equal('targetcli failed');
    expect(runner.done).to.equal(true);
  });

  it('refuses a file name targetcli cannot take as one value, before running anything that changes', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([]) },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([]) },
    ]);
    const err = await make(runner).ensure({ iqn: IQN, file: '/mnt/my volumes/data.img', readonly: false }).catch((e) => e);
    expect(err).to.include({ status: 501 });
    expect(err.message).to.match(/cannot pass the file name "\/mnt\/my volumes\/data.img" to targetcli/);
    expect(runner.done).to.equal(true);
  });

  it('does not serve Ceph volumes: declared as data, and an RBD target is refused (501) before any command runs', async () => {
    const runner = new RecordedRunner([]);
    const lio = make(runner);
    expect(lio.capabilities.rbdLuns).to.equal(false);
    const err = await lio.ensure({ iqn: IQN, file: 'elemento/elemento-x', readonly: false, rbd: { conf: '/etc/ceph/ceph.conf', id: 'admin' } }).catch((e) => e);
    expect(err).to.include({ status: 501, message: 'the LIO exporter does not serve Ceph volumes (use the tgt exporter with tgt-rbd)' });
    expect(runner.done).to.equal(true);
  });

  it('ensure of a target that exists runs nothing else', async () => {
    const runner = new RecordedRunner([{ cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([target(IQN)]) }]);
    await make(runner).ensure({ iqn: IQN, file: FILE, readonly: false });
    expect(runner.done).to.equal(true);
  });

  it('ensure reuses a stray backstore of the file, and undoes what it made when a step fails (then saves)', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([]) },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([{ name: BS, file: FILE, used: false }]) },
      { cmd: `targetcli /iscsi create ${IQN}` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1/luns create /backstores/fileio/${BS}` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1/portals create 10.0.0.5 3260` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1 set attribute authentication=0 generate_node_acls=1 cache_dynamic_acls=1 demo_mode_write_protect=0` },
      { cmd: 'targetcli saveconfig' },
    ]);
    await make(runner).ensure({ iqn: IQN, file: FILE, readonly: false });
    expect(runner.done).to.equal(true);
    // A backstore this ensure made is deleted with the half-made target.
    const failing = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([]) },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([]) },
      { cmd: `targetcli /backstores/fileio create name=${BS} file_or_dev=${FILE}` },
      { cmd: `targetcli /iscsi create ${IQN}` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1/luns create /backstores/fileio/${BS}` },
      { cmd: `targetcli /iscsi/${IQN}/tpg1/portals create 10.0.0.5 3260`, fail: { exitCode: 1, stderr: 'Could not create NetworkPortal in configFS' } },
      { cmd: `targetcli /iscsi delete ${IQN}` },
      { cmd: `targetcli /backstores/fileio delete ${BS}` },
      { cmd: 'targetcli saveconfig' },
    ]);
    let error: Error | undefined;
    await make(failing).ensure({ iqn: IQN, file: FILE, readonly: false }).catch((err) => (error = err));
    expect(error?.message).to.equal('targetcli failed');
    expect(failing.done).to.equal(true);
  });

  it('remove: target, then the backstores of ours no target uses, saveconfig; nothing at all for an unknown target', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([target(IQN)]) },
      { cmd: `targetcli /iscsi delete ${IQN}` },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([{ name: BS, file: FILE }, { name: 'elemento_stray', file: '/mnt/a/x/data.img', used: false }, { name: 'theirs', file: '/srv/disk.img', used: false }]) },
      { cmd: `targetcli /backstores/fileio delete ${BS}` },
      { cmd: 'targetcli /backstores/fileio delete elemento_stray' },
      { cmd: 'targetcli saveconfig' },
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([]) },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([{ name: 'theirs', file: '/srv/disk.img', used: false }]) },
    ]);
    const exporter = make(runner);
    await exporter.remove(IQN);
    await exporter.remove(IQN);
    expect(runner.done).to.equal(true);
  });

  it('remove keeps the backstore another target of the file still uses', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([target(IQN), target(OTHER_IQN)]) },
      { cmd: `targetcli /iscsi delete ${IQN}` },
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([{ name: BS, file: FILE }]) },
      { cmd: 'targetcli saveconfig' },
    ]);
    await make(runner).remove(IQN);
    expect(runner.done).to.equal(true);
  });

  it('list maps each target to the file of its LUN 0', async () => {
    const runner = new RecordedRunner([
      { cmd: 'targetcli ls /backstores/fileio 1', stdout: lsFileio([{ name: BS, file: FILE }]) },
      { cmd: 'targetcli ls /iscsi 4', stdout: lsIscsi([target(IQN), target(OTHER_IQN), { iqn: 'iqn.2003-01.org.linux-iscsi.host:sn.1' }]) },
    ]);
    // In configshell's order: by name, a trailing number compared as a number.
    expect(await make(runner).list()).to.deep.equal([
      { iqn: 'iqn.2003-01.org.linux-iscsi.host:sn.1', file: '' },
      { iqn: OTHER_IQN, file: FILE },
      { iqn: IQN, file: FILE },
    ]);
  });

  it('fails on a command it was not told about', async () => {
    const runner = new RecordedRunner([]);
    let error: Error | undefined;
    await make(runner).list().catch((err) => (error = err));
    expect(error?.message).to.match(/^the fake runner was not told about: targetcli ls \/backstores\/fileio 1/);
  });
});
