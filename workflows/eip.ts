// The lifecycle of one IptablesEIP. Order is the point of this workflow: gateway ready → allocate
// → bind on the gateway → Ready; a failure after allocation releases before waiting again; a
// delete (cancellation) at any moment runs the cleanup in a non-cancellable scope. Activities that
// take or give something wait for their own cancellation to complete, so the cleanup never races
// an allocation still in flight. It lives as long as its EIP: every wait can continue as new,
// carrying everything it holds.
import * as wf from '@temporalio/workflow';
import { eipAddressChanged, normalizeEipSpec, type EipCarried, type EipInput, type EipSpec, type EipStatus } from '../domain/eip.js';
import { Reason } from '../domain/errors.js';
import type { Allocation } from '../domain/ipam.js';
import type { ResourceRef } from '../domain/names.js';
import { claimConflict, type EipClaim, type NatKind } from '../domain/nat-resources.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { eipReady, readyCondition, setCondition, type ConditionInput, type PhasedStatus } from '../domain/status.js';
import { claimEipUpdate, eipChangedSignal, eipClaimsQuery, gatewayChangedSignal, specChangedSignal, statusQuery, unclaimEipUpdate, watchEipSignal, type ClaimedEip, type ClaimWait, type EipWatch, type Fence, type KubeRelease, type NatWrite, type NatWriter } from '../domain/workflow-api.js';
import { callProxies, type CallProxies } from './activity-proxies.js';
import { checkFence, checkSpec, isRefusal, refusal, type ReadyCondition } from './failures.js';
import { HistoryBudget, type WaitFor } from './history-budget.js';
import { HAND_OVER, patches, RESUME_RELEASE, type Patched, type TypeVersion } from './patches.js';
import { adoptedLifecycle, kubeSync, type KubeSync } from './kube-sync.js';
import { backoff, phaseReporter, RECHECK_MAX_MS, removeUntilApplied, RETRY_FAILED_AFTER_MS, waitForGatewayToRemove } from './resource-status.js';

/**
 * A deleting EIP's wake-ups reach its watchers: those sent from a handler (an unclaim), which runs in
 * the cancelled root scope where a signal is cancelled before it is sent, and those of rules that
 * began to watch during the delete, woken once it is gone.
 */
const DELETING_WAKE_UPS = 'deleting-wake-ups';
/**
 * ...and so do those sent between the delete's arrival and its cleanup: a call that completes after
 * the delete arrived (a remote activity waits for its own cancellation) lets the lifecycle go on
 * to Ready, whose wake-ups were cancelled before they were sent, and their watchers forgotten
 * (the 5,000-operation soak: a DNAT waited an hour on an EIP deleted during its bind).
 */
const WAKE_UPS_AFTER_DELETE_REQUEST = 'wake-ups-after-delete-request';
/**
 * ...and so do rules that began to watch while the run's last wake-ups were on their way (the soak:
 * a FIP's watch arrived with the answer to the last wake-up of an EIP deleted before it began).
 */
const LATE_WATCHERS_WOKEN = 'late-watchers-woken';
/**
 * ...and every wake-up is sent, whatever is cancelled after it was decided: a delete that reaches
 * the workflow task of an unclaim, just after it, cancelled the unclaim's wake-ups before they were
 * sent (the soak: FIP f3025, refused because an SNAT held EIP e2960, waited an hour after both went).
 */
const WAKE_UPS_SHIELDED = 'wake-ups-shielded';

const DELETED: ReadyCondition = { status: 'False', reason: Reason.Deleting, message: 'nothing is held any more' };

/** Watchers listed to `notifyEipWaiters` as woken already, at most (the list is its input: a payload). */
const MAX_WOKEN_LISTED = 1_000;

/**
 * An EIP started since the V6 type: the V5 one, and from Kubernetes its first call writes the Ready
 * status it makes, and its cleanup's last call (the address off its gateway and back to its
 * subnet) releases its object (workflows/kube-sync.ts: a call and a workflow task fewer each).
 */
export const eipWorkflowV6 = (input: EipInput) => eipLifecycle(input, 6);
/**
 * An EIP started since the V5 type: the V4 one, and its Kubernetes object is adopted by its first
 * call, the one that takes its address (workflows/kube-sync.ts: a call and a workflow task fewer
 * per object).
 */
export const eipWorkflowV5 = (input: EipInput) => eipLifecycle(input, 5);
/**
 * An EIP started since the V4 type: the V3 base; its release takes its address off its gateway
 * and gives it back to its subnet in one call (unbindAndRelease: a workflow task and an activity
 * fewer per delete), and a deleting object's status is written only once it has lasted a moment
 * (workflows/kube-sync.ts: a status write fewer per quick delete).
 */
