/**
 * What every `bench/<name>.bench.ts` hands back to `bench/run.ts`: tables to print, goals checked
 * against baselines measured in the same run, and notes (skipped columns and why).
 */
export interface Table {
  title: string;
  columns: string[];
  rows: string[][];
}

export interface Goal {
  goal: string;
  met: boolean;
  /** The figures behind the verdict, e.g. `4.1 ms median (limit 10 ms)`. */
  measured: string;
}

export interface BenchReport {
  name: string;
  tables: Table[];
  goals: Goal[];
  notes: string[];
  /** Raw figures, written to bench/results/<name>.json for the docs. */
  figures: Record<string, unknown>;
  /** Charts to write under docs/bench/ (file name → SVG text), e.g. `listing.svg`. */
  charts: Record<string, string>;
}

/** The signature of a bench file's default export. */
export type Bench = (options: BenchOptions) => Promise<BenchReport>;

export interface BenchOptions {
  /** Scales the work down for a quick smoke run (`--quick`): fewer volumes, fewer repetitions. */
  quick: boolean;
  /** Prints progress lines. */
  say: (line: string) => void;
}

export function emptyReport(name: string): BenchReport {
  return { name, tables: [], goals: [], notes: [], figures: {}, charts: {} };
}

/** A table as aligned plain text (also valid Markdown). */
export function formatTable(t: Table): string {
  const widths = t.columns.map((c, i) => Math.max(c.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (c ?? '').padEnd(widths[i])).join(' | ')} |`;
  return [`${t.title}`, '', line(t.columns), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...t.rows.map(line)].join('\n');
}

export function formatGoal(g: Goal): string {
  return `${g.met ? 'MET    ' : 'NOT MET'}  ${g.goal}: ${g.measured}`;
}
