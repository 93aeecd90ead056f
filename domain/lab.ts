// The local lab: one NAT gateway made of Linux network namespaces, named predictably from
// the gateway name. Pure data, shared by the lab scripts, the agent and the tests.
//
//   nf-<gw>-ext (external client)          nf-<gw> (gateway)                nf-<gw>-vm<i> (internal VMs)
//   eth0 172.18.0.1/24  <── veth ──>  net1 172.18.0.254/24 (+ EIPs)
//                                     eth0 (bridge) 10.0.1.254/24  <── veth vm<i> ──> eth0 10.0.1.<10+i>/24
//
// ("nf" is the default prefix: two runs on one host that both want a gateway called gw1, such
// as two test files in parallel, give their labs different prefixes.)
//
// Interface names live inside the namespaces, so they are the same for every gateway and match
// Kube-OVN's gateway pod (net1 external, eth0 VPC side).

import type { SubnetSpec } from './subnet.js';

export interface LabTopology {
  gateway: string;
  gatewayNs: string;
  clientNs: string;
  vmNamespaces: string[];
  externalInterface: string;
  vpcInterface: string;
  externalCidr: string;
  /** The external subnet's gateway: the external client in the lab. */
  externalGatewayIp: string;
  /** The NAT gateway's own address on the external network (never an EIP). */
  gatewayExternalIp: string;
  vpcCidr: string;
  /** Kube-OVN's `lanIp`: the NAT gateway's address in the VPC. */
  lanIp: string;
  vmIps: string[];
}

export const LAB_VM_COUNT = 2;

export const DEFAULT_LAB_PREFIX = 'nf';

export function labTopology(gateway: string, prefix = DEFAULT_LAB_PREFIX): LabTopology {
  const vmIps = Array.from({ length: LAB_VM_COUNT }, (_, i) => `10.0.1.${10 + i}`);
  return {
    gateway,
    gatewayNs: `${prefix}-${gateway}`,
    clientNs: `${prefix}-${gateway}-ext`,
    vmNamespaces: vmIps.map((_, i) => `${prefix}-${gateway}-vm${i + 1}`),
    externalInterface: 'net1',
    vpcInterface: 'eth0',
    externalCidr: '172.18.0.0/24',
    externalGatewayIp: '172.18.0.1',
    gatewayExternalIp: '172.18.0.254',
    vpcCidr: '10.0.1.0/24',
    lanIp: '10.0.1.254',
    vmIps,
  };
}

/**
 * The external subnet of the lab: every lab gateway has its own isolated copy of the same
 * addressing, so one subnet spec serves them all. The gateway's own address is excluded.
 */
export function labExternalSubnet(name: string): SubnetSpec {
  const t = labTopology('lab');
  return { name, cidrBlock: t.externalCidr, gateway: t.externalGatewayIp, excludeIps: [t.gatewayExternalIp] };
}
