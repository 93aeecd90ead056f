// What a client does with natflow's resources: the operations behind the CLI, the main job and
// the kube bridge. Every "ensure" is idempotent: repeats find the running workflow.
import { v5 as uuidv5 } from 'uuid';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { normalizeEipSpec, type EipSpec, type EipStatus } from '../domain/eip.js';
import type { GatewayInput, GatewaySpec, GatewayState } from '../domain/gateway.js';
import type { HistoryLimits } from '../domain/history-limits.js';
import type { IpamState } from '../domain/ipam.js';
import { CONTROL_TASK_QUEUE, ENTITY_WORKFLOW_TASK_TIMEOUT, entityTaskQueue, validateName, workflowIds, type ResourceKind, type ResourceRef } from '../domain/names.js';
import { natEipName, type NatKind, type NatSpec, type NatSpecs, type NatStatus } from '../domain/nat-resources.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { DEFAULT_EXTERNAL_SUBNET, parseSubnet, type SubnetSpec } from '../domain/subnet.js';
import { gatewayStateQuery, ipamStateQuery, specChangedSignal, statusQuery } from '../domain/workflow-api.js';
import { eipWorkflow, eipWorkflowV6 } from '../workflows/eip.js';
import { gatewayWorkflow } from '../workflows/gateway.js';
import { ipamWorkflow } from '../workflows/ipam.js';
import { dnatWorkflowV6, fipWorkflowV6, snatWorkflowV6 } from '../workflows/nat-rule.js';
import { FROM_KUBERNETES_MEMO } from '../domain/kube.js';
import { findOneRunning, findRunning } from './find-resources.js';

export interface Resources {
  client: Client;
  taskQueue?: string;
  /** Lower per-run history limits for the workflows started here (tests); see workflows/history-budget.ts. */
  historyLimits?: HistoryLimitOverrides;
  /** A shorter rebuild window for the gateway workflows started here (tests); see workflows/gateway.ts. */
  gatewayRebuildWindowMs?: number;
}

export type HistoryLimitOverrides = Partial<HistoryLimits>;

const queue = (r: Resources) => r.taskQueue ?? CONTROL_TASK_QUEUE;

/** Starts a subnet's IPAM unless it runs; `generation`: its Subnet's, when it comes from Kubernetes. */
export async function ensureSubnet(r: Resources, spec: SubnetSpec, generation?: number): Promise<string> {
  parseSubnet(spec); // a clear error here rather than a failed workflow
  const handle = await r.client.workflow.start(ipamWorkflow, {
    taskQueue: entityTaskQueue(queue(r)),
    workflowId: workflowIds.ipam(spec.name),
    workflowTaskTimeout: ENTITY_WORKFLOW_TASK_TIMEOUT,
    workflowIdConflictPolicy: 'USE_EXISTING',
    args: [{ subnet: spec, ...(generation !== undefined && { generation }), ...(r.historyLimits && { limits: r.historyLimits }) }],
    staticSummary: `IPAM of subnet ${spec.name} (${spec.cidrBlock})`,
  });
  return handle.workflowId;
}

export async function subnetState(r: Resources, name: string): Promise<IpamState> {
  return r.client.workflow.getHandle(workflowIds.ipam(name)).query(ipamStateQuery);
}

/** Starts a gateway's workflow unless it runs; `kube`: its VpcNatGateway, which the workflow then adopts. */
export async function ensureGateway(r: Resources, spec: GatewaySpec, kube?: GatewayInput['kube']): Promise<string> {
  validateName(spec.name, 'gateway name');
  const handle = await r.client.workflow.start(gatewayWorkflow, {
    taskQueue: entityTaskQueue(queue(r)),
    workflowId: workflowIds.gateway(spec.name),
    workflowTaskTimeout: ENTITY_WORKFLOW_TASK_TIMEOUT,
    workflowIdConflictPolicy: 'USE_EXISTING',
    args: [{ spec, ...(kube && { kube }), ...(r.historyLimits && { limits: r.historyLimits }), ...(r.gatewayRebuildWindowMs !== undefined && { rebuildWindowMs: r.gatewayRebuildWindowMs }) }],
    ...(kube && { memo: FROM_KUBERNETES_MEMO }),
    staticSummary: `NAT gateway ${spec.name}`,
  });
  return handle.workflowId;
}

