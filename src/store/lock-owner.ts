import { readFileSync, promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';

/** Who holds a lock, as its marker says (SPEC §3's `elemento.<purpose>.<operation_uid>.ignore`). */
export interface MarkerOwner {
  purpose?: string;
  host?: string;
  boot?: string | null;
  pid?: number;
  started?: string;
}

/**
 * This boot of this host (Linux's random boot id), written in each lock marker beside the host name and
 * pid: a pid proves a holder dead only on the boot that ran it. Host names alone are not enough: hosts
 * sharing a tree may have been cloned with theirs, and a live lock of the other one, whose pid does not
 * run here, was broken at once. Null where the kernel does not say: no holder is then proved dead.
 */
export const BOOT_ID: string | null = (() => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
  } catch {
    return null;
  }
})();

/** The marker's content for an operation of this process. */
export function ownMarker(purpose: string): MarkerOwner {
  return { purpose, host: hostname(), boot: BOOT_ID, pid: process.pid, started: new Date().toISOString() };
}

/** Whether the marker was written by a process of this boot of this host that no longer runs: the proof a holder is dead. */
export function isDeadHereAndNow(owner: MarkerOwner | null): boolean {
  return !!owner && owner.host === hostname() && !!BOOT_ID && owner.boot === BOOT_ID && typeof owner.pid === 'number' && !isAlive(owner.pid);
}

/** Whether a process of this host runs (EPERM: it runs as another user). */
function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Who wrote a lock marker (its host and pid), or null when it cannot be read or is cut short. */
export async function readMarkerOwner(dir: string, marker: string): Promise<MarkerOwner | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(dir, marker), 'utf8'));
  } catch {
    return null;
  }
}
