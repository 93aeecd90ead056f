// The lifecycle of one NAT rule (FIP, DNAT or SNAT), the place Kube-OVN v1.13.4 leaked. Order:
// validate → wait for the EIP to be ready → claim it (the claim is the ownership record: refused
// when the EIP is used in a conflicting way) → apply on the gateway, which serialises and batches
// → Ready. A delete (cancellation) at any moment runs, in a non-cancellable scope: remove the rule
// by its tag and flush its conntrack entries (the gateway does both), then give the claim back.
// Each step is idempotent, so "may have happened" is enough to undo it.
import * as wf from '@temporalio/workflow';
import { Reason } from '../domain/errors.js';
import { natEipName, natRuleFor, type NatInput, type NatPhase, type NatSpec, type NatSpecs, type NatStatus } from '../domain/nat-resources.js';
import type { NatRule } from '../domain/nat-rules.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { eipChangedSignal, specChangedSignal, statusQuery, type ClaimedEip, type EipForRule } from '../domain/workflow-api.js';
import { calls } from './activity-proxies.js';
import { checkSpec, refusal, type ReadyCondition } from './failures.js';
import { adoptedLifecycle, kubeSync } from './kube-sync.js';
import { backoff, phaseReporter } from './resource-status.js';

/** A refused spec is tried again this often (or at once on a spec change). */
const RETRY_FAILED_AFTER = '5m';
/** A gateway that was not ready is tried again this often. */
const RETRY_GATEWAY_AFTER = '10s';

export const fipWorkflow = (input: NatInput<'fip'>) => natRuleWorkflow(input);
export const dnatWorkflow = (input: NatInput<'dnat'>) => natRuleWorkflow(input);
export const snatWorkflow = (input: NatInput<'snat'>) => natRuleWorkflow(input);

async function natRuleWorkflow(input: NatInput): Promise<void> {
  const rule = new NatRuleResource(input);
  // Kube-OVN's fix, in order: the object still exists and its finalizer is on before any side effect.
  await adoptedLifecycle(rule.k8s, () => rule.lifecycle(), () => rule.cleanup());
}

class NatRuleResource {
  /** validate → wait for the EIP → claim it → apply → serve (Ready, spec changes in place) → give back; again after a change of EIP. */
  async lifecycle(): Promise<void> {
    for (;;) {
      this.specChanged = false;
      const eipName = checkSpec(() => natEipName(this.input));
      if (!eipName.ok) {
        this.setPhase('Invalid', eipName.invalid);
        await wf.condition(() => this.specChanged);
        continue;
      }
      const eip = await this.waitForEip(eipName.value);
      if (!eip) continue;
      const target = await this.claim(eip);
      if (!target) continue;
      if (!(await this.applySpec(target))) continue;
      await this.serve(eipName.value, target);
      await this.releaseAll();
    }
  }

  /** The delete: rules and conntrack off the gateway, the EIP given back, then the object may go. */
  cleanup(): Promise<void> {
    return wf.CancellationScope.nonCancellable(async () => {
      this.setPhase('Deleting', { status: 'False', reason: Reason.Deleting, message: 'removing its rules and conntrack entries' });
      await this.releaseAll();
      this.setPhase('Deleted', { status: 'False', reason: Reason.Deleting, message: 'nothing is left on the gateway' });
      await this.k8s.release();
    });
  }

  private input: NatInput;
  private readonly kind;
  private readonly name: string;
  private readonly owner = wf.workflowInfo().workflowId;
  private specChanged = false;
  private eipChanged = false;
  private readonly status: NatStatus;
  // What may be held: set before the call that takes it, cleared after the call that gives it back.
  private claimed: { eipWorkflowId: string } | null = null;
  private applied: { gateway: string } | null = null;
  readonly k8s;
  private readonly report: (phase: NatPhase, condition: ReadyCondition) => void;

  constructor(input: NatInput) {
    this.input = input;
    this.kind = input.kind;
    this.name = input.resource.name;
    this.status = { phase: 'Pending', ready: false, v4ip: '', natGwDp: '', conditions: [], observedGeneration: input.resource.generation };
    this.k8s = kubeSync(this.kind, input.resource);
    this.report = phaseReporter(this.status, this.k8s, () => this.input.resource.generation);

    wf.setHandler(statusQuery, () => this.status);
    wf.setHandler(eipChangedSignal, () => void (this.eipChanged = true));
    wf.setHandler(specChangedSignal, ({ spec, generation }) => {
      if (generation <= this.input.resource.generation) return; // a repeat or a stale update
      this.input = { ...this.input, spec: spec as NatSpec, resource: { ...this.input.resource, generation } };
      this.specChanged = true;
    });
    wf.upsertSearchAttributes(searchAttributes({ kind: this.kind, name: this.name }));
  }

  // --- the steps ---------------------------------------------------------------------------

