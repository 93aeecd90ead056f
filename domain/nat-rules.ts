// The iptables rules natflow writes on a NAT gateway, rendered from NAT rules. Pure (no Node
// APIs): the gateway workflow validates with it and the gateway agent renders with it.
//
// nat table layout, Kube-OVN's (so that its users recognise it), plus per-prefix SNAT chains:
//
//   PREROUTING  -j DNAT_FILTER
//     DNAT_FILTER     -i eth0 -j MARK --set-xmark <HAIRPIN_MARK>   (entered from the VPC side)
//                     -j EXCLUSIVE_DNAT   FIPs:  -d <eip>/32 -j DNAT --to-destination <ip>
//                     -j SHARED_DNAT      DNAT:  -d <eip>/32 -p tcp -m tcp --dport <p> -j DNAT --to-destination <ip>:<port>
//   POSTROUTING -j SNAT_FILTER
//     SNAT_FILTER     -j EXCLUSIVE_SNAT   FIPs:  -s <ip>/32 -j SNAT --to-source <eip>
//                     -j SHARED_SNAT      -j SHARED_SNAT_32 … -j SHARED_SNAT_0 (longest prefix first)
//                                         SNAT:  -s <cidr> -o net1 -j SNAT --to-source <eip> --random-fully
//                     -j HAIRPIN_SNAT     -o eth0 -m mark --mark <HAIRPIN_MARK> -m conntrack --ctstate DNAT
//                                         -j MASQUERADE --random-fully
//
// Every rule of a NAT rule carries `-m comment --comment natflow:<owner>` (the resource's uid), so
// any rule can be attributed and removed by its tag alone. The chains' own rules (the jumps, the
// mark and the hairpin rule) are static and untagged, as Kube-OVN writes its jumps.
//
// Longest prefix wins: an SNAT rule goes to the chain of its prefix length, and SHARED_SNAT visits
// those chains longest first. Whatever the order of creation, adding one is a plain append and
// removing one a delete in a short chain: no rule is ever moved or re-sorted.
//
// Hairpin (a VPC VM reaching an EIP that is DNATed back into the VPC): the answer would go straight
// from VM to VM and never be un-NATed, so the gateway must also rewrite the source. A VM with a FIP
// is caught first by EXCLUSIVE_SNAT (no `-o`), so the other VM sees it as its FIP, exactly as the
// outside does. Any other VM falls through to the single static HAIRPIN_SNAT rule: "entered from
// the VPC side, was DNATed, leaves to the VPC side" → masqueraded to the gateway's VPC address
// (Kube-OVN's lanIp). One rule for every EIP: nothing per rule to add or to leak, and no need to
// know the VPC's CIDRs (Kube-OVN writes one hairpin rule per internal CIDR and EIP).
import ipaddr from 'ipaddr.js';
import { NatflowError, Reason } from './errors.js';
import { formatCidr, parseCidr } from './ip.js';

export type NatRule =
  | { kind: 'fip'; owner: string; eip: string; internalIp: string }
  | { kind: 'dnat'; owner: string; eip: string; protocol: 'tcp' | 'udp'; externalPort: number; internalIp: string; internalPort: number }
  | { kind: 'snat'; owner: string; eip: string; internalCidr: string };

export interface RenderedRule {
  table: 'nat';
  chain: string;
  /** Everything after `-A <chain>`, exactly as iptables-save prints it (without its quotes). */
  spec: string[];
}

/** The gateway's interfaces, as in Kube-OVN's gateway pod (`net1` external, `eth0` VPC side). */
export interface RenderContext {
  externalInterface?: string;
  vpcInterface?: string;
}

export const DEFAULT_EXTERNAL_INTERFACE = 'net1';
export const DEFAULT_VPC_INTERFACE = 'eth0';
/** The packet mark (value/mask) of "entered from the VPC side", read by the hairpin rule. */
export const HAIRPIN_MARK = '0x20000/0x20000';

