// The lifecycle of one NAT rule (FIP, DNAT or SNAT), the place Kube-OVN v1.13.4 leaked. Order:
// validate → wait for the EIP to be ready → claim it (the claim is the ownership record: refused
// when the EIP is used in a conflicting way) → apply on the gateway, which serialises and batches
// → Ready. A delete (cancellation) at any moment runs, in a non-cancellable scope: remove the rule
// by its tag and flush its conntrack entries (the gateway does both), then give the claim back.
// Each step is idempotent, so "may have happened" is enough to undo it. It lives as long as its
// object: every wait can continue as new, carrying what it holds; every wait is woken by the
// resource it waits on (the EIP, the gateway), with a long timer only as a fallback.
import * as wf from '@temporalio/workflow';
import { Reason } from '../domain/errors.js';
import { natEipName, natRuleFor, validateNatSpec, type NatCarried, type NatInput, type NatPhase, type NatServing, type NatSpec, type NatSpecs, type NatStatus } from '../domain/nat-resources.js';
import type { NatRule } from '../domain/nat-rules.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { eipChangedSignal, gatewayChangedSignal, specChangedSignal, statusQuery, watchEipSignal, type ClaimedAndApplied, type ClaimedEip, type EipForRule, type EipWatch, type FoundClaimedAndApplied, type KubeRelease, type WatchUntil } from '../domain/workflow-api.js';
import { callProxies, eipCalls, type CallProxies } from './activity-proxies.js';
import { checkSpec, refusal, type ReadyCondition } from './failures.js';
import { HistoryBudget, type WaitFor } from './history-budget.js';
import { HAND_OVER, patches, RESUME_APPLY, RESUME_RELEASE, type Patched, type TypeVersion } from './patches.js';
import { adoptedLifecycle, kubeSync, type KubeSync } from './kube-sync.js';
import { backoff, phaseReporter, RECHECK_MAX_MS, removeUntilApplied, RETRY_FAILED_AFTER_MS, waitForGatewayToRemove } from './resource-status.js';
import { natRuleReady, readyCondition, type PhasedStatus } from '../domain/status.js';

/** Legacy runs: a gateway that was not ready is tried again this often. */
const RETRY_GATEWAY_AFTER = '10s';
/** A claim found its EIP gone: look it up by name again after this long. */
const EIP_GONE_RECHECK_MS = 1000;
/**
 * A rule the gateway refused retries when its EIP changes, but the other rules it refused on the
 * same EIP change it too (each gives its claim back): without a pause growing with every refusal
 * in a row, they would wake each other for ever (936 EIP history events in 15 s, two rules).
 */
const REFUSAL_BACKOFF_PATCH = 'refusal-backoff';
/** A watch that could not be sent (its EIP has ended) wakes the rule at once. */
const WATCHED_EIP_GONE = 'watched-eip-gone';
/** A rule whose EIP is Deleting or Deleted re-checks with a backoff from 1 s, not in an hour. */
const LEAVING_EIP_RECHECK = 'leaving-eip-recheck';
/** A claim refused because the EIP is not ready goes back to the lookup (after a pause), not to a watch. */
const NOT_READY_CLAIM_LOOKUP = 'not-ready-claim-lookup';
const LEAVING_EIP = new Set(['Deleting', 'Deleted']);
/** The longest such pause: a conflict resolved meanwhile is taken up within minutes. */
const REFUSAL_BACKOFF_MAX_MS = 5 * 60_000;
/** Refusals the gateway gives while it is not there or not ready: the rule keeps its claim and waits for it. */
const GATEWAY_REFUSALS: string[] = [Reason.GatewayNotReady, Reason.GatewayNotFound];

const DELETED: ReadyCondition = { status: 'False', reason: Reason.Deleting, message: 'nothing is left on the gateway' };