export const eipWorkflowV4 = (input: EipInput) => eipLifecycle(input, 4);
/**
 * An EIP started since the V3 type: the newest base, and as it becomes ready it takes the claims
 * that waited for its address in the same step, so that its status is written once, naming their
 * kinds (a V2 run writes it, then again for the claims: a status write more per EIP with a rule).
 */
export const eipWorkflowV3 = (input: EipInput) => eipLifecycle(input, 3);
/** An EIP started since the V2 type: the newest base of its day, no patch asked (workflows/patches.ts). */
export const eipWorkflowV2 = (input: EipInput) => eipLifecycle(input, 2);
/** An EIP started before: it replays and goes on as the patches its history recorded say. */
export const eipWorkflow = (input: EipInput) => eipLifecycle(input, 1);

async function eipLifecycle(input: EipInput, type: TypeVersion): Promise<void> {
  const eip = new Eip(input, type);
  let ended: unknown;
  try {
    await adoptedLifecycle(eip.k8s, () => eip.lifecycle(), (alone) => eip.cleanup(alone), input.carried);
  } catch (err) {
    ended = err;
  }
  // However else the run ends (its object gone before it began, a delete before it adopted anything),
  // rules still watching it are told, as its cleanup tells them; a continued run carries them instead.
  if (!(ended instanceof wf.ContinueAsNew)) await wf.CancellationScope.nonCancellable(() => eip.wakeWatchersAtEnd());
  if (ended) throw ended;
}

/** A claim waiting for the address being taken, and whether its call writes `status.nat` (NatWriter). */
type WaitingClaim = { claim: EipClaim; writesNat: boolean };

class Eip {
  /** validate → wait for the gateway → allocate → bind → serve (Ready) → give back; again after a change that needs it. */
  async lifecycle(): Promise<void> {
    if (this.serving) {
      // Continued while serving: it still holds its address and claims.
      await this.keepServing();
      await this.releaseAll();
    } else if (this.input.carried?.releasing && wf.patched(RESUME_RELEASE)) {
      await this.releaseAll(); // continued while giving them back
    }
    for (;;) {
      this.specChanged = false;
      const spec = checkSpec(() => normalizeEipSpec(this.name, this.spec));
      if (!spec.ok) {
        this.taking = false; // nothing is taken until the spec changes
        await this.k8s.ensureAdopted(); // no first call to adopt it: an object being deleted is cleaned up, not left waiting
        this.setPhase('Invalid', spec.invalid);
        await this.waitFor(() => this.specChanged);
        continue;
      }
      const { natGwDp: gateway, externalSubnet: subnet } = spec.value;
      this.status.natGwDp = gateway;
      this.reporter.attributes({ gateway, subnet });
      const allocation = this.combined ? await this.takeAtOnce(gateway, subnet, spec.value.v4ip) : await this.takeStepByStep(gateway, subnet, spec.value.v4ip);
      if (!allocation) continue;
      await this.serve(gateway, allocation);
      await this.releaseAll();
    }
  }

  /** The delete: wait for the EIP's users to go, give everything back, then let the object go. `alone`: see adoptedLifecycle. */
  cleanup(alone: boolean): Promise<void> {
    return wf.CancellationScope.nonCancellable(async () => {
      this.deleting = true;
      this.serving = null;
      this.notifyWatchers();
      if (this.claims.size > 0) {
        this.setPhase('Deleting', { status: 'False', reason: Reason.EipInUse, message: `waiting for its users to be deleted: ${this.users()}` });
        await this.waitFor(() => this.claims.size === 0);
      }
      this.setPhase('Deleting', { status: 'False', reason: Reason.Deleting, message: 'removing the address and releasing it' }, { passing: true });
      if (alone && !this.input.carried && !this.legacy) {
        // A run that only cleans up (its object was already deleting) knows nothing of what an
        // earlier run took: give back whatever this EIP may hold anywhere, by owner.
        await this.calls.releaseEverywhere.executeWithOptions({ summary: `release ${this.name} everywhere` }, [{ owner: this.owner }]);
      }
      await this.releaseAll(true);
      this.setPhase('Deleted', DELETED);
      // Before the object goes, where releaseAll's last call did not take it (a V6 run's does: its
      // run may then take a task more after the object is gone, to deliver these).
      await this.wakeWatchersAtEnd();
      await this.k8s.release(); // nothing left to do when releaseAll's last call released it
    });
  }

