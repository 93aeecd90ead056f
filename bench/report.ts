// `npm run bench`: every benchmark scenario, one after the other, each on its own dev server and
// lab gateway, then one table of their key results (the scenarios print their own detail first).
//
//   npm run bench                      # 50, 200, 1,000 pairs (CLI path), 1,000 through the API,
//                                      # 2 minutes of 20 FIP creates and deletes a second, the gateway layer
//   npm run bench -- --pairs 50,200,1000,5000 --api 1000 --latency 120 --rate 20 --fips 1000
//   npm run bench -- --breakdown       # and where each throughput scenario's time went (bench/breakdown.ts)
//   npm run bench -- --smoke           # a few of everything, with the breakdown (what CI runs so that it cannot rot)
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import type { BenchRow } from './results.js';
import { Teardown } from './teardown.js';

const { values } = parseArgs({
  options: {
    pairs: { type: 'string', default: '50,200,1000' },
    api: { type: 'string', default: '1000' },
    latency: { type: 'string', default: '120' },
    rate: { type: 'string', default: '20' },
    fips: { type: 'string', default: '1000' },
    smoke: { type: 'boolean', default: false },
    breakdown: { type: 'boolean', default: false },
  },
});
const o = values.smoke ? { pairs: '10', api: '10', latency: '5', rate: '5', fips: '100' } : values;

const teardown = new Teardown((line) => console.error(`[bench] ${line}`)).onInterrupt();
const scratch = await mkdtemp(path.join(os.tmpdir(), 'natflow-bench-report-'));
teardown.add('remove the report scratch directory', () => rm(scratch, { recursive: true, force: true }));
/** The scenario running: stopped as a Ctrl-C stops it (it takes down its own stack), waited for. */
let running: { child: ChildProcess; exited: Promise<number | null> } | undefined;
teardown.add('stop the scenario running', async () => {
  running?.child.kill('SIGINT');
  await running?.exited;
});
const out = path.join(scratch, 'rows.jsonl');
const here = path.dirname(new URL(import.meta.url).pathname);
const breakdown = values.smoke || values.breakdown ? ['--breakdown'] : [];
const scenarios: [string, string[]][] = [
  ['throughput.ts', ['--pairs', o.pairs!, ...breakdown]],
  ...(o.api !== '0' ? ([['throughput.ts', ['--path', 'api', '--pairs', o.api!, '--no-floor', ...breakdown]]] as [string, string[]][]) : []),
  ...(o.latency !== '0' ? ([['throughput.ts', ['--pairs', '0', '--latency', o.latency!, '--rate', o.rate!, ...breakdown]]] as [string, string[]][]) : []),
  ['gateway-layer.ts', ['--fips', o.fips!, '--scale', ...(values.smoke ? ['--reps', '3'] : [])]],
];

try {
  for (const [script, args] of scenarios) {
    console.log(`\n[bench] ${script} ${args.join(' ')}`);
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, script), ...args], { stdio: 'inherit', env: { ...process.env, NATFLOW_BENCH_OUT: out } });
    running = { child, exited: new Promise<number | null>((resolve) => child.on('exit', resolve)) };
    const code = await running.exited;
    running = undefined;
    if (code !== 0) throw new Error(`${script} ${args.join(' ')} exited with code ${code}`);
  }
  const rows = (await readFile(out, 'utf8')).split('\n').filter(Boolean).map((line) => JSON.parse(line) as BenchRow);
  const temporal = (await promisify(execFile)(path.join(here, '..', '.tools', 'bin', 'temporal'), ['--version']).catch(() => ({ stdout: 'temporal: not found' }))).stdout.trim();
  const sdk = (await import('@temporalio/worker/package.json', { with: { type: 'json' } })).default.version;
  console.log(`\nnatflow benchmark report, ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores (${os.cpus()[0]?.model}), ${Math.round(os.totalmem() / 2 ** 30)} GiB; node ${process.version}; @temporalio ${sdk}; ${temporal}; dev server on SQLite (WAL)\n`);
  const table = [['scenario', 'size', 'result', 'p50', 'p99', 'compared with', 'ratio', 'peak RSS'], ...rows.map((r) => [r.scenario, r.size, r.result, r.p50 ?? '', r.p99 ?? '', r.versus ?? '', r.ratio ?? '', r.rss ?? ''])];
  console.log(table.map((row, i) => `| ${row.join(' | ')} |${i === 0 ? `\n|${row.map(() => '---').join('|')}|` : ''}`).join('\n'));
} finally {
  await teardown.run();
}
