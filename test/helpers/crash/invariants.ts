import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BIN_DIR, dataFileName, isTempName, META_FILE, MIGRATION_FILE, parseLockMarker, ROOT_MUTEX, SETTINGS_FILE, tempNameFor, uidOfDirName, USAGE_STAMP, VOLUME_MUTEX } from '../../../src/store/layout.js';
import { BrokenMetaError, readMeta, type VolumeMeta } from '../../../src/store/meta.js';
import { EXPORT_MARKER_RE } from '../../../src/store/volume-record.js';
import { IQN_PREFIX } from '../../../src/exporters/iqn.js';
import { imageInfo } from '../images.js';
import { tgtadmOn } from '../tgt.js';
import type { TestDaemon } from '../daemon.js';
import type { Answer } from '../process.js';
import { OWNER, waitFor } from '../tree.js';
import { isIso9660 } from '../../../src/images/untrusted.js';
import { readPointer } from '../../../src/store/rbd-pointer.js';
import { execa } from 'execa';

/** What the invariant checks need of a running daemon: its API. */
export interface Api {
  post(endpoint: string, body: unknown): Promise<Answer>;
  get(endpoint: string): Promise<Answer>;
}

/** An in-process daemon through the same interface as a daemon process. */
export function apiOf(d: TestDaemon): Api {
  const answer = async (t: PromiseLike<{ status: number; body: unknown }>): Promise<Answer> => {
    const r = await t;
    return { status: r.status, body: r.body };
  };
  return { post: (e, b) => answer(d.post(e, b)), get: (e) => answer(d.api.get(`/api/v1.0/${e}`)) };
}

/** The VM every attach of the crash harness names (operations.ts), so a check can detach what a trial left. */
export const CRASH_NODE = 'crash-node';
export const CRASH_VM = '1';

/** The Ceph pool the daemons under test keep Ceph volumes in (checked with the real `rbd`). */
export interface CephPool {
  conf: string;
  id: string;
  pool: string;
}

/** The images in the pool, by name, with their sizes (one the daemon's purge removes meanwhile is left out). */
async function poolImages(ceph: CephPool): Promise<Map<string, number>> {
  const rbd = (...args: string[]) => execa('rbd', ['-c', ceph.conf, '--id', ceph.id, ...args], { reject: false });
  const names = (await rbd('ls', ceph.pool)).stdout.split('\n').filter(Boolean);
  const infos = await Promise.all(names.map((n) => rbd('info', '--format', 'json', `${ceph.pool}/${n}`)));
  return new Map(names.flatMap((n, i) => (infos[i].exitCode === 0 ? [[n, JSON.parse(infos[i].stdout).size as number] as const] : [])));
}

/** Files a finished volume directory may hold (SPEC §3); anything else is a leftover. */
const VOLUME_FILES = new Set(['meta.json', 'isoinfo.json', 'cloud-init-metadata', VOLUME_MUTEX, MIGRATION_FILE]);
/** Entries a root may hold besides volumes. A left mutex is allowed: the lock checks prove it does not block. */
const ROOT_FILES = new Set([SETTINGS_FILE, ROOT_MUTEX, BIN_DIR, USAGE_STAMP]);
/** A usage stamp's temp file left by a kill mid-write: harmless, removed by the next grow in that root (placement.ts). */
const isStampLeftover = (name: string) => name.startsWith(path.basename(tempNameFor(USAGE_STAMP, '')));

interface StatusRoot {
  path: string;
  maxVolumes: number | null;
  maxTotalSize: number | null;
  volumes: number;
  usedBytes: number;
}

/**
 * The invariants of a tree after a crash and a restart (docs/RELIABILITY.md), checked on disk and
 * through the API. Returns one sentence per violation; empty when all hold.
 */
