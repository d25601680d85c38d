import { AsyncLocalStorage } from 'node:async_hooks';
import { ApiError, ConflictError, NotFoundError, translateErrno, UnavailableError } from '../errors.js';
import { errorFields, type Logger } from '../log.js';
import { currentClient } from '../auth/principal.js';
import { newUid } from '../store/layout.js';

export type JobState = 'running' | 'done' | 'failed' | 'cancelled';

/** What a long operation sees of its job: a cancel signal and a way to report progress. */
export interface JobHandle {
  readonly id: string;
  readonly signal: AbortSignal;
  progress(percent: number, bytesDone?: number): void;
  /** The operation passed its checks (the volume found, owned, locked; the new one claimed, `made` its uid). */
  started(made?: string): void;
}

/** The job the current code runs in, for the commit points that say it started (jobStarted). */
const currentJob = new AsyncLocalStorage<JobHandle>();

/**
 * Called by an operation once its refusals are behind it (claimVolume, convert and compact after
 * their checks): an `async: true` request answers 202 from then on, and its own refusals before as
 * errors. `made`: the uid of the volume it makes, which a job about no volume yet (an import) shows
 * as its `vid` from then on. Outside a job, nothing.
 */
export function jobStarted(made?: string): void {
  currentJob.getStore()?.started(made);
}

/** The options a long operation takes from its job. */
export function jobOptions(job: JobHandle) {
  return { signal: job.signal, onProgress: (percent: number, bytes?: number) => job.progress(percent, bytes) };
}

interface Job {
  id: string;
  kind: string;
  vid: string | null;
  /** The client whose token started the job (null: an admin, or no tokens); only it and admins see the job. */
  owner: string | null;
  state: JobState;
  percent: number;
  bytesDone: number | null;
  error: string | null;
  result: unknown;
  createdAt: Date;
  /** The last time its percent or bytes moved (createdAt until they do): a running job whose progressAt is old is stuck. */
  progressAt: Date;
  finishedAt: Date | null;
  controller: AbortController;
  done: Promise<unknown>;
  /** The job is the HTTP answer itself (a download): the stop leaves it the server's grace period (server.ts). */
  isAnswer: boolean;
  /** The request whose answer carries the job's failure, and whose log line tells it (a synchronous one), if any. */
  answeredBy: string | null;
}

const KEEP_FINISHED_MS = 60 * 60 * 1000;
const KEEP_FINISHED_MAX = 1000;

/**
 * Long operations (convert, clone, compact, import, upload, download) run as jobs. A job outlives the HTTP
 * request that started it; the synchronous API simply waits for it. Jobs live in memory: a restart
 * ends them, and the start-up recovery cleans up what they half-made.
 */
export class JobRegistry {
  private readonly jobs = new Map<string, Job>();
  /** Set by cancelAll (the daemon stops): no job starts any more, and those cancelled say why. */
  private stopping = false;

  /** `log`: where a failure the client's job answer cannot explain (a 5xx) is told, with its stack. */
  constructor(private readonly log?: Logger) {}