export const snatChain = (prefixLength: number) => `SHARED_SNAT_${prefixLength}`;
const PREFIX_LENGTHS = Array.from({ length: 33 }, (_, i) => 32 - i);

/** Chains holding the tagged rules of NAT rules. */
export const RULE_CHAINS: readonly string[] = ['EXCLUSIVE_DNAT', 'SHARED_DNAT', 'EXCLUSIVE_SNAT', ...PREFIX_LENGTHS.map(snatChain)];
/** Every chain natflow owns in the nat table, in creation order (SHARED_SNAT_32 … SHARED_SNAT_0 descending). */
export const NAT_CHAINS: readonly string[] = [
  'DNAT_FILTER',
  'EXCLUSIVE_DNAT',
  'SHARED_DNAT',
  'SNAT_FILTER',
  'EXCLUSIVE_SNAT',
  'SHARED_SNAT',
  ...PREFIX_LENGTHS.map(snatChain),
  'HAIRPIN_SNAT',
];

export interface NatChainLayout {
  /** natflow's chains, in creation order. */
  chains: readonly string[];
  /** The full, ordered content of each static chain. */
  staticRules: Record<string, string[][]>;
  /** The one jump from each built-in chain into natflow's chains. */
  entryJumps: { chain: 'PREROUTING' | 'POSTROUTING'; spec: string[] }[];
}

/** The chains and static rules `initNatChains` creates. */
export function natChainLayout(ctx: RenderContext = {}): NatChainLayout {
  const { vpcInterface } = interfaces(ctx);
  const jump = (chain: string) => ['-j', chain];
  return {
    chains: NAT_CHAINS,
    staticRules: {
      DNAT_FILTER: [['-i', vpcInterface, '-j', 'MARK', '--set-xmark', HAIRPIN_MARK], jump('EXCLUSIVE_DNAT'), jump('SHARED_DNAT')],
      SNAT_FILTER: [jump('EXCLUSIVE_SNAT'), jump('SHARED_SNAT'), jump('HAIRPIN_SNAT')],
      SHARED_SNAT: PREFIX_LENGTHS.map((p) => jump(snatChain(p))),
      HAIRPIN_SNAT: [['-o', vpcInterface, '-m', 'mark', '--mark', HAIRPIN_MARK, '-m', 'conntrack', '--ctstate', 'DNAT', '-j', 'MASQUERADE', '--random-fully']],
    },
    entryJumps: [
      { chain: 'PREROUTING', spec: jump('DNAT_FILTER') },
      { chain: 'POSTROUTING', spec: jump('SNAT_FILTER') },
    ],
  };
}

const OWNER = /^[A-Za-z0-9-]{1,64}$/;
const TAG_PREFIX = 'natflow:';
const INTERFACE = /^[A-Za-z0-9_.-]{1,15}$/;

export const ownerTag = (owner: string) => `${TAG_PREFIX}${owner}`;

/** The owner of a rule from its `--comment natflow:<owner>`, or null for a rule natflow did not tag. */
export function ownerOf(spec: readonly string[]): string | null {
  for (let i = 0; i < spec.length - 1; i++) {
    if (spec[i] !== '--comment') continue;
    const tag = spec[i + 1]!;
    if (tag.startsWith(TAG_PREFIX) && OWNER.test(tag.slice(TAG_PREFIX.length))) return tag.slice(TAG_PREFIX.length);
  }
  return null;
}

/** An owner (a Kubernetes uid): 1-64 letters, digits or '-'. */
export function validateOwner(owner: unknown, what = 'owner'): string {
  if (typeof owner !== 'string' || !OWNER.test(owner)) {
    throw new NatflowError(Reason.InvalidSpec, `${what} ${show(owner)} must be 1-64 letters, digits or '-' (a Kubernetes uid)`);
  }
  return owner;
}

// Ranges that can be neither an EIP nor a VM's address.
const UNUSABLE_RANGES = new Set(['unspecified', 'broadcast', 'multicast', 'loopback']);