// Rules started since the V6 types write the Ready status their first call makes in that call, and
// release their Kubernetes object in the cleanup's last call, the one that takes their rule off and
// gives their claim back (workflows/kube-sync.ts: a call and a workflow task fewer each); since the
// V5 types they adopt their Kubernetes object in their first call (its find,
// claim and apply; workflows/kube-sync.ts: a call and a workflow task fewer per object); since the
// V4 types they write a deleting object's status only once it has lasted a
// moment (workflows/kube-sync.ts: a status write fewer per quick delete); since the V3 types they
// take the newest base without asking, and give their rule and their claim back in one call
// (removeRuleAndUnclaim: a workflow task and an activity fewer per delete); since the V2 types,
// the newest base of their day, a call each. The others replay and go on as the patches their
// histories recorded say (workflows/patches.ts).
export const fipWorkflowV6 = (input: NatInput<'fip'>) => natRuleWorkflow(input, 6);
export const dnatWorkflowV6 = (input: NatInput<'dnat'>) => natRuleWorkflow(input, 6);
export const snatWorkflowV6 = (input: NatInput<'snat'>) => natRuleWorkflow(input, 6);
export const fipWorkflowV5 = (input: NatInput<'fip'>) => natRuleWorkflow(input, 5);
export const dnatWorkflowV5 = (input: NatInput<'dnat'>) => natRuleWorkflow(input, 5);
export const snatWorkflowV5 = (input: NatInput<'snat'>) => natRuleWorkflow(input, 5);
export const fipWorkflowV4 = (input: NatInput<'fip'>) => natRuleWorkflow(input, 4);
export const dnatWorkflowV4 = (input: NatInput<'dnat'>) => natRuleWorkflow(input, 4);
export const snatWorkflowV4 = (input: NatInput<'snat'>) => natRuleWorkflow(input, 4);
export const fipWorkflowV3 = (input: NatInput<'fip'>) => natRuleWorkflow(input, 3);
export const dnatWorkflowV3 = (input: NatInput<'dnat'>) => natRuleWorkflow(input, 3);
export const snatWorkflowV3 = (input: NatInput<'snat'>) => natRuleWorkflow(input, 3);
export const fipWorkflowV2 = (input: NatInput<'fip'>) => natRuleWorkflow(input, 2);
export const dnatWorkflowV2 = (input: NatInput<'dnat'>) => natRuleWorkflow(input, 2);
export const snatWorkflowV2 = (input: NatInput<'snat'>) => natRuleWorkflow(input, 2);
export const fipWorkflow = (input: NatInput<'fip'>) => natRuleWorkflow(input, 1);
export const dnatWorkflow = (input: NatInput<'dnat'>) => natRuleWorkflow(input, 1);
export const snatWorkflow = (input: NatInput<'snat'>) => natRuleWorkflow(input, 1);

async function natRuleWorkflow(input: NatInput, type: TypeVersion): Promise<void> {
  const rule = new NatRuleResource(input, type);
  // Kube-OVN's fix, in order: the object still exists and its finalizer is on before any side effect.
  await adoptedLifecycle(rule.k8s, () => rule.lifecycle(), (alone) => rule.cleanup(alone), input.carried);
}

class NatRuleResource {
  /** validate → wait for the EIP → claim it → apply → serve (Ready, spec changes in place) → give back; again after a change of EIP. */
  async lifecycle(): Promise<void> {
    const applying = this.input.carried?.applying;
    if (applying && wf.patched(RESUME_APPLY)) {
      // Continued while its gateway was not ready to take the rule (before its first Ready, or
      // since): it tries again with what it holds, on its own timer as before, then serves.
      if (this.sameEip(applying.eipName) && (await this.applySpec(applying))) await this.serve(applying);
      this.serving = null;
      await this.releaseAll();
    } else if (this.serving) {
      // Continued while serving: it still holds its claim and its rule.
      await this.serve(this.serving);
      await this.releaseAll();
    } else if (this.input.carried?.releasing && wf.patched(RESUME_RELEASE)) {
      await this.releaseAll(); // continued while giving them back
    }
    for (;;) {
      this.specChanged = false;
      const eipName = checkSpec(() => (this.legacy ? natEipName(this.input) : validateNatSpec(this.input)));
      if (!eipName.ok) {
        await this.k8s.ensureAdopted(); // no first call to adopt it: an object being deleted is cleaned up, not left waiting
        this.setPhase('Invalid', eipName.invalid);
        await this.waitFor(() => this.specChanged);
        continue;
      }
      this.showEip(eipName.value);
      const found = await this.waitForEip(eipName.value);
      if (!found) continue;
      const { eip, taken } = found;
      const serving = taken ? await this.tookOrRefused(eipName.value, eip, taken) : this.combined && eip.gateway ? await this.claimAndApply(eipName.value, eip, eip.gateway) : await this.claimThenApply(eipName.value, eip);
      if (!serving) continue;
      await this.serve(serving);
      await this.releaseAll();
    }
  }

