// One row of `npm run bench`'s report: each benchmark appends its key results, as JSON lines, to
// the file `npm run bench` names in NATFLOW_BENCH_OUT (nothing when run alone: it prints its own tables).
import { appendFileSync } from 'node:fs';

export interface BenchRow {
  scenario: string;
  size: string;
  /** The result: a time, or a rate. */
  result: string;
  p50?: string;
  p99?: string;
  /** What it is compared with (a floor, a baseline, the same at a smaller size) and that value. */
  versus?: string;
  ratio?: string;
  rss?: string;
}

export function reportRow(row: BenchRow): void {
  const out = process.env.NATFLOW_BENCH_OUT;
  if (out) appendFileSync(out, JSON.stringify(row) + '\n');
}
