// Finding resource workflows by what they are (kind, name, gateway) through their search
// attributes: how the CLI and the workflow calls find a resource by name. Visibility is
// eventually consistent: callers that must find a workflow just started retry for a moment.
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { FROM_KUBERNETES_MEMO } from '../domain/kube.js';
import { validateName, type ResourceKind } from '../domain/names.js';

export interface ResourceRecord<K extends string = ResourceKind> {
  kind: K;
  name: string;
  workflowId: string;
  /** Its NatflowPhase search attribute ('' before it set one). */
  phase: string;
  /** Its NatflowGateway search attribute, when it has one. */
  gateway?: string;
  /** Started by the kube bridge (its memo says so). */
  fromKube: boolean;
}

/**
 * Running workflows of a natflow kind (`eip` ... `snat`, `gateway`), found through their search
 * attributes. A lookup by name asks the server for every run of that name, of any kind, and keeps
 * the running ones of this kind here: the SQLite visibility store answers through one index, and
 * of two equalities it may pick either (which Keyword column an attribute got is the server's
 * choice, per database). `ExecutionStatus = "Running"` or `NatflowKind` beside the name would let
 * it walk every running workflow or every one of the kind, a lookup per resource O(N²) in a burst.
 */
export async function findRunning<K extends ResourceKind | 'gateway' | 'subnet'>(r: { client: Client }, kind: K, filter: { name?: string; gateway?: string } = {}): Promise<ResourceRecord<K>[]> {
  const clauses = filter.name ? [`NatflowName = ${JSON.stringify(validateName(filter.name, 'name'))}`] : [`NatflowKind = "${kind}"`, 'ExecutionStatus = "Running"'];
  if (filter.gateway) clauses.push(`NatflowGateway = ${JSON.stringify(validateName(filter.gateway, 'gateway'))}`);
  const found: ResourceRecord<K>[] = [];
  for await (const execution of r.client.workflow.list({ query: clauses.join(' AND ') })) {
    if (execution.status.name !== 'RUNNING' || attributeOf(execution, 'NatflowKind') !== kind) continue;
    const gateway = attributeOf(execution, 'NatflowGateway');
    found.push({ kind, name: attributeOf(execution, 'NatflowName') ?? execution.workflowId.split('/')[2] ?? execution.workflowId, workflowId: execution.workflowId, phase: phaseOf(execution), ...(gateway ? { gateway } : {}), fromKube: execution.memo?.source === FROM_KUBERNETES_MEMO.source });
  }
  return found;
}

/** Its NatflowPhase ('' before it set one); a `describe()` has it too, read from the workflow's own state. */
export const phaseOf = (execution: Pick<WorkflowExecutionInfo, 'searchAttributes'>): string => attributeOf(execution, 'NatflowPhase') ?? '';

export function attributeOf(execution: Pick<WorkflowExecutionInfo, 'searchAttributes'>, name: string): string | undefined {
  const value = execution.searchAttributes?.[name];
  return Array.isArray(value) && value.length > 0 ? String(value[0]) : undefined;
}

/** A just-started workflow may take a moment to become visible: look again for this long. */
const VISIBILITY_GRACE_MS = 5_000;

/** The running workflow of the resource of that kind and name, or null once the grace period is over. */
export async function findOneRunning(r: { client: Client }, kind: ResourceKind, name: string): Promise<ResourceRecord | null> {
  const deadline = Date.now() + VISIBILITY_GRACE_MS;
  for (;;) {
    const [found] = await findRunning(r, kind, { name });
    if (found || Date.now() > deadline) return found ?? null;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
