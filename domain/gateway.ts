// A NAT gateway as natflow sees it: what its agent reports, and the desired state that the
// gateway workflow holds and the agent applies.
import type { ConntrackTarget, NatRule } from './nat-rules.js';

export interface GatewaySpec {
  name: string;
  /** The external subnet (Kube-OVN `VpcNatGateway.spec.externalSubnets[0]`). */
  externalSubnet?: string;
  /** Kube-OVN `lanIp`: the gateway's address in the VPC. */
  lanIp?: string;
  /** The VPC subnet behind the gateway: NAT rules may only point into it. */
  internalCidr?: string;
}

export interface EipAddress {
  address: string;
  prefixLength: number;
}

/** What a gateway agent says about itself when probed. */
export interface AgentInfo {
  gateway: string;
  /** New on every agent start: a change means the gateway may have lost its state. */
  instanceId: string;
  startedAt: string;
  externalInterface: string;
}

/** The activities a gateway agent runs, on its gateway's own task queue. */
export interface GatewayAgentActivities {
  agentInfo(): Promise<AgentInfo>;
  /** Makes the EIP addresses on the external interface exactly `desired`. */
  reconcileEipAddresses(desired: EipAddress[]): Promise<{ added: string[]; removed: string[] }>;
  /** Creates natflow's chains and jumps; idempotent. */
  initNatChains(): Promise<void>;
  /** One batch: removes rules by owner tag, adds the missing ones (`replaceAll`: nothing else stays). */
  applyNatRules(change: { add: NatRule[]; removeOwners: string[]; replaceAll?: boolean }): Promise<{ added: number; removed: number }>;
  flushConntrack(targets: ConntrackTarget[]): Promise<number>;
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
}

/** What a workflow learns when it asks about a gateway it depends on. */
export type GatewayReadiness = { exists: false; ready: false; reason: string } | { exists: true; ready: boolean; reason: string };
