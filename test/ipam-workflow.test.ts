// The IPAM workflow on a real dev server: concurrent allocation from two workers' worth of
// clients, through continue-as-new, never gives one address twice.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import { workflowIds } from '../domain/names.js';
import { ipamStateQuery } from '../domain/workflow-api.js';
import { ipamWorkflow } from '../workflows/ipam.js';
import { createTestEnv } from './support/temporal-env.js';
import { uniqueQueue, workflowBundle } from './support/workflows.js';

describe('IPAM workflow', () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('gives 200 concurrent allocations from two workers 200 distinct addresses, across continue-as-new', async () => {
    const taskQueue = uniqueQueue('ipam');
    const subnet = { name: 'ext-200', cidrBlock: '172.18.0.0/24', gateway: '172.18.0.1', excludeIps: [] };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: {} });
    await worker.runUntil(async () => {
      // A short history limit forces several continue-as-new runs in the middle of the flood.
      const handle = await env.client.workflow.start(ipamWorkflow, { taskQueue, workflowId: workflowIds.ipam(subnet.name), args: [{ subnet, maxHistoryLength: 150 }] });
      // Two control workers: each has its own client (and so its own connection) running the allocate activity.
      const workers = [0, 1].map(() => createWorkflowCallActivities(new Client({ connection: env.connection })));
      const owners = Array.from({ length: 200 }, (_, i) => `natflow/eip/e${i}/uid-${i}`);
      const allocations = await Promise.all(owners.map((owner, i) => workers[i % 2]!.allocateAddress({ subnet: subnet.name, owner })));

      expect(new Set(allocations.map((a) => a.address)).size).toBe(200);
      const state = await handle.query(ipamStateQuery);
      expect(state.usage.v4usingIPs).toBe(200);
      expect(state.usage.v4availableIPs).toBe(253 - 200);
      expect(state.usage.v4usingIPrange).toBe('172.18.0.2-172.18.0.201');
      const { runId } = await handle.describe();
      expect(runId).not.toBe(handle.firstExecutionRunId);

      // A retried allocation returns the same address; then everything goes back.
      expect((await workers[1]!.allocateAddress({ subnet: subnet.name, owner: owners[0]! })).address).toBe(allocations[0]!.address);
      await Promise.all(owners.map((owner, i) => workers[i % 2]!.releaseAddress({ subnet: subnet.name, owner })));
      const after = await handle.query(ipamStateQuery);
      expect(after.usage).toMatchObject({ v4usingIPs: 0, v4availableIPs: 253, v4usingIPrange: '' });
      expect(after.allocations).toEqual({});
      await handle.terminate();
    });
  });

  it('refuses bad requests with a reason and records nothing', async () => {
    const taskQueue = uniqueQueue('ipam');
    const subnet = { name: 'ext-bad', cidrBlock: '172.19.0.0/24', gateway: '172.19.0.1', excludeIps: [] };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: {} });
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start(ipamWorkflow, { taskQueue, workflowId: workflowIds.ipam(subnet.name), args: [{ subnet }] });
      const control = createWorkflowCallActivities(env.client);
      await control.allocateAddress({ subnet: subnet.name, owner: 'a', requested: '172.19.0.7' });
      const refusal = (requested: string, owner = 'b') => control.allocateAddress({ subnet: subnet.name, owner, requested }).then(() => 'allocated', (err) => `${err.type}: ${err.message}`);
      expect(await refusal('172.19.0.7')).toBe('AddressTaken: 172.19.0.7 is already allocated in subnet ext-bad');
      expect(await refusal('172.20.0.7')).toBe('AddressOutOfRange: 172.20.0.7 is outside subnet ext-bad (172.19.0.0/24)');
      expect(await refusal('not-an-ip')).toMatch(/^InvalidSpec: requested address "not-an-ip" is not an IPv4 address/);
      expect(await control.allocateAddress({ subnet: 'no-such-subnet', owner: 'b' }).catch((err) => err.type)).toBe('SubnetNotFound');
      expect((await handle.query(ipamStateQuery)).allocations).toEqual({ a: '172.19.0.7' });
      await handle.terminate();
    });
  });
});
