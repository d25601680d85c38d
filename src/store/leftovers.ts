import { isDeadClaimCandidate, isTempName, parseLockMarker } from './layout.js';
import type { VolumeRecord } from './volume-record.js';

/**
 * What the sweep must look at: temp files, lock markers, or a claim that died before its meta.json.
 * A directory refused unread (a link, an upper-case name: broken with no files listed) is not one.
 */
export function hasLeftovers(record: VolumeRecord): boolean {
  if (record.problem !== null && record.files.length === 0) return false;
  return record.files.some((f) => isTempName(f) || parseLockMarker(f) !== null) || isDeadClaimCandidate(record.files);
}

/**
 * Volume directories found with leftovers after start, handed to a listener (the daemon's sweep) once
 * each until they are seen without them. A marker left by hand, or by a peer sharing the tree that
 * died, while the daemon runs is so recovered instead of being obeyed until the next start (findVolume
 * answers 409 "still being created" without trying the lock). A live operation's own markers may be
 * reported too: the sweep leaves a volume whose mutex is held.
 */
export class LeftoverReports {
  listener: ((dirs: string[]) => void) | null = null;
  /** Directories reported (or known to the start-up sweep) and not seen without leftovers since. */
  private reported = new Set<string>();

  /** `dir` was read and has none. */
  clean(dir: string): void {
    this.reported.delete(dir);
  }

  /** `dirs` have leftovers; with `all` (a full scan), no other directory has. */
  report(dirs: string[], all: boolean): void {
    if (all) this.reported = new Set([...this.reported].filter((d) => dirs.includes(d)));
    const fresh = dirs.filter((d) => !this.reported.has(d));
    for (const d of fresh) this.reported.add(d);
    if (fresh.length && this.listener) this.listener(fresh);
  }
}
