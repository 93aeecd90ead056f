// A NAT gateway as natflow sees it: what its agent reports, the desired state that the gateway
// workflow holds and the agent applies, the checks a NAT rule must pass on this gateway, and the
// checks on the EIP addresses its external interface is to hold.
import ipaddr from 'ipaddr.js';
import { NatflowError, Reason } from './errors.js';
import { InvalidAddressError, parseCidr, parseIPv4 } from './ip.js';
import type { HistoryLimits } from './history-limits.js';
import type { NatRule } from './nat-rules.js';
import type { Condition } from './status.js';

export interface GatewaySpec {
  name: string;
  /** The external subnet (Kube-OVN `VpcNatGateway.spec.externalSubnets[0]`). */
  externalSubnet?: string;
  /** Kube-OVN `lanIp`: the gateway's address in the VPC (never a NAT rule's target). */
  lanIp?: string;
  /** The VPC subnet behind the gateway: NAT rules may only point into it. */
  internalCidr?: string;
}

export interface EipAddress {
  address: string;
  prefixLength: number;
}

// Ranges that can never be an EIP on an interface.
const UNUSABLE_RANGES = new Set(['unspecified', 'broadcast', 'multicast', 'loopback']);

/**
 * The EIP addresses a gateway's external interface is to hold, checked before anything changes:
 * IPv4 dotted quads with a prefix length from 0 to 32, none unusable (unspecified, broadcast,
 * multicast, loopback), no address twice with two prefix lengths. Returns them without duplicates;
 * throws one `InvalidAddressError` naming every problem.
 */
export function validateEipAddresses(desired: EipAddress[]): EipAddress[] {
  if (!Array.isArray(desired)) {
    throw new InvalidAddressError('desired EIP addresses must be an array');
  }
  const problems: string[] = [];
  const byAddress = new Map<string, EipAddress>();
  for (const entry of desired) {
    const address: unknown = entry?.address;
    const prefixLength: unknown = entry?.prefixLength;
    const shown = `${JSON.stringify(address)}/${JSON.stringify(prefixLength)}`;
    if (typeof address !== 'string' || !ipaddr.IPv4.isValidFourPartDecimal(address)) {
      problems.push(`${shown}: address must be an IPv4 dotted quad such as 172.18.0.10`);
      continue;
    }
    if (typeof prefixLength !== 'number' || !Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) {
      problems.push(`${shown}: prefix length must be an integer from 0 to 32`);
      continue;
    }
    const range = ipaddr.IPv4.parse(address).range();
    if (UNUSABLE_RANGES.has(range)) {
      problems.push(`${shown}: a ${range} address cannot be an EIP`);
      continue;
    }
    const seen = byAddress.get(address);
    if (seen && seen.prefixLength !== prefixLength) {
      problems.push(`${address} is desired with two prefix lengths (${seen.prefixLength} and ${prefixLength})`);
      continue;
    }
    byAddress.set(address, { address, prefixLength });
  }
  if (problems.length > 0) {
    throw new InvalidAddressError(`invalid EIP addresses: ${problems.join('; ')}`);
  }
  return [...byAddress.values()];
}

/** What a gateway agent says about itself when probed. */
export interface AgentInfo {
  gateway: string;
  /** New on every agent start: a change means the gateway may have lost its state. */
  instanceId: string;
  startedAt: string;
  externalInterface: string;
  /** It takes an address change and a rule change in one call (`applyGatewayChange`); agents from before do not say so, and get two. */
  changesInOneCall?: true;
}

/**
 * How an agent session (the liveness check) ended: it ran its time (`expired`), its agent is
 * stopping, or the agent that picked it up is another instance than the one asked for.
 */
export interface AgentSessionEnd {
  instanceId: string;
  ended: 'expired' | 'stopping' | 'other-instance';
}

export interface GatewayState {
  spec: GatewaySpec;
  ready: boolean;
  /** Why the gateway is not ready; empty when it is. */
  reason: string;
  agent: AgentInfo | null;
  /** Owner (EIP workflow ID) → address bound on this gateway. */
  eips: Record<string, EipAddress>;
  /** Owner (the rule resource's uid, its tag on the gateway) → NAT rule. */
  rules: Record<string, NatRule>;
  deleting: boolean;
  /**
   * A new incarnation rebuilding its desired state from its users: it only adds until its window
   * ends, then removes what nobody re-asserted (so until then it may carry more than it holds).
   */
  rebuilding?: boolean;
  /** The VpcNatGateway's status conditions (Ready, with natflow's reason and message). */
  conditions?: Condition[];
  /** The VpcNatGateway generation this state has taken in. */
  observedGeneration?: number;
  /** The uid of the VpcNatGateway it is linked to (finalizer, status); absent when none. */
  kubeUid?: string;
}

