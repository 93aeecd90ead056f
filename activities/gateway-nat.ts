// The gateway agent's NAT rules and conntrack. One change is one `iptables-restore --noflush`
// (never a process per rule); what to remove is found by owner tag in one read of the nat table,
// so applying is idempotent and converges from any partial state, with no state of its own.
import { ApplicationFailure } from '@temporalio/common';
import { NatflowError } from '../domain/errors.js';
import type { ConntrackTarget } from '../domain/nat.js';
import { ENTRY_JUMPS, JUMP_CHAINS, RULE_CHAINS, ownerOf, renderNatRule, type NatRule, type RenderContext, type RenderedRule } from '../domain/nat-rules.js';
import { parseCidr, parseIPv4 } from '../domain/ip.js';
import { runCommand } from './exec.js';

export interface NatActivitiesConfig {
  /** Network namespace of the gateway (the local lab); unset inside the gateway pod. */
  netns?: string;
  /** The VPC subnet behind the gateway, for hairpin rules. */
  vpcCidr?: string;
}

export interface TaggedRule extends RenderedRule {
  owner: string;
}

interface NatTable {
  chains: Set<string>;
  /** Every `-A` line, as chain + spec. */
  rules: RenderedRule[];
}

const key = (r: RenderedRule) => `${r.chain} ${r.spec.join(' ')}`;

/** Rejects bad input as a non-retryable failure before anything is run. */
function validated<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof NatflowError) throw ApplicationFailure.nonRetryable(err.message, err.reason);
    throw err;
  }
}

export function createNatActivities(cfg: NatActivitiesConfig) {
  const ctx: RenderContext = { vpcCidr: cfg.vpcCidr };
  const run = (cmd: string, args: string[], input?: string, allowExitCodes?: number[]) => runCommand(cmd, args, { netns: cfg.netns, input, allowExitCodes });

  async function readNat(): Promise<NatTable> {
    const { stdout } = await run('iptables-save', ['-t', 'nat']);
    const chains = new Set<string>();
    const rules: RenderedRule[] = [];
    for (const line of stdout.split('\n')) {
      if (line.startsWith(':')) chains.add(line.slice(1).split(' ')[0]!);
      if (line.startsWith('-A ')) {
        const [, chain, ...spec] = line.split(' ');
        // natflow's comments carry no spaces; iptables-save may still quote them.
        rules.push({ chain: chain!, spec: spec.map((token) => token.replace(/^"(.*)"$/, '$1')) });
      }
    }
    return { chains, rules };
  }

  const restore = (lines: string[]) => run('iptables-restore', ['--noflush', '-w', '5'], ['*nat', ...lines, 'COMMIT', ''].join('\n'));

  return {
    /** natflow's chains and jumps; repeating it changes nothing, and it never flushes a rule chain. */
    async initNatChains(): Promise<void> {
      const table = await readNat();
      // Every chain is declared before any jump to it. Declaring a chain in a --noflush restore
      // empties it: right for the chains of jumps, never done to a chain holding rules.
      const lines = [...RULE_CHAINS.filter((chain) => !table.chains.has(chain)), ...Object.keys(JUMP_CHAINS)].map((chain) => `:${chain} - [0:0]`);
      for (const [chain, targets] of Object.entries(JUMP_CHAINS)) {
        for (const target of targets) lines.push(`-A ${chain} -j ${target}`);
      }
      for (const [builtin, target] of ENTRY_JUMPS) {
        if (!table.rules.some((r) => r.chain === builtin && r.spec.join(' ') === `-j ${target}`)) lines.push(`-A ${builtin} -j ${target}`);
      }
      await restore(lines);
    },

    async applyNatRules(change: { add: NatRule[]; removeOwners: string[]; replaceAll?: boolean }): Promise<{ added: number; removed: number }> {
      const desired = validated(() => change.add.map((rule) => ({ owner: rule.owner, rules: renderNatRule(rule, ctx) })));
      const desiredByOwner = new Map(desired.map((d) => [d.owner, new Set(d.rules.map(key))]));
      const removeOwners = new Set(change.removeOwners);
      const table = await readNat();
      const current = table.rules.flatMap((r) => {
        const owner = ownerOf(r.spec);
        return owner ? [{ ...r, owner }] : [];
      });
      const currentByOwner = new Map<string, Set<string>>();
      for (const r of current) currentByOwner.set(r.owner, (currentByOwner.get(r.owner) ?? new Set()).add(key(r)));
      const sameSet = (a: Set<string> | undefined, b: Set<string>) => !!a && a.size === b.size && [...a].every((k) => b.has(k));
      // An owner whose rules differ at all is rewritten whole: removed by tag, then added.
      const rewrite = new Set([...desiredByOwner].filter(([owner, wanted]) => removeOwners.has(owner) || !sameSet(currentByOwner.get(owner), wanted)).map(([owner]) => owner));
      const remove = current.filter((r) => removeOwners.has(r.owner) || rewrite.has(r.owner) || (change.replaceAll && !desiredByOwner.has(r.owner)));
      const add = desired.filter((d) => rewrite.has(d.owner)).flatMap((d) => d.rules);
      if (remove.length + add.length > 0) {
        await restore([...remove.map((r) => `-D ${r.chain} ${r.spec.join(' ')}`), ...add.map((r) => `-A ${r.chain} ${r.spec.join(' ')}`)]);
      }
      return { added: add.length, removed: remove.length };
    },

    /** natflow-tagged rules in the nat table. */
    async listNatRules(): Promise<TaggedRule[]> {
      return (await readNat()).rules.flatMap((r) => {
        const owner = ownerOf(r.spec);
        return owner ? [{ ...r, owner }] : [];
      });
    },

    /**
     * Deletes the connections a removed rule leaves behind: inbound ones addressed to the EIP
     * (narrowed by protocol and port for DNAT) and outbound ones whose replies come back to it
     * (`-q`, narrowed by source for SNAT). Returns how many entries went.
     */
    async flushConntrack(targets: ConntrackTarget[]): Promise<number> {
      let deleted = 0;
      for (const t of targets) {
        validated(() => {
          parseIPv4(t.eip, 'EIP');
          if (t.internalCidr) parseCidr(t.internalCidr);
        });
        const inbound = t.protocol && t.port ? ['-p', t.protocol, '--orig-port-dst', String(t.port)] : [];
        const outboundSource = t.internalCidr ? ['-s', t.internalCidr] : t.protocol ? ['-p', t.protocol, '-s', t.internalIp!] : [];
        const passes = t.internalCidr ? [['-q', t.eip, ...outboundSource]] : [['-d', t.eip, ...inbound], ['-q', t.eip, ...outboundSource]];
        for (const args of passes) {
          // Exit code 1: nothing matched.
          const { stderr } = await run('conntrack', ['-D', ...args], undefined, [1]);
          deleted += Number(/(\d+) flow entries have been deleted/.exec(stderr)?.[1] ?? 0);
        }
      }
      return deleted;
    },
  };
}
