/**
 * `npm run bench`: every benchmark section in one run, printed as a table and saved as JSON under
 * bench/results/ (with each section's raw numbers). `--only control|closest|data|dns` runs one section;
 * the data section's knobs (BENCH_ROUNDS, BENCH_PATHS, ...) are described in data-plane.ts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { installSignalCleanup } from './cleanup.ts';
import { runClosestBench } from './closest.ts';
import { runControlPlaneBench } from './control-plane.ts';
import { runDataPlaneBench } from './data-plane.ts';
import { runDnsBench } from './dns.ts';
import { renderResults, type BenchResult } from './report.ts';

const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const SECTIONS = ['control', 'closest', 'data', 'dns'];
if (only !== undefined && !SECTIONS.includes(only)) {
  process.stderr.write(`bench: --only takes ${SECTIONS.join(', ')}, not ${only}\n`);
  process.exit(2);
}
// SIGINT/SIGTERM: remove the namespaces and processes the bench made, then exit
installSignalCleanup();
const started = new Date();
const results: BenchResult[] = [];
const raw: Record<string, unknown> = {};
// a section that fails is reported as failed; the other still runs
const failed = (section: string, err: unknown): BenchResult => ({
  section,
  name: `${section} bench`,
  value: NaN,
  unit: '',
  error: err instanceof Error ? err.message : String(err),
});
if (!only || only === 'control') {
  try {
    results.push(...(await runControlPlaneBench()));
  } catch (err) {
    results.push(failed('control plane', err));
  }
}
if (!only || only === 'closest') {
  try {
    const closest = await runClosestBench();
    results.push(...closest.results);
    raw['closest'] = closest.raw;
  } catch (err) {
    results.push(failed('Closest_IP', err));
  }
}
if (!only || only === 'data') {
  try {
    const data = await runDataPlaneBench();
    results.push(...data.results);
    raw['dataPlane'] = data.raw;
  } catch (err) {
    results.push(failed('data plane', err));
  }
}
if (!only || only === 'dns') {
  try {
    const dns = await runDnsBench();
    results.push(...dns.results);
    raw['dns'] = dns.raw;
  } catch (err) {
    results.push(failed('DNS', err));
  }
}

const machine = `${hostname()}, ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}, Node ${process.version}`;
const seconds = Math.round((Date.now() - started.getTime()) / 1000);
process.stdout.write(
  `\noaknet bench, ${started.toISOString()} (${seconds} s), ${machine}\n\n${renderResults(results)}\n`,
);
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `bench-${started.toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ date: started.toISOString(), seconds, machine, results, raw }, null, 2));
process.stdout.write(`\nJSON: ${file}\n`);
