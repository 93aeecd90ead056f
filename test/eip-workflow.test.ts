// Workflow unit tier: the EIP workflow's ordering and every cancellation path, on a real dev
// server with the control activities replaced by a scripted fake that records each call.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { WorkflowHandle, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { WorkflowCallActivities } from '../domain/workflow-api.js';
import type { EipSpec } from '../domain/eip.js';
import { Reason } from '../domain/errors.js';
import { workflowIds } from '../domain/names.js';
import type { EipStatus } from '../domain/eip.js';
import { gatewayChangedSignal, statusQuery } from '../domain/workflow-api.js';
import { eipWorkflow } from '../workflows/eip.js';
import { createTestEnv } from './support/temporal-env.js';
import { deleteAndWait, eventually, uid, uniqueQueue, workflowBundle } from './support/workflows.js';

type Call = { name: keyof WorkflowCallActivities; phase: 'start' | 'end' };

/** A fake control plane: each activity records its start and end; tests script the answers. */
class FakeControl {
  calls: Call[] = [];
  gatewayReady = true;
  allocateDelayMs = 0;
  bindDelayMs = 0;
  bindFailures = 0;
  allocateFailure: ApplicationFailure | null = null;

  names(): string[] {
    return this.calls.filter((c) => c.phase === 'start').map((c) => c.name);
  }

  activities(): Partial<WorkflowCallActivities> {
    const track = <A extends unknown[], R>(name: keyof WorkflowCallActivities, fn: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
      this.calls.push({ name, phase: 'start' });
      try {
        return await fn(...args);
      } finally {
        this.calls.push({ name, phase: 'end' });
      }
    };
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    return {
      gatewayReadiness: track('gatewayReadiness', async (gateway: string) =>
        this.gatewayReady ? { exists: true as const, ready: true, reason: '' } : { exists: false as const, ready: false as const, reason: `NAT gateway ${gateway} does not exist` },
      ),
      allocateAddress: track('allocateAddress', async () => {
        await sleep(this.allocateDelayMs);
        if (this.allocateFailure) throw this.allocateFailure;
        return { owner: 'x', address: '172.18.0.5', prefixLength: 24 };
      }),
      releaseAddress: track('releaseAddress', async () => '172.18.0.5'),
      bindAddress: track('bindAddress', async () => {
        await sleep(this.bindDelayMs);
        if (this.bindFailures-- > 0) throw ApplicationFailure.nonRetryable('agent did not answer', Reason.GatewayNotReady);
      }),
      unbindAddress: track('unbindAddress', async () => ({ applied: true })),
      notifyGatewayWaiters: track('notifyGatewayWaiters', async () => 0),
      notifyEipWaiters: track('notifyEipWaiters', async () => 0),
    };
  }
}

