// Workflow unit tier for a life of months: the EIP and NAT rule workflows continue as new in
// every state without losing what they hold, a delete gives everything back whatever the last
// activity did, and a run that only cleans up releases by owner. Control activities are fakes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { EipCarried, EipInput, EipSpec } from '../domain/eip.js';
import type { KubeActivities, WorkflowCallActivities } from '../domain/workflow-api.js';
import { allocateUpdate, claimEipUpdate, eipChangedSignal, gatewayChangedSignal, ipamStateQuery, specChangedSignal, unclaimEipUpdate } from '../domain/workflow-api.js';
import { workflowIds } from '../domain/names.js';
import type { NatInput, NatSpec } from '../domain/nat-resources.js';
import { eipWorkflow } from '../workflows/eip.js';
import { ipamWorkflow } from '../workflows/ipam.js';
import { fipWorkflow } from '../workflows/nat-rule.js';
import { combinedCalls } from '../activities/combined-calls.js';
import { FakeCalls, workingRuleCalls, type CallScripts } from './support/fake-calls.js';
import { RESOURCE_WORKFLOW_TASK_TIMEOUT } from '../starter/resources.js';
import { createTestEnv } from './support/temporal-env.js';
import { deleteAndWait, eventually, uid, untilPhase, withWorkflow } from './support/workflows.js';
import type { EipStatus } from '../domain/eip.js';
import type { NatStatus } from '../domain/nat-resources.js';
import { statusQuery } from '../domain/workflow-api.js';

type Activities = WorkflowCallActivities & KubeActivities;

/** A gateway and IPAM that always say yes, and a Kubernetes object that is already being deleted. */
const answers = (): Partial<Activities> => ({
  gatewayReadiness: async () => ({ exists: true, ready: true, reason: '' }),
  allocateAddress: async (req) => ({ owner: req.owner, address: '172.18.0.5', prefixLength: 24 }),
  releaseAddress: async () => '172.18.0.5',
  bindAddress: async () => undefined,
  unbindAddress: async () => ({ applied: true }),
  notifyEipWaiters: async () => 0,
  releaseEverywhere: async () => undefined,
  ...workingRuleCalls(),
  kubeAdopt: async () => ({ exists: true, deleting: true }),
  kubePublishStatus: async () => undefined,
  kubeRelease: async () => undefined,
});

/** The fake control plane, serving the combined calls too (built of its step calls, as the worker's are). */
const fakeCalls = (scripts: CallScripts<Activities> = {}) => new FakeCalls<Activities>(answers(), scripts).alsoServe(combinedCalls);

const eipStatus = (h: { query: (q: typeof statusQuery) => Promise<unknown> }) => h.query(statusQuery) as Promise<EipStatus>;
const natStatus = (h: { query: (q: typeof statusQuery) => Promise<unknown> }) => h.query(statusQuery) as Promise<NatStatus>;
const count = (fake: FakeCalls<Activities>, name: string) => fake.started().filter((n) => n === name).length;
const claim = (owner: string) => ({ owner, kind: 'dnat' as const, name: owner.split('/')[2]! });

