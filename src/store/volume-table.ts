import type { Logger } from '../log.js';
import { conflictRecord, quotaBytes, type VolumeRecord } from './volume-record.js';

/** True when nothing the index keeps differs, so the older record (and what is cached on it) stays. */
function sameRecord(a: VolumeRecord | undefined, b: VolumeRecord): boolean {
  return (
    a !== undefined &&
    a.dir === b.dir &&
    a.problem === b.problem &&
    a.unavailable === b.unavailable &&
    a.sizeOnDisk === b.sizeOnDisk &&
    a.dataBytes === b.dataBytes &&
    a.lastUpdatedMs === b.lastUpdatedMs &&
    a.files.join('/') === b.files.join('/') &&
    JSON.stringify(a.meta) === JSON.stringify(b.meta)
  );
}

/**
 * The live index's records, by uid: what it answers for each volume. A uid found in several
 * directories (an operator's copy into another root) keeps each directory's record, and is answered
 * by one broken record naming them all (conflictRecord), so that neither copy is operated on.
 * Records are never changed in place: one is replaced only when something in it changed.
 */
export class VolumeTable {
  private readonly volumes = new Map<string, VolumeRecord>();
  /** The uids found in several directories: each directory's record. */
  private readonly copies = new Map<string, VolumeRecord[]>();
  /** Grows whenever a record is added, replaced or removed. */
  version = 0;
  /** Each root's usage, counted in one pass over the table when asked at a version not yet counted. */
  private usages: { version: number; byRoot: Map<string, { volumes: number; bytes: number }> } | null = null;

  constructor(private readonly log: Logger) {}

  get(uid: string): VolumeRecord | undefined {
    return this.volumes.get(uid);
  }

  get size(): number {
    return this.volumes.size;
  }

  uids(): IterableIterator<string> {
    return this.volumes.keys();
  }

  /** The records on available roots (those on an unavailable one are only answered by `get`, flagged). */
  *available(): IterableIterator<VolumeRecord> {
    for (const record of this.volumes.values()) if (!record.unavailable) yield record;
  }

  /** Each directory `uid` is known in. */
  copiesOf(uid: string): VolumeRecord[] {
    const known = this.volumes.get(uid);
    return this.copies.get(uid) ?? (known ? [known] : []);
  }

  /**
   * Makes the table answer for `uid` what was found of it: nothing, one directory, or several (a
   * conflict, answered broken until the operator removes all but one). Keeps the record it had when
   * nothing changed. Answers the record now answered for `uid`.
   */
  settle(uid: string, found: VolumeRecord[]): VolumeRecord | null {
    const known = this.volumes.get(uid);
    found.sort((a, b) => (a.dir < b.dir ? -1 : 1));
    // Each copy counts in its root's usage: a change in one is a change of the table even when the record answered stays.
    const copiesChanged = found.length > 1 || this.copies.has(uid);
    if (found.length > 1) this.copies.set(uid, found);
    else this.copies.delete(uid);
    const next = found.length === 0 ? undefined : found.length === 1 ? found[0] : conflictRecord(found);
    if (next?.copies && known?.problem !== next.problem) this.log.warn('volume found in several directories: answered broken until one is removed', { vid: uid, dirs: next.copies });
    if (!next) {
      if (known && this.volumes.delete(uid)) this.version += 1;
      return null;
    }
    if (sameRecord(known, next)) {
      if (copiesChanged) this.version += 1;
      return known!;
    }
    this.volumes.set(uid, next);
    this.version += 1;
    return next;
  }

  forget(uid: string): void {
    this.volumes.delete(uid);
    this.copies.delete(uid);
    this.version += 1;
  }

  /**
   * Volumes counted against a root's quota and the bytes they promise (each copy of a uid in its own root).
   * Counted for every root at once and kept until the table changes: placement asks for each root, and
   * sorts the roots by it, on every create and `cancreate` (with 50,000 volumes over 4 roots each pass
   * over the table was ~5 ms, a dozen of them per request).
   */
  usage(rootPath: string): { volumes: number; bytes: number } {
    if (this.usages?.version !== this.version) {
      const byRoot = new Map<string, { volumes: number; bytes: number }>();
      const count = (r: VolumeRecord) => {
        const usage = byRoot.get(r.root) ?? { volumes: 0, bytes: 0 };
        usage.volumes += 1;
        usage.bytes += quotaBytes(r);
        byRoot.set(r.root, usage);
      };
      for (const r of this.volumes.values()) if (!r.copies) count(r);
      for (const list of this.copies.values()) list.forEach(count);
      this.usages = { version: this.version, byRoot };
    }
    return { ...(this.usages.byRoot.get(rootPath) ?? { volumes: 0, bytes: 0 }) };
  }

  /** The volumes listed broken in `status`, by directory: one entry per directory (each copy of a uid found twice). */
  broken(): Array<{ vid: string; dir: string; problem: string }> {
    const out: Array<{ vid: string; dir: string; problem: string }> = [];
    for (const r of this.volumes.values())
      if (r.problem) for (const dir of r.copies ?? [r.dir]) out.push({ vid: r.uid, dir, problem: r.problem });
    return out.sort((a, b) => (a.dir < b.dir ? -1 : 1));
  }
}