export async function gatewayState(r: Resources, name: string): Promise<GatewayState> {
  return r.client.workflow.getHandle(workflowIds.gateway(name)).query(gatewayStateQuery);
}

export { findRunning };

/** Deletes a gateway; refused while EIPs still name it (as Kube-OVN's webhook does). */
export async function deleteGateway(r: Resources, name: string): Promise<void> {
  const users = await findRunning(r, 'eip', { gateway: name });
  if (users.length > 0) {
    throw new Error(`gateway ${name} is still used by EIP(s) ${users.map((u) => u.name).join(', ')}: delete them first`);
  }
  const handle = r.client.workflow.getHandle(workflowIds.gateway(name));
  await handle.cancel();
  await handle.result().catch(() => undefined);
}

export interface CreatedResource {
  kind: ResourceKind;
  name: string;
  uid: string;
  workflowId: string;
}

/** The status every resource workflow answers (`status` query), with what found it. */
export type ResourceStatus<K extends ResourceKind> = (K extends 'eip' ? EipStatus : NatStatus) & { name: string; workflowId: string };

const workflowOf = { eip: eipWorkflowV6, fip: fipWorkflowV6, dnat: dnatWorkflowV6, snat: snatWorkflowV6 } as const;

/**
 * How a resource's workflow is started, by the CLI and the bridge alike: its ID, input and the
 * search attributes it has from its first moment, so it can be found by name at once. One that
 * comes from Kubernetes is marked (memo), so that the bridge may collect it once its object is gone.
 */
/**
 * A resource workflow's task timeout. 20 s, not the default 10 s, for the runs of the release whose
 * calls were local activities: those ran inside the workflow task, which the SDK heartbeats at
 * 80 % of this, and a heartbeated task with a signal in the next one can replay out of order
 * (README, "Known SDK issue"). Runs since 'remote-calls' have no local activities; they keep it
 * (continued runs carry it anyway): a task lost with its worker is given to another after 20 s
 * rather than 10, and a task slower than 10 s on a saturated worker is not timed out and redone.
 */
export const RESOURCE_WORKFLOW_TASK_TIMEOUT = '20s';

export function resourceStart(kind: ResourceKind, resource: ResourceRef, spec: EipSpec | NatSpec, taskQueue = CONTROL_TASK_QUEUE, limits?: HistoryLimitOverrides) {
  const eip = kind === 'eip' ? (spec as Partial<EipSpec>) : undefined;
  return {
    workflow: workflowOf[kind] as typeof eipWorkflow,
    options: {
      taskQueue,
      workflowId: workflowIds.resource(kind, resource),
      workflowTaskTimeout: RESOURCE_WORKFLOW_TASK_TIMEOUT,
      args: [{ ...(kind === 'eip' ? { resource, spec } : { kind, resource, spec }), ...(limits && { limits }) } as never] as [never],
      ...(resource.fromKube && { memo: FROM_KUBERNETES_MEMO }),
      typedSearchAttributes: searchAttributes({ kind, name: resource.name, phase: 'Pending', ...(eip ? { gateway: String(eip.natGwDp ?? ''), subnet: String(eip.externalSubnet || DEFAULT_EXTERNAL_SUBNET) } : { eip: String((spec as Partial<NatSpec>)?.eip ?? '') }) }),
      staticSummary: `${kind} ${resource.name}${eip ? ` on gateway ${eip.natGwDp}` : ` on EIP ${(spec as Partial<NatSpec>)?.eip}`}${resource.fromKube ? ' (kubernetes)' : ''}`,
    },
  };
}

