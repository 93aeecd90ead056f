// Names, IDs and task queues derived from resources. Everything that two processes must agree
// on (the bridge and the workers, the CLI and the agent) is computed here, once.
import { NatflowError, Reason } from './errors.js';

// Kubernetes' own (IsDNS1123Subdomain): dot-separated labels, each starting and ending alphanumeric.
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Kubernetes object names (DNS-1123 subdomain, ≤ 253). They also end up in workflow IDs and commands. */
export function validateName(name: unknown, what: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
    throw new NatflowError(
      Reason.InvalidSpec,
      `${what} ${JSON.stringify(name)} is not a valid name (lower-case letters, digits, '-' and '.', at most 253)`,
    );
  }
  return name;
}

export type ResourceKind = 'eip' | 'fip' | 'dnat' | 'snat';

/** A resource as the workflows know it: the Kubernetes identity of the object. */
export interface ResourceRef {
  name: string;
  uid: string;
  generation: number;
  /** The object lives in Kubernetes (started by the bridge): finalizer and status go there too. */
  fromKube?: boolean;
}

export const CONTROL_TASK_QUEUE = 'natflow-control';
/**
 * The IPAM and gateway workflows' queue beside a control queue: served by a worker of its own in
 * the control process, so that resource workflows waiting in their local activities (each holding
 * a workflow-task slot) can never take the slots these workflows need to answer them.
 */
export const entityTaskQueue = (controlQueue: string) => `${controlQueue}-entities`;
/**
 * The IPAM and gateway workflows' task timeout, set at start and carried by each continue-as-new.
 * Not the default 10 s: a busy worker replays a gateway's run when it leaves its cache, and under a
 * 5,000-pair burst one such replay took 7.4 s (one over 10 s failed every attempt, and the gateway
 * wedged, before its batches cost what they change).
 */
export const ENTITY_WORKFLOW_TASK_TIMEOUT = '20s';

export const workflowIds = {
  resource: (kind: ResourceKind, ref: Pick<ResourceRef, 'name' | 'uid'>) => `natflow/${kind}/${ref.name}/${ref.uid}`,
  ipam: (subnet: string) => `natflow/ipam/${subnet}`,
  gateway: (gateway: string) => `natflow/gateway/${gateway}`,
};

/** Each gateway agent polls its own queue, so an activity sent there runs in that gateway. */
export const gatewayTaskQueue = (gateway: string) => `natflow-gateway-${gateway}`;
