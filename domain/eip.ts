// IptablesEIP (kubeovn.io/v1): the spec fields natflow acts on, and their validation.
import { NatflowError, Reason } from './errors.js';
import { parseIPv4 } from './ip.js';
import { validateName, type ResourceRef } from './names.js';
import { DEFAULT_EXTERNAL_SUBNET } from './subnet.js';
import type { HistoryLimits } from './history-limits.js';
import type { Allocation } from './ipam.js';
import type { EipClaim } from './nat-resources.js';
import type { Condition } from './status.js';

export interface EipSpec {
  /** The NAT gateway (VpcNatGateway name); required and immutable. */
  natGwDp: string;
  /** Empty means the default external subnet, as in Kube-OVN. */
  externalSubnet?: string;
  /** A requested address; empty means any free one. */
  v4ip?: string;
  v6ip?: string;
  macAddress?: string;
  qosPolicy?: string;
}

export interface EipInput {
  resource: ResourceRef;
  spec: EipSpec;
  /** Set by continue-as-new: what the previous run held and showed. */
  carried?: EipCarried;
  /** Lower history limits (tests); see workflows/history-budget.ts. */
  limits?: Partial<HistoryLimits>;
}

/** Everything an EIP workflow holds, carried across continue-as-new. */
export interface EipCarried {
  status: EipStatus;
  /** The subnet it may hold an address in, and the gateway it may be bound on. */
  held: { subnet: string } | null;
  bound: { gateway: string } | null;
  /** Set while serving: the address it holds and the spec it was taken for. */
  serving: { allocation: Allocation; gateway: string; spec: EipSpec } | null;
  claims: EipClaim[];
  /** NAT rules to tell when this EIP changes. */
  watchers: string[];
  deleting: boolean;
  /** Its object not adopted yet (a V5 run continued before its first call): the next run's first call adopts it. */
  unadopted?: boolean;
  /** Continued while giving back what it held (its gateway not ready to take the address off). */
  releasing?: boolean;
  /** A spec or gateway change that arrived while the run was handing over, not acted on yet. */
  changed?: { spec: boolean; gateway: boolean };
}

export type EipPhase = 'Pending' | 'Invalid' | 'WaitingForGateway' | 'Allocating' | 'Binding' | 'Ready' | 'Failed' | 'Deleting' | 'Deleted';

/** IptablesEIP status (Kube-OVN's fields) plus the phase natflow shows in the Web UI. */
export interface EipStatus {
  phase: EipPhase;
  ready: boolean;
  ip: string;
  natGwDp: string;
  /** Kube-OVN: which NAT kinds use this EIP ("fip", "dnat", "snat"), comma-separated. */
  nat: string;
  conditions: Condition[];
  observedGeneration: number;
}

/** The spec with defaults applied, or a NatflowError naming the bad field. */
export function normalizeEipSpec(name: string, spec: EipSpec): Required<Pick<EipSpec, 'natGwDp' | 'externalSubnet'>> & EipSpec {
  validateName(name, 'EIP name');
  if (!spec || typeof spec !== 'object') throw new NatflowError(Reason.InvalidSpec, 'spec is missing');
  // Every field is a string (as in the CRD): a 0 or false must not pass for "unset".
  for (const field of ['natGwDp', 'externalSubnet', 'v4ip', 'v6ip', 'macAddress', 'qosPolicy'] as const) {
    const value: unknown = spec[field];
    if (value !== undefined && value !== null && typeof value !== 'string') throw new NatflowError(Reason.InvalidSpec, `spec.${field} ${JSON.stringify(value)} is not a string`);
  }
  if (!spec.natGwDp) throw new NatflowError(Reason.InvalidSpec, 'spec.natGwDp is required');
  validateName(spec.natGwDp, 'spec.natGwDp');
  const externalSubnet = spec.externalSubnet || DEFAULT_EXTERNAL_SUBNET;
  validateName(externalSubnet, 'spec.externalSubnet');
  if (spec.v6ip) throw new NatflowError(Reason.InvalidSpec, 'spec.v6ip: IPv6 EIPs are not supported by natflow yet');
  if (spec.v4ip) {
    try {
      parseIPv4(spec.v4ip, 'spec.v4ip');
    } catch (err) {
      throw new NatflowError(Reason.InvalidSpec, (err as Error).message);
    }
  }
  return { ...spec, natGwDp: spec.natGwDp, externalSubnet };
}

/** Changes that need the address to be released and taken again. */
export function eipAddressChanged(before: EipSpec, after: EipSpec): boolean {
  return (before.v4ip ?? '') !== (after.v4ip ?? '') || (before.externalSubnet || DEFAULT_EXTERNAL_SUBNET) !== (after.externalSubnet || DEFAULT_EXTERNAL_SUBNET);
}
