// Benchmark (a report, no assertions) of the gateway layer alone, on one lab gateway namespace.
//
// Burst: N FIP changes arrive at the gateway; the time until all are applied, three ways:
// - baseline: one process per rule, Kube-OVN's style (bench/per-rule-gateway.ts): per rule an
//   `iptables-save | grep` check, then one `iptables`, each entering the namespace;
// - natflow: the gateway agent's own activities (createAgentActivities, worker/agent.ts), as the
//   gateway workflow sends them: one applyNatRules with every FIP, and in batches (the workflow
//   applies what is pending at once; the control worker sends updates of at most 250 requests);
// - floor: one `iptables-restore --noflush` of the same 2N rules, nothing else.
// The nat table is emptied between ways (and natflow's chains made again, not timed).
//
// Scale (`--scale`): one change (add one FIP, remove another, as the workflow sends it) on a gateway
// already carrying 100, 1,000 and 10,000 natflow rules: the agent (which remembers its table) and a
// stateless instance that reads the whole table for every change.
//
//   npx tsx bench/gateway-layer.ts [--fips N] [--scale] [--no-burst] [--reps R]   (lab gateway t-gwlayer, removed at the end)
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { runCommand, spawnRunner } from '../activities/exec.js';
import { createNatActivities } from '../activities/gateway-nat.js';
import type { AgentInfo } from '../domain/gateway.js';
import { formatIPv4, parseIPv4 } from '../domain/ip.js';
import type { LabTopology } from '../domain/lab.js';
import { ownerOf, renderNatRule, type NatRule } from '../domain/nat-rules.js';
import { parseNatTable, placedChain, restoreLine } from '../domain/nat-table.js';
import { labDown, labUp } from '../temporal-dev/lab.js';
import { createAgentActivities } from '../worker/agent.js';
import { perRuleAddFip, perRuleInit } from './per-rule-gateway.js';
import { reportRow } from './results.js';

const GATEWAY = 't-gwlayer';
const { values: opts } = parseArgs({
  options: {
    fips: { type: 'string', default: '1000' },
    // 15 let one slow stretch move a p50 (and so the ratio to 100 rules: 2.16× once, 1.6× around it); 60 held it within 0.05×.
    reps: { type: 'string', default: '60' },
    scale: { type: 'boolean', default: false },
    'no-burst': { type: 'boolean', default: false },
  },
});
const N = Number(opts.fips);
const REPS = Number(opts.reps);
if (!Number.isInteger(N) || N < 1 || !Number.isInteger(REPS) || REPS < 1) throw new Error('usage: npx tsx bench/gateway-layer.ts [--fips N] [--scale] [--no-burst] [--reps R]');
const BATCHES = [250, 50];
const SIZES = [100, 1_000, 10_000];
const WARMUP = 2;

// FIPs on addresses of large blocks: no packet is sent, only the number of rules matters here.
const EIP_BASE = parseIPv4('100.64.0.1');
const VM_BASE = parseIPv4('10.128.0.1');
const fip = (i: number): NatRule & { kind: 'fip' } => ({ kind: 'fip', owner: `bench-${i}`, eip: formatIPv4(EIP_BASE + i), internalIp: formatIPv4(VM_BASE + i) });
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

async function ipt(t: LabTopology, ...args: string[]): Promise<void> {
  await runCommand('iptables', ['-w', '-t', 'nat', ...args], { netns: t.gatewayNs });
}

/** An empty nat table: every rule and every chain of anyone's gone. */
async function emptyNat(t: LabTopology): Promise<void> {
  await ipt(t, '-F');
  await ipt(t, '-X');
}

async function natLines(t: LabTopology): Promise<string[]> {
  return (await runCommand('iptables-save', ['-t', 'nat'], { netns: t.gatewayNs })).stdout.split('\n');
}