describe('a life of months (mocked activities)', () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  function withEip<R>(fake: FakeCalls<Activities>, input: Partial<EipInput> & { spec?: EipSpec }, body: (h: WorkflowHandleWithFirstExecutionRunId<typeof eipWorkflow>) => Promise<R>) {
    const resource = { name: 'eip1', uid: uid(), generation: 1, ...input.resource };
    return withWorkflow(env, fake.activities(), eipWorkflow, { workflowId: workflowIds.resource('eip', resource), workflowTaskTimeout: RESOURCE_WORKFLOW_TASK_TIMEOUT, args: [{ spec: { natGwDp: 'gw1' }, ...input, resource }] }, body);
  }
  function withFip<R>(fake: FakeCalls<Activities>, input: Partial<NatInput<'fip'>>, body: (h: WorkflowHandleWithFirstExecutionRunId<typeof fipWorkflow>) => Promise<R>) {
    const resource = { name: 'fip1', uid: uid(), generation: 1, ...input.resource };
    return withWorkflow(env, fake.activities(), fipWorkflow, { workflowId: workflowIds.resource('fip', resource), args: [{ kind: 'fip', spec: { eip: 'e1', internalIp: '10.0.1.10' }, ...input, resource }] }, body);
  }
  const continued = async (h: WorkflowHandleWithFirstExecutionRunId) => eventually(async () => (await h.describe()).runId, (runId) => runId !== h.firstExecutionRunId, 20_000, 'a continued run');

  it('an EIP continued as new while Ready keeps its address and claims and takes nothing again', async () => {
    const fake = fakeCalls();
    await withEip(fake, { limits: { updates: 3 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Ready');
      const owners = ['natflow/dnat/d1/u1', 'natflow/dnat/d2/u2', 'natflow/dnat/d3/u3'];
      for (const owner of owners) await h.executeUpdate(claimEipUpdate, { args: [claim(owner)] });
      await continued(h);
      const status = await eipStatus(h);
      expect(status).toMatchObject({ phase: 'Ready', ip: '172.18.0.5', nat: 'dnat' });
      // The continued run keeps the resource workflows' task timeout (starter/resources.ts says why).
      expect(Number((await h.describe()).raw.executionConfig?.defaultWorkflowTaskTimeout?.seconds)).toBe(20);
      // The claims came along: a FIP is still refused, and a further DNAT is not.
      await expect(h.executeUpdate(claimEipUpdate, { args: [{ owner: 'natflow/fip/f/u', kind: 'fip', name: 'f' }] })).rejects.toThrow();
      await h.executeUpdate(claimEipUpdate, { args: [claim('natflow/dnat/d4/u4')] });
      expect([count(fake, 'allocateAddress'), count(fake, 'bindAddress'), count(fake, 'releaseAddress')]).toEqual([1, 1, 0]);
      for (const owner of [...owners, 'natflow/dnat/d4/u4']) await h.executeUpdate(unclaimEipUpdate, { args: [{ owner }] });
      await deleteAndWait(h);
      expect(fake.started().slice(-2)).toEqual(['unbindAddress', 'releaseAddress']);
    });
  });

  it('an EIP continued as new while waiting for its gateway still waits and holds nothing', async () => {
    const fake = fakeCalls({ gatewayReadiness: { answer: async () => ({ exists: false, ready: false, reason: 'NAT gateway gw1 does not exist' }) } });
    await withEip(fake, { limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'WaitingForGateway');
      for (let i = 0; i < 2; i++) await h.signal(gatewayChangedSignal);
      await continued(h);
      expect((await eipStatus(h)).phase).toBe('WaitingForGateway');
      fake.script('gatewayReadiness', {});
      await h.signal(gatewayChangedSignal);
      await untilPhase(() => eipStatus(h), 'Ready');
      await deleteAndWait(h);
      expect(count(fake, 'releaseAddress')).toBe(1);
    });
  });

  it('an EIP continued as new while its delete waits for its users still waits, then releases', async () => {
    const fake = fakeCalls();
    await withEip(fake, { limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Ready');
      await h.executeUpdate(claimEipUpdate, { args: [claim('natflow/dnat/d1/u1')] });
      await h.cancel();
      await eventually(() => eipStatus(h), (s) => s.conditions.some((c) => c.reason === 'EipInUse'), 20_000, 'deleting, in use');
      for (let i = 0; i < 2; i++) await h.signal(gatewayChangedSignal);
      await continued(h);
      expect(await eipStatus(h)).toMatchObject({ phase: 'Deleting', nat: 'dnat' });
      expect(count(fake, 'releaseAddress')).toBe(0);
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: 'natflow/dnat/d1/u1' }] });
      await h.result();
      expect(fake.started().slice(-2)).toEqual(['unbindAddress', 'releaseAddress']);
    });
  });

  it('a NAT rule continued as new while Ready keeps its claim and rule', async () => {
    const fake = fakeCalls();
    await withFip(fake, { limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => natStatus(h), 'Ready');
      // Each gateway change re-asserts the rule (idempotent on the gateway), and spends the budget.
      for (let i = 0; i < 2; i++) await h.signal(gatewayChangedSignal);
      await continued(h);
      await untilPhase(() => natStatus(h), 'Ready');
      expect(await natStatus(h)).toMatchObject({ v4ip: '172.18.0.9', natGwDp: 'gw1' });
      expect([count(fake, 'claimEip'), count(fake, 'unclaimEip'), count(fake, 'removeGatewayRule')]).toEqual([1, 0, 0]);
      await deleteAndWait(h);
      expect(fake.started().slice(-2)).toEqual(['removeGatewayRule', 'unclaimEip']);
    });
  });

  // Every other waiting state continues as new too. A stale spec signal (an older generation) is
  // counted and otherwise ignored, so it spends a run's signal budget without changing anything.
  const spend = async (h: WorkflowHandleWithFirstExecutionRunId, signals: number) => {
    for (let i = 0; i < signals; i++) await h.signal(specChangedSignal, { spec: { natGwDp: 'stale' }, generation: 0 });
    await continued(h);
  };
  const refused = (reason: string) => ({ failure: ApplicationFailure.nonRetryable(`refused: ${reason}`, reason) });
  /** A rule Ready, then told its gateway changed, which now refuses it with `reason`. */
  const readyThenRefused = async (h: WorkflowHandleWithFirstExecutionRunId, fake: FakeCalls<Activities>, reason: string) => {
    await untilPhase(() => natStatus(h), 'Ready');
    fake.script('setGatewayRule', refused(reason));
    await h.signal(gatewayChangedSignal);
  };

  it('an EIP continued as new while Invalid stays Invalid and takes nothing until its spec is fixed', async () => {
    const fake = fakeCalls();
    await withEip(fake, { spec: { natGwDp: 'gw1', v4ip: 'not-an-ip' }, limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Invalid');
      await spend(h, 2);
      expect(await eipStatus(h)).toMatchObject({ phase: 'Invalid', ip: '' });
      await h.signal(specChangedSignal, { spec: { natGwDp: 'gw1' }, generation: 2 });
      await untilPhase(() => eipStatus(h), 'Ready');
      expect(count(fake, 'allocateAddress')).toBe(1);
      await deleteAndWait(h);
    });
  });

  it('an EIP continued as new after a refused allocation holds nothing, and allocates once its spec changes', async () => {
    let refusals = 0;
    const fake = fakeCalls({ allocateAddress: { answer: async () => (refusals++, Promise.reject(ApplicationFailure.nonRetryable('refused: AddressInUse', 'AddressInUse'))) } });
    await withEip(fake, { spec: { natGwDp: 'gw1', v4ip: '172.18.0.7' }, limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Failed');
      await spend(h, 2);
      // The continued run tries again at once (Allocating for a moment, then Failed again).
      expect(await untilPhase(() => eipStatus(h), 'Failed')).toMatchObject({ ip: '' });
      fake.script('allocateAddress', {});
      await h.signal(specChangedSignal, { spec: { natGwDp: 'gw1', v4ip: '172.18.0.8' }, generation: 2 });
      await untilPhase(() => eipStatus(h), 'Ready');
      await deleteAndWait(h);
      // The refused allocations (one per run that tried, the continued run's too if it tried before
      // the change) held nothing: one release for each address it got, none before the first it got
      // (a run may take .7 before it sees the change to .8: its steps are local activities).
      expect(refusals).toBeGreaterThanOrEqual(1);
      expect(count(fake, 'allocateAddress')).toBeGreaterThan(refusals);
      expect(count(fake, 'releaseAddress')).toBe(count(fake, 'allocateAddress') - refusals);
      const ends = fake.events.flatMap((e, i) => (e === 'allocateAddress:end' ? [i] : []));
      expect(fake.events.indexOf('releaseAddress:start')).toBeGreaterThan(ends[refusals]!);
    });
  });

  it('an EIP continued as new while its gateway is away keeps its address and claims, and binds it again when the gateway is back', async () => {
    const fake = fakeCalls();
    await withEip(fake, { limits: { signals: 3 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Ready');
      await h.executeUpdate(claimEipUpdate, { args: [claim('natflow/dnat/d1/u1')] });
      fake.script('gatewayReadiness', { answer: async () => ({ exists: true, ready: false, reason: 'agent gone' }) });
      await h.signal(gatewayChangedSignal);
      await untilPhase(() => eipStatus(h), 'WaitingForGateway');
      await spend(h, 2);
      expect(await eipStatus(h)).toMatchObject({ phase: 'WaitingForGateway', ip: '172.18.0.5', nat: 'dnat' });
      fake.script('gatewayReadiness', {});
      await h.signal(gatewayChangedSignal);
      await untilPhase(() => eipStatus(h), 'Ready');
      expect([count(fake, 'allocateAddress'), count(fake, 'bindAddress'), count(fake, 'unbindAddress'), count(fake, 'releaseAddress')]).toEqual([1, 2, 0, 0]);
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: 'natflow/dnat/d1/u1' }] });
      await deleteAndWait(h);
    });
  });

  it('a NAT rule continued as new while waiting for its EIP still waits, holding nothing, and is woken by it', async () => {
    const fake = fakeCalls({ eipForRule: { answer: async () => null } });
    await withFip(fake, { limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => natStatus(h), 'WaitingForEip');
      await spend(h, 2);
      expect((await natStatus(h)).phase).toBe('WaitingForEip');
      fake.script('eipForRule', {});
      await h.signal(eipChangedSignal);
      await untilPhase(() => natStatus(h), 'Ready');
      expect(count(fake, 'claimEip')).toBe(1);
      await deleteAndWait(h);
    });
  });

  it('a NAT rule continued as new after its claim was refused holds nothing, and claims once the EIP changes', async () => {
    const fake = fakeCalls({ claimEip: refused('EipInUse') });
    await withFip(fake, { limits: { signals: 2 } }, async (h) => {
      await eventually(() => natStatus(h), (s) => s.phase === 'Failed' && s.conditions.some((c) => c.reason === 'EipInUse'), 20_000, 'refused');
      await spend(h, 2);
      await eventually(() => natStatus(h), (s) => s.phase === 'Failed' && s.conditions.some((c) => c.reason === 'EipInUse'), 20_000, 'still refused');
      fake.script('claimEip', {});
      await h.signal(eipChangedSignal);
      await untilPhase(() => natStatus(h), 'Ready');
      expect([count(fake, 'unclaimEip'), count(fake, 'removeGatewayRule'), count(fake, 'setGatewayRule')]).toEqual([0, 0, 1]);
      await deleteAndWait(h);
    });
  });

  it('a NAT rule continued as new while its gateway is not ready keeps its claim and rule, and is applied when the gateway is back', async () => {
    const fake = fakeCalls({ setGatewayRule: refused('GatewayNotReady') });
    await withFip(fake, { limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => natStatus(h), 'WaitingForGateway');
      await spend(h, 2);
      await untilPhase(() => natStatus(h), 'WaitingForGateway');
      fake.script('setGatewayRule', {});
      await h.signal(gatewayChangedSignal);
      await untilPhase(() => natStatus(h), 'Ready');
      expect([count(fake, 'unclaimEip'), count(fake, 'removeGatewayRule')]).toEqual([0, 0]);
      await deleteAndWait(h);
      expect(fake.started().slice(-2)).toEqual(['removeGatewayRule', 'unclaimEip']);
    });
  });

  it('a NAT rule continued as new while waiting for its gateway before its first Ready keeps its claim: the EIP, being deleted meanwhile, gets it back with the rule', async () => {
    const fake = fakeCalls({ setGatewayRule: refused('GatewayNotReady'), eipForRule: { answer: async (name) => ({ workflowId: `natflow/eip/${name}/u`, ready: true, reason: '', gateway: 'gw1' }) } });
    await withFip(fake, { limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => natStatus(h), 'WaitingForGateway');
      // Its EIP is deleted now: it refuses claims, and waits for this rule's to be given back.
      fake.script('claimEip', refused('EipNotReady'));
      await spend(h, 2);
      const applied = count(fake, 'setGatewayRule'); // the first run's tries, and perhaps the new run's first
      await eventually(async () => count(fake, 'setGatewayRule'), (n) => n > applied, 20_000, 'the continued run applying again');
      await untilPhase(() => natStatus(h), 'WaitingForGateway');
      fake.script('setGatewayRule', {});
      await h.signal(gatewayChangedSignal);
      await untilPhase(() => natStatus(h), 'Ready');
      await deleteAndWait(h);
      // Claimed once, and given back (older runs claimed again, were refused, and forgot the claim the EIP waits on).
      expect(fake.args.claimEip?.map(([req]) => req.eipWorkflowId)).toEqual(['natflow/eip/e1/u']);
      expect(fake.args.unclaimEip?.map(([req]) => req.eipWorkflowId)).toEqual(['natflow/eip/e1/u']);
    });
  });

  it('a NAT rule continued as new while applying again after its gateway changed keeps trying on its own timer: Ready without a wake-up', async () => {
    const fake = fakeCalls();
    await withFip(fake, { limits: { signals: 3 } }, async (h) => {
      await readyThenRefused(h, fake, 'GatewayNotReady');
      await untilPhase(() => natStatus(h), 'WaitingForGateway');
      await spend(h, 2);
      // The gateway takes it again, and says nothing: the continued run's timer finds that out.
      fake.script('setGatewayRule', {});
      await untilPhase(() => natStatus(h), 'Ready', 20_000);
      expect([count(fake, 'claimEip'), count(fake, 'unclaimEip'), count(fake, 'removeGatewayRule')]).toEqual([1, 0, 0]);
      await deleteAndWait(h);
    });
  });

  it('a NAT rule continued as new after giving everything back on a refusal while serving claims its EIP again before its rule goes back', async () => {
    const fake = fakeCalls();
    await withFip(fake, { limits: { signals: 3 } }, async (h) => {
      await readyThenRefused(h, fake, 'DuplicateDnat');
      await eventually(async () => count(fake, 'unclaimEip') + count(fake, 'removeGatewayRule'), (n) => n > 0, 20_000, 'everything given back');
      await untilPhase(() => natStatus(h), 'Failed');
      fake.script('setGatewayRule', {});
      await spend(h, 2);
      await h.signal(specChangedSignal, { spec: { eip: 'e1', internalIp: '10.0.1.11' }, generation: 2 });
      await eventually(() => natStatus(h), (s) => s.phase === 'Ready' && s.observedGeneration === 2, 20_000, 'Ready at generation 2');
      // Its claim was given back with the rule: the continued run claims again first (older runs put the rule back unclaimed).
      expect(count(fake, 'claimEip')).toBe(2);
      expect(fake.started().lastIndexOf('claimEip')).toBeLessThan(fake.started().lastIndexOf('setGatewayRule'));
      await deleteAndWait(h);
    });
  });

  it('a NAT rule continued as new while Invalid stays Invalid and claims nothing until its spec is fixed', async () => {
    const fake = fakeCalls();
    await withFip(fake, { spec: { eip: 'e1', internalIp: 'not-an-ip' }, limits: { signals: 2 } }, async (h) => {
      await untilPhase(() => natStatus(h), 'Invalid');
      await spend(h, 2);
      expect((await natStatus(h)).phase).toBe('Invalid');
      await h.signal(specChangedSignal, { spec: { eip: 'e1', internalIp: '10.0.1.10' }, generation: 2 });
      await untilPhase(() => natStatus(h), 'Ready');
      expect(count(fake, 'claimEip')).toBe(1);
      await deleteAndWait(h);
    });
  });

  it('a transient failure of the allocation in flight when the delete arrives: the address is still released', async () => {
    // The attempt allocates, then fails before answering; the delete lands meanwhile. What the
    // workflow sees is that attempt's failure, not a cancellation: it must still release.
    const fake = fakeCalls({ allocateAddress: { delayMs: 1500, failure: ApplicationFailure.retryable('connection reset', 'Transient'), failures: 1 } });
    await withEip(fake, {}, async (h) => {
      await eventually(async () => fake.started(), (n) => n.includes('allocateAddress'), 20_000);
      await deleteAndWait(h);
      expect(fake.events.indexOf('releaseAddress:start')).toBeGreaterThan(fake.events.indexOf('allocateAddress:end'));
    });
  });

  it('an EIP asked for another address while rules use it refuses (visibly), keeps serving, and moves once they are gone', async () => {
    const fake = fakeCalls();
    await withEip(fake, {}, async (h) => {
      await untilPhase(() => eipStatus(h), 'Ready');
      await h.executeUpdate(claimEipUpdate, { args: [claim('natflow/dnat/d1/u1')] });
      await h.signal(specChangedSignal, { spec: { natGwDp: 'gw1', v4ip: '172.18.0.77' }, generation: 2 });
      const refused = await eventually(() => eipStatus(h), (s) => s.observedGeneration === 2, 20_000, 'generation 2 observed');
      expect(refused).toMatchObject({ phase: 'Ready', ip: '172.18.0.5' });
      expect(refused.conditions.find((c) => c.type === 'Valid')).toMatchObject({ status: 'False', reason: 'EipInUse' });
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: 'natflow/dnat/d1/u1' }] });
      await eventually(async () => fake.args.allocateAddress ?? [], (calls) => calls.length === 2, 20_000, 'a second allocation');
      expect(fake.args.allocateAddress![1]![0]).toMatchObject({ requested: '172.18.0.77' });
      expect(fake.started()).toContain('releaseAddress');
      await deleteAndWait(h);
    });
  });

  /**
   * Moves a Ready `h` to `spec` (generation 2) while its gateway does not take the old address or
   * rule off (`removal` answers not applied), has it continue as new meanwhile, then lets the
   * gateway take it off: its status once Ready at generation 2.
   */
  async function continuedWhileGivingBack<S extends { phase: string; observedGeneration: number }>(
    h: WorkflowHandleWithFirstExecutionRunId,
    fake: FakeCalls<Activities>,
    status: () => Promise<S>,
    spec: EipSpec | NatSpec,
    removal: 'unbindAddress' | 'removeGatewayRule',
  ): Promise<S> {
    fake.script(removal, { answer: async () => ({ applied: false }) });
    await h.signal(specChangedSignal, { spec, generation: 2 });
    await eventually(async () => fake.started(), (s) => s.includes(removal), 20_000, `${removal} under way`);
    await spend(h, 2);
    fake.script(removal, {});
    await h.signal(gatewayChangedSignal);
    return eventually(status, (s) => s.phase === 'Ready' && s.observedGeneration === 2, 20_000, 'Ready at generation 2');
  }

  it('an EIP continued as new while giving back its old address (its gateway not ready to take it off) finishes that first, then takes the new one', async () => {
    const fake = fakeCalls();
    await withEip(fake, { limits: { signals: 3 } }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Ready');
      const from = fake.started().length;
      await continuedWhileGivingBack(h, fake, () => eipStatus(h), { natGwDp: 'gw1', v4ip: '172.18.0.77' }, 'unbindAddress');
      // The old address went back before a new one was asked for (older runs asked at once, and it stayed allocated).
      const calls = fake.started().slice(from);
      expect(calls.indexOf('releaseAddress')).toBeGreaterThan(calls.lastIndexOf('unbindAddress'));
      expect(calls.indexOf('allocateAddress')).toBeGreaterThan(calls.indexOf('releaseAddress'));
      expect(fake.args.allocateAddress!.at(-1)![0]).toMatchObject({ requested: '172.18.0.77' });
      await deleteAndWait(h);
    });
  });

  it('a run handed a gateway change that landed while the run before it handed over (its wake-ups being delivered) acts on it at once: it binds its address again', async () => {
    const fake = fakeCalls();
    const resource = { name: 'eip1', uid: uid(), generation: 1 };
    const allocation = { owner: workflowIds.resource('eip', resource), address: '172.18.0.5', prefixLength: 24 };
    const status: EipStatus = { phase: 'WaitingForGateway', ready: false, ip: allocation.address, natGwDp: 'gw1', nat: '', conditions: [], observedGeneration: 1 };
    const carried: EipCarried = { status, held: { subnet: 'ext' }, bound: { gateway: 'gw1' }, serving: { allocation, gateway: 'gw1', spec: { natGwDp: 'gw1' } }, claims: [], watchers: [], deleting: false, changed: { spec: false, gateway: true } };
    await withEip(fake, { resource, carried }, async (h) => {
      await untilPhase(() => eipStatus(h), 'Ready', 20_000);
      expect(fake.started()).toEqual(['gatewayReadiness', 'bindAddress']);
      await deleteAndWait(h);
    });
  });

  it('a NAT rule continued as new while giving back its old EIP (its gateway not ready to take the rule off) finishes that first, then claims the new one and is listed under it', async () => {
    const fake = fakeCalls({ eipForRule: { answer: async (name) => ({ workflowId: `natflow/eip/${name}/u`, ready: true, reason: '', gateway: 'gw1' }) } });
    await withFip(fake, { limits: { signals: 3 } }, async (h) => {
      await untilPhase(() => natStatus(h), 'Ready');
      await continuedWhileGivingBack(h, fake, () => natStatus(h), { eip: 'e2', internalIp: '10.0.1.10' }, 'removeGatewayRule');
      // EIP e1 was given back before e2 was claimed (older runs claimed e2 at once, and e1 stayed claimed).
      expect(fake.args.unclaimEip?.map(([req]) => req.eipWorkflowId)).toEqual(['natflow/eip/e1/u']);
      expect(fake.args.claimEip?.map(([req]) => req.eipWorkflowId)).toEqual(['natflow/eip/e1/u', 'natflow/eip/e2/u']);
      expect(fake.started().lastIndexOf('claimEip')).toBeGreaterThan(fake.started().indexOf('unclaimEip'));
      expect((await h.describe()).searchAttributes.NatflowEip).toEqual(['e2']);
      await deleteAndWait(h);
    });
  });

  it('an allocation sent by an activity attempt that has timed out is refused: nothing is allocated after the caller gave back', async () => {
    const subnet = { name: 'ext-fence', cidrBlock: '172.30.0.0/24', gateway: '172.30.0.1', excludeIps: [] };
    await withWorkflow(env, {}, ipamWorkflow, { workflowId: workflowIds.ipam(subnet.name), args: [{ subnet }] }, async (h) => {
      const late = h.executeUpdate(allocateUpdate, { args: [{ owner: 'natflow/eip/e/u' }, { notAfter: Date.now() - 1000 }] });
      await expect(late).rejects.toMatchObject({ cause: { type: 'StaleRequest' } });
      await h.executeUpdate(allocateUpdate, { args: [{ owner: 'natflow/eip/e2/u' }, { notAfter: Date.now() + 60_000 }] });
      expect(Object.keys((await h.query(ipamStateQuery)).allocations)).toEqual(['natflow/eip/e2/u']);
      await h.terminate();
    });
  });

  it('a run that only cleans up (its object already deleting) releases by owner everywhere, then lets the object go', async () => {
    const fake = fakeCalls();
    await withEip(fake, { resource: { name: 'eip1', uid: uid(), generation: 1, fromKube: true } }, async (h) => {
      await h.result();
      const started = fake.started().filter((n) => n !== 'kubePublishStatus');
      expect(started).toEqual(['kubeAdopt', 'releaseEverywhere', 'kubeRelease']);
      expect(fake.args.releaseEverywhere).toEqual([[{ owner: h.workflowId }]]);
      // The last status goes with the release (written only if another finalizer keeps the object), not as a write of its own.
      expect(fake.args.kubeRelease?.[0]?.[0]).toMatchObject({ status: { phase: 'Deleted' } });
      expect(fake.args.kubePublishStatus?.map(([ref]) => ref.status.phase)).not.toContain('Deleted');
    });
    const rule = fakeCalls();
    await withFip(rule, { resource: { name: 'fip1', uid: uid(), generation: 1, fromKube: true } }, async (h) => {
      await h.result();
      expect(rule.started().filter((n) => n !== 'kubePublishStatus')).toEqual(['kubeAdopt', 'removeGatewayRuleEverywhere', 'eipForRule', 'unclaimEip', 'kubeRelease']);
    });
  });
});
