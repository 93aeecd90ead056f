// Visibility lookups in batches (activities/visibility-batches.ts): concurrent lookups by name go
// in one list query, and each caller gets the workflows of its own name.
import { describe, expect, it } from 'vitest';
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { visibilityLookups } from '../activities/visibility-batches.js';

/** A client whose visibility holds `executions` and answers `NatflowX = "a"` / `NatflowX IN ("a", "b")` queries, slowly. */
function fakeVisibility(executions: WorkflowExecutionInfo[]) {
  const queries: string[] = [];
  const client = {
    workflow: {
      list({ query }: { query: string }) {
        queries.push(query);
        const asked = (attribute: string) => {
          const m = new RegExp(`${attribute} (?:= (".*?")|IN \\(([^)]*)\\))`).exec(query);
          return m ? (JSON.parse(`[${m[1] ?? m[2]}]`) as string[]) : null;
        };
        const [names, eips] = [asked('NatflowName'), asked('NatflowEip')];
        const value = (e: WorkflowExecutionInfo, key: string) => (e.searchAttributes?.[key] as string[] | undefined)?.[0];
        const matching = executions.filter((e) => (!names || names.includes(value(e, 'NatflowName')!)) && (!eips || eips.includes(value(e, 'NatflowEip')!)));
        return (async function* () {
          await new Promise((r) => setTimeout(r, 20));
          yield* matching;
        })();
      },
    },
  } as unknown as Client;
  return { client, queries };
}

const execution = (workflowId: string, attributes: Record<string, string>): WorkflowExecutionInfo =>
  ({ workflowId, status: { name: 'RUNNING' }, searchAttributes: Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, [v]])), memo: {} }) as unknown as WorkflowExecutionInfo;

describe('visibility lookups in batches', () => {
  it('looks up concurrent names in fewer queries than names, each answered with its own', async () => {
    const eips = Array.from({ length: 20 }, (_, i) => execution(`natflow/eip/e${i}/u${i}`, { NatflowKind: 'eip', NatflowName: `e${i}` }));
    const { client, queries } = fakeVisibility(eips);
    const lookups = visibilityLookups(client);
    const names = [...eips.map((_, i) => `e${i}`), 'missing'];
    const found = await Promise.all(names.map((name) => lookups.running('eip', name)));
    expect(found.map((records) => records.map((r) => r.workflowId))).toEqual([...eips.map((e) => [e.workflowId]), []]);
    expect(queries.length).toBeLessThanOrEqual(3);
    expect(queries.at(-1)).toMatch(/^NatflowName IN \("e\d+", .*\) AND NatflowKind = "eip"$/);
  });

  it('finds the rules naming each EIP in one query for concurrent EIPs', async () => {
    const rules = ['a', 'b', 'c', 'd'].flatMap((eip) => [execution(`natflow/fip/f-${eip}/u`, { NatflowKind: 'fip', NatflowEip: eip }), execution(`natflow/dnat/d-${eip}/u`, { NatflowKind: 'dnat', NatflowEip: eip })]);
    const { client, queries } = fakeVisibility(rules);
    const lookups = visibilityLookups(client);
    const found = await Promise.all(['a', 'b', 'c', 'd', 'none'].map((eip) => lookups.namingEip(eip)));
    expect(found.map((list) => list.map((e) => e.workflowId))).toEqual([...['a', 'b', 'c', 'd'].map((eip) => [`natflow/fip/f-${eip}/u`, `natflow/dnat/d-${eip}/u`]), []]);
    expect(queries.length).toBeLessThanOrEqual(3);
  });
});
