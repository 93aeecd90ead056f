// Workflow unit tier: the EIP workflow's ordering and every cancellation path, on a real dev
// server with the control activities replaced by a scripted fake that records each call.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { ApplicationFailure, decodeTimeoutType } from '@temporalio/common';
import type { EipSpec } from '../domain/eip.js';
import { Reason } from '../domain/errors.js';
import type { GatewayReadiness } from '../domain/gateway.js';
import { claimEipUpdate, gatewayChangedSignal, specChangedSignal, statusQuery, unclaimEipUpdate, watchEipSignal, type KubeActivities, type WorkflowCallActivities } from '../domain/workflow-api.js';
import { combinedCalls } from '../activities/combined-calls.js';
import { FakeCalls, fakeKube, gate, statusesWritten, type CallScripts } from './support/fake-calls.js';
import { useTestEnv } from './support/temporal-env.js';
import { Worker } from '@temporalio/worker';
import { WithStartWorkflowOperation, WorkflowUpdateStage } from '@temporalio/client';
import { resourceStart } from '../starter/resources.js';
import type { EipStatus } from '../domain/eip.js';
import { eipWorkflowV2, eipWorkflowV3, eipWorkflowV4, eipWorkflowV5, eipWorkflowV6 } from '../workflows/eip.js';
import { deleteAndWait, eventually, historyOf, isCallOf, statusCallsOfReadyThenDelete, statusesAroundDelete, statusOf, uid, uniqueQueue, visibilityWrites, withResource, withWorkflow, workflowBundle, workflowBundleWithInterceptors, workflowPhase, type ResourceHandle } from './support/workflows.js';

/** A control plane where everything works: the gateway is ready, allocations and binds succeed. */
const working = (): Partial<WorkflowCallActivities> => ({
  gatewayReadiness: async () => ({ exists: true, ready: true, reason: '' }),
  allocateAddress: async () => ({ owner: 'x', address: '172.18.0.5', prefixLength: 24 }),
  releaseAddress: async () => '172.18.0.5',
  bindAddress: async () => undefined,
  unbindAddress: async () => ({ applied: true }),
  notifyGatewayWaiters: async () => 0,
  notifyEipWaiters: async () => 0,
});
const control = (scripts: CallScripts<WorkflowCallActivities> = {}) => new FakeCalls<WorkflowCallActivities>(working(), scripts).alsoServe(combinedCalls);
/** The same, with the Kubernetes calls of an EIP from the cluster, the combined calls seeing `kubeAdopt` as the worker's do. */
const controlWithKube = (kubeAdopt: KubeActivities['kubeAdopt'], scripts: CallScripts<WorkflowCallActivities & KubeActivities> = {}) =>
  new FakeCalls<WorkflowCallActivities & KubeActivities>({ ...working(), releaseEverywhere: async () => undefined, kubeAdopt, kubePublishStatus: async () => undefined, kubeRelease: async () => undefined }, scripts).alsoServe(combinedCalls);
const withoutStatus = (names: string[]) => names.filter((n) => n !== 'kubePublishStatus');
/**
 * The calls started, once there are `count`: an EIP shows Ready first and then wakes the rules
 * waiting for it, so that last call may start just after the status says Ready.
 */
const startedOnceReady = (fake: FakeCalls<WorkflowCallActivities>, count: number) => eventually(async () => fake.started(), (names) => names.length >= count, 10_000, `${count} calls started`);
const missingGateway = async (gateway: string): Promise<GatewayReadiness> => ({ exists: false, ready: false, reason: `NAT gateway ${gateway} does not exist` });

