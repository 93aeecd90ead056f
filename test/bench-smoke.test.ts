// `npm run bench`, small, so that it cannot rot: every scenario (pairs through the CLI path with
// the floor beside them, pairs through the API, steady latency, the gateway layer and its scale)
// on its own dev server and lab gateway, and the one report table. Speed is the benchmark's
// business, not this test's. And a bench stopped half-way (Ctrl-C) takes down what it set up.
import { execFile, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

describe('npm run bench smoke', () => {
  it('runs every scenario small and prints one report table with a measured row for each', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/report.ts', '--smoke'], { timeout: 600_000, maxBuffer: 64 << 20 });
    // The throughput scenario's own table: activities and local activities per EIP and per FIP workflow, each process's CPU seconds, the floor, the ratio, all measured.
    const cpu = String.raw`control \d+\.\d, server \d+\.\d, agent \d+\.\d`;
    const row = new RegExp(String.raw`^10\t[\d.]+\t[\d.]+\t[\d.]+\t[\d.]+\teip (\d+) \+ (\d+) local, fip (\d+) \+ (\d+) local\t${cpu}\t[\d.]+\t${cpu}\t[\d.]+$`, 'm').exec(stdout);
    expect(row, stdout).not.toBeNull();
    expect(Number(row![1]) + Number(row![2])).toBeGreaterThan(0);
    expect(Number(row![3]) + Number(row![4])).toBeGreaterThan(0);
    // Where the time went (--breakdown): steps read from the histories, each with its count and times.
    const step = (title: string, name: string) => new RegExp(String.raw`^${title}\ntotal s\tn\tp50 ms\tp99 ms\tstep\n(?:.*\n)*?[\d.]+\t[1-9]\d*\t\d+\t\d+\t${name}$`, 'm');
    expect(stdout).toMatch(step('10 pairs creating: 20 EIP and FIP workflows', String.raw`workflowTaskScheduled → workflowTaskStarted`));
    expect(stdout).toMatch(step('10 pairs deleting: the gateway', String.raw`activityTaskStarted \((?:applyNatRules|changeEipAddresses|applyGatewayChange)\) → activityTaskCompleted \(\w+\)`));
    expect(stdout).toMatch(step('latency: 1 in 5 FIP workflows', String.raw`activityTaskStarted \(findClaimAndApply\) → activityTaskCompleted \(findClaimAndApply\)`));
    const report = stdout.slice(stdout.indexOf('natflow benchmark report'));
    expect(report).toContain('| scenario | size | result | p50 | p99 | compared with | ratio | peak RSS |');
    const time = String.raw`[\d.]+ (?:s|ms)`;
    for (const line of [
      String.raw`\| EIP\+FIP pairs to Ready \(CLI path\) \| 10 pairs \| ${time} \|  \|  \| floor [\d.]+ s \| [\d.]+× \| control [1-9]\d* MiB, agent [1-9]\d* MiB, server [1-9]\d* MiB \|`, // the three peaks measured
      String.raw`\| EIP\+FIP pairs to Ready \(API path[^|]*\) \| 10 pairs \| ${time} \|`,
      String.raw`\| FIP create → Ready, 5/s created and deleted \| 5 s, \d+ FIPs \| max ${time} \| ${time} \| ${time} \| machine \d+ % busy \|`,
      String.raw`\| FIP delete → clean, 5/s created and deleted \| 5 s, \d+ FIPs \| max ${time} \| ${time} \| ${time} \| machine \d+ % busy \|`,
      String.raw`\| gateway layer: a burst of FIP changes applied \| 100 FIPs \| ${time} \|  \|  \| per-rule baseline ${time}; floor ${time} \| [\d.]+× faster`,
      String.raw`\| gateway: one change at scale \(agent\) \| 10000 rules \| p50 ${time} \|`,
    ]) {
      expect(report, report).toMatch(new RegExp(line));
    }
  }, 660_000);

  it('npm run bench stopped in the middle of a burst (SIGINT to it alone) leaves nothing behind: no lab namespace, server, agent or scratch directory', async () => {
    // Its own temp dir and lab prefix: what it leaves is what it made.
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'natflow-interrupted-'));
    const env = { ...process.env, TMPDIR: tmp, NATFLOW_LAB_PREFIX: 'nfint' };
    try {
      const bench = spawn(process.execPath, ['--import', 'tsx', 'bench/report.ts', '--pairs', '2000', '--api', '0', '--latency', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = once(bench, 'exit');
      let output = '';
      const creating = new Promise<void>((resolve) => bench.stdout.on('data', (chunk: Buffer) => (output += chunk) && output.includes('[bench] 2000 pairs: creating') && resolve()));
      bench.stderr.on('data', (chunk: Buffer) => (output += chunk));
      await Promise.race([creating, exited.then(() => Promise.reject(new Error(`the bench ended before its burst: ${output}`)))]);
      await new Promise((resolve) => setTimeout(resolve, 3_000)); // the burst under way
      expect(await labNamespaces(), 'the lab is up while it runs').not.toEqual([]);
      expect(await scratchDirs(tmp)).toHaveLength(2); // the report's and its scenario's
      bench.kill('SIGINT');
      const [code] = await exited;
      expect(code, output).toBe(130);
      expect(await labNamespaces()).toEqual([]); // the agent ran in one of them
      expect(await scratchDirs(tmp)).toEqual([]); // with the dev server's database
      expect(await answers(17433)).toBe(false); // the dev server
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }, 180_000);

  const scratchDirs = async (tmp: string) => (await readdir(tmp)).filter((name) => name.startsWith('natflow-bench-'));
  const labNamespaces = async () => (await promisify(execFile)('ip', ['netns', 'list'])).stdout.split('\n').filter((line) => line.startsWith('nfint-'));
  const answers = (port: number) =>
    new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => (socket.destroy(), resolve(true)));
      socket.on('error', () => resolve(false));
    });
});