  /** The delete: rules and conntrack off the gateway, the EIP given back, then the object may go. `alone`: see adoptedLifecycle. */
  cleanup(alone: boolean): Promise<void> {
    return wf.CancellationScope.nonCancellable(async () => {
      this.deleting = true;
      this.serving = null;
      this.setPhase('Deleting', { status: 'False', reason: Reason.Deleting, message: 'removing its rules and conntrack entries' }, { passing: true });
      if (alone && !this.input.carried && !this.legacy) await this.releaseByIdentity();
      await this.releaseAll(true);
      this.setPhase('Deleted', DELETED);
      await this.k8s.release(); // nothing left to do when the last call of releaseAll released it
    });
  }

  private input: NatInput;
  private readonly kind;
  private readonly name: string;
  private readonly owner = wf.workflowInfo().workflowId;
  /** Histories of the release before continue-as-new everywhere take the old paths. */
  private readonly legacy: boolean;
  private readonly budget: HistoryBudget;
  /** Waits for `done` (or the timeout); continues as new, with everything held, when this run's budget is spent. */
  private readonly waitFor: WaitFor;
  private specChanged = false;
  private eipChanged = false;
  /** Gateway refusals in a row, since the last Ready or spec change: the pause before the next try. */
  private refusalsInARow = 0;
  /** Claims in a row refused because the EIP was not ready: the pause before the next lookup. */
  private notReadyClaims = 0;
  /** Refusal waits in a row whose EIP could not be asked to wake the rule: the re-check's backoff. */
  private unwatched = 0;
  private gatewayChanged = false;
  private shownEip: string;
  private deleting: boolean;
  private readonly status: NatStatus;
  // What may be held: set before the call that takes it, cleared after the call that gives it back.
  private claimed: { eipWorkflowId: string } | null;
  private applied: { gateway: string } | null;
  private serving: NatCarried['serving'];
  /** Giving back what it held: a run continued meanwhile finishes that before anything else. */
  private releasing = false;
  /** Waiting for its gateway to take its rule (before its first Ready, or since): a run continued meanwhile tries again first. */
  private applying: NatServing | null = null;
  readonly k8s: KubeSync;
  /** Remote activities; local ones in the runs from 'local-calls' to 'remote-calls' (workflows/patches.ts). */
  private readonly calls: CallProxies['calls'];
  private readonly lean: boolean;
  private readonly patched: Patched;
  private readonly patchedSinceLean: Patched;
  /** Claims and applies in one call where it can (workflows/patches.ts, 'combined-calls'). */
  private readonly combined: boolean;
  /** Its first call finds the EIP, claims it and applies ('find-claim-apply'). */
  private readonly findFirst: boolean;
  /** Its rule and its claim are given back in one call (the V3 types). */
  private readonly releasesInOne: boolean;
  /** A first call under way (or one retried) may have claimed EIP `eipName` and set the rule where this run does not know: given back by identity. */
  private holdsUnknown: { eipName: string } | null = null;
  private readonly reporter: ReturnType<typeof phaseReporter<NatStatus>>;

