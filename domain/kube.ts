// Where natflow's resources live in Kubernetes: Kube-OVN's group, kinds and plurals (so that
// Kube-OVN manifests apply unchanged), the finalizer natflow puts on them, and the reference a
// workflow keeps to its object. Pure data, shared by the bridge, the kube activities and tests.
import type { ResourceKind } from './names.js';

export const KUBEOVN_GROUP = 'kubeovn.io';
export const KUBEOVN_VERSION = 'v1';
export const KUBEOVN_API_VERSION = `${KUBEOVN_GROUP}/${KUBEOVN_VERSION}`;

/** Holds a deleted object until its workflow's cleanup has run. */
export const FINALIZER = 'natflow.io/cleanup';

/** What marks a workflow linked to a Kubernetes object (its memo): only those are ever collected as orphans. */
export const FROM_KUBERNETES_MEMO = { source: 'kubernetes' } as const;

/** Every kind natflow watches, by natflow's short name, as Kube-OVN names them. */
export const KUBEOVN_KINDS = {
  eip: { kind: 'IptablesEIP', plural: 'iptables-eips' },
  fip: { kind: 'IptablesFIPRule', plural: 'iptables-fip-rules' },
  dnat: { kind: 'IptablesDnatRule', plural: 'iptables-dnat-rules' },
  snat: { kind: 'IptablesSnatRule', plural: 'iptables-snat-rules' },
  'vpc-nat-gw': { kind: 'VpcNatGateway', plural: 'vpc-nat-gateways' },
  subnet: { kind: 'Subnet', plural: 'subnets' },
} as const satisfies Record<ResourceKind | 'vpc-nat-gw' | 'subnet', { kind: string; plural: string }>;

export type KubeKind = keyof typeof KUBEOVN_KINDS;

/** The coordinates of a kind for the custom-objects API. */
export const crd = (kind: KubeKind) => ({ group: KUBEOVN_GROUP, version: KUBEOVN_VERSION, plural: KUBEOVN_KINDS[kind].plural });

/** A workflow's reference to its object (a resource's, or a gateway's VpcNatGateway): the uid tells a re-created object apart. */
export interface KubeRef {
  kind: ResourceKind | 'vpc-nat-gw';
  name: string;
  uid: string;
}