export async function treeViolations(api: Api, ceph?: CephPool): Promise<string[]> {
  const out: string[] = [];
  const images = ceph ? await poolImages(ceph) : new Map<string, number>();
  const pointed = new Set<string>();
  const status = (await api.get('status')).body as { roots: StatusRoot[]; broken: unknown[] };
  if (status.broken.length) out.push(`status lists broken volumes: ${JSON.stringify(status.broken)}`);
  const onDisk = new Map<string, VolumeMeta>();
  for (const root of status.roots) {
    let used = 0;
    let count = 0;
    for (const name of await fs.readdir(root.path)) {
      const uid = uidOfDirName(name);
      if (!uid) {
        if (!ROOT_FILES.has(name) && !isStampLeftover(name)) out.push(`${root.path} holds a stray ${name}`);
        // The restarted daemon purges what the sweep found in the bin in the background: give it a moment.
        if (name === BIN_DIR) {
          const bin = path.join(root.path, name);
          const emptied = await waitFor(async () => !(await fs.readdir(bin).catch(() => [])).length, 10_000, 'the bin').then(() => true, () => false);
          if (!emptied) out.push(`${root.path}/${BIN_DIR} is not emptied after the start-up sweep`);
        }
        continue;
      }
      count += 1;
      const dir = path.join(root.path, name);
      const meta = await volumeViolations(dir, uid, out, images, pointed);
      if (meta) {
        onDisk.set(uid, meta);
        used += meta.size;
      }
    }
    if (root.volumes !== count) out.push(`status counts ${root.volumes} volumes in ${root.path}, the disk holds ${count}`);
    if (root.usedBytes !== used) out.push(`status says ${root.usedBytes} bytes used in ${root.path}, meta.json sizes add up to ${used}`);
    if (root.maxVolumes !== null && count > root.maxVolumes) out.push(`${root.path} holds ${count} volumes, more than its max-volumes ${root.maxVolumes}`);
    if (root.maxTotalSize !== null && used > root.maxTotalSize) out.push(`${root.path} promises ${used} bytes, more than its max-total-size`);
  }
  const listed = ((await api.post('accessible', { client_uid: OWNER })).body as Array<{ volumeID: string }>).map((v) => v.volumeID);
  for (const uid of onDisk.keys()) if (!listed.includes(uid)) out.push(`volume ${uid} is on disk but not listed by accessible`);
  for (const uid of listed) if (!onDisk.has(uid)) out.push(`volume ${uid} is listed but not complete on disk`);
  // An image no pointer names is leaked (the bin's purge may still be removing it: the check settles).
  for (const image of images.keys()) if (!pointed.has(image)) out.push(`the RBD image ${image} belongs to no volume`);
  return out;
}

/** One volume directory: complete (meta.json + matching data file), nothing left by an operation. */
async function volumeViolations(dir: string, uid: string, out: string[], images: Map<string, number>, pointed: Set<string>): Promise<VolumeMeta | null> {
  const files = await fs.readdir(dir);
  for (const f of files) {
    if (parseLockMarker(f)) out.push(`${uid} still holds the lock marker ${f}`);
    else if (isTempName(f)) out.push(`${uid} still holds the temp file ${f}`);
    else if (f.endsWith('.exported') && !EXPORT_MARKER_RE.test(f)) out.push(`${uid} holds a malformed export marker ${f}`);
  }
  let meta: VolumeMeta;
  try {
    meta = await readMeta(dir, uid);
  } catch (err) {
    if (!(err instanceof BrokenMetaError)) throw err;
    out.push(`${uid}: ${err.message}`);
    return null;
  }
  const data = dataFileName(meta.format);
  const strays = files.filter((f) => !VOLUME_FILES.has(f) && f !== data && f !== META_FILE && !EXPORT_MARKER_RE.test(f) && !parseLockMarker(f) && !isTempName(f));
  if (strays.length) out.push(`${uid} holds files it should not: ${strays.join(', ')}`);
  if (!files.includes(data)) {
    out.push(`${uid}: ${data} is missing`);
    return null;
  }
  if (meta.format === 'rbd') {
    const pointer = await readPointer(path.join(dir, data), uid).catch((err: Error) => (out.push(`${uid}: ${err.message}`), null));
    if (!pointer) return null;
    pointed.add(pointer.image);
    const size = images.get(pointer.image);
    if (size === undefined) out.push(`${uid}: its RBD image ${pointer.pool}/${pointer.image} does not exist`);
    else if (size !== meta.size) out.push(`${uid}: its RBD image holds ${size} bytes, meta.json says ${meta.size}`);
    return meta;
  }
  const info = await imageInfo(path.join(dir, data));
  // qemu-img reads an ISO as raw bytes; an ISO volume's data must carry the ISO 9660 signature.
  const format = meta.format === 'iso' && info.format === 'raw' && (await isIso9660(path.join(dir, data))) ? 'iso' : info.format;
  if (format !== meta.format) out.push(`${uid}: ${data} is ${info.format}, meta.json says ${meta.format}`);
  if (info['virtual-size'] !== meta.size) out.push(`${uid}: ${data} holds ${info['virtual-size']} bytes, meta.json says ${meta.size}`);
  return meta;
}

