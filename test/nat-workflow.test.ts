// Workflow unit tier for NAT rules: the order of the Kube-OVN fix (claim the EIP before any
// rule, remove rules before giving the EIP back) and every cancellation path, with the control
// activities replaced by a fake that records each call.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { NatStatus } from '../domain/nat-resources.js';
import { eipChangedSignal, specChangedSignal, statusQuery, type WorkflowCallActivities } from '../domain/workflow-api.js';
import { Reason } from '../domain/errors.js';
import { workflowIds } from '../domain/names.js';
import { fipWorkflow } from '../workflows/nat-rule.js';
import { createTestEnv } from './support/temporal-env.js';
import { deleteAndWait, eventually, uid, uniqueQueue, workflowBundle } from './support/workflows.js';

class FakeControl {
  calls: string[] = [];
  eipReady = true;
  applyDelayMs = 0;
  applyFailure: ApplicationFailure | null = null;
  claimFailure: ApplicationFailure | null = null;
  rulesSeen: unknown[] = [];

  activities(): Partial<WorkflowCallActivities> {
    const track = <A extends unknown[], R>(name: string, fn: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
      this.calls.push(`${name}:start`);
      try {
        return await fn(...args);
      } finally {
        this.calls.push(`${name}:end`);
      }
    };
    return {
      eipForRule: track('eipForRule', async () => (this.eipReady ? { workflowId: 'natflow/eip/e1/u', ready: true, address: '172.18.0.9', gateway: 'gw1', reason: '' } : null)),
      claimEip: track('claimEip', async () => {
        if (this.claimFailure) throw this.claimFailure;
        return { address: '172.18.0.9', gateway: 'gw1' };
      }),
      unclaimEip: track('unclaimEip', async () => undefined),
      setGatewayRule: track('setGatewayRule', async (req: { rule: unknown }) => {
        this.rulesSeen.push(req.rule);
        await new Promise((r) => setTimeout(r, this.applyDelayMs));
        if (this.applyFailure) throw this.applyFailure;
      }),
      removeGatewayRule: track('removeGatewayRule', async () => ({ applied: true })),
    };
  }
  started(): string[] {
    return this.calls.filter((c) => c.endsWith(':start')).map((c) => c.slice(0, -':start'.length));
  }
}