  private readonly resource: ResourceRef;
  private readonly name: string;
  private readonly owner = wf.workflowInfo().workflowId;
  /** Histories of the release before continue-as-new everywhere take the old paths. */
  private readonly legacy: boolean;
  private readonly budget: HistoryBudget;
  /** Waits for `done` (or the timeout); continues as new, with everything held, when this run's budget is spent. */
  private readonly waitFor: WaitFor;
  private spec: EipSpec;
  private generation: number;
  private specChanged: boolean;
  /** Refused allocations in a row: the next try waits longer (up to RETRY_FAILED_AFTER_MS). */
  private allocationRefusals = 0;
  private gatewayChanged: boolean;
  private deleting: boolean;
  /**
   * Its takeAddress call is under way, or (a new run's) is its first step still to come: claims that
   * may wait for it wait. A rule's claim can reach a new EIP before it has begun (the rule's call
   * ran first): delivered as its handler is registered, it would be refused, and the rule would
   * watch and claim again, five workflow tasks and two calls more (most pairs of an API burst).
   */
  private taking: boolean;
  /** The Ready status its takeAddress call wrote (the V6 type), until it shows Ready. */
  private readyWritten: PhasedStatus | undefined;
  private readonly status: EipStatus;
  // What may be held right now: set before the call that takes it, cleared after the call that gives it back.
  private held: { subnet: string } | null;
  private bound: { gateway: string } | null;
  private serving: EipCarried['serving'];
  /** Giving back what it held: a run continued meanwhile finishes that before anything else. */
  private releasing = false;
  /** The NAT rules using this EIP, by owner. */
  private readonly claims: Map<string, EipClaim>;
  /** NAT rules waiting for this EIP to change. */
  private readonly watchers: Set<string>;
  /** Claims waiting for the address being taken, by owner (a V3 run takes them as it becomes ready). */
  private readonly waitingClaims = new Map<string, WaitingClaim>();
  /** The `status.nat` writes handed to claims just taken, by owner, until their handlers answer. */
  private readonly natWrites = new Map<string, NatWrite>();
  /** Their wake-ups, sent and not yet delivered. */
  private readonly wakeUpsInFlight = new Set<Promise<void>>();
  readonly k8s: KubeSync;
  /** Remote activities; local ones in the runs from 'local-calls' to 'remote-calls' (workflows/patches.ts). */
  private readonly calls: CallProxies['calls'];
  private readonly patched: Patched;
  private readonly patchedSinceLean: Patched;
  private readonly patchedSinceRemote: Patched;
  /** Takes its address in one call where it can (workflows/patches.ts, 'combined-calls'). */
  private readonly combined: boolean;
  /** Takes the claims that waited for its address as it becomes ready (the V3 type). */
  private readonly takesWaitingClaims: boolean;
  /** Its address comes off its gateway and goes back to its subnet in one call (the V4 type). */
  private readonly releasesInOne: boolean;
  private readonly reporter: ReturnType<typeof phaseReporter<EipStatus>>;
  private readonly setPhase: ReturnType<typeof phaseReporter<EipStatus>>['setPhase'];

  constructor(
    private readonly input: EipInput,
    type: TypeVersion,
  ) {
    const carried = input.carried;
    const { lean, local, remoteStatus, patched, patchedSinceLean, patchedSinceRemote, combined } = patches(type >= 2);
    this.takesWaitingClaims = type >= 3;
    this.releasesInOne = type >= 4;
    const proxies = callProxies(local, remoteStatus);
    this.calls = proxies.calls;
    this.patched = patched;
    this.patchedSinceLean = patchedSinceLean;
    this.patchedSinceRemote = patchedSinceRemote;
    this.combined = combined;
    this.legacy = !patched('eip-long-life');
    this.budget = new HistoryBudget(input.limits, !this.legacy);
    this.waitFor = this.budget.waiter(() => this.continueAsNew());
    this.resource = input.resource;
    this.name = input.resource.name;
    this.spec = input.spec;
    this.generation = input.resource.generation;
    this.status = carried?.status ?? { phase: 'Pending', ready: false, ip: '', natGwDp: this.spec?.natGwDp ?? '', nat: '', conditions: [], observedGeneration: this.generation };
    this.held = carried?.held ?? null;
    this.bound = carried?.bound ?? null;
    this.serving = carried?.serving ?? null;
    this.claims = new Map((carried?.claims ?? []).map((c) => [c.owner, c]));
    this.watchers = new Set(carried?.watchers);
    this.deleting = carried?.deleting ?? false;
    const changed = carried?.changed && wf.patched(HAND_OVER) ? carried.changed : { spec: false, gateway: false };
    this.specChanged = changed.spec;
    this.gatewayChanged = changed.gateway;
    this.taking = !carried && combined;
    this.k8s = kubeSync('eip', input.resource, proxies.kube, proxies.status, { finalStatusWithRelease: combined, deletingStatusLasts: type >= 4, adoptsWithFirstCall: type >= 5, deletingWritesOnlyWaits: type >= 5, releasesWithLastCall: type >= 6, writesReadyWithFirstCall: type >= 6 });
    this.reporter = phaseReporter(this.status, this.k8s, () => this.generation, lean);
    this.setPhase = this.reporter.setPhase;

    wf.setHandler(statusQuery, () => this.status);
    wf.setHandler(eipClaimsQuery, () => [...this.claims.values()]);
    wf.setHandler(claimEipUpdate, (claim: EipClaim, _fence?: Fence, wait?: ClaimWait, writer?: NatWriter) => this.claim(claim, wait, writer), { validator: (claim: EipClaim, fence?: Fence, wait?: ClaimWait, _writer?: NatWriter) => this.checkClaim(claim, fence, wait) });
    wf.setHandler(unclaimEipUpdate, ({ owner }) => this.unclaim(owner));
    wf.setHandler(gatewayChangedSignal, () => {
      this.budget.countSignal();
      this.gatewayChanged = true;
    });
    wf.setHandler(specChangedSignal, ({ spec, generation }) => this.onSpec(spec as EipSpec, generation));
    wf.setHandler(watchEipSignal, (watch) => this.watch(watch));
    if (carried) this.k8s.publish({ ...this.status });
    else if (!lean) wf.upsertSearchAttributes(searchAttributes({ kind: 'eip', name: this.name, gateway: this.spec?.natGwDp ?? '', subnet: this.spec?.externalSubnet ?? '' })); // a lean run has them from its start
  }

