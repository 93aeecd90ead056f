// IptablesFIPRule, IptablesDnatRule and IptablesSnatRule (kubeovn.io/v1): their specs, how
// they share an EIP, and the gateway rule each one becomes.
import { NatflowError, Reason } from './errors.js';
import type { HistoryLimits } from './history-limits.js';
import { validateName, type ResourceRef } from './names.js';
import { validateIPv4, validateIPv4Cidr, validatePort, validateProtocol, type NatRule } from './nat-rules.js';
import type { Condition } from './status.js';

export type NatKind = 'fip' | 'dnat' | 'snat';

export interface FipSpec {
  eip: string;
  internalIp: string;
}
/** Kube-OVN keeps ports as strings; numbers are accepted too. */
export interface DnatSpec {
  eip: string;
  externalPort: string | number;
  protocol: string;
  internalIp: string;
  internalPort: string | number;
}
export interface SnatSpec {
  eip: string;
  internalCIDR: string;
}
export interface NatSpecs {
  fip: FipSpec;
  dnat: DnatSpec;
  snat: SnatSpec;
}
export type NatSpec = NatSpecs[NatKind];

export interface NatInput<K extends NatKind = NatKind> {
  kind: K;
  resource: ResourceRef;
  spec: NatSpecs[K];
  /** Set by continue-as-new: what the previous run held and showed. */
  carried?: NatCarried;
  /** Lower history limits (tests); see workflows/history-budget.ts. */
  limits?: Partial<HistoryLimits>;
}

/** The EIP a NAT rule took and where that EIP lives. */
export interface NatServing {
  eipName: string;
  eipWorkflowId: string;
  address: string;
  gateway: string;
}

/** Everything a NAT rule workflow holds, carried across continue-as-new. */
export interface NatCarried {
  status: NatStatus;
  /** The EIP it may hold a claim on, and the gateway its rule may be on. */
  claimed: { eipWorkflowId: string } | null;
  applied: { gateway: string } | null;
  /** Set while serving. */
  serving: NatServing | null;
  deleting: boolean;
  /** Its object not adopted yet (a V5 run continued before its first call): the next run's first call adopts it. */
  unadopted?: boolean;
  /** Continued while giving back what it held (its gateway not ready to take the rule off). */
  releasing?: boolean;
  /** Continued while its gateway was not ready to take its rule (before its first Ready, or since): what it was applying. */
  applying?: NatServing;
  /** The EIP its NatflowEip search attribute names (the spec may name another by now). */
  shownEip?: string;
}

export type NatPhase = 'Pending' | 'Invalid' | 'WaitingForEip' | 'Claiming' | 'Applying' | 'WaitingForGateway' | 'Ready' | 'Failed' | 'Deleting' | 'Deleted';

/** Kube-OVN's rule status fields (ready, v4ip, natGwDp and the spec echoes) plus natflow's phase. */
export interface NatStatus {
  phase: NatPhase;
  ready: boolean;
  v4ip: string;
  natGwDp: string;
  internalIp?: string;
  protocol?: string;
  internalPort?: string;
  externalPort?: string;
  internalCIDR?: string;
  conditions: Condition[];
  observedGeneration: number;
}

/** A NAT rule's hold on its EIP, recorded by the EIP workflow. */
export interface EipClaim {
  /** The rule's workflow ID. */
  owner: string;
  kind: NatKind;
  name: string;
}

/** Which kinds may share one EIP: a FIP takes it alone; DNAT and SNAT rules may share it. */
export function claimConflict(kind: NatKind, existing: EipClaim[], owner: string): string | null {
  const others = existing.filter((c) => c.owner !== owner);
  const describe = (c: (typeof others)[number]) => `${c.kind} ${c.name}`;
  if (kind === 'fip' && others.length > 0) return `the EIP is already used by ${others.map(describe).join(', ')}; a FIP needs it alone`;
  const fip = others.find((c) => c.kind === 'fip');
  if (fip) return `the EIP is already used by ${describe(fip)}, which takes it alone`;
  return null;
}

/** Kube-OVN keeps ports as strings: "8080" is read as 8080, then checked like any port. */
// Kube-OVN's own reading of its string fields, so that every manifest it accepts works here too:
// ports as decimal strings ("8080", "+8080", "08080"), protocol in any case, an SNAT source as a
// CIDR or a bare address (a /32).
const port = (value: unknown, field: string) => validatePort(typeof value === 'string' && /^\+?[0-9]{1,5}$/.test(value) ? Number(value) : value, field);
const protocol = (value: unknown, field: string) => validateProtocol(typeof value === 'string' ? value.toLowerCase() : value, field);
const snatSource = (value: unknown) => (typeof value === 'string' && !value.includes('/') ? `${value}/32` : value);

/** The gateway rule for a resource, once its EIP's address is known. Validation of addresses is the rule's. */
export function natRuleFor(input: NatInput, eipAddress: string): NatRule {
  const owner = input.resource.uid;
  switch (input.kind) {
    case 'fip': {
      const spec = input.spec as FipSpec;
      return { kind: 'fip', owner, eip: eipAddress, internalIp: spec.internalIp };
    }
    case 'dnat': {
      const spec = input.spec as DnatSpec;
      return { kind: 'dnat', owner, eip: eipAddress, protocol: protocol(spec.protocol, 'spec.protocol'), externalPort: port(spec.externalPort, 'spec.externalPort'), internalIp: spec.internalIp, internalPort: port(spec.internalPort, 'spec.internalPort') };
    }
    case 'snat': {
      const spec = input.spec as SnatSpec;
      return { kind: 'snat', owner, eip: eipAddress, internalCidr: snatSource(spec.internalCIDR) as string };
    }
    default:
      throw new NatflowError(Reason.InvalidSpec, `unknown NAT kind ${JSON.stringify((input as NatInput).kind)}`);
  }
}

/**
 * Every field of a rule's spec, checked before anything is taken; the message names the object
 * (`dnat dnat-web: spec.protocol "sctp" must be tcp or udp`). Returns the EIP's name.
 */
export function validateNatSpec(input: NatInput): string {
  try {
    const eip = natEipName(input);
    const spec = input.spec as Partial<FipSpec & DnatSpec & SnatSpec>;
    switch (input.kind) {
      case 'fip':
        validateIPv4(spec.internalIp, 'spec.internalIp');
        break;
      case 'dnat':
        protocol(spec.protocol, 'spec.protocol');
        port(spec.externalPort, 'spec.externalPort');
        validateIPv4(spec.internalIp, 'spec.internalIp');
        port(spec.internalPort, 'spec.internalPort');
        break;
      case 'snat':
        validateIPv4Cidr(snatSource(spec.internalCIDR), 'spec.internalCIDR');
        break;
    }
    return eip;
  } catch (err) {
    if (!(err instanceof NatflowError)) throw err;
    throw new NatflowError(err.reason, `${input.kind} ${input.resource.name}: ${err.message}`);
  }
}

/** The EIP a rule names; validated before anything else happens. */
export function natEipName(input: NatInput): string {
  if (!input.spec || typeof input.spec !== 'object') throw new NatflowError(Reason.InvalidSpec, 'spec is missing');
  return validateName(input.spec.eip, 'spec.eip');
}
