import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { writeJsonAtomic } from './atomic.js';
import { exportMarkerName } from './layout.js';

/**
 * The `.exported` marker (SPEC §3) of one export. Its content says which host's target serves it
 * (several daemons may share a root on Gluster: each reconciles only its own markers); its
 * modification time is the heartbeat, touched by the daemon while it holds the export (also while
 * its backend is out of reach). A marker
 * written by hand or by the seed's system is empty: it is taken as this host's.
 */
export interface MarkerContent {
  client_uid?: string;
  host?: string;
  portal?: string;
  exported?: string;
}

export function markerPath(dir: string, iqn: string): string {
  return path.join(dir, exportMarkerName(iqn));
}

export async function writeMarker(dir: string, iqn: string, content: { client_uid: string; portal: string }): Promise<void> {
  await writeJsonAtomic(markerPath(dir, iqn), { ...content, host: hostname(), exported: new Date().toISOString() });
}

/** The marker's content and heartbeat, or null when it is gone. */
export async function readMarker(file: string): Promise<{ content: MarkerContent; heartbeatMs: number } | null> {
  try {
    const [text, st] = await Promise.all([fs.readFile(file, 'utf8'), fs.stat(file)]);
    let content: MarkerContent = {};
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === 'object') content = parsed as MarkerContent;
    } catch {
      // an empty or hand-made marker
    }
    return { content, heartbeatMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** True when the marker belongs to this host's exporter. */
export function isOwnMarker(content: MarkerContent): boolean {
  return !content.host || content.host === hostname();
}

/** The heartbeat: a touch (never a rewrite) of a marker of an export the daemon holds. */
export async function touchMarker(file: string): Promise<void> {
  const now = new Date();
  await fs.utimes(file, now, now).catch((err) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
}

export async function removeMarker(dir: string, iqn: string): Promise<void> {
  await fs.rm(markerPath(dir, iqn), { force: true });
}
