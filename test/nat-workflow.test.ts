// Workflow unit tier for NAT rules: the order of the Kube-OVN fix (claim the EIP before any
// rule, remove rules before giving the EIP back) and every cancellation path, with the control
// activities replaced by a fake that records each call.
import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { eipChangedSignal, gatewayChangedSignal, specChangedSignal, type KubeActivities, type WorkflowCallActivities } from '../domain/workflow-api.js';
import { resourceStart } from '../starter/resources.js';
import { fipWorkflowV2, fipWorkflowV3, fipWorkflowV4, fipWorkflowV5, fipWorkflowV6 } from '../workflows/nat-rule.js';
import { Reason } from '../domain/errors.js';
import { CLAIM_WAIT_MS, combinedCalls } from '../activities/combined-calls.js';
import { FakeCalls, fakeKube, statusesWritten, workingRuleCalls, type CallScripts } from './support/fake-calls.js';
import { useTestEnv } from './support/temporal-env.js';
import { deleteAndWait, eventually, historyOf, isCallOf, statusCallsOfReadyThenDelete, statusesAroundDelete, statusOf, uid, uniqueQueue, withResource, withWorkflow, workflowPhase, type ResourceHandle } from './support/workflows.js';

/** A control plane where everything works (see workingRuleCalls). */
const control = (scripts: CallScripts<WorkflowCallActivities> = {}) => new FakeCalls<WorkflowCallActivities>(workingRuleCalls(), scripts).alsoServe(combinedCalls);
/** The same, with the Kubernetes calls of a rule from the cluster, the combined calls seeing `kubeAdopt` as the worker's do. */
const controlWithKube = (kubeAdopt: KubeActivities['kubeAdopt']) =>
  new FakeCalls<WorkflowCallActivities & KubeActivities>({ ...workingRuleCalls(), kubeAdopt, kubePublishStatus: async () => undefined, kubeRelease: async () => undefined }).alsoServe(combinedCalls);
const missingEip = async () => null;

