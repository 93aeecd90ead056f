// A NAT gateway as natflow sees it: what its agent reports, and the desired state that the
// gateway workflow holds and the agent applies.
import type { NatRule } from './nat-rules.js';

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

/** What a gateway agent says about itself when probed. */
export interface AgentInfo {
  gateway: string;
  /** New on every agent start: a change means the gateway may have lost its state. */
  instanceId: string;
  startedAt: string;
  externalInterface: string;
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

/** A gateway workflow's input: its spec, and on continue-as-new the desired state it carries. */
export interface GatewayInput {
  spec: GatewaySpec;
  eips?: Record<string, EipAddress>;
  rules?: Record<string, NatRule>;
  maxHistoryLength?: number;
}
