// What a client does with natflow's resources: the operations behind the CLI, the main job
// and (later) the kube bridge. Every "ensure" is idempotent: repeats find the running workflow.
import { randomUUID } from 'node:crypto';
import { WorkflowNotFoundError, type Client, type WorkflowExecutionInfo } from '@temporalio/client';
import { normalizeEipSpec, type EipSpec, type EipStatus } from '../domain/eip.js';
import type { GatewaySpec, GatewayState } from '../domain/gateway.js';
import { CONTROL_TASK_QUEUE, validateName, workflowIds, type ResourceKind } from '../domain/names.js';
import { DEFAULT_EXTERNAL_SUBNET, parseSubnet, type SubnetSpec } from '../domain/subnet.js';
import { searchAttributes } from '../workflows/search-attributes.js';
import { eipStatusQuery, eipWorkflow } from '../workflows/eip.js';
import { gatewayStateQuery, gatewayWorkflow } from '../workflows/gateway.js';
import { ipamStateQuery, ipamWorkflow, type IpamState } from '../workflows/ipam.js';

export interface Resources {
  client: Client;
  taskQueue?: string;
}

const queue = (r: Resources) => r.taskQueue ?? CONTROL_TASK_QUEUE;

export async function ensureSubnet(r: Resources, spec: SubnetSpec): Promise<string> {
  parseSubnet(spec); // a clear error here rather than a failed workflow
  const handle = await r.client.workflow.start(ipamWorkflow, {
    taskQueue: queue(r),
    workflowId: workflowIds.ipam(spec.name),
    workflowIdConflictPolicy: 'USE_EXISTING',
    args: [{ subnet: spec }],
    staticSummary: `IPAM of subnet ${spec.name} (${spec.cidrBlock})`,
  });
  return handle.workflowId;
}

export async function subnetState(r: Resources, name: string): Promise<IpamState> {
  return r.client.workflow.getHandle(workflowIds.ipam(name)).query(ipamStateQuery);
}

export async function ensureGateway(r: Resources, spec: GatewaySpec): Promise<string> {
  validateName(spec.name, 'gateway name');
  const handle = await r.client.workflow.start(gatewayWorkflow, {
    taskQueue: queue(r),
    workflowId: workflowIds.gateway(spec.name),
    workflowIdConflictPolicy: 'USE_EXISTING',
    args: [{ spec }],
    staticSummary: `NAT gateway ${spec.name}`,
  });
  return handle.workflowId;
}

export async function gatewayState(r: Resources, name: string): Promise<GatewayState> {
  return r.client.workflow.getHandle(workflowIds.gateway(name)).query(gatewayStateQuery);
}

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

export interface ResourceRecord {
  kind: ResourceKind;
  name: string;
  workflowId: string;
}

/** Running resource workflows of a kind, found through their search attributes. */
export async function findRunning(r: Resources, kind: ResourceKind, filter: { name?: string; gateway?: string } = {}): Promise<ResourceRecord[]> {
  const clauses = [`NatflowKind = "${kind}"`, 'ExecutionStatus = "Running"'];
  if (filter.name) clauses.push(`NatflowName = ${JSON.stringify(validateName(filter.name, 'name'))}`);
  if (filter.gateway) clauses.push(`NatflowGateway = ${JSON.stringify(validateName(filter.gateway, 'gateway'))}`);
  const found: ResourceRecord[] = [];
  for await (const execution of r.client.workflow.list({ query: clauses.join(' AND ') })) {
    found.push({ kind, name: nameOf(execution), workflowId: execution.workflowId });
  }
  return found;
}

function nameOf(execution: WorkflowExecutionInfo): string {
  const value = execution.searchAttributes?.NatflowName;
  return Array.isArray(value) ? String(value[0]) : execution.workflowId.split('/')[2] ?? execution.workflowId;
}

export interface CreatedEip {
  name: string;
  uid: string;
  workflowId: string;
}

/** Starts an EIP's workflow. Without Kubernetes the CLI mints the uid, as the apiserver would. */
export async function createEip(r: Resources, name: string, spec: EipSpec, uid: string = randomUUID()): Promise<CreatedEip> {
  normalizeEipSpec(name, spec);
  const existing = await findRunning(r, 'eip', { name });
  if (existing.length > 0) throw new Error(`EIP ${name} already exists`);
  const resource = { name, uid, generation: 1 };
  const handle = await r.client.workflow.start(eipWorkflow, {
    taskQueue: queue(r),
    workflowId: workflowIds.resource('eip', resource),
    args: [{ resource, spec }],
    // Set at start (not only by the workflow's first task) so the EIP can be found by name at once.
    typedSearchAttributes: searchAttributes({ kind: 'eip', name, gateway: spec.natGwDp, subnet: spec.externalSubnet || DEFAULT_EXTERNAL_SUBNET, phase: 'Pending' }),
    staticSummary: `EIP ${name} on ${spec.natGwDp}`,
  });
  return { name, uid, workflowId: handle.workflowId };
}

/** Visibility is eventually consistent: a just-created EIP may take a moment to be found by name. */
const VISIBILITY_GRACE_MS = 5_000;

async function eipWorkflowId(r: Resources, name: string): Promise<string> {
  const deadline = Date.now() + VISIBILITY_GRACE_MS;
  for (;;) {
    const [found] = await findRunning(r, 'eip', { name });
    if (found) return found.workflowId;
    if (Date.now() > deadline) throw new WorkflowNotFoundError(`EIP ${name} does not exist`, name, undefined);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export async function eipStatus(r: Resources, name: string): Promise<EipStatus & { name: string; workflowId: string }> {
  const workflowId = await eipWorkflowId(r, name);
  return { name, workflowId, ...(await r.client.workflow.getHandle(workflowId).query(eipStatusQuery)) };
}

/** Deletes an EIP: cancels its workflow and, unless told not to, waits for its cleanup. */
export async function deleteEip(r: Resources, name: string, wait = true): Promise<string> {
  const handle = r.client.workflow.getHandle(await eipWorkflowId(r, name));
  await handle.cancel();
  if (wait) await handle.result().catch(() => undefined);
  return handle.workflowId;
}

/** The Web UI page of a workflow. */
export function webUiLink(uiUrl: string, namespace: string, workflowId: string): string {
  return `${uiUrl.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
