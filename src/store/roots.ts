import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SETTINGS_FILE } from './layout.js';
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
  skipped: SkippedRoot[];
  /** The directories looked into: the mount directory and those one and two levels down that may hold a root. */
  looked: string[];
}

async function hasSettings(dir: string): Promise<boolean> {
  try {
    await fs.access(path.join(dir, SETTINGS_FILE));
    return true;
  } catch {
    return false;
  }
}

async function subdirs(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => path.join(dir, e.name))
    .sort();
}

/**
 * Finds the roots below the mount directory (SPEC §3): a directory one or two levels down holding
 * a settings.json, with no root above it (a settings.json deeper inside a root is not a root).
 * A root whose settings.json is invalid, or a directory that cannot be read, is skipped with a reason.
 */
export async function discoverRoots(mnt: string): Promise<Discovery> {
  const roots: Root[] = [];
  const skipped: SkippedRoot[] = [];
  const looked: string[] = [mnt];
  const consider = async (dir: string): Promise<boolean> => {
    if (!(await hasSettings(dir))) return false;
    try {
      roots.push({ path: dir, settings: await readSettings(dir) });
    } catch (err) {
      skipped.push({ path: dir, reason: (err as Error).message });
    }
    return true;
  };
  let level1: string[];
  try {
    level1 = await subdirs(mnt);
  } catch (err) {
    return { roots, skipped: [{ path: mnt, reason: `the mount directory cannot be read (${(err as NodeJS.ErrnoException).code})` }], looked };
  }
  for (const dir of level1) {
    looked.push(dir);
    if (await consider(dir)) continue;
    let level2: string[];
    try {
      level2 = await subdirs(dir);
    } catch (err) {
      skipped.push({ path: dir, reason: `directory cannot be read (${(err as NodeJS.ErrnoException).code})` });
      continue;
    }
    for (const sub of level2) {
      looked.push(sub);
      await consider(sub);
    }
  }
  return { roots, skipped, looked };
}