describe('NAT rule workflow (mocked activities)', () => {
  const env = useTestEnv();

  const withFip = (fake: FakeCalls<WorkflowCallActivities>, body: (h: ResourceHandle<'fip'>) => Promise<void>, internalIp = '10.0.1.10') =>
    withResource(env(), fake.activities(), 'fip', { eip: 'e1', internalIp }, body);

  it('claims the EIP before applying, and on delete removes the rule before giving the EIP back', async () => {
    const fake = control();
    await withFip(fake, async (h) => {
      const status = await workflowPhase(h, 'Ready');
      expect(status).toMatchObject({ v4ip: '172.18.0.9', natGwDp: 'gw1', internalIp: '10.0.1.10' });
      // One call finds the EIP, claims it (a claim that may wait for an EIP taking its address), then applies.
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule']);
      expect(fake.args.claimEip?.[0]?.[0]).toMatchObject({ eipWorkflowId: 'natflow/eip/e1/u', owner: h.workflowId, wait: { forMs: CLAIM_WAIT_MS } });
      expect(fake.args.setGatewayRule?.[0]?.[0]).toMatchObject({ gateway: 'gw1', rule: { eip: '172.18.0.9' } });
      await deleteAndWait(h);
      // One call takes the rule off, then gives the claim back (a V2 run made a call of each, below).
      expect(fake.started().slice(4)).toEqual(['removeRuleAndUnclaim', 'removeGatewayRule', 'unclaimEip']);
      expect(fake.events.indexOf('unclaimEip:start')).toBeGreaterThan(fake.events.indexOf('removeGatewayRule:end'));
    });
  });

  it('a run of the V2 type gives its rule and its claim back a call each, as it always did', async () => {
    const fake = control();
    const { options } = resourceStart('fip', { name: 'fip1', uid: uid(), generation: 1 }, { eip: 'e1', internalIp: '10.0.1.10' });
    await withWorkflow(env(), fake.activities(), fipWorkflowV2, options, async (h) => {
      await workflowPhase(Object.assign(h, { kind: 'fip' as const }), 'Ready');
      await deleteAndWait(h);
      expect(fake.started().slice(4)).toEqual(['removeGatewayRule', 'unclaimEip']);
    });
  });

  it('a delete while the gateway is not ready keeps the claim until the gateway has taken the rule off, then gives both back', async () => {
    let removals = 0;
    const fake = control({ removeGatewayRule: { answer: async () => ({ applied: ++removals > 1 }) } });
    await withFip(fake, async (h) => {
      await workflowPhase(h, 'Ready');
      await h.cancel();
      const waiting = await eventually(() => statusOf(h), (s) => s.conditions[0]?.reason === Reason.GatewayNotReady, 10_000, 'waiting for the gateway');
      expect(waiting.phase).toBe('Deleting');
      expect(fake.started()).not.toContain('unclaimEip');
      await h.signal(gatewayChangedSignal);
      await h.result().catch(() => undefined);
      expect(fake.started().slice(4)).toEqual(['removeRuleAndUnclaim', 'removeGatewayRule', 'removeRuleAndUnclaim', 'removeGatewayRule', 'unclaimEip']);
    });
  });

  /**
   * A FIP from Kubernetes deleted (while its gateway is not ready, until its status says so, when
   * `gatewayAway`): the statuses written a second after the delete and by its end.
   */
  async function statusesOfDelete(workflow: typeof fipWorkflowV4, gatewayAway: boolean, removalMs = 0, { workerReleases = true } = {}) {
    let away = gatewayAway;
    const kube = fakeKube();
    const scripts = { removeGatewayRule: { answer: async () => ({ applied: !away }), delayMs: removalMs } };
    const { kubeAdopt, kubeRelease } = kube.activities();
    // `workerReleases`: false, a worker from before the V6 types (its calls ignore `releaseObject`).
    const fake = new FakeCalls<WorkflowCallActivities>(workingRuleCalls(), scripts).alsoServe((served) => combinedCalls({ ...served, kubeAdopt, ...(workerReleases && { kubeRelease }) }));
    const { options } = resourceStart('fip', { name: 'fip1', uid: uid(), generation: 1, fromKube: true }, { eip: 'e1', internalIp: '10.0.1.10' });
    return withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, workflow, options, async (h) => {
      const statuses = await statusesAroundDelete(h, kube, {
        meanwhile: async () => {
          if (!gatewayAway) return;
          await eventually(async () => statusesWritten(kube), (w) => w.includes(`Deleting/${Reason.GatewayNotReady}`), 10_000, 'GatewayNotReady written');
          away = false;
          await h.signal(gatewayChangedSignal);
        },
      });
      const releases = { calls: (await historyOf(h)).filter((e) => isCallOf(e, 'kubeRelease')).length, made: kube.started().filter((n) => n === 'kubeRelease').length };
      return { ...statuses, releases, removals: fake.args.removeRuleAndUnclaim?.map(([req]) => req.releaseObject?.status?.phase ?? null) };
    });
  }

  it('a quick delete writes no status of its own (the last one goes with the release); a cleanup that waits for its gateway shows it once that has lasted (a V3 run writes each at once)', async () => {
    expect(await statusesOfDelete(fipWorkflowV4, false)).toMatchObject({ soon: ['Ready/Ready'], all: ['Ready/Ready'], released: 'Deleted' });
    expect(await statusesOfDelete(fipWorkflowV3, false)).toMatchObject({ all: ['Ready/Ready', `Deleting/${Reason.Deleting}`], released: 'Deleted' });
    const waited = await statusesOfDelete(fipWorkflowV4, true);
    expect(waited.soon).toEqual(['Ready/Ready']);
    expect(waited.all).toContain(`Deleting/${Reason.GatewayNotReady}`);
    expect((await statusesOfDelete(fipWorkflowV3, true)).all.slice(0, 2)).toEqual(['Ready/Ready', `Deleting/${Reason.Deleting}`]);
  }, 60_000);

  it('a V5 run writes no status its cleanup only passes through, however long that lasts (a V4 run writes it once it has lasted); a wait for its gateway it still shows', async () => {
    expect(await statusesOfDelete(fipWorkflowV5, false, 4000)).toMatchObject({ soon: ['Ready/Ready'], all: ['Ready/Ready'], released: 'Deleted' });
    // A removal of 8 s: its status is written 3 s in, well before the removal's answer on a loaded machine.
    expect((await statusesOfDelete(fipWorkflowV4, false, 8000)).all).toEqual(['Ready/Ready', `Deleting/${Reason.Deleting}`]);
    expect((await statusesOfDelete(fipWorkflowV5, true)).all).toEqual(['Ready/Ready', `Deleting/${Reason.GatewayNotReady}`]);
  }, 60_000);

  it('a V6 run lets its object go in the call that takes its rule off and gives its claim back, with the status it ends with (a V5 run makes a call of its own); while that call is not applied, it releases nothing and its wait is written', async () => {
    const quick = await statusesOfDelete(fipWorkflowV6, false);
    expect(quick).toMatchObject({ all: ['Ready/Ready'], released: 'Deleted', releases: { calls: 0, made: 1 }, removals: ['Deleted'] });
    expect(await statusesOfDelete(fipWorkflowV5, false)).toMatchObject({ all: ['Ready/Ready'], released: 'Deleted', releases: { calls: 1, made: 1 }, removals: [null] });
    const waited = await statusesOfDelete(fipWorkflowV6, true);
    expect(waited.all).toEqual(['Ready/Ready', `Deleting/${Reason.GatewayNotReady}`]);
    expect(waited).toMatchObject({ released: 'Deleted', releases: { calls: 0, made: 1 } });
    expect(waited.removals?.length).toBeGreaterThan(1);
    // A worker from before V6 ignores the object to release: the run releases it with a call of its own.
    expect(await statusesOfDelete(fipWorkflowV6, false, 0, { workerReleases: false })).toMatchObject({ released: 'Deleted', releases: { calls: 1, made: 1 }, removals: ['Deleted'] });
  }, 60_000);

  it('from Kubernetes, its first call adopts its object before it looks for its EIP (a V4 run makes a call of its own first); one finding the object deleting takes nothing and cleans up as a run that only cleans up', async () => {
    const fromKube = () => resourceStart('fip', { name: 'fip1', uid: uid(), generation: 1, fromKube: true }, { eip: 'e1', internalIp: '10.0.1.10' }).options;
    const withoutStatus = (names: string[]) => names.filter((n) => n !== 'kubePublishStatus');
    const steps = ['eipForRule', 'claimEip', 'setGatewayRule'];
    for (const [workflow, first] of [[fipWorkflowV5, ['adoptAndFindClaimAndApply', 'kubeAdopt']], [fipWorkflowV4, ['kubeAdopt', 'findClaimAndApply']]] as const) {
      const fake = controlWithKube(async () => ({ exists: true, deleting: false }));
      await withWorkflow(env(), fake.activities(), workflow, fromKube(), async (h) => {
        await workflowPhase(Object.assign(h, { kind: 'fip' as const }), 'Ready');
        expect(withoutStatus(fake.started()).slice(0, 5)).toEqual([...first, ...steps]);
        await deleteAndWait(h);
      });
    }
    const deleting = controlWithKube(async () => ({ exists: true, deleting: true }));
    await withWorkflow(env(), deleting.activities(), fipWorkflowV5, fromKube(), async (h) => {
      await h.result();
      expect(withoutStatus(deleting.started())).toEqual(['adoptAndFindClaimAndApply', 'kubeAdopt', 'removeGatewayRuleEverywhere', 'eipForRule', 'unclaimEip', 'kubeRelease']);
    });
    // With no first call to make (its spec invalid), it adopts with a call of its own: a deleting object is cleaned up, not left waiting.
    const invalid = controlWithKube(async () => ({ exists: true, deleting: true }));
    const options = resourceStart('fip', { name: 'fip1', uid: uid(), generation: 1, fromKube: true }, { eip: 'e1', internalIp: 'not-an-ip' }).options;
    await withWorkflow(env(), invalid.activities(), fipWorkflowV5, options, async (h) => {
      await h.result();
      expect(withoutStatus(invalid.started())).toEqual(['kubeAdopt', 'removeGatewayRuleEverywhere', 'eipForRule', 'unclaimEip', 'kubeRelease']);
    });
  });

  it('a V6 run from Kubernetes has its first call write the Ready status it makes, and shows it as written: no status call of its own (a V5 run makes one, and so does a V6 run on a worker that cannot write it)', async () => {
    const fromKube = () => resourceStart('fip', { name: 'fip1', uid: uid(), generation: 1, fromKube: true }, { eip: 'e1', internalIp: '10.0.1.10' }).options;
    for (const [workflow, workerWrites, statusCalls] of [[fipWorkflowV6, true, 0], [fipWorkflowV5, true, 1], [fipWorkflowV6, false, 1]] as const) {
      const kube = fakeKube();
      const { kubeAdopt, kubePublishStatus, kubeRelease } = kube.activities();
      const fake = new FakeCalls<WorkflowCallActivities>(workingRuleCalls()).alsoServe((served) => combinedCalls({ ...served, kubeAdopt, kubeRelease, ...(workerWrites && { kubePublishStatus }) }));
      await withWorkflow(env(), { ...fake.activities(), ...kube.activities() }, workflow, fromKube(), async (h) => {
        const calls = await statusCallsOfReadyThenDelete(Object.assign(h, { kind: 'fip' as const }), kube);
        expect({ workflow: workflow.name, workerWrites, statusCalls: calls }).toEqual({ workflow: workflow.name, workerWrites, statusCalls });
      });
    }
  });

  it('waits for a missing EIP without touching anything; a delete then has nothing to undo', async () => {
    const fake = control({ eipForRule: { answer: missingEip } });
    await withFip(fake, async (h) => {
      const status = await workflowPhase(h, 'WaitingForEip');
      expect(status.conditions[0]).toMatchObject({ reason: Reason.EipNotFound, message: 'EIP e1 does not exist' });
      await deleteAndWait(h);
      expect(new Set(fake.started())).toEqual(new Set(['findClaimAndApply', 'eipForRule']));
    });
  });

  it('a rule created before its EIP starts as soon as the EIP says it is ready', async () => {
    const fake = control({ eipForRule: { answer: missingEip } });
    await withFip(fake, async (h) => {
      await workflowPhase(h, 'WaitingForEip');
      // Three lookups: the re-check timer now runs 4 s, far from the signal below.
      await eventually(async () => fake.started().filter((n) => n === 'eipForRule').length, (n) => n >= 3, 20_000, 'a third lookup');
      fake.script('eipForRule', {});
      await h.signal(eipChangedSignal);
      await workflowPhase(h, 'Ready');
      // The signal itself woke it: the next lookup came without the re-check timer firing first.
      const history = await historyOf(h);
      const signaled = history.findIndex((e) => e.type === 'workflowExecutionSignaled' && e.name === eipChangedSignal.name);
      const nextLookup = history.findIndex((e, i) => i > signaled && isCallOf(e, 'eipForRule'));
      expect(signaled).toBeGreaterThan(-1);
      expect(nextLookup).toBeGreaterThan(signaled);
      const between = history.slice(signaled, nextLookup + 1).map((e) => e.type);
      expect(between, `from the signal to the next lookup: ${between.join(' → ')}`).not.toContain('timerFired');
      await deleteAndWait(h);
    });
  });

  it('a rule whose EIP is not ready (its claim waited in vain) has the lookup ask the EIP to wake it, and once woken claims without looking again', async () => {
    const fake = control({
      eipForRule: { answer: async () => ({ workflowId: 'natflow/eip/e1/u', ready: false, reason: 'WaitingForGateway' }) },
      claimEip: { failure: ApplicationFailure.nonRetryable('EIP e1 is not ready (WaitingForGateway)', Reason.EipNotReady), failures: 1 },
    });
    await withFip(fake, async (h) => {
      const waiting = await workflowPhase(h, 'WaitingForEip');
      expect(waiting.conditions[0]).toMatchObject({ reason: Reason.EipNotReady, message: 'EIP e1 is not ready: WaitingForGateway' });
      expect(fake.args.eipForRule).toEqual([['e1'], ['e1', { watcher: h.workflowId, until: 'ready' }]]);
      await h.signal(eipChangedSignal);
      await workflowPhase(h, 'Ready');
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'eipForRule', 'claimEip', 'setGatewayRule']);
      await deleteAndWait(h);
    });
  });

  it('a rule whose EIP is on its way out looks again within seconds (a wake-up from its last moments may be lost), not in an hour', async () => {
    const fake = control({
      eipForRule: { answer: async () => ({ workflowId: 'natflow/eip/e1/u', ready: false, reason: 'Deleted' }) },
      claimEip: { failure: ApplicationFailure.nonRetryable('EIP e1 is not ready (Deleted)', Reason.EipNotReady) },
    });
    await withFip(fake, async (h) => {
      const waiting = await workflowPhase(h, 'WaitingForEip');
      expect(waiting.conditions[0]).toMatchObject({ reason: Reason.EipNotReady, message: 'EIP e1 is not ready: Deleted' });
      fake.script('eipForRule', { answer: missingEip }); // it is gone now, and nothing tells the rule
      const gone = await workflowPhase(h, 'WaitingForEip', 20_000);
      expect(await eventually(() => statusOf(h), (s) => s.conditions[0]?.reason === Reason.EipNotFound, 20_000, 'EipNotFound')).toBeTruthy();
      expect(gone.phase).toBe('WaitingForEip');
      await deleteAndWait(h);
    });
  });

  it('a claim an EIP refuses as not ready (it may be leaving) looks the EIP up again within seconds, not when the EIP wakes it', async () => {
    // The EIP takes watches and never answers them, as one that ends right after taking a watch.
    const silentEip = await env().client.workflow.start('silentEip', { taskQueue: uniqueQueue('nobody'), workflowId: 'natflow/eip/e1/u' });
    try {
      // Refused twice: in the first call (which looks again at once), then in the claim that follows.
      const fake = control({ claimEip: { failure: ApplicationFailure.nonRetryable('EIP e1 is not ready (Deleting)', Reason.EipNotReady), failures: 2 } });
      await withFip(fake, async (h) => {
        await workflowPhase(h, 'Ready', 10_000);
        expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'eipForRule', 'claimAndApply', 'claimEip', 'findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule']);
        await deleteAndWait(h);
      });
    } finally {
      await silentEip.terminate();
    }
  });

  it('a claim that finds its EIP gone looks the EIP up by name again, instead of failing', async () => {
    const fake = control({ claimEip: { failure: ApplicationFailure.nonRetryable('EIP natflow/eip/e1/u does not exist any more', Reason.EipNotFound), failures: 2 } });
    await withFip(fake, async (h) => {
      await workflowPhase(h, 'Ready', 10_000);
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'eipForRule', 'claimAndApply', 'claimEip', 'findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule']);
      await deleteAndWait(h);
    });
  });

  it('a delete during the apply waits for it, then removes the rule and gives the EIP back', async () => {
    const fake = control({ setGatewayRule: { delayMs: 1500 } });
    await withFip(fake, async (h) => {
      await eventually(async () => fake.started(), (s) => s.includes('setGatewayRule'), 20_000);
      await deleteAndWait(h);
      expect(fake.events.indexOf('removeGatewayRule:start')).toBeGreaterThan(fake.events.indexOf('setGatewayRule:end'));
      expect(fake.events.indexOf('unclaimEip:start')).toBeGreaterThan(fake.events.indexOf('removeGatewayRule:end'));
    });
  });

  it('a refused claim (EIP in use) shows the reason and holds nothing', async () => {
    const fake = control({ claimEip: { failure: ApplicationFailure.nonRetryable('EIP e1: the EIP is already used by fip other; a FIP needs it alone', Reason.EipInUse) } });
    await withFip(fake, async (h) => {
      const status = await workflowPhase(h, 'Failed');
      expect(status.conditions[0]).toMatchObject({ reason: Reason.EipInUse });
      await deleteAndWait(h);
      expect(fake.started()).not.toContain('setGatewayRule');
      expect(fake.started()).not.toContain('unclaimEip');
    });
  });

  it('a rule the gateway refuses is removed and the EIP given back, with the gateway\'s reason', async () => {
    const fake = control({ setGatewayRule: { failure: ApplicationFailure.nonRetryable('192.168.7.7 is outside the VPC subnet 10.0.1.0/24 of gateway gw1', Reason.InvalidSpec) } });
    await withFip(fake, async (h) => {
      const status = await workflowPhase(h, 'Failed');
      expect(status.conditions[0]).toMatchObject({ reason: Reason.InvalidSpec, message: expect.stringContaining('outside the VPC subnet') });
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule', 'removeRuleAndUnclaim', 'removeGatewayRule', 'unclaimEip']);
      await deleteAndWait(h);
    }, '192.168.7.7');
  });

  it('an EIP whose record names another gateway than the one it is on: claimed, then applied where it is', async () => {
    const fake = control({ eipForRule: { answer: async () => ({ workflowId: 'natflow/eip/e1/u', ready: true, reason: '', gateway: 'gw-stale' }) } });
    await withFip(fake, async (h) => {
      const status = await workflowPhase(h, 'Ready');
      expect(status.natGwDp).toBe('gw1');
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule']);
      expect(fake.args.setGatewayRule?.map(([req]) => req.gateway)).toEqual(['gw1']);
      await deleteAndWait(h);
      expect(fake.args.removeGatewayRule?.map(([req]) => req.gateway)).toEqual(['gw1']);
    });
  });

  it('a first call whose first attempt claimed and failed, and whose retry is refused the claim, gives back what the first took (where it may be)', async () => {
    let claims = 0;
    const fake = control({
      claimEip: { answer: async () => (++claims === 1 ? { address: '172.18.0.9', gateway: 'gw1' } : Promise.reject(ApplicationFailure.nonRetryable('EIP e1 is not ready (Deleting)', Reason.EipNotReady))) },
      setGatewayRule: { failure: ApplicationFailure.retryable('connection reset', 'Transient'), failures: 1 },
    });
    await withFip(fake, async (h) => {
      await eventually(async () => fake.started(), (s) => s.includes('unclaimEip'), 20_000, 'the claim given back');
      expect(fake.started().slice(0, 10)).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule', 'findClaimAndApply', 'eipForRule', 'claimEip', 'giveBackByIdentity', 'removeGatewayRuleEverywhere', 'unclaimEip']);
      expect(fake.args.unclaimEip?.[0]?.[0]).toEqual({ eipWorkflowId: 'natflow/eip/e1/u', owner: h.workflowId });
      await deleteAndWait(h);
    });
  });

  it('a first call whose first attempt claimed and failed, and whose retry finds the EIP gone, takes its rule off every gateway before it waits', async () => {
    let lookups = 0;
    const fake = control({
      eipForRule: { answer: async () => (++lookups === 1 ? { workflowId: 'natflow/eip/e1/u', ready: true, reason: '', gateway: 'gw1' } : null) },
      setGatewayRule: { failure: ApplicationFailure.retryable('connection reset', 'Transient'), failures: 1 },
    });
    await withFip(fake, async (h) => {
      const waiting = await workflowPhase(h, 'WaitingForEip', 20_000);
      expect(waiting.conditions[0]).toMatchObject({ reason: Reason.EipNotFound });
      expect(fake.started().slice(0, 9)).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule', 'findClaimAndApply', 'eipForRule', 'giveBackByIdentity', 'removeGatewayRuleEverywhere', 'eipForRule']);
      expect(fake.args.removeGatewayRuleEverywhere?.[0]?.[0]).toEqual({ owner: h.workflowId.split('/')[3] });
      await deleteAndWait(h);
    });
  });

  it('a rule refused by a gateway not ready yet looks again within seconds, even if the gateway\'s wake-up never reaches it', async () => {
    const fake = control({ setGatewayRule: { failure: ApplicationFailure.nonRetryable('gateway gw1 is not ready: restoring its desired state', Reason.GatewayNotReady), failures: 1 } });
    await withFip(fake, async (h) => {
      await workflowPhase(h, 'WaitingForGateway');
      await workflowPhase(h, 'Ready', 10_000); // no gatewayChanged signal is sent
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule', 'setGatewayRule']);
      await deleteAndWait(h);
    });
  });

  it('a spec change on the same EIP replaces the rule in place', async () => {
    const fake = control();
    await withFip(fake, async (h) => {
      await workflowPhase(h, 'Ready');
      await h.signal(specChangedSignal, { spec: { eip: 'e1', internalIp: '10.0.1.11' }, generation: 2 });
      const status = await eventually(() => statusOf(h), (s) => s.ready && s.internalIp === '10.0.1.11', 20_000);
      expect(status.observedGeneration).toBe(2);
      expect(fake.args.setGatewayRule?.map(([req]) => req.rule)).toMatchObject([{ internalIp: '10.0.1.10' }, { internalIp: '10.0.1.11' }]);
      expect(fake.started()).toEqual(['findClaimAndApply', 'eipForRule', 'claimEip', 'setGatewayRule', 'setGatewayRule']);
      await deleteAndWait(h);
    });
  });
});
