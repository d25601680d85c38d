/**
 * A JSON answer already serialised as UTF-8 (the listing is assembled from per-volume bytes cached
 * in src/volumes/describe.ts). `jsonEndpoint` writes it as it is, with the headers `res.json` sets.
 */
export class JsonBytes {
  constructor(readonly bytes: Buffer) {}
}
