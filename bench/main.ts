/**
 * `npm run bench`: every benchmark section in one run, printed as a table and saved as JSON under
 * bench/results/. `--only control` (or `--only data`) runs one section.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release } from 'node:os';
import { join } from 'node:path';
import { runControlPlaneBench } from './control-plane.ts';
import { renderResults, type BenchResult } from './report.ts';

const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const results: BenchResult[] = [];
if (!only || only === 'control') results.push(...(await runControlPlaneBench()));

const machine = `${hostname()}, ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Linux ${release()}, Node ${process.version}`;
process.stdout.write(
  `\noaknet bench, ${new Date().toISOString()}, ${machine}\n\n${renderResults(results)}\n`,
);
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), machine, results }, null, 2));
process.stdout.write(`\nJSON: ${file}\n`);
