import { promises as fs } from 'node:fs';
import path from 'node:path';
import { isInside, SETTINGS_FILE } from './layout.js';
import { readSettings, type RootSettings } from './settings.js';

export interface Root {
  path: string;
  settings: RootSettings;
}

export interface SkippedRoot {
  path: string;
  reason: string;
}

export interface Discovery {
  roots: Root[];
  /** Roots and directories left out, with why: an invalid settings.json, a known root gone unavailable, an unreadable directory. */
  skipped: SkippedRoot[];
  /** The directories looked into: the mount directory and those one and two levels down that may hold a root. */
  looked: string[];
  /** The skipped ones that are roots (a settings.json, or seen as a root before): their volumes still exist. */
  unavailable: SkippedRoot[];
}

/** Why a root known before is not one now, when its settings.json cannot be found. */
export const GONE = 'unavailable: settings.json is gone (filesystem unmounted?)';

/** Whether `dir` holds a settings.json: an errno other than ENOENT (EIO on a dead mount) is answered as is. */
async function settingsState(dir: string): Promise<'present' | 'absent' | string> {
  try {
    await fs.access(path.join(dir, SETTINGS_FILE));
    return 'present';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'absent' : code;
  }
}

/**
 * The directories in `dir`, a symbolic link to one included: the mount directory and its first levels
 * are the operator's configuration, as `--mnt` is (`/mnt/pool -> /srv/pool` was silently no root, its
 * volumes unknown). A link into the mount directory, or to a directory holding it, is not followed
 * (`refused` says why): it would serve a directory under two names. Links inside a root stay refused
 * (src/store/volume-record.ts).
 */
async function subdirs(dir: string, realMnt: string, refused: SkippedRoot[]): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  const found: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const full = path.join(dir, e.name);
    if (e.isDirectory()) found.push(full);
    else if (e.isSymbolicLink()) {
      const real = await fs.realpath(full).catch(() => null);
      if (!real || !(await fs.stat(real).then((st) => st.isDirectory(), () => false))) continue;
      if (isInside(realMnt, real) || isInside(real, realMnt))
        refused.push({ path: full, reason: `a symbolic link to ${real}, which ${isInside(realMnt, real) ? 'is inside' : 'holds'} the mount directory: not followed (it would serve a directory under two names)` });
      else found.push(full);
    }
  }
  return found.sort();
}

/**
 * Finds the roots below the mount directory (SPEC §3): a directory one or two levels down holding
 * a settings.json, with no root above it (a settings.json deeper inside a root is not a root).
 * A root whose settings.json is invalid, or a directory that cannot be read, is skipped with a reason.
 * A root in `known` (seen before) that lost its settings.json is skipped as unavailable and still
 * holds its place: a settings.json below it does not make a root (an unmounted root's mount point
 * may hold anything, and creates must never go there).
 */
export async function discoverRoots(mnt: string, known: ReadonlySet<string> = new Set()): Promise<Discovery> {
  const roots: Root[] = [];
  const skipped: SkippedRoot[] = [];
  const looked: string[] = [mnt];
  const positions = new Set<string>(known);
  /** Each root's directory by device and inode: one reached twice (a link, a bind mount) is one root. */
  const identities = new Map<string, string>();
  /** Each root's real path: one inside another, reached through links, is not a second root. */
  const reals = new Map<string, string>();
  const realMnt = await fs.realpath(mnt).catch(() => mnt);
  const consider = async (dir: string): Promise<boolean> => {
    const state = await settingsState(dir);
    if (state !== 'present') {
      if (!known.has(dir)) return false;
      skipped.push({ path: dir, reason: state === 'absent' ? GONE : `unavailable: settings.json cannot be read (${state})` });
      return true;
    }
    const st = await fs.stat(dir).catch(() => null);
    const identity = st ? `${st.dev}:${st.ino}` : dir;
    const real = await fs.realpath(dir).catch(() => dir);
    const first = identities.get(identity) ?? [...reals].find(([, r]) => isInside(r, real) || isInside(real, r))?.[0];
    if (first) {
      skipped.push({ path: dir, reason: `the same directory as the root ${first}, or one nested with it (a link or a second mount)` });
      return true;
    }
    identities.set(identity, dir);
    reals.set(dir, real);
    try {
      roots.push({ path: dir, settings: await readSettings(dir) });
    } catch (err) {
      skipped.push({ path: dir, reason: (err as Error).message });
      positions.add(dir);
    }
    return true;
  };
  const done = (): Discovery => {
    const all = [...skipped, ...missing()];
    return { roots, skipped: all, looked, unavailable: all.filter((s) => positions.has(s.path)) };
  };
  const missing = () => [...known].filter((k) => !roots.some((r) => r.path === k) && !skipped.some((s) => s.path === k)).map((k) => ({ path: k, reason: GONE }));
  // Seed 002 lets /mnt itself be a location; SPEC §3 does not: said, rather than its volumes silently unknown.
  if ((await settingsState(mnt)) === 'present')
    skipped.push({
      path: mnt,
      reason: 'the mount directory holds a settings.json, but roots are the directories one or two levels below it (SPEC §3): the volumes beside it are not served; move them and settings.json into a directory below it',
    });
  let level1: string[];
  try {
    level1 = await subdirs(mnt, realMnt, skipped);
  } catch (err) {
    skipped.push({ path: mnt, reason: `the mount directory cannot be read (${(err as NodeJS.ErrnoException).code})` });
    return done();
  }
  for (const dir of level1) {
    looked.push(dir);
    if (await consider(dir)) continue;
    let level2: string[];
    try {
      level2 = await subdirs(dir, realMnt, skipped);
    } catch (err) {
      skipped.push({ path: dir, reason: `directory cannot be read (${(err as NodeJS.ErrnoException).code})` });
      continue;
    }
    for (const sub of level2) {
      looked.push(sub);
      await consider(sub);
    }
  }
  return done();
}
