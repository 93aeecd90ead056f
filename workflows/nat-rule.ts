// The lifecycle of one NAT rule (FIP, DNAT or SNAT), the place Kube-OVN v1.13.4 leaked.
// Order: validate → wait for the EIP to be ready → claim it (the claim is the ownership
// record: refused when the EIP is used in a conflicting way) → apply on the gateway, which
// serialises and batches → ready. A delete (cancellation) at any moment runs, in a
// non-cancellable scope: remove the rule by its tag and flush its conntrack entries (the
// gateway does both), then give the claim back. Each step is idempotent, so "may have
// happened" is enough to undo it.
import * as wf from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control.js';
import { control } from './control-activities.js';
import { NatflowError, Reason } from '../domain/errors.js';
import { natEipName, natRuleFor, type NatInput, type NatKind, type NatPhase, type NatSpecs, type NatStatus } from '../domain/nat-resources.js';
import type { NatRule } from '../domain/nat-rules.js';
import { setCondition, type ConditionInput } from '../domain/status.js';
import { adoptedLifecycle, kubeSync } from './kube-sync.js';
import { searchAttributes } from './search-attributes.js';
import { eipChangedSignal } from './signals.js';

export const natSpecSignal = wf.defineSignal<[{ spec: NatSpecs[NatKind]; generation: number }]>('specChanged');
export const natStatusQuery = wf.defineQuery<NatStatus>('status');

const backoff = (attempt: number) => Math.min(500 * 2 ** attempt, 30_000);
const RETRY_FAILED_AFTER = '5m';
const RETRY_GATEWAY_AFTER = '10s';

export const fipWorkflow = (input: NatInput<'fip'>) => natRuleLifecycle(input);
export const dnatWorkflow = (input: NatInput<'dnat'>) => natRuleLifecycle(input);
export const snatWorkflow = (input: NatInput<'snat'>) => natRuleLifecycle(input);

/** The Kube-OVN status fields that echo the spec. */
function specEcho(input: NatInput): Partial<NatStatus> {
  const spec = input.spec as Partial<NatSpecs['dnat'] & NatSpecs['snat']>;
  switch (input.kind) {
    case 'fip':
      return { internalIp: spec.internalIp };
    case 'dnat':
      return { internalIp: spec.internalIp, protocol: spec.protocol, internalPort: String(spec.internalPort), externalPort: String(spec.externalPort) };
    case 'snat':
      return { internalCIDR: spec.internalCIDR };
  }
}

