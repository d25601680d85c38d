/** Small statistics over timings (milliseconds). */

export function median(values: number[]): number {
  return percentile(values, 50);
}

/** The p-th percentile by nearest rank over a copy of `values`. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Runs `fn` `runs` times after `warmup` unmeasured runs; returns each run's duration in ms. */
export async function timeRuns(runs: number, fn: (i: number) => Promise<unknown>, warmup = 0): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn(i);
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = nowMs();
    await fn(i);
    out.push(nowMs() - started);
  }
  return out;
}

/** `12.3 ms`, `1.23 s`: a duration as a reader wants it. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a';
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/** `×123` or `×1.2`: how many times `slow` takes longer than `fast`. */
export function formatRatio(slow: number, fast: number): string {
  const r = slow / fast;
  if (!Number.isFinite(r)) return 'n/a';
  return r >= 10 ? `×${r.toFixed(0)}` : `×${r.toFixed(2)}`;
}
