// The gateway agent's NAT side: natflow's chains in the nat table, the tagged rules of FIPs, DNAT
// and SNAT rules, and conntrack cleanup. One change is one read of the nat table (`iptables-save
// -t nat`) and one atomic `iptables-restore --noflush` (never a process per rule), planned by
// domain/nat-table.ts from what was read.
//
// A remembering instance (`remember`, what the gateway agent runs) keeps the table it last read and
// what it wrote since (NatTableModel), and plans a change of new owners from that, with no read:
// `iptables-save` of 10,000 rules costs ~40 ms, the restore of one change ~10 ms. Memory is only
// ever trusted inside a restore that checks it: each restore replaces the generation rule it
// remembers (GENERATION_CHAIN), so it fails and applies nothing if another agent wrote or the table
// was flushed or lost since, and it deletes only rules it remembers, so it fails if someone else
// removed one. A failed restore drops the memory and the change is planned again from a read. It
// reads anyway when in doubt: no memory yet, memory older than `rememberForMs` (bounds what a
// hand edit can hide, e.g. a tagged copy or a damaged static chain), a full restore
// (`replaceAll`), and any owner of `add` that it remembers rules of (a re-assertion or a replaced
// rule: its rules must be exactly the desired ones, whatever happened to them meanwhile).
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { NatflowError } from '../domain/errors.js';
import { natChainLayout, ownerOf, type ConntrackTarget, type NatRule, type RenderContext } from '../domain/nat-rules.js';
import {
  conntrackDestinations,
  conntrackFilters,
  GENERATION_CHAIN,
  gatewayLayout,
  generationLines,
  generationOf,
  NatTableModel,
  natAddresses,
  NO_INIT,
  parseNatTable,
  planChange,
  planInit,
  planRemovals,
  removedConntrackTargets,
  restoreLine,
  ruleKey,
  validateChange,
  validateConntrackTargets,
  type NatTable,
  type TableLayout,
} from '../domain/nat-table.js';
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
  /** Plan changes from the table kept in memory when it can be checked (see above); off by default. */
  remember?: boolean;
  /** How long memory is trusted after a full read; 60 s by default. */
  rememberForMs?: number;
}

export const DEFAULT_REMEMBER_FOR_MS = 60_000;
/** natConntrack lists the table only up to this many entries (~30 MB of text); beyond, it says so (null). */
export const MAX_CONNTRACK_LISTED = 100_000;
/** Filters a flush runs without listing the table first: a listing costs two processes. */
const LIST_FIRST_ABOVE = 2;

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
  /** Every rule in natflow's chains but their static ones (jumps, mark, hairpin): the tagged rules and anything someone else added. */
  listChainRules(): Promise<{ chain: string; spec: string[]; owner: string | null }[]>;
  /** Deletes these untagged rules where they still are, in one restore; returns how many went. */
  removeUntaggedRules(rules: { chain: string; spec: string[] }[]): Promise<number>;
  /** Translated conntrack entries, counted by the address on the EIP side (a DNAT's original destination, an SNAT's reply destination); null above MAX_CONNTRACK_LISTED entries. */
  natConntrack(): Promise<Record<string, number> | null>;
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

type ValidChange = ReturnType<typeof validateChange>;
type Applied = { added: number; removed: number; targets: ConntrackTarget[] };