  /**
   * Starts `run` as a job and returns its id at once; `promise` settles with the operation. `isAnswer`: the
   * job is the streaming of its request's answer (a download), which the daemon's stop does not cancel.
   * `answeredBy`: the id of the request that answers the job's failure and logs it (a synchronous one).
   */
  start<T>(
    kind: string,
    vid: string | null,
    run: (job: JobHandle) => Promise<T>,
    { isAnswer = false, answeredBy = null }: { isAnswer?: boolean; answeredBy?: string | null } = {},
  ): { id: string; promise: Promise<T>; started: Promise<void> } {
    if (this.stopping) throw stoppingError(kind);
    this.prune();
    const controller = new AbortController();
    const id = newUid();
    let markStarted = () => {};
    const started = new Promise<void>((resolve) => (markStarted = resolve));
    const job: Job = {
      id, kind, vid, owner: currentClient(), state: 'running', percent: 0, bytesDone: null, error: null, result: undefined,
      createdAt: new Date(), progressAt: new Date(), finishedAt: null, controller, done: Promise.resolve(), isAnswer, answeredBy,
    };
    const handle: JobHandle = {
      id,
      signal: controller.signal,
      progress: (percent, bytesDone) => {
        const before = [job.percent, job.bytesDone];
        job.percent = Math.max(job.percent, Math.min(100, Math.round(percent * 100) / 100));
        if (bytesDone !== undefined) job.bytesDone = bytesDone;
        if (before[0] !== job.percent || before[1] !== job.bytesDone) job.progressAt = new Date();
        markStarted(); // bytes moving: its checks are behind it
      },
      started: (made) => {
        if (made && job.vid === null) job.vid = made;
        markStarted();
      },
    };
    const promise = currentJob.run(handle, async () => run(handle)).then(
      (result) => {
        job.state = 'done';
        job.percent = 100;
        job.result = result;
        job.finishedAt = new Date();
        return result;
      },
      (err: unknown) => {
        job.state = controller.signal.aborted ? 'cancelled' : 'failed';
        job.error = controller.signal.aborted ? 'cancelled' : this.failure(job, err);
        job.finishedAt = new Date();
        throw err;
      },
    );
    job.done = promise.catch(() => undefined);
    this.jobs.set(id, job);
    return { id, promise, started };
  }

  /**
   * What a failed job's `error` says: the catalogue's sentence, as its synchronous request would answer; an
   * unexpected error's own message (a path, a library's words) only goes to the log, as the 500 middleware does.
   * The failure of a job a request answers is logged by that request (once: the error middleware's line).
   */
  private failure(job: Job, err: unknown): string {
    const known = translateErrno(err, `this ${job.kind}`);
    if (job.answeredBy !== null) return known instanceof ApiError ? known.message : `internal error; the daemon's log has the details (request ${job.answeredBy})`;
    const fields = { job: job.id, kind: job.kind, vid: job.vid, ...errorFields(err) };
    // Only a fault of the daemon's own pages the operator; a root away or no room (5xx too) is a warning.
    if (!(known instanceof ApiError) || known.status === 500) this.log?.error('job failed', fields);
    else if (known.status > 500) this.log?.warn('job failed', fields);
    return known instanceof ApiError ? known.message : `internal error; the daemon's log has the details (job ${job.id})`;
  }

  /** Whether the job `id` was cancelled (DELETE /jobs/<id>, its client gone, the daemon stopping). */
  wasCancelled(id: string): boolean {
    return this.jobs.get(id)?.state === 'cancelled';
  }

  /** The error a request whose job `id` was cancelled answers: 503 when the daemon's stop cancelled it. */
  cancelledError(id: string, kind: string): ApiError {
    if (this.stopping) return stoppingError(kind);
    return new ConflictError(`the ${kind} was cancelled (DELETE /api/v1.0/jobs/${id})`, { job: id });
  }

  /** The job `id` as `viewer` (a client; undefined for an admin) may know it: another client's job does not exist. */
  private find(id: string, viewer?: string): Job {
    this.prune();
    const job = this.jobs.get(id);
    if (!job || (viewer !== undefined && job.owner !== viewer)) throw new NotFoundError(`job ${id} does not exist`);
    return job;
  }

  /** The public view of a job (`GET /jobs/<id>`). */
  describe(id: string, viewer?: string): Record<string, unknown> {
    return this.view(this.find(id, viewer));
  }

  private view(job: Job): Record<string, unknown> {
    return {
      id: job.id,
      kind: job.kind,
      vid: job.vid,
      state: job.state,
      percent: job.percent,
      ...(job.bytesDone !== null ? { bytes: job.bytesDone } : {}),
      ...(job.error ? { error: job.error } : {}),
      ...(job.state === 'done' && job.result !== undefined ? { result: job.result } : {}),
      createdAt: job.createdAt.toISOString(),
      ...(job.state === 'running' ? { progressAt: job.progressAt.toISOString() } : {}),
      ...(job.finishedAt ? { finishedAt: job.finishedAt.toISOString() } : {}),
    };
  }