  /** The EIP once it exists and is ready (it may be created after the rule); null when the spec changed meanwhile. */
  private async waitForEip(eipName: string): Promise<EipForRule | null> {
    for (let attempt = 0; !this.specChanged; attempt++) {
      this.eipChanged = false;
      const eip = await calls.eipForRule.executeWithOptions({ summary: `is EIP ${eipName} ready?` }, [eipName]);
      if (eip?.ready) return eip;
      this.setPhase('WaitingForEip', { status: 'False', reason: eip ? Reason.EipNotReady : Reason.EipNotFound, message: eip ? `EIP ${eipName} is not ready: ${eip.reason}` : `EIP ${eipName} does not exist` });
      // An EIP that becomes ready wakes us; the timer is the fallback.
      await wf.condition(() => this.specChanged || this.eipChanged, backoff(attempt, 500, 30_000));
    }
    return null;
  }

  /** The EIP's address and gateway once claimed; null (nothing held) after a refusal and its wait. */
  private async claim(eip: EipForRule): Promise<ClaimedEip | null> {
    this.setPhase('Claiming', { status: 'False', reason: 'Claiming', message: `claiming EIP ${this.input.spec.eip}` });
    this.claimed = { eipWorkflowId: eip.workflowId };
    try {
      const target = await calls.claimEip.executeWithOptions({ summary: `claim EIP ${this.input.spec.eip} for ${this.kind} ${this.name}` }, [{ eipWorkflowId: eip.workflowId, owner: this.owner, kind: this.kind, name: this.name }]);
      this.status.v4ip = target.address;
      this.status.natGwDp = target.gateway;
      wf.upsertSearchAttributes(searchAttributes({ gateway: target.gateway }));
      return target;
    } catch (err) {
      if (wf.isCancellation(err)) throw err;
      this.claimed = null; // refused: nothing is held
      this.setPhase('Failed', refusal(err, 'Error'));
      await this.waitAfterFailure();
      return null;
    }
  }

  /** Applies the current spec's rule and shows Ready; false when it was invalid or refused (everything given back, after a wait). */
  private async applySpec(target: ClaimedEip): Promise<boolean> {
    const rule = checkSpec(() => natRuleFor(this.input, target.address));
    if (!rule.ok) {
      await this.releaseAll();
      this.setPhase('Invalid', rule.invalid);
      this.specChanged = false;
      await wf.condition(() => this.specChanged);
      return false;
    }
    if (!(await this.apply(target.gateway, rule.value))) {
      await this.waitAfterFailure();
      return false;
    }
    this.setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `applied on ${target.gateway}` });
    return true;
  }

  /** Applies the rule; false (after giving everything back) when the gateway refused it. */
  private async apply(gateway: string, rule: NatRule): Promise<boolean> {
    this.setPhase('Applying', { status: 'False', reason: 'Applying', message: `applying on ${gateway}` });
    this.applied = { gateway };
    try {
      await calls.setGatewayRule.executeWithOptions({ summary: `apply ${this.kind} ${this.name}: ${rule.eip} on ${gateway}` }, [{ gateway, rule }]);
      return true;
    } catch (err) {
      if (wf.isCancellation(err)) throw err;
      await this.releaseAll();
      this.setPhase('Failed', refusal(err, 'Error'));
      return false;
    }
  }

  /** Ready: a spec change on the same EIP replaces the rule in place (the gateway removes the old mapping and flushes its conntrack entries); another EIP starts over. */
  private async serve(eipName: string, target: ClaimedEip): Promise<void> {
    for (;;) {
      await wf.condition(() => this.specChanged);
      this.specChanged = false;
      if (!this.sameEip(eipName)) return; // start over from the top, where a bad name shows as Invalid
      if (!(await this.applySpec(target))) return;
    }
  }

  /** Gives back whatever may be held: the rule first, then the claim. */
  private async releaseAll(): Promise<void> {
    if (this.applied) {
      await calls.removeGatewayRule.executeWithOptions({ summary: `remove ${this.kind} ${this.name} rules and conntrack from ${this.applied.gateway}` }, [{ gateway: this.applied.gateway, owner: this.input.resource.uid }]);
      this.applied = null;
    }
    if (this.claimed) {
      await calls.unclaimEip.executeWithOptions({ summary: `give EIP ${this.input.spec.eip} back` }, [{ eipWorkflowId: this.claimed.eipWorkflowId, owner: this.owner }]);
      this.claimed = null;
    }
    this.status.v4ip = '';
  }

  /** A refused spec waits for a change; a gateway that was not ready is tried again soon. */
  private waitAfterFailure(): Promise<boolean> {
    const reason = this.status.conditions.find((c) => c.type === 'Ready')?.reason ?? '';
    const specProblem = ([Reason.InvalidSpec, Reason.DuplicateDnat, Reason.EipInUse] as string[]).includes(reason);
    return wf.condition(() => this.specChanged, specProblem ? RETRY_FAILED_AFTER : RETRY_GATEWAY_AFTER);
  }

  private sameEip(eipName: string): boolean {
    const current = checkSpec(() => natEipName(this.input));
    return current.ok && current.value === eipName;
  }

  private setPhase(phase: NatPhase, condition: ReadyCondition): void {
    Object.assign(this.status, specEcho(this.input));
    this.report(phase, condition);
  }
}

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