  constructor(input: NatInput, type: TypeVersion) {
    const carried = input.carried;
    const { lean, local, remoteStatus, patched, patchedSinceLean, combined, findFirst } = patches(type >= 2);
    const proxies = callProxies(local, remoteStatus);
    this.calls = proxies.calls;
    this.lean = lean;
    this.patched = patched;
    this.patchedSinceLean = patchedSinceLean;
    this.combined = combined;
    this.findFirst = findFirst;
    this.releasesInOne = type >= 3;
    this.legacy = !patched('nat-rule-long-life');
    this.budget = new HistoryBudget(input.limits, !this.legacy);
    this.waitFor = this.budget.waiter(() => this.continueAsNew());
    this.input = input;
    this.kind = input.kind;
    this.name = input.resource.name;
    this.status = carried?.status ?? { phase: 'Pending', ready: false, v4ip: '', natGwDp: '', conditions: [], observedGeneration: input.resource.generation };
    this.claimed = carried?.claimed ?? null;
    this.applied = carried?.applied ?? null;
    this.serving = carried?.serving ?? null;
    this.deleting = carried?.deleting ?? false;
    const specEip = (input.spec as Partial<NatSpec>)?.eip ?? '';
    const shown = carried?.shownEip;
    this.shownEip = shown !== undefined && shown !== specEip && wf.patched(HAND_OVER) ? shown : specEip;
    this.k8s = kubeSync(this.kind, input.resource, proxies.kube, proxies.status, { finalStatusWithRelease: combined, deletingStatusLasts: type >= 4, adoptsWithFirstCall: type >= 5, deletingWritesOnlyWaits: type >= 5, releasesWithLastCall: type >= 6, writesReadyWithFirstCall: type >= 6 });
    this.reporter = phaseReporter(this.status, this.k8s, () => this.input.resource.generation, lean);

    wf.setHandler(statusQuery, () => this.status);
    wf.setHandler(eipChangedSignal, () => {
      this.budget.countSignal();
      this.eipChanged = true;
    });
    wf.setHandler(gatewayChangedSignal, () => {
      this.budget.countSignal();
      this.gatewayChanged = true;
    });
    wf.setHandler(specChangedSignal, ({ spec, generation }) => {
      this.budget.countSignal();
      if (generation <= this.input.resource.generation) return; // a repeat or a stale update
      this.input = { ...this.input, spec: spec as NatSpec, resource: { ...this.input.resource, generation } };
      this.specChanged = true;
    });
    if (carried) this.k8s.publish({ ...this.status });
    else if (!lean) wf.upsertSearchAttributes(searchAttributes({ kind: this.kind, name: this.name })); // a lean run has them from its start
  }

  // --- the steps ---------------------------------------------------------------------------

  /** NatflowEip follows a spec change of EIP (it was set at start): only that EIP wakes the rule. */
  private showEip(eipName: string): void {
    if (eipName === this.shownEip || !this.patched('rule-eip-attribute')) return;
    this.shownEip = eipName;
    this.reporter.attributes({ eip: eipName });
  }

  /**
   * The EIP once it exists and is ready (it may be created after the rule); null when the spec
   * changed meanwhile. An EIP that becomes ready wakes us: one that exists was asked to (and
   * answers at once if it is ready by then), a new one wakes the rules naming it. The timer is
   * the fallback, short only while the EIP is not found (a name that visibility does not list yet).
   */
  private async waitForEip(eipName: string): Promise<{ eip: EipForRule; taken?: ClaimedAndApplied } | null> {
    for (let attempt = 0; !this.specChanged; attempt++) {
      this.eipChanged = false;
      // A lean run's lookup asks the EIP to wake us (one workflow task less than a signal of ours).
      const watch: EipWatch | undefined = this.lean ? { watcher: this.owner, until: 'ready' } : undefined;
      const args: [string, EipWatch?] = watch ? [eipName, watch] : [eipName];
      const first = attempt === 0 && watch && this.findFirst ? await this.findClaimAndApply(eipName, watch) : null;
      if (first && 'taken' in first) return first;
      if (!first) await this.k8s.ensureAdopted(); // no first call adopted it (a V5 run's): before it waits or claims
      const eip = first ? first.eip : await this.calls.eipForRule.executeWithOptions({ summary: `is EIP ${eipName} ready?` }, args);
      if (eip?.ready) return { eip };
      this.setPhase('WaitingForEip', { status: 'False', reason: eip ? Reason.EipNotReady : Reason.EipNotFound, message: eip ? `EIP ${eipName} is not ready: ${eip.reason}` : `EIP ${eipName} does not exist` });
      if (eip && !this.lean) await this.watch(eip.workflowId, { until: 'ready' });
      // An EIP on its way out may end right after taking the watch (its wake-up then lost): look again soon.
      const leaving = !this.legacy && eip !== null && LEAVING_EIP.has(eip.reason) && this.patchedSinceLean(LEAVING_EIP_RECHECK);
      const recheck = this.legacy ? backoff(attempt, 500, 30_000) : !leaving && eip && this.patched('watched-eip-long-wait') ? RECHECK_MAX_MS : backoff(attempt, 1000, RECHECK_MAX_MS);
      await this.waitFor(() => this.specChanged || this.eipChanged, recheck);
      // Woken by the EIP we watch: it says it is ready, and the claim decides (no second lookup).
      if (this.lean && eip && this.eipChanged && !this.specChanged) return { eip: { ...eip, ready: true } };
    }
    return null;
  }