  // --- the steps ---------------------------------------------------------------------------

  /**
   * The three steps in one call (gateway ready? allocate, bind): the address bound, or null (nothing
   * held) after showing why it could not be and waiting, as the steps one by one do.
   */
  private async takeAtOnce(gateway: string, subnet: string, requested: string | undefined): Promise<Allocation | null> {
    for (let attempt = 0; ; attempt++) {
      this.gatewayChanged = false;
      this.held = { subnet };
      this.bound = { gateway };
      const wake = { eip: this.name, woken: this.wokenByItself() };
      const req = { gateway, subnet, owner: this.owner, requested, wake };
      // Unlimited retries: it ends in an answer, or in the delete's cancellation (thrown on); its
      // object gone or being deleted (a V5 run's adoption), NotAdopted is thrown on.
      this.taking = true;
      const taken = await this.k8s
        .firstCall({ plain: this.calls.takeAddress, adopting: this.calls.adoptAndTakeAddress }, req, `take ${requested || 'an address'} from ${subnet} onto ${gateway}`, () => this.nothingHeld(), () => ({
          status: this.status,
          generation: this.generation,
        }))
        .finally(() => (this.taking = false)); // once bound, Ready is shown before a waiting claim looks again
      if ('bound' in taken) {
        this.allocationRefusals = 0;
        this.status.ip = taken.bound.address;
        this.readyWritten = taken.readyWritten;
        return taken.bound;
      }
      if (taken.mayHold) await this.releaseAll(); // nothing stays held while we wait
      else this.nothingHeld();
      const why = { status: 'False' as const, ...taken.refused };
      if (taken.step === 'allocate') {
        await this.allocationFailed(why);
        return null;
      }
      this.setPhase('WaitingForGateway', why);
      await this.waitFor(() => this.gatewayChanged || this.specChanged, backoff(attempt, 1000, RECHECK_MAX_MS));
      if (this.specChanged) return null;
    }
  }

  /** Gateway ready → allocate → bind, a call each: the address bound, or null (nothing held) after showing why and waiting. */
  private async takeStepByStep(gateway: string, subnet: string, requested: string | undefined): Promise<Allocation | null> {
    if (!(await this.waitForGateway(gateway))) return null;
    const allocation = await this.allocate(subnet, requested);
    if (!allocation) return null;
    return (await this.bind(gateway, allocation)) ? allocation : null;
  }

  /** Nothing is held: the call that would have taken it was refused before it took anything. */
  private nothingHeld(): void {
    this.held = null;
    this.bound = null;
  }

