// The iptables rules natflow writes on a gateway, rendered from NAT rules. Pure: the gateway
// workflow validates with it and the agent renders with it.
//
// nat table layout, as in Kube-OVN's gateway (so its users recognise it):
//   PREROUTING  -j DNAT_FILTER  → EXCLUSIVE_DNAT (FIPs), SHARED_DNAT (DNAT rules)
//   POSTROUTING -j SNAT_FILTER  → HAIRPIN_SNAT, EXCLUSIVE_SNAT (FIPs), SHARED_SNAT (SNAT rules)
// SHARED_SNAT jumps to one chain per prefix length, longest first (SHARED_SNAT_32 … _0), so the
// longest prefix wins whatever the order of creation and a new rule is a plain append.
// Every rule carries `-m comment --comment natflow:<owner>` (the resource's uid): any rule can be
// attributed, and removed by its tag alone.
import { NatflowError, Reason } from './errors.js';
import { InvalidAddressError, formatCidr, parseCidr, parseIPv4 } from './ip.js';

export type NatRule =
  | { kind: 'fip'; owner: string; eip: string; internalIp: string }
  | { kind: 'dnat'; owner: string; eip: string; protocol: 'tcp' | 'udp'; externalPort: number; internalIp: string; internalPort: number }
  | { kind: 'snat'; owner: string; eip: string; internalCidr: string };

export interface RenderedRule {
  chain: string;
  /** Everything after `-A <chain>`, as iptables-save prints it. */
  spec: string[];
}

/** Where the VPC is, for the hairpin rules (a VM reaching another VM's EIP). */
export interface RenderContext {
  vpcCidr?: string;
}

const PREFIXES = Array.from({ length: 33 }, (_, i) => 32 - i);
export const snatChain = (prefixLength: number) => `SHARED_SNAT_${prefixLength}`;

/** Chains holding only natflow's jumps: rewritten whole by init. */
export const JUMP_CHAINS: Record<string, string[]> = {
  DNAT_FILTER: ['EXCLUSIVE_DNAT', 'SHARED_DNAT'],
  SNAT_FILTER: ['HAIRPIN_SNAT', 'EXCLUSIVE_SNAT', 'SHARED_SNAT'],
  SHARED_SNAT: PREFIXES.map(snatChain),
};
/** Chains holding the tagged rules: created when missing, never flushed by init. */
export const RULE_CHAINS = ['EXCLUSIVE_DNAT', 'SHARED_DNAT', 'HAIRPIN_SNAT', 'EXCLUSIVE_SNAT', ...PREFIXES.map(snatChain)];
/** Built-in chains and the natflow chain each jumps to. */
export const ENTRY_JUMPS: [string, string][] = [
  ['PREROUTING', 'DNAT_FILTER'],
  ['POSTROUTING', 'SNAT_FILTER'],
];

const OWNER = /^[A-Za-z0-9-]{1,64}$/;
export const ownerTag = (owner: string) => `natflow:${owner}`;
/** The owner of a rule from its comment, or null for a rule natflow did not write. */
export const ownerOf = (spec: string[]): string | null => {
  const i = spec.indexOf('--comment');
  const tag = i >= 0 ? spec[i + 1]?.replace(/^"|"$/g, '') : undefined;
  return tag?.startsWith('natflow:') ? tag.slice('natflow:'.length) : null;
};

function address(value: unknown, field: string): string {
  try {
    parseIPv4(value as string, field);
    return value as string;
  } catch (err) {
    throw new NatflowError(Reason.InvalidSpec, (err as Error).message);
  }
}

function port(value: unknown, field: string): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65535) {
    throw new NatflowError(Reason.InvalidSpec, `${field} ${JSON.stringify(value)} is not a port (1-65535)`);
  }
  return value as number;
}

/** Checks every field; what reaches iptables is only ever addresses, numbers and known words. */
export function validateNatRule(rule: NatRule): NatRule {
  if (!rule || typeof rule !== 'object') throw new NatflowError(Reason.InvalidSpec, 'rule is missing');
  if (typeof rule.owner !== 'string' || !OWNER.test(rule.owner)) throw new NatflowError(Reason.InvalidSpec, `owner ${JSON.stringify(rule.owner)} is not a uid`);
  address(rule.eip, 'EIP address');
  switch (rule.kind) {
    case 'fip':
      address(rule.internalIp, 'internalIp');
      return rule;
    case 'dnat':
      if (rule.protocol !== 'tcp' && rule.protocol !== 'udp') throw new NatflowError(Reason.InvalidSpec, `protocol ${JSON.stringify(rule.protocol)} must be tcp or udp`);
      address(rule.internalIp, 'internalIp');
      port(rule.externalPort, 'externalPort');
      port(rule.internalPort, 'internalPort');
      return rule;
    case 'snat':
      try {
        parseCidr(rule.internalCidr, 'internalCIDR');
      } catch (err) {
        if (err instanceof InvalidAddressError) throw new NatflowError(Reason.InvalidSpec, err.message);
        throw err;
      }
      return rule;
    default:
      throw new NatflowError(Reason.InvalidSpec, `unknown rule kind ${JSON.stringify((rule as { kind: unknown }).kind)}`);
  }
}

/** The iptables rules of one NAT rule, in iptables-save's own order of options. */
export function renderNatRule(rule: NatRule, ctx: RenderContext = {}): RenderedRule[] {
  validateNatRule(rule);
  const tag = ['-m', 'comment', '--comment', ownerTag(rule.owner)];
  const host = (ip: string) => `${ip}/32`;
  // A VM reaching an EIP from inside the VPC is DNATed back into the VPC: SNAT it to the EIP too,
  // or the answer would go straight back to the VM and never be un-NATed.
  const hairpin = (match: string[]): RenderedRule[] =>
    ctx.vpcCidr ? [{ chain: 'HAIRPIN_SNAT', spec: ['-s', formatCidr(parseCidr(ctx.vpcCidr)), ...match, '-m', 'conntrack', '--ctstate', 'DNAT', '--ctorigdst', rule.eip, ...tag, '-j', 'SNAT', '--to-source', rule.eip] }] : [];
  switch (rule.kind) {
    case 'fip':
      return [
        { chain: 'EXCLUSIVE_DNAT', spec: ['-d', host(rule.eip), ...tag, '-j', 'DNAT', '--to-destination', rule.internalIp] },
        { chain: 'EXCLUSIVE_SNAT', spec: ['-s', host(rule.internalIp), ...tag, '-j', 'SNAT', '--to-source', rule.eip, '--random-fully'] },
        ...hairpin(['-d', host(rule.internalIp)]),
      ];
    case 'dnat':
      return [
        {
          chain: 'SHARED_DNAT',
          spec: ['-d', host(rule.eip), '-p', rule.protocol, '-m', rule.protocol, '--dport', String(rule.externalPort), ...tag, '-j', 'DNAT', '--to-destination', `${rule.internalIp}:${rule.internalPort}`],
        },
        ...hairpin(['-d', host(rule.internalIp), '-p', rule.protocol, '-m', rule.protocol, '--dport', String(rule.internalPort)]),
      ];
    case 'snat': {
      const cidr = parseCidr(rule.internalCidr);
      return [{ chain: snatChain(cidr.prefixLength), spec: ['-s', formatCidr(cidr), ...tag, '-j', 'SNAT', '--to-source', rule.eip, '--random-fully'] }];
    }
  }
}
