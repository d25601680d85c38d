import { ConflictError, UnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import type { StoreContext } from '../volumes/context.js';
import { abandonClaim, type Claimed } from '../volumes/create.js';

/** A volume claimed by one request and filled by later ones (a resumable upload, a cloud-init file set). */
export interface Pending<T> {
  claimed: Claimed;
  state: T;
  touchedAt: number;
  /** Set while a request works on it: requests for one pending volume never overlap. */
  busy: boolean;
}

/**
 * Claims that outlive a request. The volume's create lock stays held (refreshed by this process)
 * so the index shows it as being created; one left untouched for `idleMs` is abandoned (the volume
 * removed), and so is every one when the daemon stops. A daemon that dies leaves a stale create
 * marker: recovery removes the half-made volume at the next start.
 */
export class PendingClaims<T> {
  private readonly items = new Map<string, Pending<T>>();
  private readonly timer: NodeJS.Timeout;
  /** Set by close(): the daemon stops, and a request working on a claim it abandoned says so. */
  private closing = false;

  constructor(
    private readonly ctx: StoreContext,
    private readonly what: string,
    private readonly idleMs: number,
    private readonly log: Logger = ctx.log,
  ) {
    this.timer = setInterval(() => void this.expire(), Math.min(60_000, Math.max(1000, Math.floor(idleMs / 4))));
    this.timer.unref();
  }

  /** Registers a claim; the index learns of the volume at once (shown as being created). */
  async add(claimed: Claimed, state: T): Promise<Pending<T>> {
    const item: Pending<T> = { claimed, state, touchedAt: Date.now(), busy: false };
    this.items.set(claimed.uid, item);
    await this.ctx.index.reloadDir(claimed.dir);
    return item;
  }

  get(uid: string): Pending<T> | undefined {
    const item = this.items.get(uid);
    if (item) item.touchedAt = Date.now();
    return item;
  }

  /** Forgets a pending volume whose claim was published or abandoned by its owner. */
  delete(uid: string): void {
    this.items.delete(uid);
  }

  /** Marks a pending volume busy for one request (requests for one volume never overlap): 409 if it is. */
  acquire(item: Pending<T>): void {
    if (item.busy) throw new ConflictError(`volume ${item.claimed.uid} is receiving another request; send one at a time`, { vid: item.claimed.uid });
    item.busy = true;
  }

  release(item: Pending<T>): void {
    item.busy = false;
    item.touchedAt = Date.now();
  }

  async abandon(uid: string, why: string): Promise<void> {
    const item = this.items.get(uid);
    if (!item) return;
    this.items.delete(uid);
    this.log.warn(`abandoning a pending ${this.what}`, { vid: uid, why });
    await abandonClaim(this.ctx, item.claimed).catch((err) => this.log.error('abandoning failed', { vid: uid, error: (err as Error).message }));
  }

  async expire(now = Date.now()): Promise<void> {
    for (const [uid, item] of [...this.items])
      if (!item.busy && now - item.touchedAt > this.idleMs) await this.abandon(uid, `untouched for ${this.idleMs} ms`);
  }

  /** What a request whose pending volume failed under it answers: 503 when the daemon's stop abandoned it, else `err`. */
  failure(err: unknown): unknown {
    if (!this.closing) return err;
    return new UnavailableError(`the ${this.what} was abandoned: the storage daemon is stopping; send it again once it is back`);
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.timer);
    for (const uid of [...this.items.keys()]) await this.abandon(uid, 'the daemon is stopping');
  }
}
