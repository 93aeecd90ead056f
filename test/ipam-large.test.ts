// A /16 external subnet with 60,000 allocations on a real dev server: the IPAM continues as new on
// its update budget carrying every allocation, answers its queries, and every payload it writes
// (start and continue-as-new input, query results) stays under the server's 2 MB limit thanks
// to the payload codec. The sizes are printed: they are the margin an operator has.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultPayloadConverter } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import { formatIPv4, parseIPv4 } from '../domain/ip.js';
import { workflowIds } from '../domain/names.js';
import { ipamStateQuery, ipamUsageQuery } from '../domain/workflow-api.js';
import { ipamWorkflow } from '../workflows/ipam.js';
import { GZIP_ENCODING, natflowPayloadCodec } from '../worker/payload-codec.js';
import { PAYLOAD_LIMIT, wireSize } from './support/payloads.js';
import { createTestEnv } from './support/temporal-env.js';
import { withWorkflow } from './support/workflows.js';

const ALLOCATED = 60_000;

describe('IPAM of a /16', () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it(`holds ${ALLOCATED} allocations through continue-as-new and answers its queries, every payload under 2 MB`, async () => {
    const subnet = { name: 'ext-16', cidrBlock: '100.64.0.0/16', gateway: '100.64.0.1', excludeIps: [] };
    const first = parseIPv4('100.64.0.2');
    // Owners as the EIP workflows name themselves: name and a random uid, the incompressible part.
    const allocations = Object.fromEntries(Array.from({ length: ALLOCATED }, (_, i) => [`natflow/eip/eip-${i}/${crypto.randomUUID()}`, formatIPv4(first + i)]));
    const limits = { updates: 20 };
    await withWorkflow(env, {}, ipamWorkflow, { workflowId: workflowIds.ipam(subnet.name), args: [{ subnet, allocations, limits }] }, async (handle) => {
      const control = createWorkflowCallActivities(env.client);
      const owners = Array.from({ length: 15 }, (_, i) => `natflow/eip/new-${i}/${crypto.randomUUID()}`);
      for (const owner of owners) await control.allocateAddress({ subnet: subnet.name, owner });
      for (const owner of owners.slice(5)) await control.releaseAddress({ subnet: subnet.name, owner });
      const { runId } = await handle.describe();
      expect(runId, 'continued as new on its update budget').not.toBe(handle.firstExecutionRunId);

      // The next run's input, as the server stores it: compressed, with every allocation held at
      // the 20th update (15 allocated, 5 released), the other releases done by the new run.
      const { events } = await handle.fetchHistory();
      const input = events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads![0]!;
      expect(new TextDecoder().decode(input.metadata!.encoding!)).toBe(GZIP_ENCODING);
      const carried = (await natflowPayloadCodec.decode([input]))[0]!;
      expect(Object.keys(defaultPayloadConverter.fromPayload<{ allocations: object }>(carried).allocations)).toHaveLength(ALLOCATED + 10);

      const started = Date.now();
      const state = await handle.query(ipamStateQuery);
      const queryMs = Date.now() - started;
      expect(Object.keys(state.allocations)).toHaveLength(ALLOCATED + 5);
      expect(state.usage).toMatchObject({ v4usingIPs: ALLOCATED + 5, v4availableIPs: 65_533 - ALLOCATED - 5, v4usingIPrange: `100.64.0.2-${formatIPv4(first + ALLOCATED + 4)}` });
      const summary = await handle.query(ipamUsageQuery);
      expect(summary.usage).toEqual(state.usage);

      const sizes = { continueAsNewInput: input.data!.byteLength, stateQuery: await wireSize(state), usageQuery: await wireSize(summary), subnetStatus: JSON.stringify(state.usage).length };
      console.log(`IPAM /16 with ${ALLOCATED + 5} allocations: bytes on the wire ${JSON.stringify(sizes)}; state query answered in ${queryMs} ms`);
      for (const size of [sizes.continueAsNewInput, sizes.stateQuery]) expect(size).toBeLessThan(PAYLOAD_LIMIT);
      expect(sizes.usageQuery).toBeLessThan(4096);
      await handle.terminate();
    });
  });
});