async function natRuleLifecycle(initial: NatInput): Promise<void> {
  const { kind, resource } = initial;
  const owner = wf.workflowInfo().workflowId;
  let input = initial;
  let specChanged = false;
  const status: NatStatus = { phase: 'Pending', ready: false, v4ip: '', natGwDp: '', conditions: [], observedGeneration: resource.generation };
  // What may be held: set before the call that takes it, cleared after the call that gives it back.
  let claimed: { eipWorkflowId: string } | null = null;
  let applied: { gateway: string } | null = null;

  const setPhase = (phase: NatPhase, condition: Omit<ConditionInput, 'type'>) => {
    Object.assign(status, specEcho(input), { phase, ready: phase === 'Ready', observedGeneration: input.resource.generation });
    status.conditions = setCondition(status.conditions, { type: 'Ready', ...condition }, new Date(), input.resource.generation);
    wf.upsertSearchAttributes(searchAttributes({ phase }));
    wf.setCurrentDetails(`**${phase}**: ${condition.message}`);
    k8s.publish({ ...status });
  };
  const k8s = kubeSync(kind, resource);
  const failureOf = (err: unknown) => {
    const cause = (err as wf.ActivityFailure).cause as wf.ApplicationFailure | undefined;
    return { status: 'False' as const, reason: cause?.type ?? 'Error', message: cause?.message ?? String(err) };
  };

  let eipChanged = false;
  wf.setHandler(natStatusQuery, () => status);
  wf.setHandler(eipChangedSignal, () => void (eipChanged = true));
  wf.setHandler(natSpecSignal, (update) => {
    if (update.generation <= input.resource.generation) return; // a repeat or a stale update
    input = { ...input, spec: update.spec, resource: { ...input.resource, generation: update.generation } };
    specChanged = true;
  });

  const removeRule = async () => {
    if (applied) {
      await control.removeGatewayRule.executeWithOptions({ summary: `remove ${kind} ${resource.name} rules and conntrack from ${applied.gateway}` }, [{ gateway: applied.gateway, owner: resource.uid }]);
      applied = null;
    }
  };
  const releaseAll = async () => {
    await removeRule();
    if (claimed) {
      await control.unclaimEip.executeWithOptions({ summary: `give EIP ${input.spec.eip} back` }, [{ eipWorkflowId: claimed.eipWorkflowId, owner }]);
      claimed = null;
    }
    status.v4ip = '';
  };
  /** Applies the rule; false (after compensating) when the gateway refused it. */
  const apply = async (gateway: string, rule: NatRule): Promise<boolean> => {
    setPhase('Applying', { status: 'False', reason: 'Applying', message: `applying on ${gateway}` });
    applied = { gateway };
    try {
      await control.setGatewayRule.executeWithOptions({ summary: `apply ${kind} ${resource.name}: ${rule.eip} on ${gateway}` }, [{ gateway, rule }]);
      return true;
    } catch (err) {
      if (wf.isCancellation(err)) throw err;
      await releaseAll();
      setPhase('Failed', failureOf(err));
      return false;
    }
  };

  /** The rule for the current spec; a bad spec gives everything back, shows Invalid and waits for a change (null). */
  const ruleFor = async (address: string): Promise<NatRule | null> => {
    try {
      return natRuleFor(input, address);
    } catch (err) {
      if (!(err instanceof NatflowError)) throw err;
      await releaseAll();
      setPhase('Invalid', { status: 'False', reason: err.reason, message: err.message });
      specChanged = false;
      await wf.condition(() => specChanged);
      return null;
    }
  };
  const sameEip = (eipName: string) => {
    try {
      return natEipName(input) === eipName;
    } catch {
      return false;
    }
  };

  /** A refused spec waits for a change; a gateway that was not ready is tried again soon. */
  const waitAfterFailure = () => {
    const reason = status.conditions.find((c) => c.type === 'Ready')?.reason ?? '';
    const specProblem = ([Reason.InvalidSpec, Reason.DuplicateDnat, Reason.EipInUse] as string[]).includes(reason);
    return wf.condition(() => specChanged, specProblem ? RETRY_FAILED_AFTER : RETRY_GATEWAY_AFTER);
  };

  /** The delete: rules and conntrack off the gateway, the EIP given back, then the object may go. */
  const cleanup = () =>
    wf.CancellationScope.nonCancellable(async () => {
      setPhase('Deleting', { status: 'False', reason: Reason.Deleting, message: 'removing its rules and conntrack entries' });
      await releaseAll();
      setPhase('Deleted', { status: 'False', reason: Reason.Deleting, message: 'nothing is left on the gateway' });
      await k8s.release();
    });

  wf.upsertSearchAttributes(searchAttributes({ kind, name: resource.name }));
  async function lifecycle(): Promise<void> {
    for (;;) {
      specChanged = false;
      let eipName: string;
      try {
        eipName = natEipName(input);
      } catch (err) {
        if (!(err instanceof NatflowError)) throw err;
        setPhase('Invalid', { status: 'False', reason: err.reason, message: err.message });
        await wf.condition(() => specChanged);
        continue;
      }

      // Wait for the EIP to exist and be ready (it may be created after the rule).
      let eip: Awaited<ReturnType<ControlActivities['eipForRule']>> = null;
      for (let attempt = 0; !specChanged; attempt++) {
        eipChanged = false;
        eip = await control.eipForRule.executeWithOptions({ summary: `is EIP ${eipName} ready?` }, [eipName]);
        if (eip?.ready) break;
        setPhase('WaitingForEip', { status: 'False', reason: eip ? Reason.EipNotReady : Reason.EipNotFound, message: eip ? `EIP ${eipName} is not ready: ${eip.reason}` : `EIP ${eipName} does not exist` });
        await wf.condition(() => specChanged || eipChanged, backoff(attempt));
      }
      if (specChanged || !eip) continue;

      setPhase('Claiming', { status: 'False', reason: 'Claiming', message: `claiming EIP ${eipName}` });
      claimed = { eipWorkflowId: eip.workflowId };
      let target: { address: string; gateway: string };
      try {
        target = await control.claimEip.executeWithOptions({ summary: `claim EIP ${eipName} for ${kind} ${resource.name}` }, [{ eipWorkflowId: eip.workflowId, owner, kind, name: resource.name }]);
      } catch (err) {
        if (wf.isCancellation(err)) throw err;
        claimed = null; // refused: nothing is held
        setPhase('Failed', failureOf(err));
        await waitAfterFailure();
        continue;
      }
      status.v4ip = target.address;
      status.natGwDp = target.gateway;
      wf.upsertSearchAttributes(searchAttributes({ gateway: target.gateway }));

      const rule = await ruleFor(target.address);
      if (!rule) continue;
      if (!(await apply(target.gateway, rule))) {
        await waitAfterFailure();
        continue;
      }
      setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `applied on ${target.gateway}` });

      // Ready: a spec change on the same EIP replaces the rule in place (the gateway removes the
      // old mapping and flushes its conntrack entries); another EIP starts over.
      for (;;) {
        await wf.condition(() => specChanged);
        specChanged = false;
        if (!sameEip(eipName)) break; // start over from the top, where a bad name shows as Invalid
        const next = await ruleFor(target.address);
        if (!next) break;
        if (!(await apply(target.gateway, next))) {
          await waitAfterFailure();
          break;
        }
        setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `applied on ${target.gateway}` });
      }
      await releaseAll();
    }
  }

  // Kube-OVN's fix, in order: the object still exists and its finalizer is on before any side effect.
  await adoptedLifecycle(k8s, lifecycle, cleanup);
}

