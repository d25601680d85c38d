import type { VolumeRecord } from '../store/volume-record.js';
import type { VolumeMeta } from '../store/meta.js';

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** `"YYYY-MM-DD HH:MM:SS.ffff"` in UTC, as the seed's `lastUpdated`. */
export function formatTimestamp(ms: number): string {
  const d = new Date(ms);
  const tenThousandths = Math.floor((ms % 1000) * 10);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(tenThousandths, 4)}`;
}

/** A volume as `info` and `accessible` answer it (seed 002's shape; sizes in bytes). */
export function describeVolume(record: VolumeRecord & { meta: VolumeMeta }): Record<string, unknown> {
  const m = record.meta;
  return {
    volumeID: m.volumeID,
    creatorID: m.creatorID,
    size: m.size,
    name: m.name,
    format: m.format,
    ...(m.format === 'iso' && m.iso_type ? { iso_type: m.iso_type } : {}),
    private: m.private,
    bootable: m.bootable,
    readonly: m.readonly,
    shareable: m.shareable,
    clonable: m.clonable,
    alg: m.alg,
    bus: m.bus,
    cloudinit: m.cloudinit,
    ceph: m.ceph,
    exported: record.exports.length > 0,
    sizeOnDisk: record.sizeOnDisk,
    lastUpdated: formatTimestamp(record.lastUpdatedMs),
    labels: m.labels,
    ...(m.base ? { base: m.base } : {}),
    ...(record.rbd ? { rbd: record.rbd } : {}),
    locked: record.locks.length > 0,
  };
}

const described = new WeakMap<VolumeRecord, Buffer>();

/**
 * `describeVolume` as UTF-8 JSON without its closing `}`, made once per record: the index replaces
 * a record whenever its volume changes and never changes one in place, so the bytes stay exact for
 * the record's life. Listing 10,000 volumes then only concatenates buffers.
 */
export function describedJsonOpen(record: VolumeRecord & { meta: VolumeMeta }): Buffer {
  let bytes = described.get(record);
  if (bytes === undefined) {
    bytes = Buffer.from(JSON.stringify(describeVolume(record)).slice(0, -1));
    described.set(record, bytes);
  }
  return bytes;
}
