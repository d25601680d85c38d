/**
 * A private single-node Ceph cluster for trying Ceph volumes on one machine (root; ceph-mon and
 * ceph-osd installed): the one the tests use (test/helpers/ceph.ts), kept up until Ctrl-C.
 *   sudo npm run dev:ceph          # then, in another shell, the printed variables + npm start
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCeph } from '../test/helpers/ceph.js';

const base = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-dev-ceph-'));
const ceph = await startCeph(base);
if (typeof ceph === 'string') {
  console.error(`no Ceph cluster: ${ceph}`);
  await fs.rm(base, { recursive: true, force: true });
  process.exit(1);
}
console.log(`a Ceph cluster runs under ${base} (memstore: its data is lost when it stops). Start the daemon with:\n`);
console.log(`ELEMENTO_CEPH_POOL=${ceph.pool} ELEMENTO_CEPH_CONF=${ceph.conf} ELEMENTO_CEPH_ID=${ceph.id} npm start\n`);
console.log(`rbd -c ${ceph.conf} --id ${ceph.id} ls ${ceph.pool}    # the images; Ctrl-C stops the cluster`);
const stop = async () => {
  await ceph.stop();
  await fs.rm(base, { recursive: true, force: true });
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
setInterval(() => undefined, 1 << 30);
