// The oracle: `natflow audit` (starter/cli.ts), run as the CLI runs it. Contract: `--json audit`
// prints one JSON object { findings: { kind, resource, expected, found, repair }[], unchecked:
// { what, why }[], ... } and exits 0 when clean, 1 with findings, 2 when something could not be
// checked. The audit is a workflow the control worker executes, so the control worker must run.
import { execFile } from 'node:child_process';
import { repoRoot } from '../../temporal-dev/provision.js';

export interface AuditFinding {
  kind: string;
  resource: string;
  expected: string;
  found: string;
  /** The repair in words (the report's `repairText`; `repair` is what `--fix` would do). */
  repairText?: string;
  repair?: unknown;
}

export interface AuditOutcome {
  exitCode: number;
  findings: AuditFinding[];
  unchecked: { what: string; why: string }[];
  /** Set when the audit could not be run or its output not read. */
  error?: string;
}

export function runAudit(address: string, timeoutMs = 300_000): Promise<AuditOutcome> {
  const args = ['--import', 'tsx', 'starter/cli.ts', '--address', address, '--json', 'audit'];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: repoRoot(), timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const exitCode = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      try {
        const report = JSON.parse(stdout) as { findings?: AuditFinding[]; unchecked?: AuditOutcome['unchecked'] };
        resolve({ exitCode, findings: report.findings ?? [], unchecked: report.unchecked ?? [] });
      } catch {
        resolve({ exitCode, findings: [], unchecked: [], error: `natflow audit exited ${exitCode}${err?.killed ? ' (timed out)' : ''}: ${(stderr || stdout).trim().split('\n').slice(-5).join(' | ')}` });
      }
    });
  });
}
