/**
 * A JSON answer already serialised (the listing is assembled from per-volume texts cached in
 * src/volumes/describe.ts). `jsonEndpoint` sends it as it is, with the headers `res.json` would set.
 */
export class JsonText {
  constructor(readonly text: string) {}
}
