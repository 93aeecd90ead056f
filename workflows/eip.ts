// The lifecycle of one IptablesEIP. Order matters and is the point of this workflow:
// gateway ready → allocate → bind on the gateway → ready; a failure after allocation releases
// before waiting again; a delete (cancellation) at any moment runs the cleanup in a
// non-cancellable scope. Activities that take or give something wait for their own
// cancellation to complete, so the cleanup never races an allocation still in flight.
import * as wf from '@temporalio/workflow';
import { eipAddressChanged, normalizeEipSpec, type EipInput, type EipPhase, type EipSpec, type EipStatus } from '../domain/eip.js';
import { NatflowError, Reason } from '../domain/errors.js';
import type { ConditionInput } from '../domain/status.js';
import { setCondition } from '../domain/status.js';
import { control } from './control-activities.js';
import { claimConflict, type NatKind } from '../domain/nat-resources.js';
import { adoptedLifecycle, kubeSync } from './kube-sync.js';
import { gatewayChangedSignal } from './signals.js';
import { searchAttributes } from './search-attributes.js';

export const eipSpecSignal = wf.defineSignal<[{ spec: EipSpec; generation: number }]>('specChanged');
export const eipStatusQuery = wf.defineQuery<EipStatus>('status');

export interface EipClaim {
  /** The rule's workflow ID. */
  owner: string;
  kind: NatKind;
  name: string;
}
/** A NAT rule takes (a share of) the EIP; refused unless Ready and compatible with its other users. */
export const claimEipUpdate = wf.defineUpdate<{ address: string; gateway: string }, [EipClaim]>('claim');
export const unclaimEipUpdate = wf.defineUpdate<void, [{ owner: string }]>('unclaim');

/** Re-check backoff while waiting: 1 s doubling to a minute (a ready gateway also wakes us). */
const backoff = (attempt: number) => Math.min(1000 * 2 ** attempt, 60_000);
const RETRY_FAILED_AFTER = '5m';