/** A plain IPv4 address (a.b.c.d); anything else, including any extra character, is invalid. */
export function validateIPv4(value: unknown, field: string): string {
  if (typeof value !== 'string' || !ipaddr.IPv4.isValidFourPartDecimal(value)) {
    throw new NatflowError(Reason.InvalidSpec, `${field} ${show(value)} is not an IPv4 address (a.b.c.d)`);
  }
  const range = ipaddr.IPv4.parse(value).range();
  if (UNUSABLE_RANGES.has(range)) throw new NatflowError(Reason.InvalidSpec, `${field} ${show(value)} is a ${range} address`);
  return value;
}

/** An IPv4 CIDR block (a.b.c.d/n), returned in network form (10.0.1.5/24 → 10.0.1.0/24, as iptables stores it). */
export function validateIPv4Cidr(value: unknown, field: string): string {
  const match = typeof value === 'string' ? /^([0-9.]{7,15})\/([0-9]{1,2})$/.exec(value) : null;
  if (!match || !ipaddr.IPv4.isValidFourPartDecimal(match[1]!) || Number(match[2]) > 32) {
    throw new NatflowError(Reason.InvalidSpec, `${field} ${show(value)} is not an IPv4 CIDR block (a.b.c.d/n, n from 0 to 32)`);
  }
  return formatCidr(parseCidr(value as string));
}

export function validatePort(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new NatflowError(Reason.InvalidSpec, `${field} ${show(value)} is not a port (an integer from 1 to 65535)`);
  }
  return value;
}

export function validateProtocol(value: unknown, field: string): 'tcp' | 'udp' {
  if (value !== 'tcp' && value !== 'udp') throw new NatflowError(Reason.InvalidSpec, `${field} ${show(value)} must be tcp or udp`);
  return value;
}

/**
 * Checks every field of a rule and returns a clean copy (only the known fields; an SNAT CIDR in
 * network form). What reaches iptables is only ever addresses, numbers and known words: a value
 * with a space, a quote or any shell metacharacter is simply invalid. Throws a NatflowError
 * (InvalidSpec) whose message names the rule and the field.
 */
export function validateNatRule(rule: unknown): NatRule {
  if (!rule || typeof rule !== 'object') throw new NatflowError(Reason.InvalidSpec, `NAT rule ${show(rule)} is not an object`);
  const r = rule as Record<string, unknown>;
  if (r.kind !== 'fip' && r.kind !== 'dnat' && r.kind !== 'snat') {
    throw new NatflowError(Reason.InvalidSpec, `NAT rule kind ${show(r.kind)} must be fip, dnat or snat`);
  }
  const owner = validateOwner(r.owner, `${r.kind} rule owner`);
  const where = `${r.kind} rule ${owner}:`;
  const eip = validateIPv4(r.eip, `${where} eip`);
  switch (r.kind) {
    case 'fip':
      return { kind: 'fip', owner, eip, internalIp: validateIPv4(r.internalIp, `${where} internalIp`) };
    case 'dnat':
      return {
        kind: 'dnat',
        owner,
        eip,
        protocol: validateProtocol(r.protocol, `${where} protocol`),
        externalPort: validatePort(r.externalPort, `${where} externalPort`),
        internalIp: validateIPv4(r.internalIp, `${where} internalIp`),
        internalPort: validatePort(r.internalPort, `${where} internalPort`),
      };
    case 'snat':
      return { kind: 'snat', owner, eip, internalCidr: validateIPv4Cidr(r.internalCidr, `${where} internalCidr`) };
  }
}

/** What conntrack entries a removed or changed rule leaves behind, in the agent's terms. */
export interface ConntrackTarget {
  eip: string;
  internalIp?: string;
  protocol?: 'tcp' | 'udp';
  port?: number;
  internalCidr?: string;
}

export function conntrackTarget(rule: NatRule): ConntrackTarget {
  switch (rule.kind) {
    case 'fip':
      return { eip: rule.eip, internalIp: rule.internalIp };
    case 'dnat':
      return { eip: rule.eip, internalIp: rule.internalIp, protocol: rule.protocol, port: rule.externalPort };
    case 'snat':
      return { eip: rule.eip, internalCidr: rule.internalCidr };
  }
}

