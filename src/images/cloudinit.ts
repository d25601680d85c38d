import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError, PayloadTooLargeError } from '../errors.js';
import { faultPoint } from '../faults.js';
import { writeFileAtomic } from '../store/atomic.js';
import { readMarkerOwner } from '../store/lock-owner.js';
import { parseLockMarker, tempNameFor } from '../store/layout.js';
import { buildSeedIso } from '../tools/cloud-localds.js';
import { addFilesToIso } from '../tools/xorriso.js';
import type { Caller, StoreContext } from '../volumes/context.js';
import { claimVolume, fieldsOf, fillClaim } from '../volumes/create.js';
import type { IncomingFile } from '../api/multipart.js';
import { setClaimedSize } from './import.js';
import { PendingClaims, type Pending } from './pending.js';

export const METADATA_DIR = 'cloud-init-metadata';
export const expectedMarker = (n: number) => `elemento.${n}.expected`;
const EXPECTED_RE = /^elemento\.(\d+)\.expected$/;
/** The NoCloud files cloud-localds takes; `network-data` is the seed tree's name for network-config. */
const SEED_FILES = ['user-data', 'meta-data', 'network-config', 'network-data'];
/** The seed's `network-data` and NoCloud's `network-config` are one file under two names: a set has one. */
const SAME_FILE: Record<string, string> = { 'network-config': 'network-data', 'network-data': 'network-config' };
const FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const MAX_FILE_BYTES = 4 * 1024 * 1024;

/** The `cloudinit/metadata` fields (schemas/cloudinit-metadata.json, after defaults). */
export interface MetadataFields {
  creatorID: string;
  vid?: string;
  expectedFiles?: number;
  name?: string;
  private: boolean;
  clonable: boolean;
  alg: 'cp' | 'rclone' | 'rsync' | 'no';
  bus: 'virtio' | 'scsi' | 'sata' | 'ide';
  labels?: Record<string, string>;
}

/** A set being received: how many files it needs and the names already stored. */
export interface FileSet {
  expected: number;
  received: string[];
}

/**
 * Cloud-init seed volumes (seed 002, "Cloudinit Metadata Volume"): the first call creates the
 * volume with `cloud-init-metadata/elemento.<n>.expected`; each call adds files; when all n are in,
 * the ISO is built with cloud-localds (label `cidata`) as data.iso and extra files (scripts) are
 * added at the ISO's root with xorriso, where the guest finds them beside user-data.
 */
export class CloudInitSets {
  readonly pending: PendingClaims<FileSet>;

  constructor(private readonly ctx: StoreContext) {
    this.pending = new PendingClaims<FileSet>(ctx, 'cloud-init file set', ctx.config.uploadIdleTimeoutMs);
  }

  /** First call: claims an ISO volume (read-only, cloudinit) and writes its tracker. Returned busy. */
  async begin(fields: MetadataFields): Promise<Pending<FileSet>> {
    const expected = fields.expectedFiles!;
    const meta = fieldsOf({ ...fields, format: 'iso', readonly: true, bootable: false, shareable: false }, 0, { cloudinit: true });
    const claimed = await claimVolume(this.ctx, meta, 'create');
    const item = await this.pending.add(claimed, { expected, received: [] });
    this.pending.acquire(item);
    try {
      await fs.mkdir(path.join(claimed.dir, METADATA_DIR));
      await writeFileAtomic(path.join(claimed.dir, METADATA_DIR, expectedMarker(expected)), '');
    } catch (err) {
      await this.pending.abandon(claimed.uid, 'its tracker could not be written');
      throw err;
    }
    return item;
  }

  /** Later calls: the pending set of `vid`, or a clear 4xx saying why there is none. Returned busy. */
  async open(vid: string, caller: Caller): Promise<Pending<FileSet>> {
    const item = this.pending.get(vid);
    if (item) {
      if (caller !== null && item.claimed.meta.creatorID !== caller) {
        // A private set is invisible to others, as its volume is.
        if (item.claimed.meta.private) throw new NotFoundError(`volume ${vid} does not exist`, { vid });
        throw new ForbiddenError(`only the creator of volume ${vid} may add files to it`, { vid });
      }
      this.pending.acquire(item);
      return item;
    }
    const record = await this.ctx.index.lookup(vid);
    if (!record || !record.meta || (caller !== null && record.meta.private && record.meta.creatorID !== caller))
      throw new NotFoundError(`volume ${vid} does not exist`, { vid });
    if (!record.meta.cloudinit || record.meta.format !== 'iso') throw new BadRequestError(`volume ${vid} is not a cloud-init metadata volume`, { vid });
    // Not pending here, and still being created: another daemon sharing the tree holds the set (its create lock).
    const holder = await this.createHolder(record.dir);
    if (holder !== null)
      throw new ConflictError(`the file set of volume ${vid} is being received by another daemon sharing this tree (${holder || 'unknown host'}): send its remaining files there`, { vid });
    const tracker = (await fs.readdir(path.join(record.dir, METADATA_DIR)).catch(() => [] as string[])).find((n) => EXPECTED_RE.test(n));
    if (tracker)
      throw new ConflictError(`the file set of volume ${vid} is already complete (${tracker}); send a new set to a new volume`, { vid });
    throw new ConflictError(`volume ${vid} has no file set tracker (cloud-init-metadata/elemento.<n>.expected is missing)`, { vid });
  }

