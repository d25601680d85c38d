import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../../src/config.js';
import { ToolError } from '../../src/errors.js';
import { imageNameOf, parsePointer, uidOfImageName } from '../../src/store/rbd-pointer.js';
import { rbdFailure } from '../../src/tools/rbd.js';

const UID = '0123456789abcdef0123456789abcdef';

describe('Ceph pointers and rbd failures', () => {
  it('a pointer names its own volume\'s image, in a pool that cannot read as an option', () => {
    expect(imageNameOf(UID)).to.equal(`elemento-${UID}`);
    expect(uidOfImageName(`elemento-${UID}`)).to.equal(UID);
    expect(uidOfImageName('elemento-x')).to.equal(null);
    expect(parsePointer(JSON.stringify({ pool: 'elemento', image: imageNameOf(UID) }), UID)).to.deep.equal({ pool: 'elemento', image: imageNameOf(UID) });
    const refused: Array<[string, string]> = [
      ['not json', 'data.rbd is not valid JSON'],
      [JSON.stringify({ pool: 'elemento' }), "data.rbd is invalid: 'image' is missing"],
      [JSON.stringify({ pool: '--help', image: imageNameOf(UID) }), 'data.rbd is invalid'],
      [JSON.stringify({ pool: 'elemento', image: 'not-ours' }), 'data.rbd is invalid'],
      [JSON.stringify({ pool: 'elemento', image: imageNameOf('f'.repeat(32)) }), `data.rbd names the image ${imageNameOf('f'.repeat(32))}, not this volume's ${imageNameOf(UID)}`],
    ];
    for (const [text, reason] of refused) expect(() => parsePointer(text, UID), text).to.throw(reason);
  });

  // What rbd prints (LC_ALL=C), as the runner's ToolError carries it: "<args>: <last stderr line>".
  const table: Array<[string, number, number | null, string | null]> = [
    ["rbd: error opening pool 'nopool': (2) No such file or directory", 2, 503, 'the Ceph pool nopool cannot be opened (it does not exist, or the client may not use it)'],
    ['rbd: couldn\'t connect to the cluster!', 110, 503, "the Ceph cluster cannot be reached: it does not answer, or refuses this host's client (ELEMENTO_CEPH_CONF, ELEMENTO_CEPH_ID)"],
    ['monclient(hunting): authenticate timed out after 3', 110, 503, "the Ceph cluster cannot be reached: it does not answer, or refuses this host's client (ELEMENTO_CEPH_CONF, ELEMENTO_CEPH_ID)"],
    ['rbd: error opening image elemento-x: (2) No such file or directory', 2, 409, 'the RBD image elemento-x does not exist: the volume is broken'],
    ['rbd: error: image still has watchers', 16, 409, 'the RBD image is open by a client (it has watchers)'],
    ["rbd: snapshot 'golden' is protected from removal.", 16, 409, 'the RBD snapshot is protected (rbd snap unprotect): it cannot be removed'],
    ['2026-11-26T23:09:11.895+0000 7f68fd6ed6c0 -1 librbd::Operations: snapshot is protected', 16, 409, 'the RBD snapshot is protected (rbd snap unprotect): it cannot be removed'],
    ['rbd: shrinking an image is only allowed with the --allow-shrink flag', 22, 409, 'the RBD image is larger than the size asked (it was resized outside the daemon): ask at least its size'],
    ['rbd: create error: (17) File exists', 17, null, null],
  ];
  for (const [stderr, exitCode, status, message] of table)
    it(`${stderr} → ${status ?? 'a 500 with the stderr in the log'}`, () => {
      const mapped = rbdFailure(new ToolError('rbd failed', `create --size 1B elemento/x: ${stderr}`, exitCode));
      if (status === null) expect(mapped).to.equal(null);
      else expect(mapped).to.include({ status, message });
    });

  it('refuses a ceph.conf path that the rbd: address (`:`) or tgt\'s bsopts (`;`) would cut', () => {
    const load = (conf: string) => loadConfig({ flags: {}, env: { ELEMENTO_CEPH_POOL: 'elemento', ELEMENTO_CEPH_CONF: conf }, defaultMnt: '/tmp' });
    // A file that exists (the start refuses one that does not).
    const conf = path.join(os.tmpdir(), `ceph-${process.pid}.conf`);
    writeFileSync(conf, '');
    try {
      expect(load(conf).cephConf).to.equal(conf);
    } finally {
      rmSync(conf);
    }
    for (const conf of ['/etc/ceph/a:b.conf', '/etc/ceph/a;b.conf']) expect(() => load(conf), conf).to.throw(/^invalid configuration: ELEMENTO_CEPH_CONF is not of the accepted form/);
  });

  it('a cancelled call, or anything but a tool failure, is left as it is', () => {
    expect(rbdFailure(Object.assign(new ToolError('rbd was cancelled', 'timed out', -1), { cancelled: true }))).to.equal(null);
    expect(rbdFailure(new Error('timed out'))).to.equal(null);
  });
});