  /**
   * Finds the EIP, claims it and applies, in one call: what it took, or the lookup's answer (then
   * nothing is held: what an earlier attempt of the call may hold is given back first).
   */
  private async findClaimAndApply(eipName: string, watch: EipWatch): Promise<FoundClaimedAndApplied | null> {
    const rule = checkSpec(() => natRuleFor(this.input, '')); // the claim gives its EIP's address
    if (!rule.ok) return null; // the steps one by one show why
    // It shows the phase it had (Pending, or WaitingForEip in a continued run) until it knows more.
    this.holdsUnknown = { eipName };
    const req = { eip: eipName, watch, owner: this.owner, kind: this.kind, name: this.name, rule: rule.value };
    // Its object gone or being deleted (a V5 run's adoption): NotAdopted thrown on.
    const found = await this.k8s.firstCall(
      { plain: this.calls.findClaimAndApply, adopting: this.calls.adoptAndFindClaimAndApply },
      req,
      `find EIP ${eipName}, claim it for ${this.kind} ${this.name} and apply`,
      () => (this.holdsUnknown = null),
      () => ({ status: { ...this.status, ...specEcho(this.input) }, generation: this.input.resource.generation }),
    );
    if (!('taken' in found)) {
      if (found.mayHold) await this.releaseAll();
      this.holdsUnknown = null;
      return found;
    }
    const { taken } = found;
    this.claimed = { eipWorkflowId: found.eip.workflowId };
    if (!('claimRefused' in taken)) this.applied = { gateway: ('applied' in taken ? taken.applied : taken.claimed).gateway };
    // A refused claim may hold only what an earlier attempt took, where this run does not know.
    if (!('claimRefused' in taken && taken.mayHold)) this.holdsUnknown = null;
    return found;
  }

  /**
   * Claim and apply in one call, on the gateway the EIP's record names: Ready, or null after a
   * refusal and its wait, as the steps one by one do. A rule not applied keeps its claim and goes
   * on as a claimed rule whose apply was refused does (applySpec).
   */
  private async claimAndApply(eipName: string, eip: EipForRule, gateway: string): Promise<NatServing | null> {
    const rule = checkSpec(() => natRuleFor(this.input, '')); // the claim gives its EIP's address
    if (!rule.ok) return this.claimThenApply(eipName, eip);
    this.setPhase('Claiming', { status: 'False', reason: 'Claiming', message: `claiming EIP ${this.input.spec.eip} and applying on ${gateway}` }, { passing: true });
    this.claimed = { eipWorkflowId: eip.workflowId };
    this.applied = { gateway };
    // Unlimited retries: it ends in an answer, or in the delete's cancellation (thrown on).
    const taken = await this.calls.claimAndApply.executeWithOptions({ summary: `claim EIP ${this.input.spec.eip} for ${this.kind} ${this.name} and apply on ${gateway}` }, [
      { eipWorkflowId: eip.workflowId, owner: this.owner, kind: this.kind, name: this.name, gateway, rule: rule.value },
    ]);
    return this.tookOrRefused(eipName, eip, taken, gateway);
  }

  /**
   * What a combined claim and apply answered: Ready, or null after a refusal and its wait. A rule
   * not applied keeps its claim and goes on as a claimed rule whose apply was refused does (applySpec).
   * `gateway`: where the rule was to go, if the call was told (else, wherever its EIP is).
   */
  private async tookOrRefused(eipName: string, eip: EipForRule, taken: ClaimedAndApplied, gateway?: string): Promise<NatServing | null> {
    if ('claimRefused' in taken) {
      if (taken.mayHold) await this.releaseAll(); // an earlier attempt may have claimed and applied
      await this.claimRefused({ status: 'False', ...taken.claimRefused }, eip);
      return null;
    }
    const target = 'applied' in taken ? taken.applied : taken.claimed;
    this.tookEip(target);
    const serving = { eipName, eipWorkflowId: eip.workflowId, address: target.address, gateway: target.gateway };
    if ('applied' in taken) {
      this.showReady(serving, taken.readyWritten);
      return serving;
    }
    // Refused by the gateway, or the EIP is on another gateway than its record said (then applied there next).
    const refused = gateway === undefined || target.gateway === gateway ? { status: 'False' as const, reason: taken.notApplied.reason, message: taken.notApplied.message } : undefined;
    return (await this.applySpec(serving, refused)) ? serving : null;
  }

