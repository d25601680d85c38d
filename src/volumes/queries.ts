import { JsonBytes } from '../json-bytes.js';
import { gbToBytes } from '../store/layout.js';
import type { VolumeMeta } from '../store/meta.js';
import { isCreating, unavailableError, type VolumeRecord } from '../store/volume-record.js';
import { canSee, findVolume } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { describedJsonOpen, describeVolume } from './describe.js';

function hasLabels(meta: VolumeMeta, wanted: Record<string, string> | undefined): boolean {
  if (!wanted) return true;
  return Object.entries(wanted).every(([k, v]) => meta.labels?.[k] === v);
}

const OWN = Buffer.from(',"own":true}');
const NOT_OWN = Buffer.from(',"own":false}');

/** Listings answered since the index last changed, per client and label filter (a controller polls). */
const listings = new WeakMap<object, { version: number; bytes: number; byQuery: Map<string, JsonBytes> }>();
const MAX_CACHED_LISTINGS = 256;
/**
 * What the cached listings may hold together: each client that sees 50,000 public volumes has its own
 * 20 MB listing, and 40 clients polling made the daemon 1 GB resident (256 of them would have made 5 GB).
 * The oldest go first; the listing just made is always kept.
 */
export const listingCache = { maxBytes: 64 * 1024 * 1024 };

/** The bytes the cached listings of `index` hold now. */
export function cachedListingBytes(index: object): number {
  return listings.get(index)?.bytes ?? 0;
}

/**
 * `accessible`: the caller's volumes and every non-private one, each with `own`; read from the
 * index only. The same question asked again before the index changes gets the same bytes.
 */
export function accessibleVolumes(ctx: StoreContext, client: string, labels?: Record<string, string>): JsonBytes {
  let cache = listings.get(ctx.index);
  if (!cache || cache.version !== ctx.index.version) {
    cache = { version: ctx.index.version, bytes: 0, byQuery: new Map() };
    listings.set(ctx.index, cache);
  }
  const key = `${client} ${JSON.stringify(Object.entries(labels ?? {}).sort())}`;
  let answer = cache.byQuery.get(key);
  if (!answer) {
    answer = buildListing(ctx, client, labels);
    // A Map iterates in insertion order: the first keys are the oldest listings.
    for (const [oldKey, old] of cache.byQuery) {
      if (cache.byQuery.size < MAX_CACHED_LISTINGS && cache.bytes + answer.bytes.length <= listingCache.maxBytes) break;
      cache.byQuery.delete(oldKey);
      cache.bytes -= old.bytes.length;
    }
    cache.byQuery.set(key, answer);
    cache.bytes += answer.bytes.length;
  }
  return answer;
}

/**
 * Assembled from each volume's cached description bytes (the same JSON as
 * `{ ...describeVolume(record), own }`), so a listing of 10,000 volumes costs a copy, not a serialisation.
 */
function buildListing(ctx: StoreContext, client: string, labels?: Record<string, string>): JsonBytes {
  const parts: Buffer[] = [];
  const tails: Buffer[] = [];
  let length = 2;
  for (const record of ctx.index.all()) {
    const meta = record.meta;
    if (!meta || record.problem || isCreating(record) || !canSee(meta, client) || !hasLabels(meta, labels)) continue;
    const part = describedJsonOpen(record as VolumeRecord & { meta: VolumeMeta });
    const tail = meta.creatorID === client ? OWN : NOT_OWN;
    parts.push(part);
    tails.push(tail);
    length += part.length + tail.length + (parts.length > 1 ? 1 : 0);
  }
  // Filled in place: Buffer.concat over 20,000 small pieces costs about three times as much.
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  out[at++] = 0x5b; // [
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) out[at++] = 0x2c; // ,
    out.set(parts[i], at);
    at += parts[i].length;
    out.set(tails[i], at);
    at += tails[i].length;
  }
  out[at] = 0x5d; // ]
  return new JsonBytes(out);
}

/** `info`: one volume's description. */
export async function volumeInfo(ctx: StoreContext, vid: string, caller: Caller): Promise<Record<string, unknown>> {
  return describeVolume(await findVolume(ctx, vid, caller));
}

/** `has`: whether this server holds the volume (and the caller may know it); 503 while its root is unavailable (docs/decisions.md). */
export async function hasVolume(ctx: StoreContext, vid: string, caller: Caller): Promise<{ vid: string; has: boolean }> {
  const record = await ctx.index.lookup(vid);
  const has = Boolean(record && (!record.meta || canSee(record.meta, caller)));
  if (has && record!.unavailable) throw unavailableError(record!);
  return { vid, has };
}

/** `cancreate`: how many roots could take a new volume of `size` GB right now. */
export function canCreate(ctx: StoreContext, sizeGB: number): { size: number; cancreate: boolean; roots: number } {
  const roots = ctx.placement.candidates(gbToBytes(sizeGB)).length;
  return { size: sizeGB, cancreate: roots > 0, roots };
}
