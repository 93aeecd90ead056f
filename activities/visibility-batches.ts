// Visibility lookups in batches. In a burst every new EIP asks which rules wait for it and every
// new rule looks its EIP up by name: a list query each, which the server answers at the cost of an
// activity (a create's own lookup of its name cost 11 s of 62 at 1,000 pairs). Concurrent lookups
// go in one query (`… IN (…)`), coalesced as the entity workflows' updates are
// (update-batches.ts): a lone lookup is still sent at once, a burst's thousand are a handful.
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { validateName, type ResourceKind } from '../domain/names.js';
import { attributeOf, findRunning, type ResourceRecord } from '../starter/find-resources.js';
import { UpdateBatcher } from './update-batches.js';

export interface VisibilityLookups {
  /** The running workflows of that kind and name (see findRunning). */
  running(kind: ResourceKind, name: string): Promise<ResourceRecord[]>;
  /** Every workflow (of any kind and state) whose NatflowEip is `eip`: the rules naming it. */
  namingEip(eip: string): Promise<WorkflowExecutionInfo[]>;
}

export function visibilityLookups(client: Client): VisibilityLookups {
  const byName = new UpdateBatcher<string, ResourceRecord[]>(async (kind, names) => {
    const found = await findRunning({ client }, kind as ResourceKind, { names: [...new Set(names)] });
    return names.map((name) => ({ ok: found.filter((f) => f.name === name) }));
  });
  const byEip = new UpdateBatcher<string, WorkflowExecutionInfo[]>(async (_, eips) => {
    const listed: WorkflowExecutionInfo[] = [];
    const names = [...new Set(eips)].map((eip) => JSON.stringify(validateName(eip, 'EIP name')));
    for await (const execution of client.workflow.list({ query: `NatflowEip IN (${names.join(', ')})` })) listed.push(execution);
    return eips.map((eip) => ({ ok: listed.filter((execution) => attributeOf(execution, 'NatflowEip') === eip) }));
  });
  return {
    running: (kind, name) => byName.request(kind, name),
    namingEip: (eip) => byEip.request('NatflowEip', eip),
  };
}
