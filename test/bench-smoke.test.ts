// The throughput benchmark, small, so that it cannot rot: it brings up its own dev server and lab
// gateway, creates a few EIP+FIP pairs until Ready, deletes them until nothing is left, runs the
// Temporal floor beside it, and prints its table. Speed is the benchmark's business, not this test's.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

describe('bench:throughput smoke', () => {
  it('runs 10 pairs to Ready and back to nothing, with the floor, and prints its table', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/throughput.ts', '--pairs', '10', '--inflight', '5'], { timeout: 300_000, maxBuffer: 16 << 20 });
    const header = 'pairs\tcreated s\tall Ready s\tall deleted s\tms/pair\tactivities/wf\tfloor s\tReady/floor';
    expect(stdout).toContain(header);
    // pairs, created, Ready, deleted, ms/pair, activities and local activities per workflow, floor, ratio: all measured.
    const row = /^10\t[\d.]+\t[\d.]+\t[\d.]+\t[\d.]+\t(\d+) \+ (\d+) local\t[\d.]+\t[\d.]+$/m.exec(stdout);
    expect(row, stdout).not.toBeNull();
    expect(Number(row![1]) + Number(row![2])).toBeGreaterThan(0);
  }, 360_000);
});