  /** Claim, then apply, a call each: Ready, or null after a refusal and its wait. */
  private async claimThenApply(eipName: string, eip: EipForRule): Promise<NatServing | null> {
    const target = await this.claim(eip);
    if (!target) return null;
    const serving = { eipName, eipWorkflowId: eip.workflowId, address: target.address, gateway: target.gateway };
    return (await this.applySpec(serving)) ? serving : null;
  }

  /** The EIP's address and gateway once claimed; null (nothing held) after a refusal and its wait. */
  private async claim(eip: EipForRule): Promise<ClaimedEip | null> {
    this.setPhase('Claiming', { status: 'False', reason: 'Claiming', message: `claiming EIP ${this.input.spec.eip}` }, { passing: true });
    this.claimed = { eipWorkflowId: eip.workflowId };
    try {
      const target = await eipCalls.claimEip.executeWithOptions({ summary: `claim EIP ${this.input.spec.eip} for ${this.kind} ${this.name}` }, [{ eipWorkflowId: eip.workflowId, owner: this.owner, kind: this.kind, name: this.name }]);
      this.tookEip(target);
      return target;
    } catch (err) {
      // A delete decides by the scope, not by the error: whatever the call's outcome, it may hold.
      if (wf.isCancellation(err) || wf.CancellationScope.current().consideredCancelled) throw err;
      await this.claimRefused(refusal(err, 'Error'), eip);
      return null;
    }
  }

  /** A refused claim (an unlimited retry only ends in a refusal) holds nothing: shows why, and waits for what may change it. */
  private async claimRefused(why: ReadyCondition, eip: EipForRule): Promise<void> {
    this.claimed = null;
    this.applied = null; // set by a combined call, which applies only once its claim is taken
    // An EIP gone since it was found: look for it again by name (a new one of that name wakes
    // us), after a moment in which visibility learns that it ended.
    if (this.lean && why.reason === Reason.EipNotFound) {
      this.setPhase('WaitingForEip', { status: 'False', reason: Reason.EipNotFound, message: `EIP ${this.input.spec.eip} is gone` });
      await this.waitFor(() => this.specChanged || this.eipChanged, EIP_GONE_RECHECK_MS);
      return;
    }
    // Not ready since the lookup: it may be on its way out, and end right after taking a watch
    // (its wake-up lost). The lookup sees that (and re-checks soon) or watches an EIP that stays.
    if (!this.legacy && why.reason === Reason.EipNotReady && this.patchedSinceLean(NOT_READY_CLAIM_LOOKUP)) {
      this.setPhase('WaitingForEip', why);
      await this.waitFor(() => this.specChanged, backoff(this.notReadyClaims++, 1000, RECHECK_MAX_MS));
      return;
    }
    this.setPhase('Failed', why);
    await this.waitAfterRefusal(eip.workflowId, { until: 'claimable', kind: this.kind });
  }

  private tookEip(target: ClaimedEip): void {
    this.status.v4ip = target.address;
    this.status.natGwDp = target.gateway;
    this.reporter.attributes({ gateway: target.gateway });
    this.notReadyClaims = 0;
  }

  /**
   * Applies the current spec's rule and shows Ready; false when it was invalid or refused
   * (everything given back, after a wait). A gateway that is not ready keeps the claim: the rule
   * is recorded there and waits for it. `refusedAlready`: the gateway's answer to a combined call.
   */
  private async applySpec(serving: NatServing, refusedAlready?: ReadyCondition): Promise<boolean> {
    const rule = checkSpec(() => natRuleFor(this.input, serving.address));
    if (!rule.ok) {
      this.serving = null; // given back: a run continued in the wait below starts over
      await this.releaseAll();
      this.setPhase('Invalid', rule.invalid);
      this.specChanged = false;
      await this.waitFor(() => this.specChanged);
      return false;
    }
    let refused = refusedAlready ?? (await this.apply(serving.gateway, rule.value));
    for (let waits = 0; refused; waits++) {
      if (this.legacy || !GATEWAY_REFUSALS.includes(refused.reason)) {
        this.serving = null;
        await this.releaseAll();
        this.setPhase('Failed', refused);
        await this.waitAfterRefusal(serving.eipWorkflowId, { until: 'changed' });
        return false;
      }
      this.setPhase('WaitingForGateway', refused);
      this.gatewayChanged = false;
      // The gateway's wake-up goes to the rules its visibility lists under it, and this rule is listed
      // only with this phase: a gateway ready meanwhile wakes it not (2 of 240 rules waited an hour
      // after a restart). A combined run looks again soon, backing off; older runs wait as they did.
      this.applying = serving;
      try {
        await this.waitFor(() => this.specChanged || this.gatewayChanged, this.combined ? backoff(waits, 1000, RECHECK_MAX_MS) : RECHECK_MAX_MS);
      } finally {
        this.applying = null;
      }
      if (this.specChanged) return true; // serve() takes the change
      refused = await this.apply(serving.gateway, rule.value);
    }
    this.showReady(serving);
    return true;
  }

