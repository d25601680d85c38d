import { promises as fs } from 'node:fs';
import path from 'node:path';
import { onNetworkFilesystem } from '../store/tree-reader.js';
import { loadVolumeRecord, uidOfVolumeDir } from '../store/volume-record.js';
import type { StoreContext } from './context.js';

/** A volume directory of a root that the index did not know with its meta.json when the root was listed. */
interface Unknown {
  uid: string;
  name: string;
}

interface Listing {
  /** The root directory as it was when listed (an entry added or removed since changes its mtime). */
  ino: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Date.now() when the listing began. */
  startedMs: number;
  unknown: Unknown[];
}

/**
 * A listing is used again only when the root's mtime was at least this much older than the listing:
 * the kernel stamps directories with a coarse clock, so an entry added in the same tick as a listing
 * leaves the mtime the listing saw (git's "racily clean" files).
 */
const SETTLED_MS = 1000;

interface PerIndex {
  /** The listing of each root not started yet, which every caller until then joins. */
  pending: Map<string, Promise<Array<{ uid: string; base: unknown }>>>;
  last: Map<string, Listing>;
}

const perIndex = new WeakMap<object, PerIndex>();

/**
 * The volumes of a root's directory the index does not know with their meta.json, and the base each
 * names (for overlaysOf: clones another daemon sharing the tree made a moment ago). Listing the whole
 * root for each caller made every destroy, resize, convert, snapshot and writable attach or export cost
 * a readdir of every root and a lookup per entry: with 50,000 volumes ~100 ms each, and 200 parallel
 * destroys 33 s and 700 MB of names. Now:
 * - one listing serves every caller that asked before it started (each asked under its base's lock,
 *   so the listing is as new as each needs);
 * - on a local filesystem, a root whose directory has not changed since a listing taken well after its
 *   last change is not listed again: only the directories that listing did not know are read again.
 *   On a network filesystem another host's entries may leave the mtime this host saw: always listed.
 */
export function unknownVolumes(ctx: StoreContext, rootPath: string): Promise<Array<{ uid: string; base: unknown }>> {
  let state = perIndex.get(ctx.index);
  if (!state) perIndex.set(ctx.index, (state = { pending: new Map(), last: new Map() }));
  const { pending, last } = state;
  let listing = pending.get(rootPath);
  if (!listing) {
    listing = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
      pending.delete(rootPath); // started: whoever asks from now on gets a listing of its own
      const unknown = await unknownEntries(ctx, rootPath, last);
      const found: Array<{ uid: string; base: unknown }> = [];
      for (const { uid, name } of unknown) {
        const record = await loadVolumeRecord(rootPath, path.join(rootPath, name)).catch(() => null);
        if (record?.meta) found.push({ uid, base: record.meta.base });
      }
      return found;
    });
    pending.set(rootPath, listing);
  }
  return listing;
}

async function unknownEntries(ctx: StoreContext, rootPath: string, last: Map<string, Listing>): Promise<Unknown[]> {
  const startedMs = Date.now();
  const st = await fs.stat(rootPath).catch(() => null);
  if (!st) return [];
  const before = last.get(rootPath);
  if (before && before.ino === st.ino && before.mtimeMs === st.mtimeMs && before.ctimeMs === st.ctimeMs && st.mtimeMs < before.startedMs - SETTLED_MS)
    return before.unknown;
  const unknown: Unknown[] = [];
  for (const name of await fs.readdir(rootPath).catch(() => [] as string[])) {
    const uid = uidOfVolumeDir(name);
    if (!uid) continue;
    const known = ctx.index.get(uid);
    // Known with its meta.json in this very directory (a uid in several directories is looked at in each).
    if (known?.meta && !known.copies && known.root === rootPath && known.dir.length === rootPath.length + 1 + name.length && known.dir.endsWith(name)) continue;
    const dir = path.join(rootPath, name);
    if (known?.copies && ctx.index.copiesOf(uid).some((r) => r.dir === dir && r.meta)) continue;
    unknown.push({ uid, name });
  }
  if (await onNetworkFilesystem(rootPath)) last.delete(rootPath);
  else last.set(rootPath, { ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, startedMs, unknown });
  return unknown;
}
