import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fse from 'fs-extra';
import { BIN_DIR } from '../../src/store/layout.js';

/**
 * A temporary mount directory with roots: `{ 'a': settings, 'data/b': settings }`, made inside
 * `parent` (the system's temp folder unless said: the security tests watch what is beside it).
 */
export async function makeTree(roots: Record<string, object | string> = { a: {} }, parent = os.tmpdir()): Promise<string> {
  const mnt = await fs.mkdtemp(path.join(parent, 'elemento-test-'));
  for (const [rel, settings] of Object.entries(roots)) {
    await fs.mkdir(path.join(mnt, rel), { recursive: true });
    await fs.writeFile(path.join(mnt, rel, 'settings.json'), typeof settings === 'string' ? settings : JSON.stringify(settings));
  }
  return mnt;
}

export async function removeTree(mnt: string): Promise<void> {
  await fse.remove(mnt);
}

/**
 * Every file below `dir` with its size and a digest of its content, to prove that a refused
 * request changed nothing. Roots' bins are left out: what is in them already left the tree, and
 * the daemon empties them in the background (src/store/purge.ts).
 */
export async function snapshotTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(dir, p);
      if (e.name === BIN_DIR) continue;
      if (e.isDirectory()) {
        out[rel + '/'] = 'dir';
        await walk(p);
      } else {
        const st = await fs.stat(p);
        out[rel] = `${st.size}:${e.name.endsWith('.json') ? await fs.readFile(p, 'utf8') : st.mtimeMs}`;
      }
    }
  };
  await walk(dir);
  return out;
}

/** Polls `check` until it returns true or `ms` pass. */
export async function waitFor(check: () => boolean | Promise<boolean>, ms = 3000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

export const OWNER = 'ffffffffffffffffffffffffffffffff';
export const OTHER = '0123456789abcdef0123456789abcdef';

/** The seed's example create body. */
export function seedCreateBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    creatorID: OWNER,
    name: 'test-create',
    private: false,
    readonly: false,
    shareable: false,
    bootable: false,
    clonable: false,
    alg: 'no',
    format: 'qcow2',
    bus: 'virtio',
    size: 1,
    ...overrides,
  };
}

/** Skips a test that cannot run on this machine, saying why (never a silent pass). */
export function skipBecause(ctx: Mocha.Context, reason: string): never {
  console.log(`      (skipped: ${reason})`);
  ctx.skip();
}