describe('NAT rule workflow (mocked activities)', () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  async function withFip(fake: FakeControl, body: (h: WorkflowHandle<typeof fipWorkflow>) => Promise<void>, internalIp = '10.0.1.10') {
    const taskQueue = uniqueQueue('nat-unit');
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: fake.activities() });
    const resource = { name: 'fip1', uid: uid(), generation: 1 };
    await worker.runUntil(async () =>
      body(await env.client.workflow.start(fipWorkflow, { taskQueue, workflowId: workflowIds.resource('fip', resource), args: [{ kind: 'fip', resource, spec: { eip: 'e1', internalIp } }] })),
    );
  }
  const natStatus = (h: WorkflowHandle) => h.query(statusQuery) as Promise<NatStatus>;
  const phase = (h: WorkflowHandle) => () => natStatus(h).then((s) => s.phase);

  it('claims the EIP before applying, and on delete removes the rule before giving the EIP back', async () => {
    const fake = new FakeControl();
    await withFip(fake, async (h) => {
      const status = await eventually(() => natStatus(h), (s) => s.ready, 20_000);
      expect(status).toMatchObject({ v4ip: '172.18.0.9', natGwDp: 'gw1', internalIp: '10.0.1.10' });
      expect(fake.started()).toEqual(['eipForRule', 'claimEip', 'setGatewayRule']);
      await deleteAndWait(h);
      expect(fake.started().slice(3)).toEqual(['removeGatewayRule', 'unclaimEip']);
    });
  });

  it('waits for a missing EIP without touching anything; a delete then has nothing to undo', async () => {
    const fake = new FakeControl();
    fake.eipReady = false;
    await withFip(fake, async (h) => {
      const status = await eventually(() => natStatus(h), (s) => s.phase === 'WaitingForEip', 20_000);
      expect(status.conditions[0]).toMatchObject({ reason: Reason.EipNotFound, message: 'EIP e1 does not exist' });
      await deleteAndWait(h);
      expect(new Set(fake.started())).toEqual(new Set(['eipForRule']));
    });
  });

  it('a rule created before its EIP starts as soon as the EIP says it is ready', async () => {
    const fake = new FakeControl();
    fake.eipReady = false;
    await withFip(fake, async (h) => {
      await eventually(phase(h), (p) => p === 'WaitingForEip', 20_000);
      await new Promise((r) => setTimeout(r, 4000)); // its re-check backoff has grown past the rest of this test
      fake.eipReady = true;
      await h.signal(eipChangedSignal);
      await eventually(phase(h), (p) => p === 'Ready', 2_000, 'ready right after the wake-up');
      await deleteAndWait(h);
    });
  });

  it('a delete during the apply waits for it, then removes the rule and gives the EIP back', async () => {
    const fake = new FakeControl();
    fake.applyDelayMs = 1500;
    await withFip(fake, async (h) => {
      await eventually(async () => fake.started(), (s) => s.includes('setGatewayRule'), 20_000);
      await deleteAndWait(h);
      expect(fake.calls.indexOf('removeGatewayRule:start')).toBeGreaterThan(fake.calls.indexOf('setGatewayRule:end'));
      expect(fake.calls.indexOf('unclaimEip:start')).toBeGreaterThan(fake.calls.indexOf('removeGatewayRule:end'));
    });
  });

  it('a refused claim (EIP in use) shows the reason and holds nothing', async () => {
    const fake = new FakeControl();
    fake.claimFailure = ApplicationFailure.nonRetryable('EIP e1: the EIP is already used by fip other; a FIP needs it alone', Reason.EipInUse);
    await withFip(fake, async (h) => {
      const status = await eventually(() => natStatus(h), (s) => s.phase === 'Failed', 20_000);
      expect(status.conditions[0]).toMatchObject({ reason: Reason.EipInUse });
      await deleteAndWait(h);
      expect(fake.started()).not.toContain('setGatewayRule');
      expect(fake.started()).not.toContain('unclaimEip');
    });
  });

  it('a rule the gateway refuses is removed and the EIP given back, with the gateway\'s reason', async () => {
    const fake = new FakeControl();
    fake.applyFailure = ApplicationFailure.nonRetryable('192.168.7.7 is outside the VPC subnet 10.0.1.0/24 of gateway gw1', Reason.InvalidSpec);
    await withFip(fake, async (h) => {
      const status = await eventually(() => natStatus(h), (s) => s.phase === 'Failed', 20_000);
      expect(status.conditions[0]).toMatchObject({ reason: Reason.InvalidSpec, message: expect.stringContaining('outside the VPC subnet') });
      expect(fake.started()).toEqual(['eipForRule', 'claimEip', 'setGatewayRule', 'removeGatewayRule', 'unclaimEip']);
      await deleteAndWait(h);
    }, '192.168.7.7');
  });

  it('a spec change on the same EIP replaces the rule in place', async () => {
    const fake = new FakeControl();
    await withFip(fake, async (h) => {
      await eventually(phase(h), (p) => p === 'Ready', 20_000);
      await h.signal(specChangedSignal, { spec: { eip: 'e1', internalIp: '10.0.1.11' }, generation: 2 });
      const status = await eventually(() => natStatus(h), (s) => s.ready && s.internalIp === '10.0.1.11', 20_000);
      expect(status.observedGeneration).toBe(2);
      expect(fake.rulesSeen).toMatchObject([{ internalIp: '10.0.1.10' }, { internalIp: '10.0.1.11' }]);
      expect(fake.started()).toEqual(['eipForRule', 'claimEip', 'setGatewayRule', 'setGatewayRule']);
      await deleteAndWait(h);
    });
  });
});
