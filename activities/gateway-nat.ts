// The gateway agent's NAT side: natflow's chains in the nat table, the tagged rules of FIPs, DNAT
// and SNAT rules, and conntrack cleanup. One change is one read of the nat table (`iptables-save
// -t nat`) and one atomic `iptables-restore --noflush` (never a process per rule), planned by
// domain/nat-table.ts from what was read, with no state of its own.
import { ApplicationFailure } from '@temporalio/common';
import { NatflowError } from '../domain/errors.js';
import { natChainLayout, ownerOf, type ConntrackTarget, type NatChainLayout, type NatRule, type RenderContext } from '../domain/nat-rules.js';
import { conntrackFilters, parseNatTable, planChange, planInit, planRemovals, removedConntrackTargets, validateChange, validateConntrackTargets, type NatTable } from '../domain/nat-table.js';
import { spawnRunner, type CommandRunner } from './exec.js';

export interface NatActivitiesConfig {
  /** Network namespace of the gateway (the local lab); unset when the agent runs inside it (a pod). */
  netns?: string;
  /** The gateway's external interface (SNAT rules leave through it); `net1` by default. */
  externalInterface?: string;
  /** The gateway's VPC-side interface (hairpin); `eth0` by default. */
  vpcInterface?: string;
  /** Runs iptables-save, iptables-restore and conntrack; real processes by default. */
  runner?: CommandRunner;
}

export interface NatChange {
  add: NatRule[];
  removeOwners: string[];
  /** Also remove every tagged rule whose owner is not in `add`. */
  replaceAll?: boolean;
  /** Then flush the conntrack entries of every rule removed, as read from the rule itself. */
  flushConntrack?: boolean;
}

export interface TaggedRule {
  chain: string;
  owner: string;
  spec: string[];
}

export interface NatActivities {
  /** Creates natflow's chains, static rules and jumps; changes nothing when they are already right. */
  initNatChains(): Promise<void>;
  /**
   * One change, as one iptables-restore. For an owner in `add`, its tagged rules become exactly the
   * rendered ones (an owner also in `removeOwners` is simply replaced); the tagged rules of the
   * other owners in `removeOwners` go, and with `replaceAll` those of every owner not in `add`.
   * Counts are rules. Also creates natflow's chains if they are missing (a restarted gateway).
   * With `flushConntrack`, the removed rules' conntrack entries go too, once the rules are gone
   * (`flushed`: how many): the only way to flush for a rule whose owner nobody remembers.
   */
  applyNatRules(change: NatChange): Promise<{ added: number; removed: number; flushed?: number }>;
  /** The natflow-tagged rules currently in the nat table, wherever they are. */
  listNatRules(): Promise<TaggedRule[]>;
  /** Deletes the conntrack entries that removed rules leave behind; returns how many went. */
  flushConntrack(targets: ConntrackTarget[]): Promise<number>;
}

/** Bad input becomes one non-retryable failure typed by its reason (InvalidSpec), before anything runs. */
function asFailure<T>(validate: () => T): T {
  try {
    return validate();
  } catch (err) {
    if (err instanceof NatflowError) throw ApplicationFailure.nonRetryable(err.message, err.reason);
    throw err;
  }
}

// One change at a time per gateway within this process: two concurrent read-then-write changes
// could otherwise both append the same rule, or both delete one (the second restore then fails).
const queues = new Map<string, Promise<unknown>>();
function serialized<T>(gateway: string, fn: () => Promise<T>): Promise<T> {
  const previous = queues.get(gateway) ?? Promise.resolve();
  const next = previous.then(fn, fn);
  const settled = next.then(
    () => undefined,
    () => undefined,
  );
  queues.set(gateway, settled);
  void settled.then(() => {
    if (queues.get(gateway) === settled) queues.delete(gateway);
  });
  return next;
}

export function createNatActivities(cfg: NatActivitiesConfig = {}): NatActivities {
  const ctx: RenderContext = { externalInterface: cfg.externalInterface, vpcInterface: cfg.vpcInterface };
  let layout: NatChainLayout;
  try {
    layout = natChainLayout(ctx);
  } catch (err) {
    throw new Error(`invalid NAT activities configuration: ${(err as Error).message}`);
  }
  const gateway = cfg.netns ?? '';
  const runner = cfg.runner ?? spawnRunner;
  const run = (cmd: string, args: string[], input?: string, allowExitCodes?: number[]) => runner.run(cmd, args, { netns: cfg.netns, input, allowExitCodes });

  async function readNat(): Promise<NatTable> {
    return parseNatTable((await run('iptables-save', ['-t', 'nat'])).stdout);
  }

  async function restore(lines: string[]): Promise<void> {
    const input = ['*nat', ...lines, 'COMMIT', ''].join('\n');
    try {
      await run('iptables-restore', ['--noflush', '-w', '10'], input);
    } catch (err) {
      // "line N failed": name the line, counted from `*nat` as line 1.
      const n = Number(/line (\d+) failed/.exec((err as Error).message)?.[1]);
      const line = Number.isInteger(n) ? lines[n - 2] : undefined;
      throw line ? new Error(`${(err as Error).message} [line ${n}: ${line}]`, { cause: err }) : err;
    }
  }

  async function flush(targets: ConntrackTarget[]): Promise<number> {
    let deleted = 0;
    for (const target of targets) {
      for (const filter of conntrackFilters(target)) {
        // Exit code 1 with "0 flow entries have been deleted" is "nothing matched", not a failure.
        const { code, stderr } = await run('conntrack', ['-D', ...filter], undefined, [1]);
        const count = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(stderr);
        if (code !== 0 && count?.[1] !== '0') throw new Error(`conntrack -D ${filter.join(' ')} exited with code ${code}: ${stderr.trim()}`);
        deleted += Number(count?.[1] ?? 0);
      }
    }
    return deleted;
  }

  return {
    async initNatChains() {
      return serialized(gateway, async () => {
        const init = planInit(await readNat(), layout);
        const lines = [...init.declare, ...init.flush, ...init.rules];
        if (lines.length > 0) await restore(lines);
      });
    },

    async applyNatRules(change) {
      // Everything is validated before the first command, so bad input changes nothing.
      const valid = asFailure(() => validateChange(change, ctx));
      const { added, removed, targets } = await serialized(gateway, async () => {
        const table = await readNat();
        const plan = planChange(table, planInit(table, layout), valid.desired, valid);
        if (plan.lines.length > 0) await restore(plan.lines);
        return { ...plan, targets: valid.flushConntrack ? removedConntrackTargets(planRemovals(table, valid.desired, valid).removed) : [] };
      });
      // Only once the rules are gone, or new packets would make new entries.
      return valid.flushConntrack ? { added, removed, flushed: await flush(targets) } : { added, removed };
    },

    async listNatRules() {
      return (await readNat()).rules.flatMap((r) => {
        const owner = ownerOf(r.spec);
        return owner ? [{ chain: r.chain, owner, spec: r.spec }] : [];
      });
    },

    async flushConntrack(targets) {
      return flush(asFailure(() => validateConntrackTargets(targets)));
    },
  };
}