describe('EIP workflow (mocked activities)', () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  /** Runs `body` with a worker serving the fake, and one EIP workflow started on it. */
  async function withEip(fake: FakeControl, spec: EipSpec, body: (h: WorkflowHandleWithFirstExecutionRunId<typeof eipWorkflow>) => Promise<void>) {
    const taskQueue = uniqueQueue('eip-unit');
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: fake.activities() });
    const resource = { name: 'eip1', uid: uid(), generation: 1 };
    await worker.runUntil(async () =>
      body(await env.client.workflow.start(eipWorkflow, { taskQueue, workflowId: workflowIds.resource('eip', resource), args: [{ resource, spec }] })),
    );
  }
  const spec: EipSpec = { natGwDp: 'gw1' };
  const eipStatus = (h: WorkflowHandle) => h.query(statusQuery) as Promise<EipStatus>;
  const phase = (h: WorkflowHandle) => () => eipStatus(h).then((s) => s.phase);

  it('checks the gateway, then allocates, then binds, and reports ready with its address', async () => {
    const fake = new FakeControl();
    await withEip(fake, spec, async (h) => {
      const status = await eventually(() => eipStatus(h), (s) => s.ready, 20_000, 'ready');
      expect(status.ip).toBe('172.18.0.5');
      expect(status.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'True', reason: 'Ready' });
      expect(fake.names()).toEqual(['gatewayReadiness', 'allocateAddress', 'bindAddress', 'notifyEipWaiters']);
      await deleteAndWait(h);
      expect(fake.names().slice(4)).toEqual(['unbindAddress', 'releaseAddress']);
    });
  });

  it('allocates nothing while its gateway is missing, and a delete then holds nothing to release', async () => {
    const fake = new FakeControl();
    fake.gatewayReady = false;
    await withEip(fake, spec, async (h) => {
      const status = await eventually(() => eipStatus(h), (s) => s.phase === 'WaitingForGateway', 20_000);
      expect(status.conditions[0]).toMatchObject({ reason: Reason.GatewayNotFound, message: 'NAT gateway gw1 does not exist' });
      await deleteAndWait(h);
      expect(new Set(fake.names())).toEqual(new Set(['gatewayReadiness']));
    });
  });

  it('wakes up when its gateway appears and becomes ready', async () => {
    const fake = new FakeControl();
    fake.gatewayReady = false;
    await withEip(fake, spec, async (h) => {
      await eventually(phase(h), (p) => p === 'WaitingForGateway', 20_000);
      fake.gatewayReady = true;
      await h.signal(gatewayChangedSignal);
      await eventually(phase(h), (p) => p === 'Ready', 20_000);
      await deleteAndWait(h);
    });
  });

  it('a delete during allocation waits for the allocation to finish, then releases it', async () => {
    const fake = new FakeControl();
    fake.allocateDelayMs = 1500;
    await withEip(fake, spec, async (h) => {
      await eventually(async () => fake.names(), (n) => n.includes('allocateAddress'), 20_000);
      await deleteAndWait(h);
      const order = fake.calls.map((c) => `${c.name}:${c.phase}`);
      expect(order.indexOf('releaseAddress:start')).toBeGreaterThan(order.indexOf('allocateAddress:end'));
      expect(fake.names()).not.toContain('bindAddress');
    });
  });

  it('a delete during the gateway add waits for it, then unbinds and releases', async () => {
    const fake = new FakeControl();
    fake.bindDelayMs = 1500;
    await withEip(fake, spec, async (h) => {
      await eventually(async () => fake.names(), (n) => n.includes('bindAddress'), 20_000);
      await deleteAndWait(h);
      const order = fake.calls.map((c) => `${c.name}:${c.phase}`);
      expect(order.indexOf('unbindAddress:start')).toBeGreaterThan(order.indexOf('bindAddress:end'));
      expect(order.indexOf('releaseAddress:start')).toBeGreaterThan(order.indexOf('unbindAddress:end'));
    });
  });

  it('a failed gateway add releases the address before waiting again, then recovers', async () => {
    const fake = new FakeControl();
    fake.bindFailures = 1;
    await withEip(fake, spec, async (h) => {
      await eventually(phase(h), (p) => p === 'Ready', 30_000);
      expect(fake.names()).toEqual(['gatewayReadiness', 'allocateAddress', 'bindAddress', 'unbindAddress', 'releaseAddress', 'gatewayReadiness', 'allocateAddress', 'bindAddress', 'notifyEipWaiters']);
      await deleteAndWait(h);
    });
  });

  it('an invalid spec gets a condition and touches nothing', async () => {
    const fake = new FakeControl();
    await withEip(fake, { natGwDp: 'gw1', v4ip: '172.18.0.300' }, async (h) => {
      const status = await eventually(() => eipStatus(h), (s) => s.phase === 'Invalid', 20_000);
      expect(status.conditions[0]).toMatchObject({ status: 'False', reason: Reason.InvalidSpec });
      expect(status.conditions[0]!.message).toContain('172.18.0.300');
      await deleteAndWait(h);
      expect(fake.calls).toEqual([]);
    });
  });

  it('a refused allocation shows the reason and holds nothing', async () => {
    const fake = new FakeControl();
    fake.allocateFailure = ApplicationFailure.nonRetryable('172.18.0.9 is already allocated in subnet ext', Reason.AddressTaken);
    await withEip(fake, { natGwDp: 'gw1', v4ip: '172.18.0.9' }, async (h) => {
      const status = await eventually(() => eipStatus(h), (s) => s.phase === 'Failed', 20_000);
      expect(status.conditions[0]).toMatchObject({ reason: Reason.AddressTaken, message: '172.18.0.9 is already allocated in subnet ext' });
      await deleteAndWait(h);
      expect(fake.names()).not.toContain('releaseAddress');
      expect(fake.names()).not.toContain('bindAddress');
    });
  });
});
