import { OTHER, OWNER, seedCreateBody } from '../tree.js';
import type { Api } from './invariants.js';
import { expectOk, type CrashOperation, type Subject } from './operations.js';

/**
 * The operations of the crash harness on Ceph volumes: they need a Ceph cluster, so they run in
 * their own suite (test/integration/crash-ceph.test.ts). Besides the tree's invariants, the check
 * compares the pool with the tree: every Ceph volume's image exists with meta.json's size, and no
 * image is left that no volume names.
 */

const SMALL = 0.01;

async function cephVolume(api: Api): Promise<Subject> {
  const res = await expectOk(api.post('create', seedCreateBody({ ceph: true, size: SMALL, clonable: true, alg: 'cp', readonly: true })), 'create');
  return { vid: res.body.vid };
}

export const CEPH_CRASH_OPERATIONS: CrashOperation[] = [
  {
    name: 'ceph-create',
    points: ['create.after-meta', 'ceph.after-image', 'create.after-temp-image', 'create.after-publish', 'ceph.after-image>recovery.after-bin-rename'],
    setup: async () => ({}),
    run: (api) => api.post('create', seedCreateBody({ ceph: true, size: SMALL })),
  },
  {
    name: 'ceph-resize',
    points: ['resize.after-image', 'resize.after-meta', 'resize.after-image>recovery.after-size-fix'],
    setup: cephVolume,
    run: (api, s) => api.post('update/resize', { vid: s.vid, creatorID: OWNER, size: SMALL * 2 }),
  },
  {
    name: 'ceph-clone',
    points: ['create.after-meta', 'ceph.after-image', 'create.after-publish'],
    setup: cephVolume,
    run: (api, s) => api.post('clone', { volume_id: s.vid, creatorID: OTHER }),
  },
  {
    // The rollback gives the image its snapshot-time size back: the setup grows the volume after the snapshot.
    name: 'ceph-snapshot-revert',
    points: ['snapshot.after-rollback', 'snapshot.after-revert'],
    setup: async (api) => {
      const subject = await cephVolume(api);
      await expectOk(api.post('snapshot/create', { vid: subject.vid, creatorID: OWNER, name: 'kept' }), 'snapshot/create');
      await expectOk(api.post('update/resize', { vid: subject.vid, creatorID: OWNER, size: SMALL * 2 }), 'update/resize');
      return subject;
    },
    run: (api, s) => api.post('snapshot/revert', { vid: s.vid, creatorID: OWNER, name: 'kept' }),
    verify: async (api, s) => {
      const info = await api.post('info', { volume_id: s.vid });
      return info.status === 200 && info.body.size === 20_000_256 ? [] : [`volume ${s.vid} answered ${info.status} with size ${info.body?.size}, not its 20000256 bytes`];
    },
  },
  {
    name: 'ceph-destroy',
    points: ['destroy.before-bin-rename', 'destroy.after-bin-rename', 'destroy.before-purge'],
    setup: cephVolume,
    run: (api, s) => api.post('destroy', { volume_id: s.vid }),
  },
];
