import { CALLER_FIELDS } from '../../src/api/auth.js';
import { OTHER, OWNER } from './tree.js';

/**
 * Every endpoint of the API, once, for the access matrix (test/security/access-matrix.test.ts)
 * and the fuzzer (test/security/fuzz.test.ts). A new endpoint is one entry here: how to call it on
 * the fixture, and the status each kind of caller gets. docs/SECURITY.md shows the matrix.
 */

/** The volumes and job every row works on; made afresh for rows that change them. */
export interface Fixture {
  /** A private volume of OWNER. */
  privateVid: string;
  /** A non-private volume of OWNER. */
  publicVid: string;
  /** A finished job OWNER's token started. */
  jobId: string;
}

/**
 * The callers of the matrix. `owner`/`other` use client tokens bound to OWNER/OTHER and name
 * themselves in the body; `impostor` is OTHER's token with a body naming OWNER; `admin` names OWNER
 * (acting for that client); `none` sends no token and a body naming OWNER.
 */
export const ACTORS = ['owner', 'other', 'impostor', 'admin', 'none'] as const;
export type Actor = (typeof ACTORS)[number];

export interface Endpoint {
  /** The row's name in the matrix: method, path and which volume when it matters. */
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  /** The path below /api/v1.0. */
  path: (fx: Fixture) => string;
  /** The JSON Schema of its body (schemas/<name>.json); the fuzzer mutates the fields it declares. */
  schema?: string;
  /** A valid body naming `self` wherever the caller names itself. */
  body?: (fx: Fixture, self: string) => Record<string, unknown>;
  /** True when a success changes the tree: every cell gets a fresh fixture. */
  mutates?: boolean;
  /** The status for each caller; `impostor` defaults to 403 for a body with a caller field. */
  expect: Omit<Record<Actor, number>, 'impostor'> & { impostor?: number };
}

const vref = (vid: string) => ({ volume_id: vid });

