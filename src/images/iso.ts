import path from 'node:path';
import { faultPoint } from '../faults.js';
import { writeJsonAtomic } from '../store/atomic.js';
import type { StoreContext } from '../volumes/context.js';
import { claimVolume, fieldsOf, type Claimed } from '../volumes/create.js';
import { claimForSource, fillFromSource, type ImageSource, type ImportOptions } from './import.js';
import { sectors } from '../store/layout.js';

export const ISOINFO_FILE = 'isoinfo.json';

/**
 * `iso/create` (seed 002): `isotype: tool` with `os_family`, `tool_scope`/`scope`,
 * `tool_version`/`version`; or `isotype: os_generic` with `os_family`, `os_flavour`, `os_version`.
 */
export interface IsoRequest {
  creatorID: string;
  name?: string;
  private: boolean;
  clonable: boolean;
  alg: Claimed['meta']['alg'];
  bus: Claimed['meta']['bus'];
  shareable: boolean;
  labels?: Record<string, string>;
  isotype: 'tool' | 'os_generic';
  os_family: string;
  os_flavour?: string | null;
  os_version?: string | null;
  tool_scope?: string | null;
  scope?: string | null;
  tool_version?: string | null;
  version?: string | null;
  size?: number;
  url?: string;
  async?: boolean;
}

/** isoinfo.json as the seed's tree section writes it, per isotype. */
export function isoInfoOf(req: IsoRequest): Record<string, unknown> {
  if (req.isotype === 'tool')
    return { isotype: 'tool', os_family: req.os_family, scope: req.tool_scope ?? req.scope ?? null, version: req.tool_version ?? req.version ?? null };
  return { isotype: 'os_generic', os_family: req.os_family, os_flavour: req.os_flavour ?? null, os_version: req.os_version ?? null };
}

/** The seed's answer: the request's fields echoed, the other kind's fields null, and the new `vid`. */
export function isoResponse(req: IsoRequest, vid: string): Record<string, unknown> {
  const info = isoInfoOf(req);
  const tool = req.isotype === 'tool';
  return {
    alg: req.alg,
    clonable: req.clonable,
    creatorID: req.creatorID,
    isotype: req.isotype,
    name: req.name ?? '',
    os_family: req.os_family,
    os_flavour: tool ? null : info.os_flavour,
    os_version: tool ? null : info.os_version,
    private: req.private,
    tool_scope: tool ? info.scope : null,
    tool_version: tool ? info.version : null,
    vid,
  };
}

/** Claims an ISO volume: format iso, read-only, bootable for an OS installer, `iso_type` in meta.json. */
export async function claimIso(ctx: StoreContext, req: IsoRequest, announced?: number): Promise<Claimed> {
  const fields = fieldsOf(
    { ...req, format: 'iso', readonly: true, bootable: req.isotype === 'os_generic', shareable: req.isotype === 'os_generic' ? false : req.shareable },
    // The seed's `size` is not the ISO's: the claim follows the download's Content-Length or the upload's length.
    sectors(announced ?? 0),
  );
  return claimVolume(ctx, { ...fields, iso_type: req.isotype }, 'create');
}

/** Fills a claimed ISO volume from `source` (refused unless ISO 9660), with isoinfo.json beside it. */
export async function fillIso(ctx: StoreContext, claimed: Claimed, req: IsoRequest, source: ImageSource, opts: ImportOptions = {}): Promise<Record<string, unknown>> {
  await fillFromSource(ctx, claimed, source, {
    ...opts,
    beforePublish: async (c) => {
      await writeJsonAtomic(path.join(c.dir, ISOINFO_FILE), isoInfoOf(req));
      faultPoint('iso.after-isoinfo');
    },
  });
  return isoResponse(req, claimed.uid);
}

export async function createIso(ctx: StoreContext, req: IsoRequest, source: ImageSource, opts: ImportOptions = {}): Promise<Record<string, unknown>> {
  return fillIso(ctx, await claimForSource(source, (announced) => claimIso(ctx, req, announced), opts.signal), req, source, opts);
}
