// Benchmark (a report, no assertions): the cost of one NAT change on a gateway that already has
// about 100, 1,000 and 10,000 natflow rules. One change = add one FIP and remove another,
// applied as the gateway agent does it: one read of the nat table, one iptables-restore.
//   npm run bench -- [repetitions]
import { performance } from 'node:perf_hooks';
import { createNatActivities } from '../activities/gateway-nat.js';
import { runCommand } from '../activities/exec.js';
import type { NatRule } from '../domain/nat-rules.js';
import { formatIPv4, parseIPv4 } from '../domain/ip.js';
import { labDown, labUp } from '../temporal-dev/lab.js';

const GATEWAY = 'bench-nat';
const repetitions = Number(process.argv[2] ?? 15);
const base = parseIPv4('100.64.0.0');
// FIPs on addresses of a large block: nothing is sent, only the number of rules matters here.
const fip = (i: number): NatRule => ({ kind: 'fip', owner: `bench-${i}`, eip: formatIPv4(base + i), internalIp: formatIPv4(base + 65_536 + i) });
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const p90 = (values: number[]) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(0.9 * values.length))]!;
const probe = (op: '-A' | '-D') => `*nat\n${op} SHARED_DNAT -d 198.18.0.1/32 -m comment --comment natflow:bench-probe -j DNAT --to-destination 10.0.1.10\nCOMMIT\n`;

const topology = await labUp(GATEWAY);
try {
  const ns = topology.gatewayNs;
  const nat = createNatActivities({ netns: ns, vpcCidr: topology.vpcCidr });
  await nat.initNatChains();
  console.log(`one NAT change (add 1 FIP + remove 1 FIP), ${repetitions} repetitions per size; a FIP is 3 rules (DNAT, SNAT, hairpin)\n`);
  console.log('natflow rules | change median ms | change p90 ms | iptables-save median ms | iptables-restore (1 rule) median ms');
  let loaded = 0;
  for (const size of [100, 1_000, 10_000]) {
    const fips = Math.ceil(size / 3);
    for (let from = loaded; from < fips; from += 1_000) {
      await nat.applyNatRules({ add: Array.from({ length: Math.min(1_000, fips - from) }, (_, k) => fip(from + k)), removeOwners: [] });
    }
    loaded = fips;
    const change: number[] = [];
    const read: number[] = [];
    const write: number[] = [];
    for (let rep = 0; rep < repetitions; rep++) {
      const extra = fip(1_000_000 + rep);
      let t = performance.now();
      await nat.applyNatRules({ add: [extra], removeOwners: [fip(rep % fips).owner] });
      change.push(performance.now() - t);
      await nat.applyNatRules({ add: [fip(rep % fips)], removeOwners: [extra.owner] }); // back to `size`
      t = performance.now();
      await runCommand('iptables-save', ['-t', 'nat'], { netns: ns });
      read.push(performance.now() - t);
      t = performance.now();
      await runCommand('iptables-restore', ['--noflush', '-w', '5'], { netns: ns, input: probe('-A') });
      write.push(performance.now() - t);
      await runCommand('iptables-restore', ['--noflush', '-w', '5'], { netns: ns, input: probe('-D') });
    }
    const rules = (await nat.listNatRules()).length;
    const f = (v: number) => v.toFixed(1).padStart(7);
    console.log(`${String(rules).padStart(13)} | ${f(median(change))}          | ${f(p90(change))}       | ${f(median(read))}                 | ${f(median(write))}`);
  }
} finally {
  await labDown(GATEWAY);
}
