/**
 * `npm run bench [-- [--quick] [--strict] [name...]]`: runs every `bench/*.bench.ts` (or those whose
 * file name contains one of the names), one after the other. Benchmarks are not tests: they measure
 * ratios against a baseline run on the same machine and the same files.
 *
 * A bench's default export is an async function. One that returns nothing prints its own figures; one
 * that returns a BenchReport (bench/lib/report.ts) has its tables printed here, its goals collected in
 * the summary, and (not with --quick) its figures and charts written to docs/bench/.
 * Exit status: 1 when a benchmark failed to run, or with --strict when a goal is not met.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatGoal, formatTable, type BenchOptions, type BenchReport } from './lib/report.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const OUT_DIR = path.join(BENCH_DIR, '..', 'docs', 'bench');

function machine(): Record<string, unknown> {
  return { node: process.version, kernel: os.release(), cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? null, memoryGB: Math.round(os.totalmem() / 2 ** 30) };
}

async function record(name: string, report: BenchReport): Promise<void> {
  await fs.mkdir(OUT_DIR, { recursive: true });
  const figures = { name, date: new Date().toISOString(), ...machine(), loadAverage: os.loadavg()[0], goals: report.goals, figures: report.figures, notes: report.notes };
  await fs.writeFile(path.join(OUT_DIR, `${name}.json`), JSON.stringify(figures, null, 2) + '\n');
  for (const [file, svg] of Object.entries(report.charts)) await fs.writeFile(path.join(OUT_DIR, file), svg);
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const strict = args.includes('--strict');
  const wanted = args.filter((a) => !a.startsWith('--'));
  const files = (await fs.readdir(BENCH_DIR))
    .filter((f) => f.endsWith('.bench.ts'))
    .filter((f) => wanted.length === 0 || wanted.some((w) => f.includes(w)))
    .sort();
  if (files.length === 0) {
    console.error(`no benchmark matches ${wanted.join(', ')}`);
    return 2;
  }
  const reports: BenchReport[] = [];
  const failed: string[] = [];
  for (const file of files) {
    const name = file.replace(/\.bench\.ts$/, '');
    console.log(`\n## ${file}${quick ? ' (quick)' : ''}\n`);
    const started = Date.now();
    try {
      const bench = (await import(pathToFileURL(path.join(BENCH_DIR, file)).href)).default as (o: BenchOptions) => Promise<BenchReport | void>;
      const report = await bench({ quick, say: (line) => console.log(`  ${line}`) });
      if (report) {
        reports.push(report);
        for (const t of report.tables) console.log(`\n${formatTable(t)}`);
        for (const n of report.notes) console.log(`\nnote: ${n}`);
        if (!quick) await record(name, report);
      }
    } catch (err) {
      failed.push(name);
      console.error(`\n${name} failed: ${(err as Error).stack ?? err}`);
    }
    console.log(`\n(${name}: ${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
  const goals = reports.flatMap((r) => r.goals.map((g) => ({ ...g, bench: r.name })));
  if (goals.length || failed.length) {
    console.log('\n## summary\n');
    for (const g of goals) console.log(`${g.bench.padEnd(10)} ${formatGoal(g)}`);
    for (const f of failed) console.log(`${f.padEnd(10)} FAILED to run`);
    const missed = goals.filter((g) => !g.met).length;
    console.log(`\n${goals.length - missed}/${goals.length} goals met${failed.length ? `, ${failed.length} benchmark(s) failed` : ''}`);
    if (strict && missed) return 1;
  }
  return failed.length ? 1 : 0;
}

// Exits explicitly: a self-printing bench may leave handles open (as bench/run.ts on main did).
process.exit(await main());
