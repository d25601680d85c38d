import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Answer } from '../process.js';
import { hasPattern, writePattern } from '../images.js';
import { OWNER, seedCreateBody } from '../tree.js';
import type { Api } from './invariants.js';

/** A volume made for an operation to work on, found again after the crash by its uid. */
export interface Subject {
  vid?: string;
}

/**
 * One mutating operation of the crash harness (docs/RELIABILITY.md, "Adding an operation"):
 * `setup` runs on a healthy daemon and makes what the operation needs; `run` is the request that
 * the daemon dies in; `points` are the fault points (src/faults.ts) it passes, in order. A point
 * written `a>b` kills the daemon at `a`, then kills the restarted daemon at `b` (a point of the
 * recovery), then restarts it once more. `verify` checks what the operation must keep (the data).
 */
export interface CrashOperation {
  name: string;
  points: string[];
  setup(api: Api, mnt: string): Promise<Subject>;
  run(api: Api, subject: Subject): Promise<Answer>;
  verify?(api: Api, subject: Subject): Promise<string[]>;
}

const SMALL = 0.01; // 10 MB: big enough for qemu-img to take a moment, small enough for hundreds of trials.
const PATTERN = 0x5a;
const LOCKED_STEPS = ['lock.after-mutex', 'lock.after-marker'];
const META_WRITE = ['atomic.after-temp-write', 'atomic.after-rename'];

async function createVolume(api: Api, format: 'raw' | 'qcow2'): Promise<string> {
  const res = await api.post('create', seedCreateBody({ format, size: SMALL }));
  if (res.status !== 200) throw new Error(`setup create answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body.vid;
}

/** A volume whose first MB holds a known pattern, to prove an operation keeps the data. */
async function patternedVolume(api: Api, format: 'raw' | 'qcow2'): Promise<Subject> {
  const vid = await createVolume(api, format);
  const info = (await api.post('info', { volume_id: vid })).body;
  if (info.format !== format) throw new Error(`setup volume ${vid} is ${info.format}`);
  const dir = await volumeDir(api, vid);
  await writePattern(path.join(dir, format === 'raw' ? 'data.img' : 'data.qcow2'), format, PATTERN, 0, 1 << 20);
  return { vid };
}

async function volumeDir(api: Api, vid: string): Promise<string> {
  const roots = (await api.get('status')).body.roots as Array<{ path: string }>;
  const dir = roots.map((r) => path.join(r.path, `vid.${vid}.elimg`)).find((d) => existsSync(d));
  if (!dir) throw new Error(`volume ${vid} is in no root`);
  return dir;
}

/** The volume still exists and its data still holds the pattern, in whatever format it has now. */
async function patternKept(api: Api, subject: Subject): Promise<string[]> {
  const info = await api.post('info', { volume_id: subject.vid });
  if (info.status !== 200) return [`volume ${subject.vid} was lost: info answered ${info.status}`];
  const format = info.body.format as 'raw' | 'qcow2';
  const file = path.join(await volumeDir(api, subject.vid!), format === 'raw' ? 'data.img' : 'data.qcow2');
  return (await hasPattern(file, format, PATTERN, 0, 1 << 20)) ? [] : [`volume ${subject.vid} lost its data`];
}

export const CRASH_OPERATIONS: CrashOperation[] = [
  {
    name: 'create',
    points: [
      'root-lock.after-acquire',
      'create.after-mkdir',
      ...LOCKED_STEPS,
      ...META_WRITE,
      'create.after-meta',
      'create.after-temp-image',
      'create.after-publish',
      'lock.before-mutex-release',
      'create.after-meta>recovery.after-bin-rename',
      'create.after-mkdir>sweep.after-dead-claim-rename',
    ],
    setup: async () => ({}),
    run: (api) => api.post('create', seedCreateBody({ format: 'qcow2', size: SMALL })),
  },
  {
    name: 'update',
    points: [...LOCKED_STEPS, 'update.before-meta', ...META_WRITE, 'update.after-meta', 'lock.before-mutex-release'],
    setup: (api) => patternedVolume(api, 'raw'),
    run: (api, s) => api.post('update', { vid: s.vid, creatorID: OWNER, name: 'renamed', labels: { crash: 'yes' } }),
    verify: patternKept,
  },
  {
    name: 'resize',
    points: [...LOCKED_STEPS, 'root-lock.after-acquire', 'resize.after-image', ...META_WRITE, 'resize.after-meta', 'lock.before-mutex-release', 'resize.after-image>recovery.after-size-fix'],
    setup: (api) => patternedVolume(api, 'qcow2'),
    run: (api, s) => api.post('update/resize', { vid: s.vid, creatorID: OWNER, size: SMALL * 2 }),
    verify: patternKept,
  },
  {
    name: 'convert',
    points: [...LOCKED_STEPS, 'convert.after-temp-image', 'convert.after-rename', ...META_WRITE, 'convert.after-meta', 'convert.after-old-removed', 'lock.before-mutex-release'],
    setup: (api) => patternedVolume(api, 'raw'),
    run: (api, s) => api.post('update/convert', { vid: s.vid, creatorID: OWNER, format: 'qcow2' }),
    verify: patternKept,
  },
  {
    name: 'destroy',
    points: [...LOCKED_STEPS, 'destroy.before-bin-rename', 'destroy.after-bin-rename', 'lock.before-mutex-release', 'destroy.before-purge'],
    setup: async (api) => ({ vid: await createVolume(api, 'qcow2') }),
    run: (api, s) => api.post('destroy', { volume_id: s.vid }),
  },
  // clone, import, upload, export: one entry each when they land (see docs/RELIABILITY.md).
];
