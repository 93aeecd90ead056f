// The baseline of bench/gateway-layer.ts: a gateway programmed one process per rule, in the style of
// Kube-OVN's nat-gateway.sh (written for this benchmark, not Kube-OVN's code). For every rule it
// first checks whether the rule is already there (`iptables-save -t nat | grep`, two processes
// joined by a pipe), then adds it with one `iptables` process. A FIP is two rules: the DNAT of its
// EIP in EXCLUSIVE_DNAT and the SNAT of its VM in EXCLUSIVE_SNAT, as Kube-OVN lays them out. Each
// command enters the gateway namespace by itself (`ip netns exec`), as a `kubectl exec` into the
// gateway pod would. Only the benchmark's generated addresses reach these commands.
import { spawn } from 'node:child_process';
import { runCommand } from '../activities/exec.js';

export interface PerRuleFip {
  eip: string;
  internalIp: string;
}

/** Kube-OVN's chains and jumps, created once, one `iptables` process each. */
export async function perRuleInit(netns: string): Promise<void> {
  const ipt = (...args: string[]) => runCommand('iptables', ['-t', 'nat', ...args], { netns });
  for (const chain of ['DNAT_FILTER', 'SNAT_FILTER', 'EXCLUSIVE_DNAT', 'EXCLUSIVE_SNAT', 'SHARED_DNAT', 'SHARED_SNAT']) await ipt('-N', chain);
  await ipt('-A', 'PREROUTING', '-j', 'DNAT_FILTER');
  await ipt('-A', 'DNAT_FILTER', '-j', 'EXCLUSIVE_DNAT');
  await ipt('-A', 'DNAT_FILTER', '-j', 'SHARED_DNAT');
  await ipt('-A', 'POSTROUTING', '-j', 'SNAT_FILTER');
  await ipt('-A', 'SNAT_FILTER', '-j', 'EXCLUSIVE_SNAT');
  await ipt('-A', 'SNAT_FILTER', '-j', 'SHARED_SNAT');
}

/** `ip netns exec <ns> iptables-save -t nat | grep -qF -- <line>`: true when the line is in the table. */
function inTable(netns: string, line: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const save = spawn('ip', ['netns', 'exec', netns, 'iptables-save', '-t', 'nat'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const grep = spawn('grep', ['-qF', '--', line], { stdio: ['pipe', 'ignore', 'inherit'] });
    save.stdout.pipe(grep.stdin);
    grep.stdin.on('error', () => {}); // grep -q may exit before reading everything
    save.on('error', reject);
    grep.on('error', reject);
    grep.on('close', (code) => (code === 0 || code === 1 ? resolve(code === 0) : reject(new Error(`grep exited with ${code}`))));
  });
}

/** One rule: checked, then appended by its own process unless it was there. */
async function ensureRule(netns: string, chain: string, spec: string[]): Promise<void> {
  if (await inTable(netns, `-A ${chain} ${spec.join(' ')}`)) return;
  await runCommand('iptables', ['-t', 'nat', '-A', chain, ...spec], { netns });
}

/** A FIP as the per-rule gateway adds it: its DNAT rule, then its SNAT rule. */
export async function perRuleAddFip(netns: string, fip: PerRuleFip): Promise<void> {
  await ensureRule(netns, 'EXCLUSIVE_DNAT', ['-d', `${fip.eip}/32`, '-j', 'DNAT', '--to-destination', fip.internalIp]);
  await ensureRule(netns, 'EXCLUSIVE_SNAT', ['-s', `${fip.internalIp}/32`, '-j', 'SNAT', '--to-source', fip.eip]);
}
