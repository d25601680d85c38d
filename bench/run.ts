/**
 * `npm run bench [-- [--quick] [--strict] [name...]]`: runs every `bench/<name>.bench.ts` (or those
 * named), one after the other, and prints each one's tables and a summary of the goals.
 * Figures go to docs/bench/<name>.json and charts to docs/bench/*.svg (not with --quick).
 * Exit status: 1 when a benchmark failed to run, or with --strict when a goal is not met.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatGoal, formatTable, type Bench, type BenchReport } from './lib/report.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const OUT_DIR = path.join(BENCH_DIR, '..', 'docs', 'bench');

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const strict = args.includes('--strict');
  const wanted = args.filter((a) => !a.startsWith('--'));
  const available = (await fs.readdir(BENCH_DIR)).filter((f) => f.endsWith('.bench.ts')).map((f) => f.replace(/\.bench\.ts$/, '')).sort();
  const unknown = wanted.filter((w) => !available.includes(w));
  if (unknown.length) {
    console.error(`no such benchmark: ${unknown.join(', ')} (available: ${available.join(', ')})`);
    return 2;
  }
  const names = wanted.length ? wanted : available;
  const reports: BenchReport[] = [];
  const failed: string[] = [];
  for (const name of names) {
    console.log(`\n=== ${name}${quick ? ' (quick)' : ''} ===`);
    const started = Date.now();
    try {
      const bench = (await import(pathToFileURL(path.join(BENCH_DIR, `${name}.bench.ts`)).href)).default as Bench;
      const report = await bench({ quick, say: (line) => console.log(`  ${line}`) });
      reports.push(report);
      for (const t of report.tables) console.log(`\n${formatTable(t)}`);
      for (const n of report.notes) console.log(`\nnote: ${n}`);
      if (!quick) {
        await fs.mkdir(OUT_DIR, { recursive: true });
        const record = { name, date: new Date().toISOString(), ...machine(), goals: report.goals, figures: report.figures, notes: report.notes };
        await fs.writeFile(path.join(OUT_DIR, `${name}.json`), JSON.stringify(record, null, 2) + '\n');
        for (const [file, svg] of Object.entries(report.charts)) await fs.writeFile(path.join(OUT_DIR, file), svg);
      }
    } catch (err) {
      failed.push(name);
      console.error(`\n${name} failed: ${(err as Error).stack ?? err}`);
    }
    console.log(`\n(${name}: ${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
  console.log('\n=== summary ===');
  const goals = reports.flatMap((r) => r.goals.map((g) => ({ ...g, bench: r.name })));
  for (const g of goals) console.log(`${g.bench.padEnd(10)} ${formatGoal(g)}`);
  for (const f of failed) console.log(`${f.padEnd(10)} FAILED to run`);
  const missed = goals.filter((g) => !g.met).length;
  console.log(`\n${goals.length - missed}/${goals.length} goals met${failed.length ? `, ${failed.length} benchmark(s) failed` : ''}`);
  return failed.length || (strict && missed) ? 1 : 0;
}

function machine(): Record<string, unknown> {
  return { node: process.version, kernel: os.release(), cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? null, memoryGB: Math.round(os.totalmem() / 2 ** 30) };
}

process.exitCode = await main();
