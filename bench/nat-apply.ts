// Benchmark (a report, no assertions): the cost of ONE NAT change on a gateway that already holds
// 100, 1,000 and 10,000 natflow rules. One change = add one FIP and remove another, through
// applyNatRules exactly as the gateway agent runs it: one `iptables-save -t nat` read, one
// `iptables-restore --noflush` write. The read and the write are also timed on their own.
//
//   npx tsx bench/nat-apply.ts [repetitions]     (default 20; lab gateway t-natb, removed at the end)
import { performance } from 'node:perf_hooks';
import { spawnRunner, type CommandRunner } from '../activities/exec.js';
import { createNatActivities } from '../activities/gateway-nat.js';
import { formatIPv4, parseIPv4 } from '../domain/ip.js';
import type { NatRule } from '../domain/nat-rules.js';
import { labDown, labUp } from '../temporal-dev/lab.js';

const GATEWAY = 't-natb';
const SIZES = [100, 1_000, 10_000];
const BATCH = 2_000; // FIPs per applyNatRules while loading (4,000 rules per iptables-restore)
const WARMUP = 2;
const repetitions = Number(process.argv[2] ?? 20);
if (!Number.isInteger(repetitions) || repetitions < 1) throw new Error('usage: npx tsx bench/nat-apply.ts [repetitions]');

// FIPs on addresses of large blocks: no packet is sent, only the number of rules matters here.
const EIP_BASE = parseIPv4('100.64.0.1');
const VM_BASE = parseIPv4('10.128.0.1');
const fip = (i: number): NatRule => ({ kind: 'fip', owner: `bench-${i}`, eip: formatIPv4(EIP_BASE + i), internalIp: formatIPv4(VM_BASE + i) });
const RULES_PER_FIP = 2;

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
};
// Deterministic choice of which FIP to remove, so that runs compare.
let seed = 42;
const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);

const timings: { command: string; ms: number }[] = [];
const timed: CommandRunner = {
  async run(cmd, args, opts) {
    const started = performance.now();
    try {
      return await spawnRunner.run(cmd, args, opts);
    } finally {
      timings.push({ command: cmd, ms: performance.now() - started });
    }
  },
};

async function main(): Promise<void> {
  await labDown(GATEWAY);
  const t = await labUp(GATEWAY);
  try {
    const nat = createNatActivities({ netns: t.gatewayNs, runner: timed });
    await nat.initNatChains();
    const live: number[] = [];
    let next = 0;

    console.log(`gateway ${GATEWAY}: one change = add 1 FIP + remove 1 FIP (${RULES_PER_FIP} rules each), ${repetitions} repetitions per size after ${WARMUP} warm-up\n`);
    const rows: string[][] = [['natflow rules', 'change median', 'change p90', 'iptables-save median', 'iptables-save p90', 'iptables-restore median', 'iptables-restore p90', 'load']];
    for (const size of SIZES) {
      const loadStart = performance.now();
      while (live.length * RULES_PER_FIP < size) {
        const count = Math.min(BATCH, size / RULES_PER_FIP - live.length);
        const batch = Array.from({ length: count }, () => next++);
        await nat.applyNatRules({ add: batch.map(fip), removeOwners: [] });
        live.push(...batch);
      }
      const loadMs = performance.now() - loadStart;
      const onGateway = (await nat.listNatRules()).length;

      const change: number[] = [];
      const read: number[] = [];
      const write: number[] = [];
      for (let rep = 0; rep < WARMUP + repetitions; rep++) {
        const victim = live.splice(Math.floor(random() * live.length), 1)[0]!;
        const added = next++;
        timings.length = 0;
        const started = performance.now();
        const result = await nat.applyNatRules({ add: [fip(added)], removeOwners: [fip(victim).owner] });
        const ms = performance.now() - started;
        live.push(added);
        if (result.added !== 2 || result.removed !== 2) throw new Error(`unexpected change result ${JSON.stringify(result)}`);
        if (rep < WARMUP) continue;
        change.push(ms);
        read.push(timings.filter((x) => x.command === 'iptables-save').reduce((s, x) => s + x.ms, 0));
        write.push(timings.filter((x) => x.command === 'iptables-restore').reduce((s, x) => s + x.ms, 0));
      }
      const ms = (v: number) => `${v.toFixed(1)} ms`;
      rows.push([
        onGateway.toLocaleString('en-US'),
        ms(quantile(change, 0.5)),
        ms(quantile(change, 0.9)),
        ms(quantile(read, 0.5)),
        ms(quantile(read, 0.9)),
        ms(quantile(write, 0.5)),
        ms(quantile(write, 0.9)),
        `${(loadMs / 1000).toFixed(2)} s`,
      ]);
    }
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    for (const [i, row] of rows.entries()) {
      console.log(row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join(' | '));
      if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
    }
    console.log('\nload: time to bring the gateway from the previous size to this one, in batches of ' + `${BATCH.toLocaleString('en-US')} FIPs (one iptables-restore each)`);
  } finally {
    await labDown(GATEWAY);
  }
}

await main();