/** The change from the rules an agent has to the desired ones: a changed rule is removed and added again. */
export function ruleDiff(applied: Record<string, NatRule>, desired: Record<string, NatRule>): { add: NatRule[]; removeOwners: string[]; removed: NatRule[] } {
  const same = (a: NatRule, b: NatRule) => JSON.stringify(a) === JSON.stringify(b);
  const removed = Object.entries(applied)
    .filter(([owner, rule]) => !desired[owner] || !same(rule, desired[owner]!))
    .map(([, rule]) => rule);
  const add = Object.entries(desired)
    .filter(([owner, rule]) => !applied[owner] || !same(rule, applied[owner]!))
    .map(([, rule]) => rule);
  return { add, removeOwners: removed.map((r) => r.owner), removed };
}

/** A second DNAT rule for the same EIP, protocol and external port is refused. */
export function dnatConflict(rules: Record<string, NatRule>, rule: NatRule): string | null {
  if (rule.kind !== 'dnat') return null;
  const clash = Object.values(rules).find((r) => r.owner !== rule.owner && r.kind === 'dnat' && r.eip === rule.eip && r.protocol === rule.protocol && r.externalPort === rule.externalPort);
  return clash ? `${rule.eip} ${rule.protocol}/${rule.externalPort} is already forwarded by another DNAT rule (${clash.owner})` : null;
}

/** The iptables rules of one NAT rule (validated first), in iptables-save's own order of options. */
export function renderNatRule(rule: NatRule, ctx: RenderContext = {}): RenderedRule[] {
  const r = validateNatRule(rule);
  const { externalInterface } = interfaces(ctx);
  const tag = ['-m', 'comment', '--comment', ownerTag(r.owner)];
  const nat = (chain: string, spec: string[]): RenderedRule => ({ table: 'nat', chain, spec });
  switch (r.kind) {
    case 'fip':
      // No `-o` on the SNAT: a VM with a FIP is its EIP everywhere, to the outside as to another
      // VM reaching an EIP (hairpin). No --random-fully: a 1:1 mapping keeps the VM's ports.
      return [
        nat('EXCLUSIVE_DNAT', ['-d', `${r.eip}/32`, ...tag, '-j', 'DNAT', '--to-destination', r.internalIp]),
        nat('EXCLUSIVE_SNAT', ['-s', `${r.internalIp}/32`, ...tag, '-j', 'SNAT', '--to-source', r.eip]),
      ];
    case 'dnat': {
      const port = String(r.externalPort);
      const target = `${r.internalIp}:${r.internalPort}`;
      return [nat('SHARED_DNAT', ['-d', `${r.eip}/32`, '-p', r.protocol, '-m', r.protocol, '--dport', port, ...tag, '-j', 'DNAT', '--to-destination', target])];
    }
    case 'snat': {
      const cidr = parseCidr(r.internalCidr);
      // iptables-save omits a match on 0.0.0.0/0.
      const source = cidr.prefixLength === 0 ? [] : ['-s', formatCidr(cidr)];
      return [nat(snatChain(cidr.prefixLength), [...source, '-o', externalInterface, ...tag, '-j', 'SNAT', '--to-source', r.eip, '--random-fully'])];
    }
  }
}

function interfaces(ctx: RenderContext): Required<RenderContext> {
  const externalInterface = ctx.externalInterface ?? DEFAULT_EXTERNAL_INTERFACE;
  const vpcInterface = ctx.vpcInterface ?? DEFAULT_VPC_INTERFACE;
  for (const [field, name] of [
    ['externalInterface', externalInterface],
    ['vpcInterface', vpcInterface],
  ] as const) {
    if (!INTERFACE.test(name)) throw new NatflowError(Reason.InvalidSpec, `${field} ${show(name)} is not an interface name`);
  }
  return { externalInterface, vpcInterface };
}

function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