/** A fresh gateway agent's activities (empty memory), natflow's chains made (not timed). */
async function freshAgent(t: LabTopology) {
  const info: AgentInfo = { gateway: GATEWAY, instanceId: randomUUID(), startedAt: new Date().toISOString(), externalInterface: t.externalInterface };
  const agent = createAgentActivities({ gateway: GATEWAY, netns: t.gatewayNs, externalInterface: t.externalInterface, vpcInterface: t.vpcInterface }, info);
  await agent.initNatChains();
  return agent;
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return (performance.now() - started) / 1000;
}

function expectRules(way: string, found: number, wanted: number): void {
  if (found !== wanted) throw new Error(`${way}: ${found} rules on the gateway, ${wanted} expected`);
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join(' | '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  }
}

async function burst(t: LabTopology): Promise<void> {
  const fips = range(0, N).map(fip);
  const taggedRules = async () => parseNatTable((await natLines(t)).join('\n')).rules.filter((r) => ownerOf(r.spec)).length;
  const results: { way: string; seconds: number }[] = [];

  await emptyNat(t);
  await perRuleInit(t.gatewayNs);
  const baseline = await timed(async () => {
    for (const f of fips) await perRuleAddFip(t.gatewayNs, f);
  });
  expectRules('baseline', (await natLines(t)).filter((l) => /^-A EXCLUSIVE_[DS]NAT -[ds] /.test(l)).length, 2 * N);
  results.push({ way: 'baseline: per rule, save|grep + iptables', seconds: baseline });

  await emptyNat(t);
  let agent = await freshAgent(t);
  results.push({ way: 'natflow: one applyNatRules', seconds: await timed(async () => void (await agent.applyNatRules({ add: fips, removeOwners: [], flushConntrack: true }))) });
  expectRules('natflow', await taggedRules(), 2 * N);

  for (const size of BATCHES) {
    await emptyNat(t);
    agent = await freshAgent(t);
    const seconds = await timed(async () => {
      for (let i = 0; i < N; i += size) await agent.applyNatRules({ add: fips.slice(i, i + size), removeOwners: [], flushConntrack: true });
    });
    expectRules(`batches of ${size}`, await taggedRules(), 2 * N);
    results.push({ way: `natflow: applies of ${size} FIPs`, seconds });
  }

  await emptyNat(t);
  await freshAgent(t);
  const lines = fips.flatMap((f) => renderNatRule(f).map((r) => restoreLine('-A', placedChain(r.chain, f.owner), r.spec)));
  const floor = await timed(async () => void (await spawnRunner.run('iptables-restore', ['--noflush', '-w', '10'], { netns: t.gatewayNs, input: ['*nat', ...lines, 'COMMIT', ''].join('\n') })));
  expectRules('floor', await taggedRules(), 2 * N);
  results.push({ way: 'floor: one iptables-restore', seconds: floor });

  console.log(`\nBurst: ${N.toLocaleString('en-US')} FIPs (${(2 * N).toLocaleString('en-US')} rules) arriving at lab gateway ${GATEWAY}, until all are applied\n`);
  printTable([
    ['way', 'FIPs', 'seconds', 'rules/s', '× floor', 'faster than baseline'],
    ...results.map(({ way, seconds }) => [way, N.toLocaleString('en-US'), seconds.toFixed(3), Math.round((2 * N) / seconds).toLocaleString('en-US'), `${(seconds / floor).toFixed(1)}×`, `${(baseline / seconds).toFixed(1)}×`]),
  ]);
  const natflow = results.find((r) => r.way === 'natflow: one applyNatRules')!.seconds;
  reportRow({ scenario: 'gateway layer: a burst of FIP changes applied', size: `${N} FIPs`, result: `${natflow.toFixed(3)} s`, versus: `per-rule baseline ${baseline.toFixed(2)} s; floor ${floor.toFixed(3)} s`, ratio: `${(baseline / natflow).toFixed(1)}× faster; ${(natflow / floor).toFixed(1)}× floor` });
}

