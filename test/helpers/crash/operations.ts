import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { Answer } from '../process.js';
import { gbToBytes } from '../../../src/store/layout.js';
import { hasPattern, writePattern } from '../images.js';
import { startImageServer } from '../image-server.js';
import { OTHER, OWNER, seedCreateBody } from '../tree.js';
import { CRASH_NODE, CRASH_VM, type Api } from './invariants.js';

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
  /** The point `npm test`'s short run kills this operation at when earlier operations already passed all its points. */
  shortRun?: string;
}

const SMALL = 0.01; // 10 MB: big enough for qemu-img to take a moment, small enough for hundreds of trials.
const PATTERN = 0x5a;
const LOCKED_STEPS = ['lock.after-mutex', 'lock.after-marker'];
const META_WRITE = ['atomic.after-temp-write', 'atomic.after-rename'];

export async function createVolume(api: Api, format: 'raw' | 'qcow2'): Promise<string> {
  const res = await api.post('create', seedCreateBody({ format, size: SMALL }));
  if (res.status !== 200) throw new Error(`setup create answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body.vid;
}

export async function expectOk(answer: Promise<Answer>, what: string): Promise<Answer> {
  const res = await answer;
  if (res.status !== 200) throw new Error(`setup ${what} answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res;
}

/** A patterned qcow2 volume that may be cloned (the owner marks it clonable and read-only). */
async function clonableVolume(api: Api): Promise<Subject> {
  const subject = await patternedVolume(api, 'qcow2');
  await expectOk(api.post('update', { vid: subject.vid, creatorID: OWNER, clonable: true, readonly: true }), 'update');
  return subject;
}

/** The VM every attach of the harness names, so the check can detach what a killed trial left attached. */
const attachBody = (vid: string) => ({ volume_id: vid, client_uid: OWNER, node: CRASH_NODE, vm_id: CRASH_VM });

/**
 * A qcow2 image with the pattern (for `create/url`) and an ISO 9660 image (for `iso/create`), served
 * by a local HTTP server (127.0.0.1); made once.
 */
let imageServer: Promise<{ url(name: string): string; close(): Promise<void>; dir: string }> | null = null;
let isoMade: Promise<unknown> | null = null;
async function imageUrl(name: 'image.qcow2' | 'tools.iso' = 'image.qcow2'): Promise<string> {
  imageServer ??= (async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-crash-images-'));
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'image.qcow2'), '4M']);
    await writePattern(path.join(dir, 'image.qcow2'), 'qcow2', PATTERN, 0, 1 << 20);
    const server = await startImageServer(dir);
    return { url: server.url, dir, close: server.close };
  })();
  const server = await imageServer;
  // Made apart, on first use: a failure here fails the ISO trials only.
  if (name === 'tools.iso')
    await (isoMade ??= (async () => {
      await fs.mkdir(path.join(server.dir, 'content'));
      await fs.writeFile(path.join(server.dir, 'content', 'README.TXT'), 'drivers\n');
      await execa('genisoimage', ['-quiet', '-V', 'TOOLS', '-J', '-R', '-o', path.join(server.dir, 'tools.iso'), path.join(server.dir, 'content')]);
    })());
  return server.url(name);
}

/** iso/create's `tool` payload (seed 002), the content from the local server. */
const isoToolBody = async () => ({
  alg: 'cp', clonable: true, creatorID: OWNER, isotype: 'tool', name: 'crash-tools', os_family: 'windows',
  os_flavour: null, os_version: null, private: false, tool_scope: 'drivers', tool_version: '2021', url: await imageUrl('tools.iso'),
});

/** Stops what the operations started (the image server). */
export async function closeFixtures(): Promise<void> {
  if (!imageServer) return;
  const server = await imageServer;
  imageServer = null;
  isoMade = null;
  await server.close();
  await fs.rm(server.dir, { recursive: true, force: true });
}

/** The base URL of a daemon process (uploads send bodies that are not JSON, so they need its port). */
function baseUrl(api: Api): string {
  const port = (api as { port?: number }).port;
  if (!port) throw new Error('uploads run against a daemon process');
  return `http://127.0.0.1:${port}`;
}

const UPLOAD_FIELDS = { creatorID: OWNER, format: 'raw', name: 'uploaded', private: 'false' };
const UPLOADED = Buffer.alloc(2 << 20, PATTERN);