describe('EIP workflow (mocked activities)', () => {
  const env = useTestEnv();

  const withEip = (fake: FakeCalls<WorkflowCallActivities>, spec: EipSpec, body: (h: ResourceHandle<'eip'>) => Promise<void>) => withResource(env(), fake.activities(), 'eip', spec, body);
  const spec: EipSpec = { natGwDp: 'gw1' };

  it('checks the gateway, then allocates, then binds (in one call), and reports ready with its address', async () => {
    const fake = control();
    await withEip(fake, spec, async (h) => {
      const status = await workflowPhase(h, 'Ready');
      expect(status.ip).toBe('172.18.0.5');
      expect(status.conditions.find((c) => c.type === 'Ready')).toMatchObject({ status: 'True', reason: 'Ready' });
      expect(await startedOnceReady(fake, 5)).toEqual(['takeAddress', 'gatewayReadiness', 'allocateAddress', 'bindAddress', 'notifyEipWaiters']);
      await deleteAndWait(h);
      // One call takes the address off, then gives it back (a V3 run made a call of each, below).
      expect(fake.started().slice(5)).toEqual(['unbindAndRelease', 'unbindAddress', 'releaseAddress']);
      expect(fake.events.indexOf('releaseAddress:start')).toBeGreaterThan(fake.events.indexOf('unbindAddress:end'));
    });
  });

  it('a run of the V3 type unbinds and releases its address a call each, as it always did', async () => {
    const fake = control();
    const { options } = resourceStart('eip', { name: 'eip-v3', uid: uid(), generation: 1 }, spec);
    await withWorkflow(env(), fake.activities(), eipWorkflowV3, options, async (h) => {
      await workflowPhase(Object.assign(h, { kind: 'eip' as const }), 'Ready');
      await startedOnceReady(fake, 5);
      await deleteAndWait(h);
      expect(fake.started().slice(5)).toEqual(['unbindAddress', 'releaseAddress']);
    });
  });

  it('a delete while the gateway is not ready keeps the address allocated until the gateway has taken it off, then releases it', async () => {
    let unbinds = 0;
    const fake = control({ unbindAddress: { answer: async () => ({ applied: ++unbinds > 1 }) } });
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'Ready');
      await startedOnceReady(fake, 5);
      await h.cancel();
      const waiting = await eventually(() => statusOf(h), (s) => s.conditions[0]?.reason === Reason.GatewayNotReady, 10_000, 'waiting for the gateway');
      expect(waiting.phase).toBe('Deleting');
      expect(fake.started()).not.toContain('releaseAddress');
      await h.signal(gatewayChangedSignal);
      await h.result().catch(() => undefined);
      expect(fake.started().slice(5)).toEqual(['unbindAndRelease', 'unbindAddress', 'unbindAndRelease', 'unbindAddress', 'releaseAddress']);
    });
  });

  it('writes to visibility only where it rests: its start, Ready, and its end (the steps between are in its status)', async () => {
    const fake = control();
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'Ready');
      await startedOnceReady(fake, 5);
      await deleteAndWait(h);
      const writes = await visibilityWrites(h);
      // The start's attributes came with the start; a run of a V2 type asks for no patch, so no
      // marker writes TemporalChangeVersion (workflows/patches.ts).
      expect(writes.map((w) => w.NatflowPhase)).toEqual(['Ready', 'Deleted']);
      expect(writes.some((w) => 'TemporalChangeVersion' in w)).toBe(false);
      expect(writes[0]).toMatchObject({ NatflowGateway: 'gw1', NatflowPhase: 'Ready' });
    });
  });

  it('allocates nothing while its gateway is missing, and a delete then holds nothing to release', async () => {
    const fake = control({ gatewayReadiness: { answer: missingGateway } });
    await withEip(fake, spec, async (h) => {
      const status = await workflowPhase(h, 'WaitingForGateway');
      expect(status.conditions[0]).toMatchObject({ reason: Reason.GatewayNotFound, message: 'NAT gateway gw1 does not exist' });
      await deleteAndWait(h);
      expect(new Set(fake.started())).toEqual(new Set(['takeAddress', 'gatewayReadiness']));
    });
  });

  it('wakes up when its gateway appears and becomes ready', async () => {
    const fake = control({ gatewayReadiness: { answer: missingGateway } });
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'WaitingForGateway');
      // Three checks: the re-check timer now runs 4 s, far from the signal below.
      await eventually(async () => fake.started().filter((n) => n === 'gatewayReadiness').length, (n) => n >= 3, 20_000, 'a third gateway check');
      fake.script('gatewayReadiness', {});
      await h.signal(gatewayChangedSignal);
      await workflowPhase(h, 'Ready');
      // The signal itself woke it: the next check came without the re-check timer firing first.
      const history = await historyOf(h);
      const signaled = history.findIndex((e) => e.type === 'workflowExecutionSignaled' && e.name === gatewayChangedSignal.name);
      expect(signaled).toBeGreaterThan(-1);
      const nextCheck = history.findIndex((e, i) => i > signaled && isCallOf(e, 'takeAddress')); // its first step is the check
      expect(nextCheck).toBeGreaterThan(signaled);
      const between = history.slice(signaled, nextCheck + 1).map((e) => e.type);
      expect(between, `from the signal to the next check: ${between.join(' → ')}`).not.toContain('timerFired');
      await deleteAndWait(h);
    });
  });

  it('a delete during allocation waits for the steps under way, then gives back everything they took', async () => {
    const fake = control({ allocateAddress: { delayMs: 1500 } });
    await withEip(fake, spec, async (h) => {
      await eventually(async () => fake.started(), (n) => n.includes('allocateAddress'), 20_000);
      await deleteAndWait(h);
      // Its steps are local activities: the delete is seen once the steps of the workflow task
      // under way are done (or at that task's next heartbeat), so the bind may have run too.
      const at = (event: string) => fake.events.indexOf(event);
      expect(at('releaseAddress:start')).toBeGreaterThan(at('allocateAddress:end'));
      if (fake.started().includes('bindAddress')) {
        expect(at('unbindAddress:start')).toBeGreaterThan(at('bindAddress:end'));
        expect(at('releaseAddress:start')).toBeGreaterThan(at('unbindAddress:end'));
      }
      expect(fake.started().filter((n) => n === 'releaseAddress')).toHaveLength(1);
    });
  });

  it('a delete during the gateway add waits for it, then unbinds and releases', async () => {
    const fake = control({ bindAddress: { delayMs: 1500 } });
    await withEip(fake, spec, async (h) => {
      await eventually(async () => fake.started(), (n) => n.includes('bindAddress'), 20_000);
      await deleteAndWait(h);
      expect(fake.events.indexOf('unbindAddress:start')).toBeGreaterThan(fake.events.indexOf('bindAddress:end'));
      expect(fake.events.indexOf('releaseAddress:start')).toBeGreaterThan(fake.events.indexOf('unbindAddress:end'));
    });
  });

  it('calls through activity tasks, not local activities (README, "Known SDK issue")', async () => {
    const fake = control();
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'Ready');
      await startedOnceReady(fake, 5);
      await deleteAndWait(h);
      const calls = (await historyOf(h)).filter((e) => e.type === 'activityTaskScheduled' || e.type === 'localActivity');
      expect(calls.map((e) => `${e.type}:${e.name}`)).toEqual(
        ['takeAddress', 'unbindAndRelease'].map((name) => `activityTaskScheduled:${name}`), // takeAddress wakes the rules waiting by name
      );
    });
  });

  it('the rules watching it are woken by the EIP once Ready, and not a second time by the wake-up of rules found by name', async () => {
    const fake = control();
    // Invalid first, so that the watch comes before it takes its address.
    await withEip(fake, { natGwDp: 'gw1', v4ip: '172.18.0.300' }, async (h) => {
      await workflowPhase(h, 'Invalid');
      await h.signal(watchEipSignal, { watcher: 'natflow/fip/f1/u1', until: 'ready' });
      await h.signal(specChangedSignal, { spec, generation: 2 });
      await workflowPhase(h, 'Ready');
      await startedOnceReady(fake, 5);
      const woken = (await historyOf(h)).filter((e) => e.type === 'signalExternalWorkflowExecutionInitiated');
      expect(woken).toHaveLength(1);
      expect(fake.args.notifyEipWaiters).toEqual([['eip1', ['natflow/fip/f1/u1']]]);
      await deleteAndWait(h);
    });
  });

  it('a claim that may wait, sent while the EIP takes its address, is answered once it is Ready; sent while its take is refused, it is refused as not ready', async () => {
    const bind = gate();
    const fake = control({ bindAddress: { until: bind.closed } });
    await withEip(fake, spec, async (h) => {
      await eventually(async () => fake.started(), (names) => names.includes('bindAddress'), 10_000, 'the bind under way');
      const claim = { owner: 'natflow/fip/f1/u1', kind: 'fip' as const, name: 'f1' };
      // Without a wait it is refused as it always was; with one it is let in, and answered once Ready.
      await expect(h.executeUpdate(claimEipUpdate, { args: [claim] })).rejects.toMatchObject({ cause: { message: expect.stringMatching(/not ready/) } });
      const waiting = await h.startUpdate(claimEipUpdate, { args: [claim, undefined, { forMs: 10_000 }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      bind.open();
      expect(await waiting.result()).toEqual({ address: '172.18.0.5', gateway: 'gw1' });
      expect((await h.query(statusQuery)).phase).toBe('Ready');
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: claim.owner }] });
      await deleteAndWait(h);
    });
    const check = gate();
    const refusing = control({ gatewayReadiness: { answer: missingGateway, until: check.closed } });
    await withEip(refusing, spec, async (h) => {
      await eventually(async () => refusing.started(), (names) => names.includes('gatewayReadiness'), 10_000, 'the take under way');
      const waiting = await h.startUpdate(claimEipUpdate, { args: [{ owner: 'natflow/fip/f2/u2', kind: 'fip', name: 'f2' }, undefined, { forMs: 120_000 }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      const waited = Date.now();
      check.open();
      await expect(waiting.result()).rejects.toMatchObject({ cause: { message: expect.stringMatching(/not ready/) } });
      expect(Date.now() - waited).toBeLessThan(60_000); // refused when the take is, not at the end of its wait
      expect((await h.query(statusQuery)).phase).toBe('WaitingForGateway');
      await deleteAndWait(h);
    });
  });

  it("a claim that may wait, reaching a new EIP with its start (a rule's call ran before the EIP's first task), waits for its address too", async () => {
    // Delivered as its handler is registered, before the run has begun to take its address: it
    // was refused, and the rule watched and claimed again (most pairs of a burst through the API).
    const fake = control({ bindAddress: { delayMs: 500 } });
    const taskQueue = uniqueQueue('eip-claim-with-start');
    const { workflow, options } = resourceStart('eip', { name: 'e1', uid: uid(), generation: 1 }, spec);
    const worker = await Worker.create({ connection: env().nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: fake.activities() });
    await worker.runUntil(async () => {
      const startWorkflowOperation = new WithStartWorkflowOperation(workflow, { ...options, taskQueue, workflowIdConflictPolicy: 'FAIL' });
      const claim = { owner: 'natflow/fip/f1/u1', kind: 'fip' as const, name: 'f1' };
      expect(await env().client.workflow.executeUpdateWithStart(claimEipUpdate, { args: [claim, undefined, { forMs: 10_000 }], startWorkflowOperation })).toEqual({ address: '172.18.0.5', gateway: 'gw1' });
      const h = await startWorkflowOperation.workflowHandle();
      expect(await h.query(statusQuery)).toMatchObject({ phase: 'Ready', nat: 'fip' });
      expect(fake.started().filter((name) => name === 'takeAddress')).toHaveLength(1);
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: claim.owner }] });
      await deleteAndWait(h);
    });
  });

  /** The Ready statuses an EIP from Kubernetes writes when a rule's claim waited while it took its address. */
  async function readyStatusesWritten(workflow: typeof eipWorkflowV3): Promise<EipStatus[]> {
    const kube = fakeKube();
    const written = () => (kube.args.kubePublishStatus ?? []).map(([ref]) => ref.status as unknown as EipStatus);
    const bind = gate();
    const fake = new FakeCalls<WorkflowCallActivities>(working(), { bindAddress: { until: bind.closed } }).alsoServe((served) => combinedCalls({ ...served, ...kube.activities() }));
    const { options } = resourceStart('eip', { name: 'eip1', uid: uid(), generation: 1, fromKube: true }, spec);
    return withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, workflow, options, async (h) => {
      await eventually(async () => fake.started(), (names) => names.includes('bindAddress'), 10_000, 'the bind under way');
      const waiting = await h.startUpdate(claimEipUpdate, { args: [{ owner: 'natflow/fip/f1/u1', kind: 'fip', name: 'f1' }, undefined, { forMs: 10_000 }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      bind.open();
      expect(await waiting.result()).toEqual({ address: '172.18.0.5', gateway: 'gw1' });
      await eventually(async () => written().some((s) => s.ready && s.nat === 'fip'), (done) => done, 10_000, 'a Ready status naming the FIP');
      await new Promise((resolve) => setTimeout(resolve, 1000)); // a write after it would have landed
      const ready = written().filter((s) => s.ready);
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: 'natflow/fip/f1/u1' }] });
      await deleteAndWait(h);
      return ready;
    });
  }

  it('becoming Ready with a claim waiting for its address, it takes the claim in the same step: one status write, naming the FIP (a V2 run writes one without it first)', async () => {
    expect(await readyStatusesWritten(eipWorkflowV3)).toEqual([expect.objectContaining({ phase: 'Ready', ip: '172.18.0.5', nat: 'fip' })]);
    expect((await readyStatusesWritten(eipWorkflowV2)).map((s) => s.nat)).toEqual(['', 'fip']);
  });

  it('a V6 run from Kubernetes has its first call write the Ready status it makes, and shows it as written: no status call of its own (a V5 run makes one); a claim that waited for its address is written after it', async () => {
    for (const [workflow, statusCalls] of [[eipWorkflowV6, 0], [eipWorkflowV5, 1]] as const) {
      const kube = fakeKube();
      const fake = new FakeCalls<WorkflowCallActivities>(working()).alsoServe((served) => combinedCalls({ ...served, ...kube.activities() }));
      await withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, workflow, fromKube(), async (h) => {
        const calls = await statusCallsOfReadyThenDelete(Object.assign(h, { kind: 'eip' as const }), kube);
        expect({ workflow: workflow.name, statusCalls: calls }).toEqual({ workflow: workflow.name, statusCalls });
      });
    }
    expect((await readyStatusesWritten(eipWorkflowV6)).map((s) => s.nat)).toEqual(['', 'fip']);
  });

  it("a claim whose call writes status.nat is handed that write, when nothing of the EIP's own could land after it: once between its own writes, and not for a retried claim", async () => {
    const kube = fakeKube();
    const natOf = () => (kube.args.kubePublishStatus ?? []).map(([ref]) => (ref.status as unknown as EipStatus).nat);
    const fake = new FakeCalls<WorkflowCallActivities>(working()).alsoServe((served) => combinedCalls({ ...served, ...kube.activities() }));
    const object = { kind: 'eip', name: 'eip1', uid: uid() };
    const { options } = resourceStart('eip', { name: 'eip1', uid: object.uid, generation: 1, fromKube: true }, spec);
    await withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, eipWorkflowV6, options, async (h) => {
      await workflowPhase(Object.assign(h, { kind: 'eip' as const }), 'Ready');
      const claim = (owner: string, kind: 'dnat' | 'snat', name: string) => h.executeUpdate(claimEipUpdate, { args: [{ owner, kind, name }, undefined, undefined, { writesNat: true }] });
      expect(await claim('natflow/dnat/d1/u1', 'dnat', 'd1')).toEqual({ address: '172.18.0.5', gateway: 'gw1', writeNat: { object, from: '', to: 'dnat' } });
      // Handed over once: the next change is the EIP's own write (two handed-over writes could land in either order).
      expect(await claim('natflow/snat/s1/u1', 'snat', 's1')).toEqual({ address: '172.18.0.5', gateway: 'gw1' });
      await eventually(async () => natOf(), (nats) => nats.includes('dnat,snat'), 10_000, 'the EIP writing dnat,snat itself');
      expect(natOf()).toEqual(['', 'dnat,snat']); // Ready by its first call; 'dnat' was the DNAT's call's to write
      // After a write of its own, it hands over again; a retried claim (one it holds) is written by the EIP.
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: 'natflow/snat/s1/u1' }] });
      await eventually(async () => natOf(), (nats) => nats.length === 3, 10_000, 'dnat written');
      expect(await claim('natflow/snat/s1/u1', 'snat', 's1')).toEqual({ address: '172.18.0.5', gateway: 'gw1', writeNat: { object, from: 'dnat', to: 'dnat,snat' } });
      expect(await claim('natflow/snat/s1/u1', 'snat', 's1')).toEqual({ address: '172.18.0.5', gateway: 'gw1' });
      await eventually(async () => natOf(), (nats) => nats.length === 4, 10_000, 'the retried claim written');
      expect(natOf()).toEqual(['', 'dnat,snat', 'dnat', 'dnat,snat']);
      for (const owner of ['natflow/dnat/d1/u1', 'natflow/snat/s1/u1']) await h.executeUpdate(unclaimEipUpdate, { args: [{ owner }] });
      await deleteAndWait(h);
    });
  });

  it('a claim that waited for the address, whose call writes status.nat, is handed that write as the EIP becomes Ready: the EIP writes none of its own', async () => {
    const kube = fakeKube();
    const bind = gate();
    const fake = new FakeCalls<WorkflowCallActivities>(working(), { bindAddress: { until: bind.closed } }).alsoServe((served) => combinedCalls({ ...served, ...kube.activities() }));
    const object = { kind: 'eip', name: 'eip1', uid: uid() };
    const { options } = resourceStart('eip', { name: 'eip1', uid: object.uid, generation: 1, fromKube: true }, spec);
    await withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, eipWorkflowV6, options, async (h) => {
      await eventually(async () => fake.started(), (names) => names.includes('bindAddress'), 10_000, 'the bind under way');
      const claim = { owner: 'natflow/fip/f1/u1', kind: 'fip' as const, name: 'f1' };
      const waiting = await h.startUpdate(claimEipUpdate, { args: [claim, undefined, { forMs: 10_000 }, { writesNat: true }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      bind.open();
      expect(await waiting.result()).toEqual({ address: '172.18.0.5', gateway: 'gw1', writeNat: { object, from: '', to: 'fip' } });
      await new Promise((resolve) => setTimeout(resolve, 1000)); // a write of its own would have landed
      // Ready written by its first call, `nat: fip` left to the FIP's: no status call of the EIP's.
      expect((kube.args.kubePublishStatus ?? []).map(([ref]) => (ref.status as unknown as EipStatus).nat)).toEqual(['']);
      expect((await historyOf(h)).filter((e) => isCallOf(e, 'kubePublishStatus'))).toEqual([]);
      await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: claim.owner }] });
      await deleteAndWait(h);
    });
  });

  it('a V6 first call that may write Ready waits for a status write in flight, so that the older status cannot land after it', async () => {
    let looks = 0;
    const kube = fakeKube();
    kube.script('kubePublishStatus', { delayMs: 2000 });
    const notReadyOnce = async (): Promise<GatewayReadiness> => (++looks === 1 ? { exists: true, ready: false, reason: 'its agent is not ready' } : { exists: true, ready: true, reason: '' });
    const fake = new FakeCalls<WorkflowCallActivities>(working(), { gatewayReadiness: { answer: notReadyOnce } }).alsoServe((served) => combinedCalls({ ...served, ...kube.activities() }));
    await withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, eipWorkflowV6, fromKube(), async (h) => {
      await eventually(async () => kube.started(), (n) => n.includes('kubePublishStatus'), 10_000, 'WaitingForGateway being written');
      await h.signal(gatewayChangedSignal);
      await eventually(async () => statusesWritten(kube), (w) => w.includes('Ready/Ready'), 20_000, 'Ready written');
      await eventually(async () => kube.events.filter((e) => e === 'kubePublishStatus:end').length, (ends) => ends === 2, 10_000, 'both writes landed');
      expect(statusesWritten(kube)).toEqual([`WaitingForGateway/${Reason.GatewayNotReady}`, 'Ready/Ready']);
      expect(kube.events.filter((e) => e.startsWith('kubePublishStatus:'))).toEqual(['kubePublishStatus:start', 'kubePublishStatus:end', 'kubePublishStatus:start', 'kubePublishStatus:end']);
      await deleteAndWait(h);
    });
  });

  /**
   * An EIP from Kubernetes deleted (used by a FIP until its `EipInUse` status has been written, when
   * `users`): the statuses written a second after the delete and by its end, and the status its
   * release carried (written only if another finalizer keeps the object).
   */
  async function statusesOfDelete(workflow: typeof eipWorkflowV4, users: boolean) {
    const kube = fakeKube();
    const { options } = resourceStart('eip', { name: 'eip1', uid: uid(), generation: 1, fromKube: true }, spec);
    const user = { owner: 'natflow/fip/f1/u1', kind: 'fip' as const, name: 'f1' };
    const { kubeAdopt, kubeRelease } = kube.activities();
    const fake = new FakeCalls<WorkflowCallActivities>(working()).alsoServe((served) => combinedCalls({ ...served, kubeAdopt, kubeRelease }));
    return withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, workflow, options, async (h) => {
      const statuses = await statusesAroundDelete(h, kube, {
        before: async () => users && (await h.executeUpdate(claimEipUpdate, { args: [user] })),
        meanwhile: async () => {
          if (!users) return;
          await eventually(async () => statusesWritten(kube), (w) => w.includes(`Deleting/${Reason.EipInUse}`), 10_000, 'EipInUse written');
          await h.executeUpdate(unclaimEipUpdate, { args: [{ owner: user.owner }] });
        },
      });
      const releaseCalls = (await historyOf(h)).filter((e) => isCallOf(e, 'kubeRelease')).length;
      return { ...statuses, releaseCalls, carried: fake.args.unbindAndRelease?.map(([req]) => req.releaseObject?.status ?? null) };
    });
  }

  it('a V6 run lets its object go in the call that takes its address off and gives it back, with the status it ends with (a V5 run makes a call of its own); one that waits for its users first still shows it', async () => {
    const quick = await statusesOfDelete(eipWorkflowV6, false);
    expect(quick).toMatchObject({ all: ['Ready/Ready'], released: 'Deleted', releaseCalls: 0, carried: [expect.objectContaining({ phase: 'Deleted', ip: '' })] });
    expect(await statusesOfDelete(eipWorkflowV5, false)).toMatchObject({ all: ['Ready/Ready'], released: 'Deleted', releaseCalls: 1, carried: [null] });
    const waited = await statusesOfDelete(eipWorkflowV6, true);
    expect(waited.all.filter((s) => s.startsWith('Deleting/'))).toEqual([`Deleting/${Reason.EipInUse}`]);
    expect(waited).toMatchObject({ released: 'Deleted', releaseCalls: 0 });
  }, 60_000);

  it('a quick delete writes no status of its own (the last one goes with the release); a cleanup that waits for its users shows it once that has lasted (a V3 run writes each at once)', async () => {
    expect(await statusesOfDelete(eipWorkflowV4, false)).toMatchObject({ soon: ['Ready/Ready'], all: ['Ready/Ready'], released: 'Deleted' });
    expect(await statusesOfDelete(eipWorkflowV3, false)).toMatchObject({ all: ['Ready/Ready', `Deleting/${Reason.Deleting}`], released: 'Deleted' });
    // With a user, its claim is in a Ready status of its own first.
    const deleting = (written: string[]) => written.filter((s) => s.startsWith('Deleting/'));
    const waited = await statusesOfDelete(eipWorkflowV4, true);
    expect(deleting(waited.soon)).toEqual([]);
    expect(deleting(waited.all)[0]).toBe(`Deleting/${Reason.EipInUse}`);
    expect(new Set(deleting((await statusesOfDelete(eipWorkflowV3, true)).all))).toEqual(new Set([`Deleting/${Reason.EipInUse}`, `Deleting/${Reason.Deleting}`]));
  }, 60_000);

  const fromKube = () => resourceStart('eip', { name: 'eip1', uid: uid(), generation: 1, fromKube: true }, spec).options;
  const adopted = async () => ({ exists: true, deleting: false });

  it('from Kubernetes, its first call adopts its object before any other step, under a name of its own (a V4 run makes a call of its own for it first)', async () => {
    const steps = ['gatewayReadiness', 'allocateAddress', 'bindAddress'];
    for (const [workflow, first] of [[eipWorkflowV5, ['adoptAndTakeAddress', 'kubeAdopt']], [eipWorkflowV4, ['kubeAdopt', 'takeAddress']]] as const) {
      const fake = controlWithKube(adopted);
      await withWorkflow(env(), fake.activities(), workflow, fromKube(), async (h) => {
        await workflowPhase(Object.assign(h, { kind: 'eip' as const }), 'Ready');
        expect(withoutStatus(fake.started()).slice(0, 5)).toEqual([...first, ...steps]);
        if (workflow === eipWorkflowV5) expect(fake.args.adoptAndTakeAddress?.[0]?.[0].adopt).toMatchObject({ kind: 'eip', name: 'eip1' });
        await deleteAndWait(h);
      });
    }
  });

  it('a first call that finds its object being deleted takes nothing, and the run cleans up as one that only cleans up; one that finds it gone just ends', async () => {
    const deleting = controlWithKube(async () => ({ exists: true, deleting: true }));
    await withWorkflow(env(), deleting.activities(), eipWorkflowV5, fromKube(), async (h) => {
      await h.result();
      expect(withoutStatus(deleting.started())).toEqual(['adoptAndTakeAddress', 'kubeAdopt', 'releaseEverywhere', 'kubeRelease']);
    });
    const gone = controlWithKube(async () => ({ exists: false, deleting: false }));
    await withWorkflow(env(), gone.activities(), eipWorkflowV5, fromKube(), async (h) => {
      await h.result();
      expect(withoutStatus(gone.started())).toEqual(['adoptAndTakeAddress', 'kubeAdopt']);
    });
  });

  it('with no first call to make (its spec invalid), it adopts with a call of its own: an object being deleted is cleaned up, not left waiting for a spec change', async () => {
    const fake = controlWithKube(async () => ({ exists: true, deleting: true }));
    const options = resourceStart('eip', { name: 'eip1', uid: uid(), generation: 1, fromKube: true }, { natGwDp: 'gw1', v4ip: 'not-an-ip' }).options;
    await withWorkflow(env(), fake.activities(), eipWorkflowV5, options, async (h) => {
      await h.result();
      expect(withoutStatus(fake.started())).toEqual(['kubeAdopt', 'releaseEverywhere', 'kubeRelease']);
    });
  });

  it('deleted while its first call is under way, it waits for the call\'s answer (its adoption with it) and gives back what the call took', async () => {
    const fake = controlWithKube(adopted, { bindAddress: { delayMs: 1500 } });
    await withWorkflow(env(), fake.activities(), eipWorkflowV5, fromKube(), async (h) => {
      await eventually(async () => fake.started(), (n) => n.includes('bindAddress'), 10_000, 'the bind under way');
      await h.cancel();
      await h.result().catch(() => undefined);
      expect(withoutStatus(fake.started())).toEqual(['adoptAndTakeAddress', 'kubeAdopt', 'gatewayReadiness', 'allocateAddress', 'bindAddress', 'notifyEipWaiters', 'unbindAndRelease', 'unbindAddress', 'releaseAddress', 'kubeRelease']);
    });
  });

  it('a first call retried after its first attempt adopted and failed gives back what that attempt may hold when it finds the object gone', async () => {
    let adoptions = 0;
    const gone = async () => (++adoptions === 1 ? { exists: true, deleting: false } : { exists: false, deleting: false });
    const fake = controlWithKube(gone, { allocateAddress: { failure: new Error('IPAM unreachable'), failures: 1 } });
    await withWorkflow(env(), fake.activities(), eipWorkflowV5, fromKube(), async (h) => {
      await h.result();
      expect(withoutStatus(fake.started())).toEqual(['adoptAndTakeAddress', 'kubeAdopt', 'gatewayReadiness', 'allocateAddress', 'adoptAndTakeAddress', 'kubeAdopt', 'releaseEverywhere', 'unbindAndRelease', 'unbindAddress', 'releaseAddress', 'kubeRelease']);
    });
  });

  it('a delete during the bind wakes the rules that began to watch the EIP meanwhile', async () => {
    const fake = control({ bindAddress: { delayMs: 2000 } });
    await withEip(fake, spec, async (h) => {
      await eventually(async () => fake.started(), (n) => n.includes('bindAddress'), 20_000);
      await h.signal(watchEipSignal, { watcher: 'natflow/dnat/d1/u1', until: 'ready' });
      await deleteAndWait(h);
      const signals = (await historyOf(h)).filter((e) => e.type === 'signalExternalWorkflowExecutionInitiated');
      expect(signals).toHaveLength(1);
    });
  });

  it('a rule that begins to watch while the run\'s last wake-ups are on their way is woken before the run ends', async () => {
    // The soak: a FIP's watch arrived with the answer to the last wake-up of an EIP being deleted,
    // and the run ended without waking it (the FIP then waited an hour). Here every wake-up takes
    // 2 s to leave; a watcher comes during the cleanup's wake-ups, another during the run's last.
    const slowWakeUps = workflowBundleWithInterceptors([fileURLToPath(new URL('./support/slow-wake-ups.ts', import.meta.url))]);
    const fake = control({ gatewayReadiness: { answer: missingGateway } });
    await withResource(env(), fake.activities(), 'eip', spec, async (h) => {
      await workflowPhase(h, 'WaitingForGateway');
      const watch = (n: number) => h.signal(watchEipSignal, { watcher: `natflow/fip/w${n}/u${n}`, until: 'ready' });
      const wakeUpsOnTheirWay = (count: number) =>
        eventually(async () => (await historyOf(h)).filter((e, i, all) => e.type === 'timerStarted' && i > all.findIndex((x) => x.type === 'workflowExecutionCancelRequested')).length, (n) => n >= count, 10_000, `${count} wake-ups on their way`);
      await watch(1);
      await h.cancel();
      await wakeUpsOnTheirWay(1); // the cleanup's
      await watch(2);
      await wakeUpsOnTheirWay(2); // the run's last, at its end
      await watch(3);
      await h.result().catch(() => undefined);
      const woken = (await historyOf(h)).filter((e) => e.type === 'signalExternalWorkflowExecutionInitiated');
      expect(woken).toHaveLength(3);
    }, slowWakeUps);
  }, 60_000);

  it('a rule refused because another held the EIP is woken when that one lets go just as the EIP is deleted (one workflow task)', async () => {
    // The soak: FIP f3025, refused EipInUse by EIP e2960 (an SNAT held it), waited an hour: the
    // SNAT's unclaim and the EIP's delete reached one workflow task, and the unclaim's wake-up was
    // cancelled by the delete before it was sent. Here both wait for a worker, then come together.
    const fake = control();
    const taskQueue = uniqueQueue('eip-one-task');
    const worker = async () => Worker.create({ connection: env().nativeConnection, taskQueue, workflowBundle: await workflowBundle(), activities: fake.activities() });
    const { workflow, options } = resourceStart('eip', { name: 'e1', uid: uid(), generation: 1 }, spec);
    const h = Object.assign(await env().client.workflow.start(workflow, { ...options, taskQueue }), { kind: 'eip' as const });
    const holder = 'natflow/snat/s1/u1';
    const refused = 'natflow/fip/f1/u1';
    const first = await worker();
    await first.runUntil(async () => {
      await workflowPhase(h, 'Ready');
      await h.executeUpdate(claimEipUpdate, { args: [{ owner: holder, kind: 'snat', name: 's1' }] });
      await h.signal(watchEipSignal, { watcher: refused, until: 'claimable', kind: 'fip' });
      const watchTaken = (events: Awaited<ReturnType<typeof historyOf>>) => {
        const at = events.findIndex((e) => e.name === 'watchEip');
        return at >= 0 && events.slice(at).some((e) => e.type === 'workflowTaskCompleted');
      };
      await eventually(() => historyOf(h), watchTaken, 10_000, 'the watch taken');
    });
    // No worker now: the unclaim and the delete both wait for the next one's first workflow task.
    const unclaimed = h.executeUpdate(unclaimEipUpdate, { args: [{ owner: holder }] });
    await h.cancel();
    await (await worker()).runUntil(async () => {
      await unclaimed;
      await h.result().catch(() => undefined);
    });
    const woken = (await h.fetchHistory()).events?.flatMap((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.workflowExecution?.workflowId ?? []) ?? [];
    expect(woken).toContain(refused);
  }, 60_000);

  it('a failed gateway add releases the address before waiting again, then recovers', async () => {
    const fake = control({ bindAddress: { failure: ApplicationFailure.nonRetryable('agent did not answer', Reason.GatewayNotReady), failures: 1 } });
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'Ready', 30_000);
      const take = ['takeAddress', 'gatewayReadiness', 'allocateAddress', 'bindAddress'];
      expect(await startedOnceReady(fake, 12)).toEqual([...take, 'unbindAndRelease', 'unbindAddress', 'releaseAddress', ...take, 'notifyEipWaiters']);
      await deleteAndWait(h);
    });
  });

  it('a take whose first attempt allocated and failed, and whose retry finds the gateway not ready, gives back what the first took', async () => {
    let checks = 0;
    const fake = control({
      gatewayReadiness: { answer: async () => (++checks === 1 ? { exists: true, ready: true, reason: '' } : { exists: true, ready: false, reason: 'agent restarting' }) },
      bindAddress: { failure: ApplicationFailure.retryable('connection reset', 'Transient'), failures: 1 },
    });
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'WaitingForGateway', 20_000);
      await eventually(async () => fake.started(), (s) => s.includes('releaseAddress'), 20_000, 'the address released');
      expect(fake.started().slice(0, 6)).toEqual(['takeAddress', 'gatewayReadiness', 'allocateAddress', 'bindAddress', 'takeAddress', 'gatewayReadiness']);
      expect(fake.started().slice(6, 9)).toEqual(['unbindAndRelease', 'unbindAddress', 'releaseAddress']);
      await deleteAndWait(h);
    });
  });

  it('an invalid spec gets a condition and touches nothing', async () => {
    const fake = control();
    await withEip(fake, { natGwDp: 'gw1', v4ip: '172.18.0.300' }, async (h) => {
      const status = await workflowPhase(h, 'Invalid');
      expect(status.conditions[0]).toMatchObject({ status: 'False', reason: Reason.InvalidSpec });
      expect(status.conditions[0]!.message).toContain('172.18.0.300');
      await deleteAndWait(h);
      expect(fake.events).toEqual([]);
    });
  });

  it('a refused allocation shows the reason and holds nothing', async () => {
    const fake = control({ allocateAddress: { failure: ApplicationFailure.nonRetryable('172.18.0.9 is already allocated in subnet ext', Reason.AddressTaken) } });
    await withEip(fake, { natGwDp: 'gw1', v4ip: '172.18.0.9' }, async (h) => {
      const status = await workflowPhase(h, 'Failed');
      expect(status.conditions[0]).toMatchObject({ reason: Reason.AddressTaken, message: '172.18.0.9 is already allocated in subnet ext' });
      await deleteAndWait(h);
      expect(fake.started()).not.toContain('releaseAddress');
      expect(fake.started()).not.toContain('bindAddress');
    });
  });

  it('an address asked for and held by another EIP (on its way out) is asked for again within seconds, not minutes', async () => {
    const fake = control({ allocateAddress: { failure: ApplicationFailure.nonRetryable('172.18.0.9 is already allocated in subnet ext', Reason.AddressTaken), failures: 1 } });
    await withEip(fake, { natGwDp: 'gw1', v4ip: '172.18.0.9' }, async (h) => {
      await workflowPhase(h, 'Failed');
      await workflowPhase(h, 'Ready', 20_000); // the first retry comes 10 s after the refusal
      expect(fake.started().filter((n) => n === 'allocateAddress')).toHaveLength(2);
      await deleteAndWait(h);
    });
  }, 40_000);

  it('a call whose worker died is made again after its heartbeat timeout; the calls that carry a fence are timed by start-to-close alone', async () => {
    // The first unbind hangs without a heartbeat, as an attempt does whose worker was SIGKILLed.
    let release!: () => void;
    const dead = new Promise<void>((resolve) => (release = resolve));
    let unbinds = 0;
    const fake = control({ unbindAddress: { answer: async () => (++unbinds === 1 ? dead.then(() => ({ applied: true })) : { applied: true }) } });
    await withEip(fake, spec, async (h) => {
      await workflowPhase(h, 'Ready');
      await startedOnceReady(fake, 5);
      await deleteAndWait(h);
      release();
      const { events } = await h.fetchHistory();
      // A retried attempt leaves no event of its own: the last attempt's start says how the one before it ended.
      const retried = (events ?? []).flatMap((e) => {
        const started = e.activityTaskStartedEventAttributes;
        return started && (started.attempt ?? 1) > 1 ? [{ attempt: started.attempt, timeout: decodeTimeoutType(started.lastFailure?.timeoutFailureInfo?.timeoutType) }] : [];
      });
      expect(retried).toEqual([{ attempt: 2, timeout: 'HEARTBEAT' }]);
      const scheduled = Object.fromEntries(
        (events ?? []).flatMap((e) => {
          const a = e.activityTaskScheduledEventAttributes;
          return a ? [[a.activityType?.name, { heartbeat: Number(a.heartbeatTimeout?.seconds ?? 0), startToClose: Number(a.startToCloseTimeout?.seconds ?? 0) }]] : [];
        }),
      );
      expect(scheduled.unbindAndRelease).toEqual({ heartbeat: 10, startToClose: 60 });
      expect(scheduled.takeAddress).toEqual({ heartbeat: 0, startToClose: 30 }); // three fenced steps in one call
    });
  }, 40_000);
});
