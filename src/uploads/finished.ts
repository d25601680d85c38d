/** An upload whose bytes are all in: its import runs or ran, and its answer is kept. */
export interface FinishedUpload {
  size: number;
  metadata: Record<string, string | null>;
  createdAt: string;
  creatorID: string;
  /** The endpoint's JSON once the import has published the volume. */
  answer: Promise<Record<string, unknown>>;
}

/**
 * Uploads whose last PATCH arrived, known while their volume is in the tree (a few hundred bytes each): a
 * client whose answer was lost (an import can take minutes) learns from HEAD that the bytes are in,
 * and from a zero-byte PATCH the same answer, instead of uploading a duplicate volume. An import that
 * fails is forgotten: its volume is gone, so the upload is too (404), and the client starts again;
 * so is one whose volume has left the tree since (destroyed, or removed by hand).
 */
export class FinishedUploads {
  private readonly items = new Map<string, FinishedUpload>();

  /** `holds(id)`: whether the volume (the upload's id) is still in the tree, as the index knows it. */
  constructor(private readonly holds: (id: string) => boolean) {}

  get(id: string): FinishedUpload | undefined {
    const item = this.items.get(id);
    if (item && !this.holds(id)) {
      this.items.delete(id);
      return undefined;
    }
    return item;
  }

  /** How many are known (tests: it follows the volumes in the tree, not every upload since the start). */
  get size(): number {
    return this.items.size;
  }

  /** Registers the import of upload `id` and answers its outcome (forgetting the upload if it fails). */
  async track(id: string, upload: Omit<FinishedUpload, 'answer'>, importing: Promise<Record<string, unknown>>): Promise<Record<string, unknown>> {
    // Those whose volume has left the tree since go now: a destroyed volume's upload is rarely asked about again.
    for (const known of [...this.items.keys()]) this.get(known);
    const answer = importing.catch((err: unknown) => {
      this.items.delete(id);
      throw err;
    });
    this.items.set(id, { ...upload, answer });
    return answer;
  }
}