/**
 * Exports and markers agree (after the restart and its reconciliation): every `.exported` marker in
 * the tree has its target in the tgtd on `controlPort`, and every target of ours there has its
 * marker. The tgtd is the test's own, so every target with our IQN prefix is ours.
 */
export async function exportViolations(api: Api, controlPort: number): Promise<string[]> {
  const out: string[] = [];
  const markers = new Set<string>();
  for (const root of ((await api.get('status')).body as { roots: StatusRoot[] }).roots)
    for (const name of await fs.readdir(root.path))
      if (uidOfDirName(name))
        for (const f of await fs.readdir(path.join(root.path, name))) {
          const iqn = EXPORT_MARKER_RE.exec(f)?.[1];
          if (iqn) markers.add(iqn);
        }
  const shown = await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target']);
  const targets = new Set([...shown.matchAll(/^Target \d+: (\S+)$/gm)].map((m) => m[1]).filter((iqn) => iqn.startsWith(IQN_PREFIX)));
  for (const iqn of markers) if (!targets.has(iqn)) out.push(`the marker of ${iqn} has no target in the exporter`);
  for (const iqn of targets) if (!markers.has(iqn)) out.push(`the exporter has a target ${iqn} that no marker claims`);
  return out;
}

/**
 * No lock left behind blocks a later operation: every volume takes an update (a lock left by the
 * killed process may answer 409 until it is stale, `staleMs`, then must give way).
 */
export async function lockViolations(api: Api, staleMs: number): Promise<string[]> {
  const out: string[] = [];
  const listed = (await api.post('accessible', { client_uid: OWNER })).body as Array<{ volumeID: string; creatorID: string }>;
  // Each by its owner (a transfer may have handed it to another).
  for (const { volumeID: vid, creatorID } of listed) {
    const until = Date.now() + staleMs * 2 + 3000;
    let res = await api.post('update', { vid, creatorID, name: 'checked' });
    while (res.status === 409 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 200));
      res = await api.post('update', { vid, creatorID, name: 'checked' });
    }
    if (res.status !== 200) out.push(`update of ${vid} after the restart answered ${res.status}: ${JSON.stringify(res.body)}`);
  }
  return out;
}

/** Polls `check` until it finds nothing or `ms` pass (a lock left fresh by the killed process is recovered once stale). */
export async function settledViolations(check: () => Promise<string[]>, ms: number): Promise<string[]> {
  const until = Date.now() + ms;
  // The daemon's later sweep may remove a dead claim while the check reads it: look again.
  const checkOnce = () =>
    check().catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      return [`the tree changed during the check (${err.path ?? err.message})`];
    });
  let found = await checkOnce();
  while (found.length && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 250));
    found = await checkOnce();
  }
  return found;
}
