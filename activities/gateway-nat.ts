// The gateway agent's NAT side: natflow's chains in the nat table, the tagged rules of FIPs, DNAT
// and SNAT rules, and conntrack cleanup. One change is one read of the nat table (`iptables-save
// -t nat`) and one atomic `iptables-restore --noflush` (never a process per rule). What to delete is
// found by owner tag in what was read, so applying is idempotent and converges from any partial
// state, with no state of its own. The chain layout is in domain/nat-rules.ts.
//
// iptables-restore --noflush facts this relies on (iptables 1.8.9, nf_tables and legacy alike):
// - declaring a chain that exists (`:CHAIN - [0:0]`) EMPTIES it: only missing chains are declared;
// - `-D <spec>` of a rule that is not there fails the whole restore, and nothing is applied: deletes
//   are only ever of rules just read (a concurrent writer makes it fail; the retry re-reads);
// - `-D` compares everything, comment and `--random-fully` included; two identical `-D` lines in one
//   restore delete two identical rules.
import { ApplicationFailure } from '@temporalio/common';
import { NatflowError, Reason } from '../domain/errors.js';
import {
  natChainLayout,
  ownerOf,
  renderNatRule,
  validateIPv4,
  validateIPv4Cidr,
  validateOwner,
  validatePort,
  validateProtocol,
  type ConntrackTarget,
  type NatChainLayout,
  type NatRule,
  type RenderContext,
} from '../domain/nat-rules.js';
import { runCommand } from './exec.js';

export interface NatActivitiesConfig {
  /** Network namespace of the gateway (the local lab); unset when the agent runs inside it (a pod). */
  netns?: string;
  /** The gateway's external interface (SNAT rules leave through it); `net1` by default. */
  externalInterface?: string;
  /** The gateway's VPC-side interface (hairpin); `eth0` by default. */
  vpcInterface?: string;
  /** Told how long each external command took (benchmarks, logs). */
  onCommand?: (command: 'iptables-save' | 'iptables-restore' | 'conntrack', ms: number) => void;
}

export interface NatChange {
  add: NatRule[];
  removeOwners: string[];
  /** Also remove every tagged rule whose owner is not in `add`. */
  replaceAll?: boolean;
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
   */
  applyNatRules(change: NatChange): Promise<{ added: number; removed: number }>;
  /** The natflow-tagged rules currently in the nat table, wherever they are. */
  listNatRules(): Promise<TaggedRule[]>;
  /** Deletes the conntrack entries that removed rules leave behind; returns how many went. */
  flushConntrack(targets: ConntrackTarget[]): Promise<number>;
}

// --- reading iptables-save and writing iptables-restore --------------------------------------

export interface NatTable {
  chains: Set<string>;
  /** Every `-A` line, in order. */
  rules: { chain: string; spec: string[] }[];
}

/** Splits one iptables-save line into its arguments, undoing iptables-save's quoting. */
export function tokenizeSaveLine(line: string): string[] {
  // Fast path (every natflow rule): no quote, or only simple quoted words like "natflow:<uid>".
  const words = line.split(' ');
  if (words.every((w) => !w.includes('"') || /^"[^"\\]*"$/.test(w)) && !line.includes('\t') && !line.includes('  ')) {
    return words.filter((w) => w !== '').map((w) => (w.startsWith('"') ? w.slice(1, -1) : w));
  }
  const tokens: string[] = [];
  let current = '';
  let started = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) current += line[++i];
      else if (c === '"') quoted = false;
      else current += c;
    } else if (c === '"') {
      quoted = true;
      started = true;
    } else if (c === ' ' || c === '\t') {
      if (started) tokens.push(current);
      current = '';
      started = false;
    } else {
      current += c;
      started = true;
    }
  }
  if (started) tokens.push(current);
  return tokens;
}

export function parseNatTable(save: string): NatTable {
  const chains = new Set<string>();
  const rules: NatTable['rules'] = [];
  for (const line of save.split('\n')) {
    if (line.startsWith(':')) chains.add(line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-A ')) {
      const [, chain, ...spec] = tokenizeSaveLine(line);
      if (chain) rules.push({ chain, spec });
    }
  }
  return { chains, rules };
}