export async function eipWorkflow(input: EipInput): Promise<void> {
  const { name } = input.resource;
  const owner = wf.workflowInfo().workflowId;
  let spec = input.spec;
  let generation = input.resource.generation;
  let specChanged = false;
  let gatewayChanged = false;
  const status: EipStatus = { phase: 'Pending', ready: false, ip: '', natGwDp: spec?.natGwDp ?? '', nat: '', conditions: [], observedGeneration: generation };
  // What may be held right now: set before the call that takes it, cleared after the call that gives it back.
  let held: { subnet: string } | null = null;
  let bound: { gateway: string } | null = null;
  const claims = new Map<string, EipClaim>();
  let deleting = false;
  const users = () => [...claims.values()].map((c) => `${c.kind} ${c.name}`).join(', ');
  /** Kube-OVN's `status.nat`: the kinds of NAT using this EIP. */
  const showUsers = () => {
    status.nat = [...new Set([...claims.values()].map((c) => c.kind))].sort().join(',');
    k8s.publish({ ...status });
  };

  const setPhase = (phase: EipPhase, condition: Omit<ConditionInput, 'type'>) => {
    status.phase = phase;
    status.ready = phase === 'Ready';
    status.conditions = setCondition(status.conditions, { type: 'Ready', ...condition }, new Date(), generation);
    status.observedGeneration = generation;
    wf.upsertSearchAttributes(searchAttributes({ phase }));
    wf.setCurrentDetails(`**${phase}**: ${condition.message}`);
    k8s.publish({ ...status });
  };
  const k8s = kubeSync('eip', input.resource);

  wf.setHandler(eipStatusQuery, () => status);
  wf.setHandler(
    claimEipUpdate,
    (claim) => {
      claims.set(claim.owner, claim);
      showUsers();
      return { address: status.ip, gateway: status.natGwDp };
    },
    {
      validator: (claim) => {
        if (status.phase !== 'Ready' || deleting) throw wf.ApplicationFailure.nonRetryable(`EIP ${name} is not ready (${status.phase})`, Reason.EipNotReady);
        const conflict = claimConflict(claim.kind, [...claims.values()], claim.owner);
        if (conflict) throw wf.ApplicationFailure.nonRetryable(`EIP ${name}: ${conflict}`, Reason.EipInUse);
      },
    },
  );
  wf.setHandler(unclaimEipUpdate, ({ owner }) => {
    claims.delete(owner);
    showUsers();
  });
  wf.setHandler(gatewayChangedSignal, () => void (gatewayChanged = true));
  wf.setHandler(eipSpecSignal, (update) => {
    if (update.generation <= generation) return; // a repeat or a stale update
    if (update.spec?.natGwDp !== spec.natGwDp && spec.natGwDp) {
      status.conditions = setCondition(status.conditions, { type: 'Valid', status: 'False', reason: Reason.InvalidSpec, message: `spec.natGwDp is immutable (still ${spec.natGwDp})` }, new Date(), update.generation);
      return;
    }
    spec = update.spec;
    generation = update.generation;
    specChanged = true;
  });

  /** Gives back whatever may be held. Both calls are idempotent, so "may" is enough. */
  const releaseAll = async () => {
    if (bound) {
      await control.unbindAddress.executeWithOptions({ summary: `unbind ${status.ip || 'EIP'} from ${bound.gateway}` }, [{ gateway: bound.gateway, owner }]);
      bound = null;
    }
    if (held) {
      await control.releaseAddress.executeWithOptions({ summary: `release ${status.ip || 'EIP'} to ${held.subnet}` }, [{ subnet: held.subnet, owner }]);
      held = null;
    }
    status.ip = '';
  };

  /** Waits until the gateway's agent is ready; false when the spec changed meanwhile. */
  const waitForGateway = async (gateway: string): Promise<boolean> => {
    for (let attempt = 0; ; attempt++) {
      gatewayChanged = false;
      const readiness = await control.gatewayReadiness.executeWithOptions({ summary: `is ${gateway} ready?` }, [gateway]);
      if (readiness.ready) return true;
      setPhase('WaitingForGateway', { status: 'False', reason: readiness.exists ? Reason.GatewayNotReady : Reason.GatewayNotFound, message: readiness.reason });
      await wf.condition(() => gatewayChanged || specChanged, backoff(attempt));
      if (specChanged) return false;
      const info = wf.workflowInfo();
      if ((info.continueAsNewSuggested || info.historyLength > 5_000) && !held && !bound) {
        await wf.continueAsNew<typeof eipWorkflow>({ resource: { ...input.resource, generation }, spec });
      }
    }
  };

  /** Waits while ready; returns when the spec changed or the gateway went away. */
  const stayReady = async (gateway: string) => {
    for (;;) {
      await wf.condition(() => specChanged || gatewayChanged);
      if (specChanged) return;
      gatewayChanged = false;
      if (!(await control.gatewayReadiness(gateway)).exists) return;
    }
  };

  /** The delete: wait for the EIP's users to go, give everything back, then let the object go. */
  const cleanup = () =>
    wf.CancellationScope.nonCancellable(async () => {
      deleting = true;
      if (claims.size > 0) {
        setPhase('Deleting', { status: 'False', reason: Reason.EipInUse, message: `waiting for its users to be deleted: ${users()}` });
        await wf.condition(() => claims.size === 0);
      }
      setPhase('Deleting', { status: 'False', reason: Reason.Deleting, message: 'removing the address and releasing it' });
      await releaseAll();
      setPhase('Deleted', { status: 'False', reason: Reason.Deleting, message: 'nothing is held any more' });
      await k8s.release();
    });

  wf.upsertSearchAttributes(searchAttributes({ kind: 'eip', name, gateway: spec?.natGwDp ?? '', subnet: spec?.externalSubnet ?? '' }));
  async function lifecycle(): Promise<void> {
    for (;;) {
      specChanged = false;
      let normalized: ReturnType<typeof normalizeEipSpec>;
      try {
        normalized = normalizeEipSpec(name, spec);
      } catch (err) {
        if (!(err instanceof NatflowError)) throw err;
        setPhase('Invalid', { status: 'False', reason: err.reason, message: err.message });
        await wf.condition(() => specChanged);
        continue;
      }
      const { natGwDp: gateway, externalSubnet: subnet } = normalized;
      status.natGwDp = gateway;
      wf.upsertSearchAttributes(searchAttributes({ gateway, subnet }));
      if (!(await waitForGateway(gateway))) continue;

      setPhase('Allocating', { status: 'False', reason: 'Allocating', message: `allocating from ${subnet}` });
      held = { subnet };
      let allocation;
      try {
        allocation = await control.allocateAddress.executeWithOptions({ summary: `allocate ${normalized.v4ip || 'an address'} from ${subnet}` }, [{ subnet, owner, requested: normalized.v4ip }]);
      } catch (err) {
        if (wf.isCancellation(err)) throw err;
        held = null; // the allocation was refused: nothing is held
        const failure = (err as wf.ActivityFailure).cause as wf.ApplicationFailure | undefined;
        setPhase('Failed', { status: 'False', reason: failure?.type ?? 'AllocationFailed', message: failure?.message ?? String(err) });
        // Level-triggered: the subnet may appear or the address be freed; retry later or on a spec change.
        await wf.condition(() => specChanged, RETRY_FAILED_AFTER);
        continue;
      }
      status.ip = allocation.address;

      setPhase('Binding', { status: 'False', reason: 'Binding', message: `adding ${allocation.address} on ${gateway}` });
      bound = { gateway };
      try {
        await control.bindAddress.executeWithOptions({ summary: `add ${allocation.address}/${allocation.prefixLength} on ${gateway}` }, [{ gateway, owner, address: allocation.address, prefixLength: allocation.prefixLength }]);
      } catch (err) {
        if (wf.isCancellation(err)) throw err;
        // Compensate: nothing stays held while we wait for the gateway again.
        await releaseAll();
        continue;
      }

      setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `${allocation.address} is bound on ${gateway}` });
      // Added after the first release: rules created before their EIP no longer wait for their
      // next re-check (up to 30 s) but start at once. Patched, so older histories still replay.
      if (wf.patched('wake-rules-on-eip-ready')) await control.notifyEipWaiters.executeWithOptions({ summary: 'wake NAT rules waiting for an EIP' }, []);
      let applied = spec;
      for (;;) {
        await stayReady(gateway);
        if (!specChanged) break;
        specChanged = false;
        if (eipAddressChanged(applied, spec) && claims.size === 0) break;
        if (eipAddressChanged(applied, spec)) {
          // Moving an address under live NAT rules would break them silently: refuse, keep serving.
          status.conditions = setCondition(status.conditions, { type: 'Valid', status: 'False', reason: Reason.EipInUse, message: `the address cannot change while used by ${users()}` }, new Date(), generation);
          spec = applied;
          continue;
        }
        applied = spec; // nothing natflow acts on changed: just observe the generation
        setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `${allocation.address} is bound on ${gateway}` });
      }
      await releaseAll();
    }
  }

  await adoptedLifecycle(k8s, lifecycle, cleanup);
}