  /** Waits until the gateway's agent is ready; false when the spec changed meanwhile. */
  private async waitForGateway(gateway: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      this.gatewayChanged = false;
      const readiness = await this.calls.gatewayReadiness.executeWithOptions({ summary: `is ${gateway} ready?` }, [gateway]);
      if (readiness.ready) return true;
      this.setPhase('WaitingForGateway', { status: 'False', reason: readiness.exists ? Reason.GatewayNotReady : Reason.GatewayNotFound, message: readiness.reason });
      // A gateway that becomes ready (or appears) wakes us; the timer is the fallback.
      if (!this.legacy) {
        await this.waitFor(() => this.gatewayChanged || this.specChanged, backoff(attempt, 1000, RECHECK_MAX_MS));
        if (this.specChanged) return false;
        continue;
      }
      await wf.condition(() => this.gatewayChanged || this.specChanged, backoff(attempt, 1000, 60_000));
      if (this.specChanged) return false;
      const info = wf.workflowInfo();
      if ((info.continueAsNewSuggested || info.historyLength > 5_000) && !this.held && !this.bound) await this.continueAsNew();
    }
  }

  /** The address, or null (nothing held) after showing a refusal and waiting for a retry or a spec change. */
  private async allocate(subnet: string, requested: string | undefined): Promise<Allocation | null> {
    this.setPhase('Allocating', { status: 'False', reason: 'Allocating', message: `allocating from ${subnet}` }, { passing: true });
    this.held = { subnet };
    try {
      const allocation = await this.calls.allocateAddress.executeWithOptions({ summary: `allocate ${requested || 'an address'} from ${subnet}` }, [{ subnet, owner: this.owner, requested }]);
      this.allocationRefusals = 0;
      this.status.ip = allocation.address;
      return allocation;
    } catch (err) {
      // A delete decides by the scope, not by the error: whatever the call's outcome, it may hold.
      if (wf.isCancellation(err) || wf.CancellationScope.current().consideredCancelled) throw err;
      if (isRefusal(err) || this.legacy) this.held = null; // refused by the IPAM: nothing is held
      else await this.releaseAll();
      await this.allocationFailed(refusal(err, 'AllocationFailed'));
      return null;
    }
  }

  /** Shows why an allocation failed (nothing is held) and waits before the next try. */
  private async allocationFailed(why: ReadyCondition): Promise<void> {
    this.setPhase('Failed', why);
    // Level-triggered: the subnet may appear or the address be freed; an address asked for is
    // often held by an EIP on its way out (deleted a moment ago), so look again soon, then seldom.
    await this.waitFor(() => this.specChanged, this.legacy ? RETRY_FAILED_AFTER_MS : backoff(this.allocationRefusals++, 10_000, RETRY_FAILED_AFTER_MS));
  }

  /** Puts the address on the gateway; false (after releasing it) when the gateway refused. */
  private async bind(gateway: string, allocation: Allocation): Promise<boolean> {
    this.setPhase('Binding', { status: 'False', reason: 'Binding', message: `adding ${allocation.address} on ${gateway}` }, { passing: true });
    this.bound = { gateway };
    try {
      await this.sendBind(gateway, allocation);
      return true;
    } catch (err) {
      if (wf.isCancellation(err) || wf.CancellationScope.current().consideredCancelled) throw err;
      await this.releaseAll(); // nothing stays held while we wait for the gateway again
      return false;
    }
  }

  /**
   * Ready until the address must change (and no rule uses it). When the gateway changes (not
   * ready, new, ready again) the address is asserted on it again, and the status follows.
   */
  private async serve(gateway: string, allocation: Allocation): Promise<void> {
    this.serving = { allocation, gateway, spec: this.spec };
    const woken = this.wokenByItself();
    this.setReady(gateway, allocation.address);
    // Added after the first release: rules created before their EIP no longer wait for their
    // next re-check (up to 30 s) but start at once. Patched, so older histories still replay.
    // A combined run's takeAddress woke them already.
    if (this.patched('wake-rules-on-eip-ready') && !this.combined) await this.calls.notifyEipWaiters.executeWithOptions({ summary: `wake NAT rules waiting for EIP ${this.name}` }, [this.name, woken]);
    await this.keepServing();
  }

  private async keepServing(): Promise<void> {
    const serving = this.serving!;
    const { gateway, allocation } = serving;
    for (;;) {
      const moveWhenFree = () => this.claims.size === 0 && eipAddressChanged(serving.spec, this.spec);
      await this.waitFor(() => this.specChanged || this.gatewayChanged || moveWhenFree());
      if (moveWhenFree()) break; // a requested new address, now that no rule uses the old one
      if (this.gatewayChanged) {
        this.gatewayChanged = false;
        if (this.legacy) {
          if (!(await this.calls.gatewayReadiness(gateway)).exists) break;
          continue;
        }
        await this.reassert(gateway, allocation);
        continue;
      }
      this.specChanged = false;
      if (eipAddressChanged(serving.spec, this.spec)) {
        if (this.claims.size === 0) break;
        // Moving an address under live NAT rules would break them silently: refuse, keep serving,
        // and move once they are gone.
        this.refuseSpec(Reason.EipInUse, `the address cannot change while used by ${this.users()}; it moves once they are gone`);
        if (this.legacy) this.spec = serving.spec;
        continue;
      }
      serving.spec = this.spec; // nothing natflow acts on changed: just observe the generation
      if (this.status.ready) this.setReady(gateway, allocation.address);
    }
    this.serving = null;
    this.notifyWatchers();
  }

  /** The gateway changed: bind again (a no-op when the address is there) and show what holds. */
  private async reassert(gateway: string, allocation: Allocation): Promise<void> {
    const readiness = await this.calls.gatewayReadiness.executeWithOptions({ summary: `is ${gateway} ready?` }, [gateway]);
    if (readiness.ready) {
      try {
        await this.sendBind(gateway, allocation);
        this.setReady(gateway, allocation.address);
        return;
      } catch (err) {
        if (wf.isCancellation(err) || wf.CancellationScope.current().consideredCancelled) throw err;
      }
    }
    // Still allocated and recorded on the gateway, which restores it when it is back.
    this.setPhase('WaitingForGateway', { status: 'False', reason: readiness.exists ? Reason.GatewayNotReady : Reason.GatewayNotFound, message: `${allocation.address} is not applied: ${readiness.reason || 'the gateway refused it'}` });
    this.notifyWatchers();
  }

  private sendBind(gateway: string, allocation: Allocation): Promise<void> {
    return this.calls.bindAddress.executeWithOptions({ summary: `add ${allocation.address}/${allocation.prefixLength} on ${gateway}` }, [{ gateway, owner: this.owner, address: allocation.address, prefixLength: allocation.prefixLength }]);
  }

  /** Its watchers, which it wakes itself once Ready: the wake-up of rules found by name skips them (a list at most MAX_WOKEN_LISTED long). */
  private wokenByItself(): string[] {
    return this.watchers.size <= MAX_WOKEN_LISTED ? [...this.watchers] : [];
  }

  private setReady(gateway: string, address: string): void {
    // As its first call wrote it, if it did (then written once only).
    const written = this.readyWritten;
    this.readyWritten = undefined;
    this.setPhase('Ready', readyCondition(eipReady(address, gateway)), { written });
    if (this.takesWaitingClaims) this.takeWaitingClaims(); // before the publisher, which sends the newest status, wakes
    this.notifyWatchers();
  }

  /** The claims that waited for its address and can be taken now, taken in the order they came (as their handlers would). */
  private takeWaitingClaims(): void {
    const taken: WaitingClaim[] = [];
    for (const waiting of this.waitingClaims.values()) {
      if (this.claimRefusal(waiting.claim.kind, waiting.claim.owner)) continue; // each is checked against those taken before it
      this.take(waiting.claim);
      taken.push(waiting);
    }
    if (taken.length > 0) this.showUsers(taken.length === 1 && taken[0]!.writesNat ? taken[0]!.claim.owner : undefined);
  }

  private take(claim: EipClaim): void {
    this.claims.set(claim.owner, claim);
    this.watchers.delete(claim.owner);
  }

  /** Gives back whatever may be held. Both calls are idempotent, so "may" is enough. `last`: the cleanup's, whose last call may release the object too. */
  private async releaseAll(last = false): Promise<void> {
    this.releasing = true;
    if (this.bound) {
      // Released only once it is off: an address still on one gateway must not be given to another EIP.
      const { gateway } = this.bound;
      // Given back with the unbind, once the gateway has taken it off (the call keeps it until then).
      const held = this.releasesInOne ? this.held : null;
      const applied = await removeUntilApplied(
        () => {
          this.gatewayChanged = false;
          const what = this.status.ip || 'EIP';
          if (!held) return this.calls.unbindAddress.executeWithOptions({ summary: `unbind ${what} from ${gateway}` }, [{ gateway, owner: this.owner }]);
          const unbindAndRelease = (releaseObject?: KubeRelease) =>
            this.calls.unbindAndRelease.executeWithOptions({ summary: `unbind ${what} from ${gateway}, release it to ${held.subnet}${releaseObject ? ', let the object go' : ''}` }, [
              { gateway, subnet: held.subnet, owner: this.owner, ...(releaseObject && { releaseObject }) },
            ]);
          // Nothing is given back after it.
          return last ? this.k8s.lastCall(unbindAndRelease, () => this.finalStatus()) : unbindAndRelease();
        },
        (attempt) => waitForGatewayToRemove(this.setPhase, this.waitFor, () => this.gatewayChanged, { gateway, what: this.status.ip || 'its address', deleting: this.deleting, attempt }),
        this.patched,
      );
      this.bound = null;
      if (held && applied) this.held = null; // the call released it with the unbind
    }
    if (this.held) {
      await this.calls.releaseAddress.executeWithOptions({ summary: `release ${this.status.ip || 'EIP'} to ${this.held.subnet}` }, [{ subnet: this.held.subnet, owner: this.owner }]);
      this.held = null;
    }
    this.status.ip = '';
    this.releasing = false;
  }

  /** The status the cleanup ends with (releaseAll's, then 'Deleted'). */
  private finalStatus(): Record<string, unknown> {
    return { ...this.reporter.preview('Deleted', DELETED, { ip: '' }) };
  }

  // --- waiting and continuing as new -------------------------------------------------------

  private async continueAsNew(): Promise<never> {
    await wf.condition(wf.allHandlersFinished);
    await this.deliverWakeUps();
    const carried: EipCarried = {
      status: this.status,
      held: this.held,
      bound: this.bound,
      serving: this.serving,
      claims: [...this.claims.values()],
      watchers: [...this.watchers],
      deleting: this.deleting,
      ...(this.k8s.adoption() && { unadopted: true }),
      ...(this.releasing && { releasing: true }),
      // Signals can land while its wake-ups are delivered, after its last wait.
      ...((this.specChanged || this.gatewayChanged) && { changed: { spec: this.specChanged, gateway: this.gatewayChanged } }),
    };
    return wf.continueAsNew<typeof eipWorkflow>({ resource: { ...this.resource, generation: this.generation }, spec: this.spec, limits: this.input.limits, ...(this.legacy ? {} : { carried }) });
  }

  // --- handlers ----------------------------------------------------------------------------

  private checkClaim(claim: EipClaim, fence: Fence | undefined, wait: ClaimWait | undefined): void {
    checkFence(fence);
    const refused = this.claimRefusal(claim.kind, claim.owner);
    if (refused && !(wait && this.readySoon())) throw refused;
  }

  /** Taking its address right now: a claim that may wait is let in, and answered once that is done. */
  private readySoon(): boolean {
    return this.taking && !this.deleting;
  }

  /** Why a claim of `kind` by `owner` would be refused now, or null if it would be taken. */
  private claimRefusal(kind: NatKind, owner: string): wf.ApplicationFailure | null {
    const leaving = this.deleting || (!this.legacy && !this.serving);
    if (this.status.phase !== 'Ready' || leaving) return wf.ApplicationFailure.nonRetryable(`EIP ${this.name} is not ready (${this.status.phase})`, Reason.EipNotReady);
    const conflict = claimConflict(kind, [...this.claims.values()], owner);
    return conflict ? wf.ApplicationFailure.nonRetryable(`EIP ${this.name}: ${conflict}`, Reason.EipInUse) : null;
  }

  private async claim(claim: EipClaim, wait: ClaimWait | undefined, writer: NatWriter | undefined): Promise<ClaimedEip> {
    this.budget.countUpdate();
    const answer = (): ClaimedEip => {
      const writeNat = this.natWrites.get(claim.owner);
      this.natWrites.delete(claim.owner);
      return { address: this.status.ip, gateway: this.status.natGwDp, ...(writeNat && { writeNat }) };
    };
    if (wait && this.claimRefusal(claim.kind, claim.owner)) {
      this.waitingClaims.set(claim.owner, { claim, writesNat: writer?.writesNat === true });
      try {
        await wf.condition(() => this.claims.get(claim.owner) === claim || !this.readySoon() || !this.claimRefusal(claim.kind, claim.owner), wait.forMs);
      } finally {
        if (this.waitingClaims.get(claim.owner)?.claim === claim) this.waitingClaims.delete(claim.owner);
      }
      if (this.claims.get(claim.owner) === claim) return answer(); // taken as it became ready
      const refused = this.claimRefusal(claim.kind, claim.owner);
      if (refused) throw refused;
    }
    this.take(claim);
    this.showUsers(writer?.writesNat ? claim.owner : undefined);
    return answer();
  }

  /** A rule waits on this EIP: woken at once when what it waits for holds already (it changed after the rule looked). */
  private watch(watch: EipWatch): void {
    this.budget.countSignal();
    this.watchers.add(watch.watcher);
    if (!this.holdsAlready(watch) || !this.patched('watch-ready-eip')) return;
    if (watch.until === undefined) this.notifyWatchers(); // as it did for the rules of the release that sent no `until`
    else this.wake(watch.watcher);
  }

  private holdsAlready(watch: EipWatch): boolean {
    switch (watch.until) {
      case undefined:
      case 'ready':
        return this.status.ready;
      case 'claimable':
        return this.claimable(watch.kind, watch.watcher);
      case 'changed':
        return false;
    }
  }

  /** A claim of `kind` by `owner` would be taken now (by an EIP that serves: a legacy run may take one without). */
  private claimable(kind: NatKind, owner: string): boolean {
    return !!this.serving && this.claimRefusal(kind, owner) === null;
  }

  private unclaim(owner: string): void {
    this.budget.countUpdate();
    this.claims.delete(owner);
    this.showUsers();
    if (!this.legacy) this.notifyWatchers(); // a rule refused because of this one may take the EIP now
  }

  private onSpec(spec: EipSpec, generation: number): void {
    this.budget.countSignal();
    if (generation <= this.generation) return; // a repeat or a stale update
    if (spec?.natGwDp !== this.spec.natGwDp && this.spec.natGwDp) {
      if (this.legacy) {
        this.status.conditions = setCondition(this.status.conditions, { type: 'Valid', status: 'False', reason: Reason.InvalidSpec, message: `spec.natGwDp is immutable (still ${this.spec.natGwDp})` }, new Date(), generation);
      } else {
        this.generation = generation;
        this.refuseSpec(Reason.InvalidSpec, `spec.natGwDp is immutable (still ${this.spec.natGwDp})`);
      }
      return;
    }
    this.spec = spec;
    this.generation = generation;
    this.specChanged = true;
  }

  /** A spec change natflow will not act on (yet): the Valid condition says why, and it is published. */
  private refuseSpec(reason: string, message: string): void {
    const condition: ConditionInput = { type: 'Valid', status: 'False', reason, message };
    this.status.conditions = setCondition(this.status.conditions, condition, new Date(), this.generation);
    if (!this.legacy) {
      this.status.observedGeneration = this.generation;
      this.k8s.publish({ ...this.status });
    }
  }

  /** Tells the NAT rules waiting on this EIP to look again (its readiness or users changed). */
  private notifyWatchers(): void {
    if (this.legacy) return;
    for (const watcher of this.watchers) this.wake(watcher);
  }

  private wake(watcher: string): void {
    this.watchers.delete(watcher);
    const signal = () => wf.getExternalWorkflowHandle(watcher).signal(eipChangedSignal);
    const shielded =
      (this.deleting && this.patchedSinceLean(DELETING_WAKE_UPS)) ||
      (wf.CancellationScope.current().consideredCancelled && this.patchedSinceRemote(WAKE_UPS_AFTER_DELETE_REQUEST)) ||
      this.patchedSinceRemote(WAKE_UPS_SHIELDED);
    const sent: Promise<void> = (shielded ? wf.CancellationScope.nonCancellable(signal) : signal())
      .catch(() => undefined)
      .finally(() => this.wakeUpsInFlight.delete(sent));
    this.wakeUpsInFlight.add(sent);
  }

  /**
   * The run ends: rules still watching (they began during the delete, or before a delete that came
   * before anything was adopted) are told, so that they look again and find it gone rather than wait
   * for their hour-long re-check (patched: older runs did not).
   */
  async wakeWatchersAtEnd(): Promise<void> {
    if (this.watchers.size > 0 && this.patchedSinceLean(DELETING_WAKE_UPS)) this.notifyWatchers();
    await this.deliverWakeUps();
    while (this.watchers.size > 0 && this.patchedSinceRemote(LATE_WATCHERS_WOKEN)) {
      this.notifyWatchers();
      await this.deliverWakeUps();
    }
  }

  /**
   * The server drops a signal whose sender has closed by the time it is sent: a run that ends
   * (continued as new, or deleted) first sees its wake-ups delivered, or their waiters sleep on.
   */
  private async deliverWakeUps(): Promise<void> {
    if (this.wakeUpsInFlight.size > 0 && this.patched('eip-wake-ups-delivered')) await Promise.all(this.wakeUpsInFlight);
  }

  private users(): string {
    return [...this.claims.values()].map((c) => `${c.kind} ${c.name}`).join(', ');
  }

  /**
   * Kube-OVN's `status.nat`: the kinds of NAT using this EIP. `writer`: the owner of the one claim
   * just taken, whose call writes that field (as Kube-OVN's rules do) if it is all that changed and
   * no write of the EIP's own could land after it: a status call and a workflow task fewer. A
   * retried claim changes nothing, and is written here (its first attempt may not have written it).
   */
  private showUsers(writer?: string): void {
    const from = this.status.nat;
    this.status.nat = [...new Set([...this.claims.values()].map((c) => c.kind))].sort().join(',');
    const object = writer !== undefined && this.status.nat !== from ? this.k8s.handOver({ ...this.status }) : undefined;
    if (writer !== undefined && object) this.natWrites.set(writer, { object, from, to: this.status.nat });
    else this.k8s.publish({ ...this.status });
  }
}
