// A NAT gateway as natflow sees it: what its agent reports, and the desired state that the
// gateway workflow holds and the agent applies.

export interface GatewaySpec {
  name: string;
  /** The external subnet (Kube-OVN `VpcNatGateway.spec.externalSubnets[0]`). */
  externalSubnet?: string;
  /** Kube-OVN `lanIp`: the gateway's address in the VPC. */
  lanIp?: string;
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
}

export interface GatewayState {
  spec: GatewaySpec;
  ready: boolean;
  /** Why the gateway is not ready; empty when it is. */
  reason: string;
  agent: AgentInfo | null;
  /** Owner (EIP workflow ID) → address bound on this gateway. */
  eips: Record<string, EipAddress>;
  deleting: boolean;
}

/** What a workflow learns when it asks about a gateway it depends on. */
export type GatewayReadiness = { exists: false; ready: false; reason: string } | { exists: true; ready: boolean; reason: string };
