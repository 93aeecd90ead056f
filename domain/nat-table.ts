// Planning a change of the gateway's nat table, pure: from what `iptables-save -t nat` printed and
// what is desired, the lines of one `iptables-restore --noflush`. What to delete is found by owner
// tag in what was read, so a plan is idempotent and converges from any partial state. The gateway
// agent (activities/gateway-nat.ts) runs the read and the restore; the chain layout and the rules
// are in domain/nat-rules.ts.
//
// Buckets: the three chains that hold one rule per FIP or DNAT rule (EXCLUSIVE_DNAT, SHARED_DNAT,
// EXCLUSIVE_SNAT) each jump to BUCKETS sub-chains (`EXCLUSIVE_DNAT_00` … `_63`), and an owner's rule
// goes to the sub-chain its owner hashes to. iptables-nft (1.8.9) fetches the rules of every chain
// a restore touches once it deletes anything (a delete in a 5,000-rule chain costs as much as
// reading the whole table), and of no other chain: with buckets a change touches chains of ~N/64
// rules, so its cost no longer grows with the gateway's size. Untagged rules in the parent chains
// (Kube-OVN's) are left alone; a tagged rule outside its bucket (an older layout) is a leftover
// that the next full plan of its owner moves.
//
// iptables-restore --noflush facts this relies on (iptables 1.8.9, nf_tables and legacy alike):
// - declaring a chain that exists (`:CHAIN - [0:0]`) EMPTIES it: only missing chains are declared;
// - `-D <spec>` of a rule that is not there fails the whole restore, and nothing is applied: deletes
//   are only ever of rules just read (a concurrent writer makes it fail; the retry re-reads);
// - `-D` compares everything, comment and `--random-fully` included; two identical `-D` lines in one
//   restore delete two identical rules.
import { NatflowError, Reason } from './errors.js';
import {
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
} from './nat-rules.js';

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

export const ruleKey = (chain: string, spec: readonly string[]) => `${chain}\u0000${spec.join('\u0000')}`;

// --- layout: natflow's chains with the buckets of the large ones --------------------------------

/** The chains that get one rule per FIP or DNAT rule, each spread over BUCKETS sub-chains. */
export const BUCKETED_CHAINS: readonly string[] = ['EXCLUSIVE_DNAT', 'SHARED_DNAT', 'EXCLUSIVE_SNAT'];
/** 64: ~80 rules a bucket at 10,000 rules, and 192 jumps, which only a connection's first packet walks. */
export const BUCKETS = 64;
export const bucketChain = (chain: string, bucket: number) => `${chain}_${String(bucket).padStart(2, '0')}`;
const bucketsOf = (chain: string) => Array.from({ length: BUCKETS }, (_, b) => bucketChain(chain, b));

/** An owner's bucket: FNV-1a of its uid, so every agent finds an owner's rules in the same chains. */
export function bucketOf(owner: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < owner.length; i++) hash = Math.imul(hash ^ owner.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % BUCKETS;
}

/** The chain an owner's rule rendered for `chain` goes to on the gateway. */
export function placedChain(chain: string, owner: string): string {
  return BUCKETED_CHAINS.includes(chain) ? bucketChain(chain, bucketOf(owner)) : chain;
}

/** The chain a rule found in `chain` was rendered for (a bucket's parent). */
export function renderedChain(chain: string): string {
  const bucket = /^(.+)_(\d\d)$/.exec(chain);
  return bucket && BUCKETED_CHAINS.includes(bucket[1]!) && Number(bucket[2]) < BUCKETS ? bucket[1]! : chain;
}

/** natflow's chains as planInit makes them. */
export interface TableLayout {
  chains: readonly string[];
  /** The full, ordered content of each static chain. */
  staticRules: Record<string, string[][]>;
  /** Jumps that must be in a chain exactly once, whatever else it holds (appended when missing). */
  entryJumps: { chain: string; spec: string[] }[];
}