  list(viewer?: string): Record<string, unknown>[] {
    this.prune();
    return [...this.jobs.values()].filter((j) => viewer === undefined || j.owner === viewer).map((j) => this.view(j));
  }

  /** Cancels a running job (its tool is killed, its half-made output removed) and waits for it to end. */
  async cancel(id: string, viewer?: string): Promise<Record<string, unknown>> {
    const job = this.find(id, viewer);
    if (job.state !== 'running') throw new ConflictError(`job ${id} has already ended (${job.state})`);
    job.controller.abort();
    await job.done;
    return this.describe(id);
  }

  /** Cancels every running job and waits for them (daemon stop); answers still streaming get the server's grace period. */
  async cancelAll(): Promise<void> {
    this.stopping = true;
    const running = [...this.jobs.values()].filter((j) => j.state === 'running' && !j.isAnswer);
    for (const j of running) j.controller.abort();
    await Promise.all(running.map((j) => j.done));
  }

  /**
   * Finished jobs are kept an hour (each client's newest 1000 at most), then forgotten: checked at every
   * look, not only when a job starts. Counted per client, so that one client's flood of requests (each
   * clone or import is a job, refused ones included) never evicts another's result before it was read;
   * its downloads apart from its other jobs, so that a parallel downloader's Range requests (one job each)
   * never evict the result of its own async clone or import.
   */
  private prune(): void {
    const now = Date.now();
    const kept = new Map<string, number>();
    for (const j of [...this.jobs.values()].reverse()) {
      if (!j.finishedAt) continue;
      const key = `${j.owner}/${j.isAnswer}`;
      const n = (kept.get(key) ?? 0) + 1;
      kept.set(key, n);
      if (now - j.finishedAt.getTime() > KEEP_FINISHED_MS || n > KEEP_FINISHED_MAX) this.jobs.delete(j.id);
    }
  }
}

function stoppingError(kind: string): UnavailableError {
  return new UnavailableError(`the ${kind} was cancelled: the storage daemon is stopping; send it again once it is back`);
}

/**
 * The seed's synchronous answer by default; with `async: true` in the body, 202 and `{"job": id}`
 * once the operation has started (its own refusals, an unknown volume, another's, a locked one, no
 * room, answer as errors). Either way the operation runs as a job (listed in `status`, cancellable).
 * A synchronous request that makes a new volume (`makesVolume`) is cancelled when its client leaves:
 * nobody would learn that volume's id. One that changes a known volume (convert, compact) goes on.
 * `answerWhen`: the 202 waits for it too (an upload's body must be read before its request is answered).
 */
export async function runAsJob<T>(
  jobs: JobRegistry,
  request: {
    async?: boolean;
    kind: string;
    vid: string | null;
    makesVolume: boolean;
    res: { once(event: 'close', fn: () => void): unknown; writableFinished: boolean; locals?: Record<string, unknown> };
    answerWhen?: Promise<void>;
  },
  run: (job: JobHandle) => Promise<T>,
): Promise<{ status?: number; body: unknown }> {
  // A synchronous request answers (and logs) its job's failure; an async one's is told by the job alone.
  const answeredBy = request.async ? null : String(request.res.locals?.requestId ?? '-');
  const { id, promise, started } = jobs.start(request.kind, request.vid, run, { answeredBy });
  // A job cancelled before its answer (an async upload's body still arriving, or any synchronous one) says so.
  const cancelled = (err: unknown) => {
    if (jobs.wasCancelled(id)) throw jobs.cancelledError(id, request.kind);
    throw err;
  };
  if (request.async) {
    promise.catch(() => undefined);
    await Promise.race([request.answerWhen ? Promise.all([started, request.answerWhen]) : started, promise]).catch(cancelled);
    return { status: 202, body: { job: id } };
  }
  const { res } = request;
  if (request.makesVolume)
    res.once('close', () => {
      if (!res.writableFinished) void jobs.cancel(id).catch(() => undefined);
    });
  return { body: await promise.catch(cancelled) };
}
