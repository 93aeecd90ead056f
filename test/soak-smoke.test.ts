// The chaos soak, short, so that it cannot rot: `npm run soak` with 300 operations, 5 SIGKILLs of
// natflow's processes and one restart of each server, on a fixed seed. Everything converges, the
// probes pass and the audit finds nothing. The soak brings up its own servers, lab gateway and
// processes (bench/soak.ts) and takes them all down again, whatever happens.
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const SEED = '11';
const RUN_TIMEOUT_MS = 480_000;

describe('chaos soak smoke', () => {
  it('300 operations, 5 kills, a restart of each server: converged, probes answered, the audit clean', async () => {
    const args = ['--import', 'tsx', 'bench/soak.ts', '--ops', '300', '--kills', '5', '--restarts', '1', '--seed', SEED, '--converge-timeout', '150'];
    // Exit 1 is a failed soak, whose report is what the assertions below should show.
    const stdout = await new Promise<string>((resolve) => {
      execFile(process.execPath, args, { timeout: RUN_TIMEOUT_MS, maxBuffer: 64 << 20 }, (_err, out, err) => resolve(`${out}\n${err}`));
    });
    const line = stdout.split('\n').find((l) => l.startsWith('SOAK-RESULT '));
    expect(line, stdout.slice(-8000)).toBeDefined();
    const result = JSON.parse(line!.slice('SOAK-RESULT '.length));
    const report = stdout.slice(stdout.indexOf('=== natflow chaos soak'), stdout.indexOf('SOAK-RESULT '));
    expect(result.converged, report).toBe(true);
    expect(result.problems, report).toEqual([]);
    expect(result.failures, report).toEqual([]);
    expect(result.badlyEnded, report).toEqual([]);
    expect(result.audit.ran, report).toBe(true);
    expect(result.audit.findings, report).toBe(0);
    expect(result.audit.error, report).toBeUndefined();
    expect(result.probes.failed, report).toEqual([]);
    expect(result.pass, report).toBe(true);
    // The chaos happened: every planned fault was injected.
    const faults = Object.entries(result.faults as Record<string, number>);
    expect(faults.filter(([k]) => k.startsWith('kill ')).reduce((s, [, n]) => s + n, 0)).toBe(5);
    expect(result.faults['restart temporal']).toBe(1);
    expect(result.faults['restart kube-apiserver']).toBe(1);
  }, RUN_TIMEOUT_MS + 60_000);
});