/** What a workflow learns when it asks about a gateway it depends on. */
export type GatewayReadiness = { exists: false; ready: false; reason: string } | { exists: true; ready: boolean; reason: string };

/** The rest of a gateway run's state, carried across continue-as-new (with `eips` and `rules`). */
export interface GatewayCarried {
  ready: boolean;
  reason: string;
  agent: AgentInfo | null;
  /** The agent instance that has exactly the carried addresses and rules; null: it needs a restore. */
  appliedBy: string | null;
  /** Rule owners removed but not yet taken off by an apply (removed by tag). */
  removals: string[];
  /** Addresses unbound but not yet taken off by an apply (a restore while rebuilding only adds). */
  addressRemovals?: string[];
  /** Still rebuilding its desired state from its users (a new incarnation): no full restore yet. */
  rebuilding: boolean;
  deleting: boolean;
  /** The EIPs a gateway being deleted last found naming it: its next run shows them until it asks again. */
  users?: string[];
  /** A full restore was asked for (the audit found drift) and not made yet. */
  restore?: boolean;
  conditions: Condition[];
}

/**
 * A gateway workflow's input. A run started with neither `eips` nor `rules` is a new incarnation:
 * it knows nothing of what its gateway carries, and rebuilds it from the resources that use it.
 */
export interface GatewayInput {
  spec: GatewaySpec;
  eips?: Record<string, EipAddress>;
  rules?: Record<string, NatRule>;
  /** Only read by runs of the last release (replayed); new runs use `limits`. */
  maxHistoryLength?: number;
  /** Its VpcNatGateway, when the bridge started it: finalizer and status go there. */
  kube?: { uid: string; generation: number };
  carried?: GatewayCarried;
  /** Lower history limits (tests); see workflows/history-budget.ts. */
  limits?: Partial<HistoryLimits>;
  /** How long a new incarnation only adds and removes what it is told before its first full restore (60 s). */
  rebuildWindowMs?: number;
}

/** The Ready condition's reason while EIPs still name a gateway being deleted. */
export const GATEWAY_IN_USE = 'GatewayInUse';

/**
 * What a NAT rule must satisfy on this gateway (the rule itself is valid): it points into the VPC
 * subnet (an SNAT CIDR wholly), never at the subnet's network or broadcast address nor at the
 * gateway's own lanIp. `name` (the rule resource's) makes the message name the rule.
 */
export function checkRuleOnGateway(spec: GatewaySpec, rule: NatRule, name?: string): void {
  const where = `${rule.kind} ${name ?? `rule ${rule.owner}`}`;
  const refuse = (problem: string) => {
    throw new NatflowError(Reason.InvalidSpec, `${where}: ${problem}`);
  };
  const vpc = spec.internalCidr ? gatewayAddress(() => parseCidr(spec.internalCidr!, `internalCidr of gateway ${spec.name}`)) : null;
  const lanIp = spec.lanIp ? gatewayAddress(() => parseIPv4(spec.lanIp!, `lanIp of gateway ${spec.name}`)) : null;
  const inVpc = `the VPC subnet ${spec.internalCidr} of gateway ${spec.name}`;
  if (rule.kind === 'snat') {
    const cidr = parseCidr(rule.internalCidr);
    if (vpc && (cidr.first < vpc.first || cidr.last > vpc.last)) refuse(`internalCIDR ${rule.internalCidr} is outside ${inVpc} (it must lie wholly inside it)`);
    return;
  }
  const ip = parseIPv4(rule.internalIp);
  if (vpc && (ip < vpc.first || ip > vpc.last)) refuse(`internalIp ${rule.internalIp} is outside ${inVpc}`);
  // A /31 or /32 has no network or broadcast address (RFC 3021).
  if (vpc && vpc.prefixLength <= 30 && ip === vpc.first) refuse(`internalIp ${rule.internalIp} is the network address of ${inVpc}`);
  if (vpc && vpc.prefixLength <= 30 && ip === vpc.last) refuse(`internalIp ${rule.internalIp} is the broadcast address of ${inVpc}`);
  if (ip === lanIp) refuse(`internalIp ${rule.internalIp} is the lanIp of gateway ${spec.name} (its own address in the VPC)`);
}

/** A gateway spec field that does not parse refuses the rule (InvalidSpec) rather than failing the workflow. */
function gatewayAddress<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof InvalidAddressError) throw new NatflowError(Reason.InvalidSpec, err.message);
    throw err;
  }
}