/** The rendering's layout plus the buckets: each bucketed chain jumps once to each of its buckets. */
export function gatewayLayout(base: NatChainLayout): TableLayout {
  return {
    chains: base.chains.flatMap((c) => (BUCKETED_CHAINS.includes(c) ? [c, ...bucketsOf(c)] : [c])),
    staticRules: base.staticRules,
    entryJumps: [...base.entryJumps, ...BUCKETED_CHAINS.flatMap((chain) => bucketsOf(chain).map((b) => ({ chain, spec: ['-j', b] })))],
  };
}

// --- planning --------------------------------------------------------------------------------

export interface InitPlan {
  /** `:CHAIN - [0:0]` for every missing chain. */
  declare: string[];
  /** `-F CHAIN` for every existing static chain whose content is not exactly the expected one. */
  flush: string[];
  /** The static rules of declared or flushed chains, and fixes of the entry jumps. */
  rules: string[];
  flushed: Set<string>;
}

/** A table already laid out needs nothing. */
export const NO_INIT: InitPlan = Object.freeze({ declare: [], flush: [], rules: [], flushed: new Set<string>() });

/** What makes natflow's chains exactly the layout; all empty when they already are. */
export function planInit(table: NatTable, layout: TableLayout): InitPlan {
  const plan: InitPlan = { declare: [], flush: [], rules: [], flushed: new Set() };
  // One pass over the table (it may hold 10,000 rules): each chain's rules, and how often each rule is there.
  const byChain = new Map<string, string[]>();
  const counts = new Map<string, number>();
  for (const r of table.rules) {
    const key = ruleKey(r.chain, r.spec);
    if (!byChain.has(r.chain)) byChain.set(r.chain, []);
    byChain.get(r.chain)!.push(key);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  for (const chain of layout.chains) {
    if (!table.chains.has(chain)) plan.declare.push(`:${chain} - [0:0]`);
  }
  for (const [chain, expected] of Object.entries(layout.staticRules)) {
    const current = byChain.get(chain) ?? [];
    const wanted = expected.map((spec) => ruleKey(chain, spec));
    const exists = table.chains.has(chain);
    if (exists && current.length === wanted.length && current.every((k, i) => k === wanted[i])) continue;
    if (exists) {
      plan.flush.push(`-F ${chain}`);
      plan.flushed.add(chain);
    }
    for (const spec of expected) plan.rules.push(restoreLine('-A', chain, spec));
  }
  // Exactly one of each entry jump: a missing one is appended, extra ones deleted.
  for (const { chain, spec } of layout.entryJumps) {
    const count = counts.get(ruleKey(chain, spec)) ?? 0;
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

/** What a change does to the tagged rules read: the ones it deletes, and the desired ones already there. */
export function planRemovals(
  table: NatTable,
  desired: DesiredRule[],
  change: { removeOwners: string[]; replaceAll?: boolean },
): { removed: NatTable['rules']; present: Set<string> } {
  const addOwners = new Set(desired.map((d) => d.owner));
  const removeOwners = new Set(change.removeOwners);
  const wanted = new Set(desired.map((d) => ruleKey(d.chain, d.spec)));
  const present = new Set<string>();
  const removed: NatTable['rules'] = [];
  for (const rule of table.rules) {
    const owner = ownerOf(rule.spec);
    if (!owner) continue;
    const key = ruleKey(rule.chain, rule.spec);
    // An owner being added keeps exactly its desired rules, once each (a copy is a leftover too).
    const drop = addOwners.has(owner) ? !wanted.has(key) || present.has(key) : removeOwners.has(owner) || change.replaceAll === true;
    if (drop) removed.push(rule);
    else if (wanted.has(key)) present.add(key);
  }
  return { removed, present };
}

/** The restore lines of one change (init fixes included), and how many tagged rules it adds and removes. */
export function planChange(
  table: NatTable,
  init: InitPlan,
  desired: DesiredRule[],
  change: { removeOwners: string[]; replaceAll?: boolean },
): { lines: string[]; added: number; removed: number } {
  const { removed, present } = planRemovals(table, desired, change);
  // A tagged rule in a static chain goes with the flush of that chain.
  const deletes = removed.filter((r) => !init.flushed.has(r.chain)).map((r) => restoreLine('-D', r.chain, r.spec));
  const wanted = new Map(desired.map((d) => [ruleKey(d.chain, d.spec), d]));
  const adds = [...wanted].filter(([key]) => !present.has(key)).map(([, d]) => restoreLine('-A', d.chain, d.spec));
  return { lines: [...init.declare, ...init.flush, ...deletes, ...init.rules, ...adds], added: adds.length, removed: removed.length };
}

// --- the agent's memory of the table ------------------------------------------------------------

/**
 * A nat table as the agent last read it, changed by every restore it made since, so that a change
 * can be planned without reading 10,000 rules again. Indexed by owner and by rule: planning a
 * change of a few owners never walks the table.
 */
export class NatTableModel {
  readonly chains: Set<string>;
  private readonly rules = new Map<number, { chain: string; spec: string[]; key: string; owner: string | null }>();
  private readonly byKey = new Map<string, number[]>();
  private readonly byOwner = new Map<string, Set<number>>();
  private next = 0;

  constructor(table: NatTable) {
    this.chains = new Set(table.chains);
    for (const r of table.rules) this.append(r.chain, r.spec);
  }

  /** Applies restore lines as `iptables-restore --noflush` does; throws on a line it would refuse. */
  apply(lines: readonly string[]): void {
    for (const line of lines) {
      if (line.startsWith(':')) {
        const chain = line.slice(1).split(' ')[0]!;
        if (this.chains.has(chain) && !BUILT_IN_CHAINS.has(chain)) this.flush(chain); // declaring an existing chain empties it
        this.chains.add(chain);
        continue;
      }
      const [op, chain = '', ...spec] = tokenizeSaveLine(line);
      if (!this.chains.has(chain)) throw new Error(`no chain ${chain} for: ${line}`);
      if (op === '-F' && spec.length === 0) this.flush(chain);
      else if (op === '-A') this.append(chain, spec);
      else if (op === '-D') {
        const id = this.byKey.get(ruleKey(chain, spec))?.[0];
        if (id === undefined) throw new Error(`no such rule: ${line}`);
        this.remove(id);
      } else throw new Error(`not a restore line natflow writes: ${line}`);
    }
  }

  /** The rules of these owners, in table order. */
  rulesOf(owners: Iterable<string>): NatTable['rules'] {
    const ids = [...owners].flatMap((owner) => [...(this.byOwner.get(owner) ?? [])]).sort((a, b) => a - b);
    return ids.map((id) => ({ chain: this.rules.get(id)!.chain, spec: this.rules.get(id)!.spec }));
  }

  hasRules(owner: string): boolean {
    return (this.byOwner.get(owner)?.size ?? 0) > 0;
  }

  /** A chain's rules in order; null when the chain does not exist. */
  chainRules(chain: string): string[][] | null {
    if (!this.chains.has(chain)) return null;
    return [...this.rules.values()].filter((r) => r.chain === chain).map((r) => r.spec);
  }

  private append(chain: string, spec: string[]): void {
    const id = this.next++;
    const key = ruleKey(chain, spec);
    const owner = ownerOf(spec);
    this.rules.set(id, { chain, spec, key, owner });
    if (!this.byKey.has(key)) this.byKey.set(key, []);
    this.byKey.get(key)!.push(id);
    if (owner) {
      if (!this.byOwner.has(owner)) this.byOwner.set(owner, new Set());
      this.byOwner.get(owner)!.add(id);
    }
  }

  private remove(id: number): void {
    const rule = this.rules.get(id)!;
    this.rules.delete(id);
    const ids = this.byKey.get(rule.key)!;
    ids.splice(ids.indexOf(id), 1);
    if (ids.length === 0) this.byKey.delete(rule.key);
    if (rule.owner) this.byOwner.get(rule.owner)!.delete(id);
  }

  private flush(chain: string): void {
    for (const [id, rule] of this.rules) if (rule.chain === chain) this.remove(id);
  }
}

const BUILT_IN_CHAINS = new Set(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING']);

// --- the generation rule: a compare-and-swap inside every restore of a remembering agent -------

/** A chain nothing jumps to, holding one rule whose comment every remembering agent's restore replaces. */
export const GENERATION_CHAIN = 'NATFLOW_GENERATION';
export const generationSpec = (generation: string) => ['-m', 'comment', '--comment', `natflow-generation:${generation}`];
const isGeneration = (spec: readonly string[]) => spec.length === 4 && spec[3]!.startsWith('natflow-generation:') && spec.join(' ') === generationSpec(spec[3]!.slice(19)).join(' ');

/** The generation a table's GENERATION_CHAIN holds, when it holds exactly one. */
export function generationOf(chainRules: readonly string[][] | null): string | null {
  return chainRules?.length === 1 && isGeneration(chainRules[0]!) ? chainRules[0]![3]!.slice(19) : null;
}

/**
 * The lines that make GENERATION_CHAIN hold exactly `next`. When it holds one generation, that rule
 * is deleted: the restore fails (and applies nothing) unless it is still there, so a restore
 * planned from memory only applies if no other remembering agent wrote since, and a flushed or
 * lost table fails it too.
 */
export function generationLines(chainRules: readonly string[][] | null, next: string): string[] {
  const set = restoreLine('-A', GENERATION_CHAIN, generationSpec(next));
  if (chainRules === null) return [`:${GENERATION_CHAIN} - [0:0]`, set];
  if (generationOf(chainRules) !== null) return [restoreLine('-D', GENERATION_CHAIN, chainRules[0]!), set];
  return [`-F ${GENERATION_CHAIN}`, set];
}

/**
 * The conntrack entries that removed tagged rules leave behind, read from the rules themselves (so
 * that a rule natflow no longer remembers, e.g. found by a full restore, is flushed as well):
 * - FIP (EXCLUSIVE_DNAT `-d <eip>/32 … --to-destination <ip>`, or its EXCLUSIVE_SNAT twin
 *   `-s <ip>/32 … --to-source <eip>`): `{ eip, internalIp }`;
 * - DNAT (SHARED_DNAT `-d <eip>/32 -p <proto> … --dport <port> … --to-destination <ip>:<port>`):
 *   `{ eip, internalIp, protocol, port }`;
 * - SNAT (SHARED_SNAT_<n> `-s <cidr>` (absent for /0) `… --to-source <eip>`): `{ eip, internalCidr }`.
 * One target per distinct connection set; a rule that does not parse as natflow writes it is skipped.
 */
export function removedConntrackTargets(rules: readonly { chain: string; spec: readonly string[] }[]): ConntrackTarget[] {
  const targets = new Map<string, ConntrackTarget>();
  for (const { chain: placed, spec } of rules) {
    const chain = renderedChain(placed);
    const arg = (flag: string) => {
      const i = spec.indexOf(flag);
      return i === -1 ? undefined : spec[i + 1];
    };
    const host = (cidr: string | undefined) => cidr?.replace(/\/32$/, '');
    let target: ConntrackTarget | undefined;
    try {
      if (chain === 'EXCLUSIVE_DNAT') target = { eip: validateIPv4(host(arg('-d')), 'eip'), internalIp: validateIPv4(arg('--to-destination'), 'internalIp') };
      else if (chain === 'EXCLUSIVE_SNAT') target = { eip: validateIPv4(arg('--to-source'), 'eip'), internalIp: validateIPv4(host(arg('-s')), 'internalIp') };
      else if (chain === 'SHARED_DNAT') {
        target = {
          eip: validateIPv4(host(arg('-d')), 'eip'),
          internalIp: validateIPv4(arg('--to-destination')?.split(':')[0], 'internalIp'),
          protocol: validateProtocol(arg('-p'), 'protocol'),
          port: validatePort(Number(arg('--dport')), 'port'),
        };
      } else if (chain.startsWith('SHARED_SNAT_')) {
        target = { eip: validateIPv4(arg('--to-source'), 'eip'), internalCidr: validateIPv4Cidr(arg('-s') ?? '0.0.0.0/0', 'internalCidr') };
      }
    } catch (err) {
      if (!(err instanceof NatflowError)) throw err;
    }
    if (target) targets.set(JSON.stringify(target), target);
  }
  return [...targets.values()];
}

// --- validation ------------------------------------------------------------------------------

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

/** Every problem of the input in one error, so that a single failure names them all. */
function invalid(problems: string[]): NatflowError {
  return new NatflowError(Reason.InvalidSpec, problems.join('; '));
}

/** A NAT change `{ add, removeOwners, replaceAll?, flushConntrack? }` as the rules it wants (in their buckets) and the owners it removes. */
export function validateChange(change: unknown, ctx: RenderContext): { desired: DesiredRule[]; removeOwners: string[]; replaceAll: boolean; flushConntrack: boolean } {
  if (!change || typeof change !== 'object') throw invalid(['a NAT change must be an object { add, removeOwners, replaceAll?, flushConntrack? }']);
  const c = change as Record<string, unknown>;
  const problems: string[] = [];
  const desired = collect(c.add, 'add', (rule) => renderNatRule(rule as NatRule, ctx), problems)
    .flat()
    .map((r) => {
      const owner = ownerOf(r.spec)!;
      return { owner, chain: placedChain(r.chain, owner), spec: r.spec };
    });
  const removeOwners = collect(c.removeOwners, 'removeOwners', (owner) => validateOwner(owner, 'removeOwners entry'), problems);
  for (const flag of ['replaceAll', 'flushConntrack'] as const) {
    if (c[flag] !== undefined && typeof c[flag] !== 'boolean') problems.push(`${flag} ${JSON.stringify(c[flag])} must be true or false`);
  }
  if (problems.length > 0) throw invalid(problems);
  return { desired, removeOwners, replaceAll: c.replaceAll === true, flushConntrack: c.flushConntrack === true };
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

export function validateConntrackTargets(targets: unknown): ConntrackTarget[] {
  const problems: string[] = [];
  const valid = collect(targets, 'conntrack targets', validateTarget, problems);
  if (problems.length > 0) throw invalid(problems);
  return valid;
}

/**
 * The EIP-side addresses of the translated entries of a `conntrack -L` listing, one per line's
 * translation: a DNAT's original destination (its reply does not come from there), an SNAT's
 * reply destination (it does not go back to the original source).
 */
export function natAddresses(listing: string): string[] {
  return listing.split('\n').flatMap((line) => {
    const [origSrc, replySrc] = [...line.matchAll(/\bsrc=(\S+)/g)].map((m) => m[1]);
    const [origDst, replyDst] = [...line.matchAll(/\bdst=(\S+)/g)].map((m) => m[1]);
    if (!origSrc || !origDst || !replySrc || !replyDst) return [];
    return [...(replySrc !== origDst ? [origDst] : []), ...(replyDst !== origSrc ? [replyDst] : [])];
  });
}

/**
 * Every address a `conntrack -L` entry has as its original or its reply destination: the two sides
 * that `conntrack -D` filters name an EIP on (`-d`, `-q`). An EIP not among them has nothing to flush.
 */
export function conntrackDestinations(listing: string): Set<string> {
  const found = new Set<string>();
  for (const line of listing.split('\n')) for (const [, address] of line.matchAll(/\bdst=(\S+)/g)) found.add(address!);
  return found;
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