  /** `written`: the Ready status its first call wrote (the V6 types), shown as it was written. */
  private showReady(serving: NatServing, written?: PhasedStatus): void {
    this.refusalsInARow = 0;
    this.setPhase('Ready', readyCondition(natRuleReady(serving)), { written });
  }

  /** Sends the rule to the gateway; the refusal when it did not take it. */
  private async apply(gateway: string, rule: NatRule): Promise<ReadyCondition | null> {
    this.setPhase('Applying', { status: 'False', reason: 'Applying', message: `applying on ${gateway}` }, { passing: true });
    this.applied = { gateway };
    try {
      await this.calls.setGatewayRule.executeWithOptions({ summary: `apply ${this.kind} ${this.name}: ${rule.eip} on ${gateway}` }, [{ gateway, rule }]);
      return null;
    } catch (err) {
      if (wf.isCancellation(err) || wf.CancellationScope.current().consideredCancelled) throw err;
      if (this.legacy) await this.releaseAll();
      return refusal(err, 'Error');
    }
  }

  /**
   * Ready: a spec change on the same EIP replaces the rule in place (the gateway removes the old
   * mapping and flushes its conntrack entries); another EIP starts over. A gateway that changed
   * (not ready, new, ready again) gets the rule again, and the status follows.
   */
  private async serve(serving: NatServing): Promise<void> {
    this.serving = serving;
    for (;;) {
      await this.waitFor(() => this.specChanged || (!this.legacy && this.gatewayChanged));
      this.gatewayChanged = false;
      this.specChanged = false;
      if (!this.sameEip(serving.eipName)) break; // start over from the top, where a bad name shows as Invalid
      if (!(await this.applySpec(serving))) break;
    }
    this.serving = null;
  }

  /** Gives back whatever may be held: the rule first, then the claim. `last`: the cleanup's, whose last call may release the object too. */
  private async releaseAll(last = false): Promise<void> {
    this.releasing = true;
    if (this.holdsUnknown) {
      const { eipName } = this.holdsUnknown;
      const eipWorkflowId = this.claimed?.eipWorkflowId;
      await this.calls.giveBackByIdentity.executeWithOptions({ summary: `remove ${this.kind} ${this.name} rules everywhere, give EIP ${eipName} back` }, [
        { eip: eipName, owner: this.owner, ruleOwner: this.input.resource.uid, ...(eipWorkflowId && { eipWorkflowId }) },
      ]);
      this.holdsUnknown = null;
      this.claimed = null;
      this.applied = null;
    }
    if (this.applied) {
      const { gateway } = this.applied;
      const owner = this.input.resource.uid;
      // Given back with the rule, once the gateway has taken it off (the call keeps it until then).
      const claim = this.releasesInOne ? this.claimed : null;
      const applied = await removeUntilApplied(
        () => {
          this.gatewayChanged = false;
          if (!claim) return this.calls.removeGatewayRule.executeWithOptions({ summary: `remove ${this.kind} ${this.name} rules and conntrack from ${gateway}` }, [{ gateway, owner }]);
          const remove = (releaseObject?: KubeRelease) =>
            this.calls.removeRuleAndUnclaim.executeWithOptions({ summary: `remove ${this.kind} ${this.name} rules and conntrack from ${gateway}, give EIP ${this.input.spec.eip} back${releaseObject ? ', let the object go' : ''}` }, [
              { gateway, owner, eipWorkflowId: claim.eipWorkflowId, claimOwner: this.owner, ...(releaseObject && { releaseObject }) },
            ]);
          return last ? this.k8s.lastCall(remove, () => this.finalStatus()) : remove(); // nothing is given back after it
        },
        (attempt) => waitForGatewayToRemove((phase, condition) => this.setPhase(phase, condition), this.waitFor, () => this.gatewayChanged, { gateway, what: 'its rules', deleting: this.deleting, attempt }),
        this.patched,
      );
      this.applied = null;
      if (claim && applied) this.claimed = null; // the call gave it back with the rule
    }
    if (this.claimed) {
      await eipCalls.unclaimEip.executeWithOptions({ summary: `give EIP ${this.input.spec.eip} back` }, [{ eipWorkflowId: this.claimed.eipWorkflowId, owner: this.owner }]);
      this.claimed = null;
    }
    this.status.v4ip = '';
    this.releasing = false;
  }

