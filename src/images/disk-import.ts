import { gbToBytes, BYTES_PER_GB, sectors } from '../store/layout.js';
import { cephFields, requireCeph } from '../volumes/ceph.js';
import type { StoreContext } from '../volumes/context.js';
import { assertConsistent, claimVolume, createResponse, fieldsOf, type Claimed, type CreateRequest } from '../volumes/create.js';
import { openDownload, type Download } from './fetch.js';
import { claimForSource, fillFromSource, type ImageSource, type ImportOptions } from './import.js';

/** `create/url`, `create/upload` and `cloudinit/create` bodies: create's fields, `size` optional. */
export type ImportRequest = Omit<CreateRequest, 'size'> & { size?: number; url?: string; async?: boolean; cloudinit?: boolean };

/** A source that downloads `url` (502 on any upstream failure); `publicOnly` for a client token's import (403 for a non-public host). */
export function urlSource(ctx: StoreContext, url: string, publicOnly = false): ImageSource {
  let download: Download | undefined;
  return {
    kind: 'stream',
    open: async (signal) => (download = await openDownload(url, { idleMs: ctx.config.transferIdleTimeoutMs, signal, publicOnly })).length,
    writeTo: (file, limits) => download!.toFile(file, limits),
  };
}

/**
 * Claims a disk volume for an import: max(asked size, announced bytes) counts until the image is known
 * (an image's virtual size is at least about its file's size; the final size is claimed exactly later).
 */
export async function claimDiskImport(ctx: StoreContext, req: ImportRequest, announced?: number): Promise<Claimed> {
  assertConsistent(req);
  const fields = fieldsOf(req, Math.max(req.size ? gbToBytes(req.size) : 0, sectors(announced ?? 0)), { cloudinit: req.cloudinit === true });
  return claimVolume(ctx, req.ceph ? { ...fields, ...cephFields(requireCeph(ctx)) } : fields, 'create');
}

/** The seed's create answer for an imported volume; `size` is the final size in GB. */
export function importResponse(claimed: Claimed): Record<string, unknown> {
  return createResponse(claimed.meta, claimed.meta.size / BYTES_PER_GB);
}

/** `create/url`, `create/upload`, `cloudinit/create`: a disk volume from an image, published whole or not at all. */
export async function importDisk(ctx: StoreContext, req: ImportRequest, source: ImageSource, opts: ImportOptions = {}): Promise<Record<string, unknown>> {
  assertConsistent(req); // before a download is started for a request refused anyway
  const claimed = await claimForSource(source, (announced) => claimDiskImport(ctx, req, announced), opts.signal);
  await fillFromSource(ctx, claimed, source, { ...opts, sizeBytes: req.size ? gbToBytes(req.size) : undefined });
  return importResponse(claimed);
}
