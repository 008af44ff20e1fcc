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

/** The sections in the order they run: the --only key, the label of a failure, the key of its raw numbers. */
const SECTIONS: Array<{
  key: string;
  label: string;
  raw?: string;
  run: () => Promise<{ results: BenchResult[]; raw?: unknown }>;
}> = [
  { key: 'control', label: 'control plane', run: async () => ({ results: await runControlPlaneBench() }) },
  { key: 'closest', label: 'Closest_IP', raw: 'closest', run: runClosestBench },
  { key: 'data', label: 'data plane', raw: 'dataPlane', run: runDataPlaneBench },
  { key: 'dns', label: 'DNS', raw: 'dns', run: runDnsBench },
];
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
if (only !== undefined && !SECTIONS.some((s) => s.key === only)) {
  process.stderr.write(`bench: --only takes ${SECTIONS.map((s) => s.key).join(', ')}, not ${only}\n`);
  process.exit(2);
}
// SIGINT/SIGTERM: remove the namespaces and processes the bench made, then exit
installSignalCleanup();
const started = new Date();
const results: BenchResult[] = [];
const raw: Record<string, unknown> = {};
for (const section of SECTIONS.filter((s) => !only || s.key === only)) {
  // a section that fails is reported as failed; the others still run
  try {
    const out = await section.run();
    results.push(...out.results);
    if (section.raw) raw[section.raw] = out.raw;
  } catch (err) {
    results.push({
      section: section.label,
      name: `${section.label} bench`,
      value: NaN,
      unit: '',
      error: err instanceof Error ? err.message : String(err),
    });
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