  /**
   * A run that only cleans up (its object was already deleting) knows nothing of what an earlier
   * run took: its rule comes off every gateway by its tag, and its claim off the EIP it names.
   */
  private async releaseByIdentity(): Promise<void> {
    await this.calls.removeGatewayRuleEverywhere.executeWithOptions({ summary: `remove ${this.kind} ${this.name} rules everywhere` }, [{ owner: this.input.resource.uid }]);
    const eipName = checkSpec(() => natEipName(this.input));
    const eip = eipName.ok ? await this.calls.eipForRule.executeWithOptions({ summary: `find EIP ${eipName.value}` }, [eipName.value]) : null;
    if (eip) this.claimed = { eipWorkflowId: eip.workflowId };
  }

  // --- waiting and continuing as new -------------------------------------------------------

  /** After a refusal: a spec change, or (woken by the EIP when `until` holds) another try. */
  private async waitAfterRefusal(eipWorkflowId: string | undefined, until: WatchUntil): Promise<void> {
    if (this.legacy) {
      const reason = this.status.conditions.find((c) => c.type === 'Ready')?.reason ?? '';
      const specProblem = ([Reason.InvalidSpec, Reason.DuplicateDnat, Reason.EipInUse] as string[]).includes(reason);
      await wf.condition(() => this.specChanged, specProblem ? RETRY_FAILED_AFTER_MS : RETRY_GATEWAY_AFTER);
      return;
    }
    this.eipChanged = false;
    const watching = !eipWorkflowId || (await this.watch(eipWorkflowId, until));
    await this.waitFor(() => this.specChanged || this.eipChanged, watching ? RECHECK_MAX_MS : backoff(this.unwatched++, 1000, RECHECK_MAX_MS));
    if (watching) this.unwatched = 0;
    if (this.specChanged) this.refusalsInARow = 0;
    else if (until.until === 'changed' && this.patchedSinceLean(REFUSAL_BACKOFF_PATCH)) await this.waitFor(() => this.specChanged, backoff(this.refusalsInARow++, 1000, REFUSAL_BACKOFF_MAX_MS));
  }

  /**
   * Asks the EIP to signal `eipChanged` once `until` holds (at once if it does already). False when
   * it could not be asked (it has ended since the rule looked): nobody would wake the rule, so it
   * looks again soon (backing off) rather than at its hour-long re-check (patched: older runs did not).
   */
  private async watch(eipWorkflowId: string, until: WatchUntil): Promise<boolean> {
    if (this.legacy) return true;
    return wf
      .getExternalWorkflowHandle(eipWorkflowId)
      .signal(watchEipSignal, { watcher: this.owner, ...until })
      .then(
        () => true,
        () => !this.patchedSinceLean(WATCHED_EIP_GONE),
      );
  }

  private async continueAsNew(): Promise<never> {
    await wf.condition(wf.allHandlersFinished);
    const carried: NatCarried = { status: this.status, claimed: this.claimed, applied: this.applied, serving: this.serving, deleting: this.deleting, shownEip: this.shownEip, ...(this.k8s.adoption() && { unadopted: true }), ...(this.releasing && { releasing: true }), ...(this.applying && { applying: this.applying }) };
    return wf.continueAsNew<typeof fipWorkflow>({ ...(this.input as NatInput<'fip'>), carried });
  }

  /** The status the cleanup ends with (releaseAll's, then 'Deleted'). */
  private finalStatus(): Record<string, unknown> {
    return { ...this.reporter.preview('Deleted', DELETED, { ...specEcho(this.input), v4ip: '' }) };
  }

  private sameEip(eipName: string): boolean {
    const current = checkSpec(() => natEipName(this.input));
    return current.ok && current.value === eipName;
  }

  private setPhase(phase: NatPhase, condition: ReadyCondition, opts?: { passing?: boolean; written?: PhasedStatus }): void {
    Object.assign(this.status, specEcho(this.input));
    this.reporter.setPhase(phase, condition, opts);
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