export const ENDPOINTS: Endpoint[] = [
  {
    name: 'POST create',
    method: 'POST',
    path: () => 'create',
    schema: 'create',
    body: (_fx, self) => ({ creatorID: self, name: 'matrix', size: 0.01, format: 'raw' }),
    mutates: true,
    expect: { owner: 200, other: 200, admin: 200, none: 401 },
  },
  {
    name: 'POST accessible',
    method: 'POST',
    path: () => 'accessible',
    schema: 'accessible',
    body: (_fx, self) => ({ client_uid: self }),
    expect: { owner: 200, other: 200, admin: 200, none: 401 },
  },
  {
    name: 'POST info (private volume)',
    method: 'POST',
    path: () => 'info',
    schema: 'volume-ref',
    body: (fx) => vref(fx.privateVid),
    expect: { owner: 200, other: 404, impostor: 404, admin: 200, none: 401 },
  },
  {
    name: 'POST info (public volume)',
    method: 'POST',
    path: () => 'info',
    schema: 'volume-ref',
    body: (fx, self) => ({ volume_id: fx.publicVid, client_uid: self }),
    expect: { owner: 200, other: 200, admin: 200, none: 401 },
  },
  {
    name: 'POST has (private volume)',
    method: 'POST',
    path: () => 'has',
    schema: 'volume-ref',
    body: (fx) => vref(fx.privateVid),
    expect: { owner: 200, other: 200, impostor: 200, admin: 200, none: 401 },
  },
  {
    name: 'POST update (private volume)',
    method: 'POST',
    path: () => 'update',
    schema: 'update',
    body: (fx, self) => ({ vid: fx.privateVid, creatorID: self, name: 'renamed', labels: { by: 'matrix' } }),
    mutates: true,
    expect: { owner: 200, other: 404, admin: 200, none: 401 },
  },
  {
    name: 'POST update (public volume)',
    method: 'POST',
    path: () => 'update',
    schema: 'update',
    body: (fx, self) => ({ vid: fx.publicVid, creatorID: self, private: true }),
    mutates: true,
    expect: { owner: 200, other: 403, admin: 200, none: 401 },
  },
  {
    name: 'POST update/resize (private volume)',
    method: 'POST',
    path: () => 'update/resize',
    schema: 'resize',
    body: (fx, self) => ({ vid: fx.privateVid, creatorID: self, size: 0.02 }),
    mutates: true,
    expect: { owner: 200, other: 404, admin: 200, none: 401 },
  },
  {
    name: 'POST update/resize (public volume)',
    method: 'POST',
    path: () => 'update/resize',
    schema: 'resize',
    body: (fx, self) => ({ vid: fx.publicVid, creatorID: self, size: 0.02 }),
    mutates: true,
    expect: { owner: 200, other: 403, admin: 200, none: 401 },
  },
  {
    name: 'POST update/convert (private volume)',
    method: 'POST',
    path: () => 'update/convert',
    schema: 'convert',
    body: (fx, self) => ({ vid: fx.privateVid, creatorID: self, format: 'qcow2' }),
    mutates: true,
    expect: { owner: 200, other: 404, admin: 200, none: 401 },
  },
  {
    name: 'POST update/convert (public volume)',
    method: 'POST',
    path: () => 'update/convert',
    schema: 'convert',
    body: (fx, self) => ({ vid: fx.publicVid, creatorID: self, format: 'qcow2' }),
    mutates: true,
    expect: { owner: 200, other: 403, admin: 200, none: 401 },
  },
  {
    name: 'POST destroy (private volume)',
    method: 'POST',
    path: () => 'destroy',
    schema: 'volume-ref',
    body: (fx) => vref(fx.privateVid),
    mutates: true,
    expect: { owner: 200, other: 404, impostor: 404, admin: 200, none: 401 },
  },
  {
    name: 'POST destroy (public volume)',
    method: 'POST',
    path: () => 'destroy',
    schema: 'volume-ref',
    body: (fx, self) => ({ volume_id: fx.publicVid, creatorID: self }),
    mutates: true,
    expect: { owner: 200, other: 403, admin: 200, none: 401 },
  },
  {
    name: 'POST cancreate',
    method: 'POST',
    path: () => 'cancreate',
    schema: 'cancreate',
    body: () => ({ size: 1 }),
    expect: { owner: 200, other: 200, impostor: 200, admin: 200, none: 401 },
  },
  {
    name: 'GET status',
    method: 'GET',
    path: () => 'status',
    expect: { owner: 403, other: 403, impostor: 403, admin: 200, none: 401 },
  },
  {
    name: 'GET jobs',
    method: 'GET',
    path: () => 'jobs',
    expect: { owner: 200, other: 200, impostor: 200, admin: 200, none: 401 },
  },
  {
    name: "GET jobs/<id> (owner's job)",
    method: 'GET',
    path: (fx) => `jobs/${fx.jobId}`,
    expect: { owner: 200, other: 404, impostor: 404, admin: 200, none: 401 },
  },
  {
    name: "DELETE jobs/<id> (owner's finished job)",
    method: 'DELETE',
    path: (fx) => `jobs/${fx.jobId}`,
    expect: { owner: 409, other: 404, impostor: 404, admin: 409, none: 401 },
  },
];

/** The uid a caller names as itself in the body, and the token it sends. */
export function actorIdentity(actor: Actor): { self: string; token: 'owner' | 'other' | 'admin' | null } {
  switch (actor) {
    case 'owner':
      return { self: OWNER, token: 'owner' };
    case 'other':
      return { self: OTHER, token: 'other' };
    case 'impostor':
      return { self: OWNER, token: 'other' };
    case 'admin':
      return { self: OWNER, token: 'admin' };
    case 'none':
      return { self: OWNER, token: null };
  }
}

/** The expected status of one cell. */
export function expectedStatus(endpoint: Endpoint, actor: Actor): number {
  if (actor !== 'impostor') return endpoint.expect[actor];
  if (endpoint.expect.impostor !== undefined) return endpoint.expect.impostor;
  const body = endpoint.body?.({ privateVid: '', publicVid: '', jobId: '' }, OWNER) ?? {};
  return CALLER_FIELDS.some((f) => f in body) ? 403 : endpoint.expect.other;
}

const COLUMN_TITLES: Record<Actor, string> = {
  owner: 'owner',
  other: 'another client',
  impostor: 'another client naming the owner',
  admin: 'admin',
  none: 'no token',
};

/** The matrix as the Markdown table in docs/SECURITY.md (a test checks that the page shows it). */
export function renderMatrix(): string {
  const head = `| endpoint | ${ACTORS.map((a) => COLUMN_TITLES[a]).join(' | ')} |`;
  const rule = `| --- | ${ACTORS.map(() => '---').join(' | ')} |`;
  const rows = ENDPOINTS.map((e) => `| \`${e.name}\` | ${ACTORS.map((a) => expectedStatus(e, a)).join(' | ')} |`);
  return [head, rule, ...rows].join('\n');
}