export function createNatActivities(cfg: NatActivitiesConfig = {}): NatActivities {
  const ctx: RenderContext = { externalInterface: cfg.externalInterface, vpcInterface: cfg.vpcInterface };
  let layout: TableLayout;
  try {
    layout = gatewayLayout(natChainLayout(ctx));
  } catch (err) {
    throw new Error(`invalid NAT activities configuration: ${(err as Error).message}`);
  }
  const gateway = cfg.netns ?? '';
  const runner = cfg.runner ?? spawnRunner;
  const run = (cmd: string, args: string[], input?: string, allowExitCodes?: number[]) => runner.run(cmd, args, { netns: cfg.netns, input, allowExitCodes });
  const rememberForMs = cfg.rememberForMs ?? DEFAULT_REMEMBER_FOR_MS;
  /** What this instance last read, changed by what it restored since; null when it must read. */
  let memory: { model: NatTableModel; readAt: number } | null = null;
  const nextGeneration = () => randomBytes(8).toString('hex');
  const ownChains = new Set(layout.chains);
  const staticRules = new Set([...Object.entries(layout.staticRules).flatMap(([chain, specs]) => specs.map((spec) => ruleKey(chain, spec))), ...layout.entryJumps.map((j) => ruleKey(j.chain, j.spec))]);

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

  /** The destinations in the conntrack table (see conntrackDestinations), or null when it is too big to list. */
  async function listedDestinations(): Promise<Set<string> | null> {
    const total = Number((await run('conntrack', ['-C'])).stdout.trim());
    if (!(total <= MAX_CONNTRACK_LISTED)) return null;
    return conntrackDestinations((await run('conntrack', ['-L'], undefined, [1])).stdout);
  }

  /**
   * Deletes the removed rules' entries: a `conntrack -D` per filter (~16 ms each: a burst of 1,000
   * FIP deletes spent half a minute on them), so past a few filters the table is listed first (two
   * processes) and only the EIPs that appear in it are flushed. The rules are gone by now, so no
   * entry for them can appear after the listing.
   */
  async function flush(targets: ConntrackTarget[]): Promise<number> {
    const listed = targets.flatMap(conntrackFilters).length > LIST_FIRST_ABOVE ? await listedDestinations() : null;
    let deleted = 0;
    for (const target of targets) {
      if (listed && !listed.has(target.eip)) continue;
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

  const removedTargets = (table: NatTable, valid: ValidChange) => (valid.flushConntrack ? removedConntrackTargets(planRemovals(table, valid.desired, valid).removed) : []);

  /** One change planned from a fresh read (init fixes included); a remembering instance remembers the result. */
  async function applyFromRead(valid: ValidChange): Promise<Applied> {
    memory = null;
    const readAt = Date.now();
    const table = await readNat();
    const plan = planChange(table, planInit(table, layout), valid.desired, valid);
    let lines = plan.lines;
    // Any write replaces the generation when there is one, so that a remembering agent on the same
    // gateway sees it; a remembering instance also gives a table without one its first.
    if (cfg.remember || table.chains.has(GENERATION_CHAIN)) {
      const current = table.chains.has(GENERATION_CHAIN) ? table.rules.filter((r) => r.chain === GENERATION_CHAIN).map((r) => r.spec) : null;
      if (lines.length > 0 || (cfg.remember && generationOf(current) === null)) lines = [...generationLines(current, nextGeneration()), ...lines];
    }
    if (lines.length > 0) await restore(lines);
    if (cfg.remember) {
      const model = new NatTableModel(table);
      model.apply(lines);
      memory = { model, readAt };
    }
    return { added: plan.added, removed: plan.removed, targets: removedTargets(table, valid) };
  }

  /** One change planned from memory, or null when in doubt or when its restore was refused (memory dropped, nothing applied). */
  async function applyFromMemory(valid: ValidChange): Promise<Applied | null> {
    if (!memory || Date.now() - memory.readAt > rememberForMs || valid.replaceAll) return null;
    const { model, readAt } = memory;
    const generation = model.chainRules(GENERATION_CHAIN);
    if (generationOf(generation) === null || valid.desired.some((d) => model.hasRules(d.owner))) return null;
    // Only the owners named: nothing else can be deleted or kept by this change.
    const table: NatTable = { chains: model.chains, rules: model.rulesOf(new Set([...valid.desired.map((d) => d.owner), ...valid.removeOwners])) };
    const plan = planChange(table, NO_INIT, valid.desired, valid);
    const lines = [...generationLines(generation, nextGeneration()), ...plan.lines];
    memory = null; // until the restore is known to have applied
    try {
      await restore(lines);
    } catch {
      return null; // someone else changed the table (or it is gone): read it
    }
    model.apply(lines);
    memory = { model, readAt };
    return { added: plan.added, removed: plan.removed, targets: removedTargets(table, valid) };
  }

  return {
    async initNatChains() {
      await serialized(gateway, () => applyFromRead({ desired: [], removeOwners: [], replaceAll: false, flushConntrack: false }));
    },

    async applyNatRules(change) {
      // Everything is validated before the first command, so bad input changes nothing.
      const valid = asFailure(() => validateChange(change, ctx));
      const { added, removed, targets } = await serialized(gateway, async () => (cfg.remember && (await applyFromMemory(valid))) || applyFromRead(valid));
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

    async listChainRules() {
      const table = await readNat();
      return table.rules.filter((r) => ownChains.has(r.chain) && !staticRules.has(ruleKey(r.chain, r.spec))).map((r) => ({ ...r, owner: ownerOf(r.spec) }));
    },

    async removeUntaggedRules(rules) {
      return serialized(gateway, async () => {
        memory = null; // the next change reads the table again
        const table = await readNat();
        const present = new Set(table.rules.map((r) => ruleKey(r.chain, r.spec)));
        const gone = rules.filter((r) => ownChains.has(r.chain) && ownerOf(r.spec) === null && !staticRules.has(ruleKey(r.chain, r.spec)) && present.has(ruleKey(r.chain, r.spec)));
        if (gone.length > 0) await restore(gone.map((r) => restoreLine('-D', r.chain, r.spec)));
        return gone.length;
      });
    },

    async natConntrack() {
      // Listed only when it is not huge: a busy gateway's millions of entries would take the agent's time and memory.
      const total = Number((await run('conntrack', ['-C'])).stdout.trim());
      if (!(total <= MAX_CONNTRACK_LISTED)) return null;
      const counts: Record<string, number> = {};
      const { stdout } = await run('conntrack', ['-L'], undefined, [1]);
      for (const address of natAddresses(stdout)) counts[address] = (counts[address] ?? 0) + 1;
      return counts;
    },
  };
}