  /** The host named by a `create` lock marker in `dir` ('' when it cannot be read), or null when there is none. */
  private async createHolder(dir: string): Promise<string | null> {
    const marker = (await this.ctx.locks.markersIn(dir).catch(() => [] as string[])).find((m) => parseLockMarker(m)?.purpose === 'create');
    if (!marker) return null;
    const owner = await readMarkerOwner(dir, marker);
    return typeof owner?.host === 'string' ? `host ${owner.host}` : '';
  }

  /**
   * Stores one file of the set atomically in cloud-init-metadata/ and returns its name. The set's
   * last free place is kept for user-data while it is missing: a complete set always builds.
   */
  async addFile(item: Pending<FileSet>, file: IncomingFile): Promise<string> {
    const { state, claimed } = item;
    const name = path.basename(file.filename);
    if (!FILE_NAME_RE.test(name) || EXPECTED_RE.test(name) || name.startsWith('elemento.'))
      throw new BadRequestError(`'${file.filename}' is not an accepted file name (letters, digits, '.', '_', '-')`, { field: 'file' });
    if (state.received.includes(name)) throw new BadRequestError(`file '${name}' was already received for volume ${claimed.uid}`, { field: 'file' });
    const twin = SAME_FILE[name];
    if (twin && state.received.includes(twin))
      throw new BadRequestError(`'${name}' is '${twin}' under its other name, and volume ${claimed.uid} already has '${twin}'`, { field: 'file' });
    if (state.received.length >= state.expected)
      throw new BadRequestError(`volume ${claimed.uid} expects ${state.expected} files and has them all; '${name}' is one too many`, { field: 'file' });
    if (state.received.length === state.expected - 1 && name !== 'user-data' && !state.received.includes('user-data'))
      throw new BadRequestError(`volume ${claimed.uid} has one file left to receive and no user-data yet; '${name}' cannot take its place`, { field: 'file' });
    const chunks: Buffer[] = [];
    for await (const chunk of file.stream) chunks.push(chunk as Buffer);
    if ((file.stream as { truncated?: boolean }).truncated) throw new PayloadTooLargeError(`file '${name}' is larger than the ${MAX_FILE_BYTES} bytes accepted`);
    const bytes = Buffer.concat(chunks);
    // The set's files count against the quota as they arrive (507 past it): up to 64 files of 4 MB a set,
    // and as many sets as the root takes volumes, were stored uncounted until the ISO was built.
    await setClaimedSize(this.ctx, claimed, claimed.meta.size + bytes.length);
    await writeFileAtomic(path.join(claimed.dir, METADATA_DIR, name), bytes);
    faultPoint('cloudinit.after-file');
    state.received.push(name);
    return name;
  }

  /** Takes back files stored by a later call that then failed: the set is as it was before the call. */
  async removeFiles(item: Pending<FileSet>, names: string[]): Promise<void> {
    let freed = 0;
    for (const name of names) {
      const file = path.join(item.claimed.dir, METADATA_DIR, name);
      freed += (await fs.stat(file).catch(() => null))?.size ?? 0;
      await fs.rm(file, { force: true });
      item.state.received = item.state.received.filter((n) => n !== name);
    }
    await setClaimedSize(this.ctx, item.claimed, Math.max(0, item.claimed.meta.size - freed));
  }

  /** After a call: 206 CONTINUE while files are missing, else the ISO is built and published: 200 OK. */
  async finishCall(item: Pending<FileSet>): Promise<{ status: number; body: Record<string, unknown> }> {
    const { state, claimed } = item;
    const progress = { vid: claimed.uid, received: state.received.length, expected: state.expected };
    if (state.received.length < state.expected) return { status: 206, body: { status: 'CONTINUE', ...progress } };
    this.pending.delete(claimed.uid);
    await fillClaim(this.ctx, claimed, async (temp) => {
      await this.buildIso(claimed.dir, state.received, temp);
      faultPoint('cloudinit.after-iso');
      await setClaimedSize(this.ctx, claimed, (await fs.stat(temp)).size);
    });
    this.ctx.log.info('cloud-init seed volume built', { vid: claimed.uid, files: state.received });
    return { status: 200, body: { status: 'OK', ...progress } };
  }

  private async buildIso(dir: string, names: string[], out: string): Promise<void> {
    const file = (n: string) => path.join(dir, METADATA_DIR, n);
    const network = names.find((n) => n === 'network-config') ?? names.find((n) => n === 'network-data');
    const extras = names.filter((n) => !SEED_FILES.includes(n));
    const opts = { timeoutMs: this.ctx.config.toolTimeoutMs };
    const seed = extras.length ? tempNameFor(path.join(dir, 'seed.iso')) : out;
    try {
      await buildSeedIso(this.ctx.runner, seed, {
        userData: file('user-data'),
        ...(names.includes('meta-data') ? { metaData: file('meta-data') } : {}),
        ...(network ? { networkConfig: file(network) } : {}),
      }, opts);
      if (extras.length) await addFilesToIso(this.ctx.runner, seed, out, extras.map((n) => ({ source: file(n), isoPath: `/${n}` })), opts);
    } finally {
      if (seed !== out) await fs.rm(seed, { force: true });
    }
  }

  close(): Promise<void> {
    return this.pending.close();
  }
}