const quantile = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil(q * values.length) - 1)]!;

async function scale(t: LabTopology): Promise<void> {
  // Deterministic choice of which FIP to remove, so that runs compare.
  let seed = 42;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const rows: string[][] = [['natflow rules', 'agent p50', 'agent p90', 'agent p50 ÷ at 100', 'stateless p50', 'stateless p90', 'stateless p50 ÷ at 100']];
  let first: { agent: number; stateless: number } | undefined;
  for (const size of SIZES) {
    await emptyNat(t);
    const agent = await freshAgent(t);
    const stateless = createNatActivities({ netns: t.gatewayNs, externalInterface: t.externalInterface, vpcInterface: t.vpcInterface });
    const live = range(0, size / 2);
    for (let i = 0; i < live.length; i += 2_000) await agent.applyNatRules({ add: live.slice(i, i + 2_000).map(fip), removeOwners: [] });
    let next = live.length;
    const change = async (apply: typeof agent.applyNatRules) => {
      const victim = live.splice(Math.floor(random() * live.length), 1)[0]!;
      const added = next++;
      const started = performance.now();
      // No conntrack flush: its cost does not depend on the table (two `conntrack -D`, ~20 ms each here).
      const result = await apply({ add: [fip(added)], removeOwners: [fip(victim).owner] });
      const ms = performance.now() - started;
      live.push(added);
      if (result.added !== 2 || result.removed !== 2) throw new Error(`unexpected change result ${JSON.stringify(result)}`);
      return ms;
    };
    const times = { agent: [] as number[], stateless: [] as number[] };
    // Alternating, so that both see the same machine load; the stateless one's writes make the agent read once after each.
    for (let rep = 0; rep < WARMUP + REPS; rep++) {
      const s = await change(stateless.applyNatRules);
      await agent.initNatChains(); // the stateless write changed the generation: read now (not timed) rather than in the change
      const a = await change(agent.applyNatRules);
      if (rep >= WARMUP) (times.stateless.push(s), times.agent.push(a));
    }
    const expected = size;
    const onGateway = parseNatTable((await natLines(t)).join('\n')).rules.filter((r) => ownerOf(r.spec)).length;
    expectRules(`scale ${size}`, onGateway, expected);
    const p50 = { agent: quantile(times.agent, 0.5), stateless: quantile(times.stateless, 0.5) };
    first ??= p50;
    const ms = (v: number) => `${v.toFixed(1)} ms`;
    reportRow({ scenario: 'gateway: one change at scale (agent)', size: `${onGateway} rules`, result: `p50 ${p50.agent.toFixed(1)} ms`, versus: `at ${SIZES[0]} rules ${first.agent.toFixed(1)} ms`, ratio: `${(p50.agent / first.agent).toFixed(2)}×` });
    rows.push([
      onGateway.toLocaleString('en-US'),
      ms(p50.agent),
      ms(quantile(times.agent, 0.9)),
      `${(p50.agent / first.agent).toFixed(2)}×`,
      ms(p50.stateless),
      ms(quantile(times.stateless, 0.9)),
      `${(p50.stateless / first.stateless).toFixed(2)}×`,
    ]);
  }
  console.log(`\nScale: one change (add 1 FIP + remove 1 FIP, 4 rules) on lab gateway ${GATEWAY}, ${REPS} repetitions per size after ${WARMUP} warm-ups\n`);
  printTable(rows);
  console.log('\nagent: the gateway agent, planning from the table it remembers (no iptables-save); stateless: reads the whole table (iptables-save) for every change');
}

async function main(): Promise<void> {
  await labDown(GATEWAY);
  const t = await labUp(GATEWAY);
  try {
    if (!opts['no-burst']) await burst(t);
    if (opts.scale) await scale(t);
  } finally {
    await labDown(GATEWAY);
  }
}

await main();