/**
 * The uid of a resource the CLI starts (the apiserver mints an object's): a name-based UUID of its
 * kind and name, so that its workflow ID is the same for every create of that name and the server
 * refuses a second start while one runs, however many race. It was a random uid and a visibility
 * lookup per create, which racing creates could all pass: a list query that cost 11 s of 62 at
 * 1,000 pairs. Being its rule owner too, the uid is one per kind and name; a name is created again
 * only once its last workflow has ended, and with it everything the last one held.
 */
export const cliUid = (kind: ResourceKind, name: string) => uuidv5(`${kind}/${name}`, CLI_UID_NAMESPACE);
const CLI_UID_NAMESPACE = 'a6f35bbd-7e2f-49fc-822e-39bbe95d1cd8';

/**
 * Starts a resource's workflow, refused while one of that name (from the CLI) runs, as the
 * apiserver refuses a second object of a name. Search attributes are set at start so the
 * resource can be found by name at once.
 */
export async function createResource<K extends ResourceKind>(r: Resources, kind: K, name: string, spec: K extends 'eip' ? EipSpec : NatSpecs[Exclude<K, 'eip'>], uid: string = cliUid(kind, name)): Promise<CreatedResource> {
  validateName(name, `${kind} name`);
  if (kind === 'eip') normalizeEipSpec(name, spec as EipSpec);
  else natEipName({ kind: kind as NatKind, resource: { name, uid, generation: 1 }, spec: spec as NatSpec });
  const start = resourceStart(kind, { name, uid, generation: 1 }, spec, queue(r), r.historyLimits);
  try {
    const handle = await r.client.workflow.start(start.workflow, start.options);
    return { kind, name, uid, workflowId: handle.workflowId };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) throw alreadyExists(kind, name);
    throw err;
  }
}

/** Refuses a name that a running resource of that kind has, whoever started it (an object's workflow has its uid in its ID): a visibility lookup, for one create at a time. */
export async function refuseTakenName(r: Resources, kind: ResourceKind, name: string): Promise<void> {
  if ((await findRunning(r, kind, { name })).length > 0) throw alreadyExists(kind, name);
}

const alreadyExists = (kind: ResourceKind, name: string) => new Error(`${kind} ${name} already exists`);

async function resourceWorkflowId(r: Resources, kind: ResourceKind, name: string): Promise<string> {
  const found = await findOneRunning(r, kind, name);
  if (!found) throw new WorkflowNotFoundError(`${kind} ${name} does not exist`, name, undefined);
  return found.workflowId;
}

export async function resourceStatus<K extends ResourceKind>(r: Resources, kind: K, name: string): Promise<ResourceStatus<K>> {
  const workflowId = await resourceWorkflowId(r, kind, name);
  const status = await r.client.workflow.getHandle(workflowId).query(statusQuery);
  return { name, workflowId, ...status } as unknown as ResourceStatus<K>;
}

/** Changes a NAT rule's spec (the next generation), as an edit of the object would. */
export async function updateNatSpec(r: Resources, kind: NatKind, name: string, spec: NatSpec): Promise<number> {
  const current = await resourceStatus(r, kind, name);
  const generation = current.observedGeneration + 1;
  await r.client.workflow.getHandle(current.workflowId).signal(specChangedSignal, { spec, generation });
  return generation;
}

/** Deletes a resource: cancels its workflow and, unless told not to, waits for its cleanup. */
export async function deleteResource(r: Resources, kind: ResourceKind, name: string, wait = true): Promise<string> {
  const handle = r.client.workflow.getHandle(await resourceWorkflowId(r, kind, name));
  await handle.cancel();
  if (wait) await handle.result().catch(() => undefined);
  return handle.workflowId;
}

export const createEip = (r: Resources, name: string, spec: EipSpec, uid?: string) => createResource(r, 'eip', name, spec, uid);
export const eipStatus = (r: Resources, name: string) => resourceStatus(r, 'eip', name);
export const deleteEip = (r: Resources, name: string, wait = true) => deleteResource(r, 'eip', name, wait);

/** The Web UI page of a workflow. */
export function webUiLink(uiUrl: string, namespace: string, workflowId: string): string {
  return `${uiUrl.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
