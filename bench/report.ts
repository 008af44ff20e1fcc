/**
 * Benchmark results: one row per figure, printed as a table and written as JSON.
 */
import { renderTable } from '../src/cli/table.ts';

export interface BenchResult {
  section: string;
  name: string;
  value: number;
  unit: string;
  /** The figure's target, when the issue sets one. */
  target?: string | undefined;
  /** A ratio to the reference path measured in the same run, when there is one. */
  ratio?: string | undefined;
  /** Why the figure could not be measured (value is then NaN). */
  error?: string | undefined;
  /** What the reader must know about the figure (how it was measured, partial failures). */
  note?: string | undefined;
  /** The raw numbers behind the value (one per round or sample), kept in the JSON. */
  samples?: number[] | undefined;
}

/** The p-th percentile (nearest rank) of xs. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

function format(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toPrecision(3);
}

export function renderResults(results: readonly BenchResult[]): string {
  const table = renderTable(
    ['SECTION', 'FIGURE', 'VALUE', 'UNIT', 'RATIO', 'TARGET'],
    results.map((r) => [
      r.section,
      r.name,
      r.error !== undefined ? 'FAILED' : format(r.value),
      r.unit,
      r.ratio ?? '',
      r.target ?? '',
    ]),
  );
  const notes = results
    .filter((r) => r.error !== undefined || r.note !== undefined)
    .map((r) => `- ${r.name}: ${r.error !== undefined ? `FAILED: ${r.error}` : r.note}`);
  return notes.length > 0 ? `${table}\n\nNotes:\n${notes.join('\n')}` : table;
}
