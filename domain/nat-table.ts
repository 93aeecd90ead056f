// Planning a change of the gateway's nat table, pure: from what `iptables-save -t nat` printed and
// what is desired, the lines of one `iptables-restore --noflush`. What to delete is found by owner
// tag in what was read, so a plan is idempotent and converges from any partial state. The gateway
// agent (activities/gateway-nat.ts) runs the read and the restore; the chain layout and the rules
// are in domain/nat-rules.ts.
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

const ruleKey = (chain: string, spec: readonly string[]) => `${chain}\u0000${spec.join('\u0000')}`;

// --- planning --------------------------------------------------------------------------------

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
  for (const { chain, spec } of rules) {
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

/** A NAT change `{ add, removeOwners, replaceAll?, flushConntrack? }` as the rules it wants and the owners it removes. */
export function validateChange(change: unknown, ctx: RenderContext): { desired: DesiredRule[]; removeOwners: string[]; replaceAll: boolean; flushConntrack: boolean } {
  if (!change || typeof change !== 'object') throw invalid(['a NAT change must be an object { add, removeOwners, replaceAll?, flushConntrack? }']);
  const c = change as Record<string, unknown>;
  const problems: string[] = [];
  const desired = collect(c.add, 'add', (rule) => renderNatRule(rule as NatRule, ctx), problems)
    .flat()
    .map((r) => ({ owner: ownerOf(r.spec)!, chain: r.chain, spec: r.spec }));
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