async function answerOf(res: Response): Promise<Answer> {
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** `create/upload` with a raw body (the fields in the query). */
async function uploadRaw(api: Api): Promise<Answer> {
  const query = new URLSearchParams(UPLOAD_FIELDS);
  return answerOf(await fetch(`${baseUrl(api)}/api/v1.0/create/upload?${query}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: UPLOADED }));
}

/** `create/upload` as a multipart form: the fields as one JSON field, then the image as `file`. */
async function uploadMultipart(api: Api): Promise<Answer> {
  const form = new FormData();
  form.append('fields', JSON.stringify({ ...UPLOAD_FIELDS, private: false }));
  form.append('file', new Blob([UPLOADED]), 'disk.img');
  return answerOf(await fetch(`${baseUrl(api)}/api/v1.0/create/upload`, { method: 'POST', body: form }));
}

/** A cloud-init set of two files in two calls (206, then 200 with the seed ISO built). */
async function cloudInitSet(api: Api): Promise<Answer> {
  const send = async (fields: object, name: string, content: string) => {
    const form = new FormData();
    form.append('fields', JSON.stringify(fields));
    form.append('file', new Blob([content]), name);
    return answerOf(await fetch(`${baseUrl(api)}/api/v1.0/cloudinit/metadata`, { method: 'POST', body: form }));
  };
  const first = await send({ creatorID: OWNER, name: 'crash-seed', private: false, expectedFiles: 2 }, 'user-data', '#cloud-config\nhostname: crash\n');
  if (first.status !== 206) return first;
  return send({ creatorID: OWNER, vid: first.body.vid }, 'meta-data', 'instance-id: iid-crash\n');
}

/** A resumable (tus) upload in two PATCHes of 1 MB, which makes the volume when the last byte arrives. */
async function uploadTus(api: Api): Promise<Answer> {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const tus = { 'Tus-Resumable': '1.0.0' };
  const fields = { ...UPLOAD_FIELDS, private: false };
  const created = await fetch(`${baseUrl(api)}/api/v1.0/files`, {
    method: 'POST',
    headers: { ...tus, 'Upload-Length': String(UPLOADED.length), 'Upload-Metadata': `endpoint ${b64('create/upload')},fields ${b64(JSON.stringify(fields))}` },
  });
  const location = created.headers.get('location');
  if (created.status !== 201 || !location) return answerOf(created);
  let last = created;
  for (const offset of [0, UPLOADED.length / 2]) {
    last = await fetch(new URL(location, baseUrl(api)), {
      method: 'PATCH',
      headers: { ...tus, 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' },
      body: UPLOADED.subarray(offset, offset + UPLOADED.length / 2),
    });
  }
  return answerOf(last);
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

export async function volumeDir(api: Api, vid: string): Promise<string> {
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

/** The volume kept its data and the size it had (volumes only grow: a revert never shrinks one). */
function sizeAndPatternKept(size: number) {
  return async (api: Api, subject: Subject): Promise<string[]> => {
    const info = await api.post('info', { volume_id: subject.vid });
    if (info.status === 200 && info.body.size !== size) return [`volume ${subject.vid} is ${info.body.size} bytes, not the ${size} it had`];
    return patternKept(api, subject);
  };
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
  // A clone holds its source's lock and makes its volume with create's claim; what must survive is the source.
  ...(['cp', 'overlay', 'rsync', 'rclone'] as const).map((alg) => ({
    name: `clone-${alg}`,
    points: ['lock.after-marker', 'root-lock.after-acquire', 'create.after-mkdir', 'create.after-meta', 'create.after-temp-image', 'create.after-publish', 'lock.before-mutex-release'],
    setup: clonableVolume,
    run: (api: Api, s: Subject) => api.post('clone', { volume_id: s.vid, creatorID: OWNER, alg }),
    verify: patternKept,
    shortRun: alg === 'overlay' ? 'create.after-publish' : alg === 'rclone' ? 'create.after-meta' : 'create.after-temp-image',
  })),
  {
    name: 'compact',
    points: ['compact.after-temp-image', 'compact.after-rename', 'lock.before-mutex-release'],
    setup: async (api) => {
      const base = await clonableVolume(api);
      return { vid: (await expectOk(api.post('clone', { volume_id: base.vid, creatorID: OWNER, alg: 'overlay' }), 'clone')).body.vid };
    },
    run: (api, s) => api.post('overlay/compact', { vid: s.vid, creatorID: OWNER }),
    verify: patternKept,
  },
  {
    name: 'import-url',
    points: ['create.after-meta', 'import.after-receive', 'import.after-convert', 'create.after-temp-image'],
    setup: async () => ({}),
    run: async (api) => api.post('create/url', { ...seedCreateBody({ format: 'qcow2' }), size: undefined, url: await imageUrl() }),
  },
  {
    // A bootable cloud image from a URL, marked cloudinit: create/url's path, the client's other endpoint.
    name: 'cloudinit-create',
    points: ['create.after-meta', 'import.after-receive', 'import.after-convert', 'create.after-temp-image'],
    setup: async () => ({}),
    run: async (api) => api.post('cloudinit/create', { ...seedCreateBody({ format: 'qcow2', bootable: true }), size: undefined, url: await imageUrl(), cloudinit: true }),
    shortRun: 'import.after-convert',
  },
  {
    name: 'upload',
    points: ['create.after-meta', 'import.after-receive', 'import.after-convert', 'create.after-temp-image', 'create.after-publish'],
    setup: async () => ({}),
    run: (api) => uploadRaw(api),
    shortRun: 'import.after-convert',
  },
  {
    name: 'upload-multipart',
    points: ['create.after-meta', 'import.after-receive', 'import.after-convert', 'create.after-temp-image', 'create.after-publish'],
    setup: async () => ({}),
    run: (api) => uploadMultipart(api),
    shortRun: 'import.after-receive',
  },
  {
    name: 'iso-create',
    points: ['create.after-meta', 'import.after-receive', 'import.after-convert', 'iso.after-isoinfo', 'create.after-temp-image', 'create.after-publish'],
    setup: async () => ({}),
    run: async (api) => api.post('iso/create', await isoToolBody()),
  },
  {
    name: 'cloud-init',
    points: ['create.after-meta', 'cloudinit.after-file', 'cloudinit.after-iso', 'create.after-temp-image', 'create.after-publish'],
    setup: async () => ({}),
    run: (api) => cloudInitSet(api),
  },
  {
    name: 'upload-tus',
    points: ['create.after-meta', 'tus.after-chunk', 'import.after-convert', 'create.after-publish'],
    setup: async () => ({}),
    run: (api) => uploadTus(api),
    shortRun: 'tus.after-chunk',
  },
  ...(['create', 'revert', 'delete'] as const).map((action) => ({
    name: `snapshot-${action}`,
    // A revert's rollback gives the image its snapshot-time size back: the setup grows the volume after the snapshot.
    points: [...(action === 'revert' ? ['snapshot.after-rollback'] : []), `snapshot.after-${action}`, 'lock.before-mutex-release'],
    setup: async (api: Api) => {
      const subject = await patternedVolume(api, 'qcow2');
      if (action !== 'create') await expectOk(api.post('snapshot/create', { vid: subject.vid, creatorID: OWNER, name: 'kept' }), 'snapshot/create');
      if (action === 'revert') await expectOk(api.post('update/resize', { vid: subject.vid, creatorID: OWNER, size: SMALL * 2 }), 'update/resize');
      return subject;
    },
    run: (api: Api, s: Subject) => api.post(`snapshot/${action}`, { vid: s.vid, creatorID: OWNER, name: action === 'create' ? 'new' : 'kept' }),
    verify: action === 'revert' ? sizeAndPatternKept(gbToBytes(SMALL * 2)) : patternKept,
  })),
  {
    name: 'transfer',
    points: [...META_WRITE, 'transfer.after-meta', 'lock.before-mutex-release'],
    setup: (api) => patternedVolume(api, 'raw'),
    run: (api, s) => api.post('update/transfer', { vid: s.vid, creatorID: OWNER, new_creatorID: OTHER }),
    verify: patternKept,
  },
  ...(['attach', 'detach'] as const).map((action) => ({
    name: action,
    points: [...META_WRITE, `${action}.after-meta`, 'lock.before-mutex-release'],
    setup: async (api: Api) => {
      const subject = await patternedVolume(api, 'raw');
      if (action === 'detach') await expectOk(api.post('attach', attachBody(subject.vid!)), 'attach');
      return subject;
    },
    run: (api: Api, s: Subject) => api.post(action, attachBody(s.vid!)),
    verify: patternKept,
  })),
];