/** One iptables-restore line; an argument that needs it is quoted as iptables-save would. */
export function restoreLine(op: '-A' | '-D', chain: string, spec: readonly string[]): string {
  const quote = (arg: string) => (/^[^\s"'\\]+$/.test(arg) ? arg : `"${arg.replace(/[\\"]/g, (m) => `\\${m}`)}"`);
  return [op, chain, ...spec].map(quote).join(' ');
}

const ruleKey = (chain: string, spec: readonly string[]) => `${chain}\u0000${spec.join('\u0000')}`;

// --- planning (pure) -------------------------------------------------------------------------

export interface InitPlan {
  /** `:CHAIN - [0:0]` for every missing chain. */
  declare: string[];
  /** `-F CHAIN` for every existing static chain whose content is not exactly the expected one. */
  flush: string[];
  /** The static rules of declared or flushed chains, and fixes of the built-in chains' jumps. */
  rules: string[];
  flushed: Set<string>;
}

/** What makes natflow's chains exactly the layout; all empty when they already are. */
export function planInit(table: NatTable, layout: NatChainLayout): InitPlan {
  const plan: InitPlan = { declare: [], flush: [], rules: [], flushed: new Set() };
  for (const chain of layout.chains) {
    if (!table.chains.has(chain)) plan.declare.push(`:${chain} - [0:0]`);
  }
  for (const [chain, expected] of Object.entries(layout.staticRules)) {
    const current = table.rules.filter((r) => r.chain === chain).map((r) => ruleKey(chain, r.spec));
    const wanted = expected.map((spec) => ruleKey(chain, spec));
    const exists = table.chains.has(chain);
    if (exists && current.length === wanted.length && current.every((k, i) => k === wanted[i])) continue;
    if (exists) {
      plan.flush.push(`-F ${chain}`);
      plan.flushed.add(chain);
    }
    for (const spec of expected) plan.rules.push(restoreLine('-A', chain, spec));
  }
  // Exactly one jump from each built-in chain: a missing one is appended, extra ones deleted.
  for (const { chain, spec } of layout.entryJumps) {
    const count = table.rules.filter((r) => r.chain === chain && ruleKey(chain, r.spec) === ruleKey(chain, spec)).length;
    if (count === 0) plan.rules.push(restoreLine('-A', chain, spec));
    for (let i = 1; i < count; i++) plan.rules.push(restoreLine('-D', chain, spec));
  }
  return plan;
}

export interface DesiredRule {
  owner: string;
  chain: string;
  spec: string[];
}

/** The restore lines of one change (init fixes included), and how many tagged rules it adds and removes. */
export function planChange(
  table: NatTable,
  init: InitPlan,
  desired: DesiredRule[],
  change: { removeOwners: string[]; replaceAll?: boolean },
): { lines: string[]; added: number; removed: number } {
  const addOwners = new Set(desired.map((d) => d.owner));
  const removeOwners = new Set(change.removeOwners);
  const wanted = new Map(desired.map((d) => [ruleKey(d.chain, d.spec), d]));
  const present = new Set<string>();
  const deletes: string[] = [];
  let removed = 0;
  for (const rule of table.rules) {
    const owner = ownerOf(rule.spec);
    if (!owner) continue;
    const key = ruleKey(rule.chain, rule.spec);
    // An owner being added keeps exactly its desired rules, once each (a copy is a leftover too).
    const drop = addOwners.has(owner) ? !wanted.has(key) || present.has(key) : removeOwners.has(owner) || change.replaceAll === true;
    if (!drop) {
      if (wanted.has(key)) present.add(key);
      continue;
    }
    removed++;
    // A tagged rule in a static chain goes with the flush of that chain.
    if (!init.flushed.has(rule.chain)) deletes.push(restoreLine('-D', rule.chain, rule.spec));
  }
  const adds = [...wanted].filter(([key]) => !present.has(key)).map(([, d]) => restoreLine('-A', d.chain, d.spec));
  return { lines: [...init.declare, ...init.flush, ...deletes, ...init.rules, ...adds], added: adds.length, removed };
}

// --- validation ------------------------------------------------------------------------------

/** Bad input becomes one non-retryable InvalidSpec failure naming every problem, before anything runs. */
function invalid(problems: string[]): ApplicationFailure {
  return ApplicationFailure.nonRetryable(problems.join('; '), Reason.InvalidSpec);
}

function collect<T>(items: unknown, what: string, check: (item: unknown) => T, problems: string[]): T[] {
  if (!Array.isArray(items)) {
    problems.push(`${what} must be an array`);
    return [];
  }
  const out: T[] = [];
  for (const item of items) {
    try {
      out.push(check(item));
    } catch (err) {
      if (!(err instanceof NatflowError)) throw err;
      problems.push(err.message);
    }
  }
  return out;
}

function validateChange(change: unknown, ctx: RenderContext): { desired: DesiredRule[]; removeOwners: string[]; replaceAll: boolean } {
  if (!change || typeof change !== 'object') throw invalid(['a NAT change must be an object { add, removeOwners, replaceAll? }']);
  const c = change as Record<string, unknown>;
  const problems: string[] = [];
  const desired = collect(c.add, 'add', (rule) => renderNatRule(rule as NatRule, ctx), problems)
    .flat()
    .map((r) => ({ owner: ownerOf(r.spec)!, chain: r.chain, spec: r.spec }));
  const removeOwners = collect(c.removeOwners, 'removeOwners', (owner) => validateOwner(owner, 'removeOwners entry'), problems);
  if (c.replaceAll !== undefined && typeof c.replaceAll !== 'boolean') problems.push(`replaceAll ${JSON.stringify(c.replaceAll)} must be true or false`);
  if (problems.length > 0) throw invalid(problems);
  return { desired, removeOwners, replaceAll: c.replaceAll === true };
}

function validateTarget(target: unknown): ConntrackTarget {
  if (!target || typeof target !== 'object') throw new NatflowError(Reason.InvalidSpec, `conntrack target ${JSON.stringify(target)} is not an object`);
  const t = target as Record<string, unknown>;
  const eip = validateIPv4(t.eip, 'conntrack target eip');
  const where = `conntrack target ${eip}:`;
  const out: ConntrackTarget = { eip };
  if (t.internalIp !== undefined) out.internalIp = validateIPv4(t.internalIp, `${where} internalIp`);
  if (t.protocol !== undefined) out.protocol = validateProtocol(t.protocol, `${where} protocol`);
  if (t.port !== undefined) {
    out.port = validatePort(t.port, `${where} port`);
    if (!out.protocol) throw new NatflowError(Reason.InvalidSpec, `${where} a port needs a protocol`);
  }
  if (t.internalCidr !== undefined) out.internalCidr = validateIPv4Cidr(t.internalCidr, `${where} internalCidr`);
  return out;
}

/**
 * The `conntrack -D` filters for one target:
 * - SNAT (internalCidr): outbound only, `-q <eip> -s <cidr>` (replies come back to the EIP, the
 *   connection started in the CIDR). Never `-d <eip>`: a DNAT rule may share the EIP.
 * - DNAT (protocol, port): inbound only, `-d <eip> -p <proto> --dport <port>`. Never `-q <eip>`:
 *   outbound connections on a shared EIP belong to its SNAT rule.
 * - FIP: everything to the EIP (`-d <eip>`) and everything leaving as it (`-q <eip>`, narrowed to
 *   the VM when known).
 */
export function conntrackFilters(t: ConntrackTarget): string[][] {
  if (t.internalCidr) {
    const source = t.internalCidr.endsWith('/0') ? [] : ['-s', t.internalCidr];
    return [['-q', t.eip, ...source]];
  }
  if (t.protocol) return [['-d', t.eip, '-p', t.protocol, ...(t.port ? ['--dport', String(t.port)] : [])]];
  return [
    ['-d', t.eip],
    ['-q', t.eip, ...(t.internalIp ? ['-s', t.internalIp] : [])],
  ];
}

// --- the activities --------------------------------------------------------------------------

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

  async function run(command: 'iptables-save' | 'iptables-restore' | 'conntrack', args: string[], input?: string, allowExitCodes?: number[]) {
    const started = performance.now();
    try {
      return await runCommand(command, args, { netns: cfg.netns, input, allowExitCodes });
    } finally {
      cfg.onCommand?.(command, performance.now() - started);
    }
  }

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
      const valid = validateChange(change, ctx);
      return serialized(gateway, async () => {
        const table = await readNat();
        const plan = planChange(table, planInit(table, layout), valid.desired, valid);
        if (plan.lines.length > 0) await restore(plan.lines);
        return { added: plan.added, removed: plan.removed };
      });
    },

    async listNatRules() {
      return (await readNat()).rules.flatMap((r) => {
        const owner = ownerOf(r.spec);
        return owner ? [{ chain: r.chain, owner, spec: r.spec }] : [];
      });
    },

    async flushConntrack(targets) {
      const problems: string[] = [];
      const valid = collect(targets, 'conntrack targets', validateTarget, problems);
      if (problems.length > 0) throw invalid(problems);
      let deleted = 0;
      for (const target of valid) {
        for (const filter of conntrackFilters(target)) {
          // Exit code 1 with "0 flow entries have been deleted" is "nothing matched", not a failure.
          const { code, stderr } = await run('conntrack', ['-D', ...filter], undefined, [1]);
          const count = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(stderr);
          if (code !== 0 && count?.[1] !== '0') throw new Error(`conntrack -D ${filter.join(' ')} exited with code ${code}: ${stderr.trim()}`);
          deleted += Number(count?.[1] ?? 0);
        }
      }
      return deleted;
    },
  };
}
