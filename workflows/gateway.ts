// One workflow per NAT gateway: it holds the gateway's desired state (the EIP addresses bound on
// it and the NAT rules on them), serialises and batches every change to it, keeps a session with
// its agent (a liveness check that writes no history while all is well), and brings every new
// agent instance to the desired state. Its existence is the gateway's existence for natflow.
//
// What it holds is rebuildable: a run that starts without carried state (first start, re-created
// VpcNatGateway, a run terminated) does not know what its gateway carries, so it never applies its
// empty state as a full restore; it wakes every resource naming the gateway, which re-asserts what
// it holds, and only after that window removes what nobody claimed.
import * as wf from '@temporalio/workflow';
import { HandlerUnfinishedPolicy } from '@temporalio/common';
import { NatflowError, Reason } from '../domain/errors.js';
import { FROM_KUBERNETES_MEMO } from '../domain/kube.js';
import { checkRuleOnGateway, GATEWAY_IN_USE, type AgentInfo, type AgentSessionEnd, type EipAddress, type GatewayCarried, type GatewayInput, type GatewaySpec, type GatewayState } from '../domain/gateway.js';
import { GatewayDesired, holdingAfter, sameAddress, sameRule, type GatewayHolding } from '../domain/gateway-desired.js';
import { cidrContains, parseCidr, parseIPv4 } from '../domain/ip.js';
import { ENTITY_WORKFLOW_TASK_TIMEOUT, gatewayTaskQueue } from '../domain/names.js';
import { conntrackTarget, dnatConflict, ruleDiff, validateNatRule, type NatRule } from '../domain/nat-rules.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { setCondition } from '../domain/status.js';
import {
  agentStartedSignal,
  bindEipUpdate,
  gatewayChangedSignal,
  gatewaySpecSignal,
  gatewayStateQuery,
  removeRuleUpdate,
  restoreGatewaySignal,
  setRuleUpdate,
  unbindEipUpdate,
  gatewayRequestsUpdate,
  type BatchAnswer,
  type Fence,
  type GatewayRequest,
  type NamedNatRule,
  type SpecChange,
} from '../domain/workflow-api.js';
import { agentSessions, calls, gatewayAgent, wakeUps } from './activity-proxies.js';
import { answer, checkFence, domainCall, drainingRefusal, unwrap, type ReadyCondition } from './failures.js';
import { HistoryBudget } from './history-budget.js';
import { kubeSync, type KubeSync } from './kube-sync.js';
import { backoff } from './resource-status.js';

/** New runs take this lifecycle; runs of the last release replay theirs, then hand over (see the end of this file). */
const LIFECYCLE_PATCH = 'gateway-lifecycle';
const HANDOVER_PATCH = 'gateway-lifecycle-handover';
/** The audit's restoreGateway signal is acted on. */
const RESTORE_PATCH = 'restore-gateway';
/** A gateway adopting its VpcNatGateway writes status there only once the finalizer is on. */
const ADOPT_BEFORE_STATUS = 'adopt-before-status';
/** Runs continue as new at `GATEWAY_HISTORY_LIMITS` (patched: older runs replay with the default limits). */
const SHORTER_RUNS_PATCH = 'gateway-shorter-runs';
/**
 * A run's history is what a worker replays when the gateway's workflow leaves its cache (a task
 * missed on the sticky queue under load): at 5,000 pairs a run of 3,948 events took 2.5 s to
 * replay on an idle machine and a run of 3,081 events 7.4 s under the burst, against a workflow
 * task timeout of 10 s. Shorter runs keep that well inside it; each carries the state over (a
 * compressed payload, measured under 2 MB at 10,000 rules).
 */
const GATEWAY_HISTORY_LIMITS = { events: 2_000, updates: 250 };

/** An agent session runs this long, then the next one starts: about six events an hour while idle. */
const SESSION_MS = 60 * 60_000;
const MAX_PROBE_BACKOFF_MS = 30_000;
/** A new incarnation adds what its users re-assert for this long before its first full restore. */
const REBUILD_WINDOW_MS = 60_000;
/** Before continuing as new, updates in flight get this long to finish (a client re-sends one cut off). */
const DRAIN_MS = 30_000;
/** A gateway being deleted re-lists its users at least this often (an EIP that unbinds wakes it sooner). */
const MAX_USERS_RECHECK_MS = 60_000;
/** A request recorded, its answer known once the apply that carries it has run. */
const PENDING = Symbol('pending');
/**
 * Its users are told of a readiness change beside its work, not before its next step: telling two
 * thousand of them took 20 s and more, while every change waited (patched: older runs waited).
 */
const BACKGROUND_WAKE_PATCH = 'gateway-background-wake';
/**
 * A change of addresses and rules goes to an agent that takes both in one call as one: under a
 * burst nearly every apply has both, and each call costs an activity task and a workflow task on a
 * path where the gateway does one thing at a time (patched: older runs made two calls).
 */
const ONE_CALL_PATCH = 'gateway-one-call-change';
/**
 * What a run hands over beyond its desired state (its users while deleted, a restore asked for) is
 * taken by the next run (patched, asked only when there is something: a run whose first tasks a
 * worker from before it ran ignored them, and must replay so).
 */
const HAND_OVER_PATCH = 'gateway-hand-over';
/** A gateway whose agent is gone for good does not hold its delete: its pod goes with what it carried. */
const TAKE_OFF_TRIES = 4;

export async function gatewayWorkflow(input: GatewayInput): Promise<void> {
  if (!wf.patched(LIFECYCLE_PATCH)) return legacyGatewayWorkflow(input);
  const gateway = new Gateway(input);
  // A delete asks for the cleanup; it cuts nothing short (an apply under way finishes first).
  let cancellation: unknown;
  wf.CancellationScope.current().cancelRequested.catch((err: unknown) => {
    cancellation = err;
    gateway.delete();
  });
  await wf.CancellationScope.nonCancellable(() => gateway.lifecycle());
  if (cancellation) throw cancellation; // the run ends as the delete asked
}

class Gateway {
  /** adopt → (rebuild | restore) → serve: agent session, batched changes, continue-as-new on budget → on delete: cleanup. */
  async lifecycle(): Promise<void> {
    const adoption = await this.adopt();
    if (adoption === 'gone') return;
    if (this.fresh) this.show(); // a continued run shows what it carried
    // Restores (or rebuilds) the desired state on every new agent instance, then serves it.
    this.serving = this.keepAgent();
    if (adoption === 'adopted') await this.waitFor(() => this.state.deleting);
    await this.cleanup();
  }

  /** The delete: everything stays applied while EIPs name the gateway; then it all comes off, and the object may go. */
  private async cleanup(): Promise<void> {
    this.state.deleting = true;
    await this.waitForUsers();
    await this.stopServing();
    await this.takeAllOff();
    await this.k8s.release();
  }

  private readonly name: string;
  private readonly state: GatewayState;
  private generation: number;
  private readonly budget: HistoryBudget;
  /** Its VpcNatGateway, when it has one: adopted at start (the bridge started it) or later (see onSpec). */
  private kube: GatewayInput['kube'];
  private k8s: KubeSync;
  private readonly agent;
  private readonly sessions;
  /** A run without carried state: its gateway may carry more than it knows. */
  private readonly fresh: boolean;
  /** The desired addresses and rules (the state's own records), and what changed in them since the last apply. */
  private readonly desired: GatewayDesired;
  /** What agent `appliedBy` has, as far as this workflow applied it; null: it needs a restore. */
  private applied: GatewayHolding = { eips: {}, rules: {} };
  private appliedBy: string | null;
  /** Rule owners to remove by tag with the next apply, whatever this incarnation knows of them. */
  private readonly removals: Set<string>;
  /** Addresses unbound since the last apply: taken off even by a restore that only adds. */
  private readonly addressRemovals: Set<string>;
  /** Only additions and explicit removals until `rebuildUntil` (while `state.rebuilding`), then the first full restore. */
  private rebuildUntil: number | null = null;
  private desiredGeneration = 0;
  private appliedGeneration = 0;
  private probeRequested = false;
  /** The audit found the agent's state drifted from the desired one: restore it in full. */
  private restoreRequested: boolean;
  /** This run's budget is spent: new requests go to the next run. */
  private draining = false;
  private stopping = false;
  private serving: Promise<void> | null = null;
  /** The EIPs naming the gateway while it is being deleted, and a hint that one may have left. */
  private users: string[];
  private userLeft = false;
  private phase = '';
  /** Its users are being told of a readiness change; `wakeAgain`: it changed again meanwhile. */
  private waking = false;
  private wakeAgain = false;

  constructor(private readonly input: GatewayInput) {
    const carried = input.carried;
    this.name = input.spec.name;
    this.fresh = input.eips === undefined && input.rules === undefined;
    this.generation = input.kube?.generation ?? 0;
    this.state = {
      spec: input.spec,
      ready: carried?.ready ?? false,
      reason: carried?.reason ?? 'agent not probed yet',
      agent: carried?.agent ?? null,
      eips: { ...input.eips },
      rules: { ...input.rules },
      deleting: carried?.deleting ?? false,
      conditions: carried?.conditions ?? [],
      observedGeneration: this.generation,
      ...(input.kube && { kubeUid: input.kube.uid }),
    };
    this.desired = new GatewayDesired(this.state);
    this.appliedBy = carried?.appliedBy ?? null;
    if (this.appliedBy) this.applied = { eips: { ...this.state.eips }, rules: { ...this.state.rules } };
    this.removals = new Set(carried?.removals);
    this.addressRemovals = new Set(carried?.addressRemovals);
    this.state.rebuilding = carried?.rebuilding ?? this.fresh;
    const handedOver = (carried?.users?.length || carried?.restore) && wf.patched(HAND_OVER_PATCH) ? carried : undefined;
    this.users = handedOver?.users ?? [];
    this.restoreRequested = handedOver?.restore ?? false;
    this.budget = new HistoryBudget({ ...(wf.patched(SHORTER_RUNS_PATCH) && GATEWAY_HISTORY_LIMITS), ...input.limits });
    this.agent = gatewayAgent(this.name);
    this.sessions = agentSessions(this.name, SESSION_MS);
    this.kube = input.kube;
    this.k8s = kubeSync('vpc-nat-gw', { name: this.name, uid: input.kube?.uid ?? '', generation: this.generation, fromKube: input.kube !== undefined });

    // A client re-sends an update that a continue-as-new cut off: abandoning one is expected.
    const abandon = { unfinishedPolicy: HandlerUnfinishedPolicy.ABANDON };
    wf.setHandler(gatewayStateQuery, () => this.state);
    wf.setHandler(agentStartedSignal, () => {
      this.budget.countSignal();
      this.probeRequested = true;
    });
    wf.setHandler(gatewaySpecSignal, (change) => this.onSpec(change));
    wf.setHandler(restoreGatewaySignal, () => {
      this.budget.countSignal();
      this.restoreRequested = true;
    });
    wf.setHandler(gatewayRequestsUpdate, (requests) => this.requests(requests), { ...abandon, validator: (requests) => this.checkBatch(requests) });
    wf.setHandler(bindEipUpdate, (bind) => this.one<void>({ bind }), { ...abandon, validator: (req, fence?: Fence) => this.checkBind(req, fence) });
    wf.setHandler(unbindEipUpdate, (unbind: { owner: string }) => this.one<{ applied: boolean }>({ unbind }), { ...abandon, validator: (req) => this.checkRemoval(req) });
    wf.setHandler(setRuleUpdate, (setRule) => this.one<void>({ setRule }), { ...abandon, validator: (rule, fence?: Fence) => this.checkRule(rule, fence) });
    wf.setHandler(removeRuleUpdate, (removeRule: { owner: string }) => this.one<{ applied: boolean }>({ removeRule }), { ...abandon, validator: (req) => this.checkRemoval(req) });
    wf.upsertSearchAttributes(searchAttributes({ kind: 'gateway', name: this.name, gateway: this.name, subnet: input.spec.externalSubnet ?? '' }));
  }

  delete(): void {
    this.state.deleting = true;
  }

  // --- the steps ---------------------------------------------------------------------------

  /** Its VpcNatGateway, first thing in a new incarnation (finalizer on); a continued run was adopted already. */
  private async adopt(): Promise<'adopted' | 'gone' | 'deleting'> {
    if (!this.fresh) return this.state.deleting ? 'deleting' : 'adopted';
    return this.k8s.adopt();
  }

  /** Knows the agent, brings it to the desired state, serves it until it is lost; probes again with backoff. */
  private async keepAgent(): Promise<void> {
    for (let failures = 0; !this.stopping; ) {
      this.probeRequested = false;
      const info = await this.probe();
      if (info && (await this.bringUp(info))) {
        failures = 0;
        await this.serve(info);
      } else {
        await wf.condition(() => this.probeRequested || this.stopping, backoff(failures++, 1000, MAX_PROBE_BACKOFF_MS));
      }
    }
  }

  private async probe(): Promise<AgentInfo | null> {
    try {
      return await this.agent.agentInfo.executeWithOptions({ summary: `is the agent of ${this.name} there?` }, []);
    } catch (err) {
      await this.setReady(false, `agent on task queue ${gatewayTaskQueue(this.name)} did not answer: ${(err as Error).message}`);
      return null;
    }
  }

  /** Makes `info` the agent; an instance that does not have the desired state gets it first. False when that failed. */
  private async bringUp(info: AgentInfo): Promise<boolean> {
    this.state.agent = info;
    if (this.appliedBy !== info.instanceId) {
      await this.setReady(false, `restoring its desired state on agent ${info.instanceId}`);
      if (!(await this.apply(info.instanceId, true))) return false;
    }
    await this.setReady(true, '');
    // A new incarnation's users can re-assert from now on: the window runs while they can.
    if (this.state.rebuilding) this.rebuildUntil ??= Date.now() + (this.input.rebuildWindowMs ?? REBUILD_WINDOW_MS);
    return true;
  }

  /** Serves agent `info`: a session at a time, batched changes, the end of the rebuild window; returns when the agent must be probed. */
  private async serve(info: AgentInfo): Promise<void> {
    let session = this.startSession(info.instanceId);
    try {
      while (!this.stopping && !this.probeRequested) {
        const woken = () => this.stopping || this.probeRequested || session.ended || this.pending() || this.restoreRequested;
        const until = this.rebuildUntil;
        if (until === null) await wf.condition(woken);
        else if (until > Date.now()) await wf.condition(woken, until - Date.now());
        if (session.ended) {
          if (session.lost) return await this.setReady(false, session.lost);
          session = this.startSession(info.instanceId);
        }
        if (this.pending() && !(await this.apply(info.instanceId, false))) return;
        // A signal an older worker recorded without acting on it is left alone on replay (patch).
        if (this.restoreRequested && wf.patched(RESTORE_PATCH)) {
          // While rebuilding it only adds what is missing: removing what nobody re-asserted waits for the window's end.
          this.restoreRequested = false;
          if (!(await this.apply(info.instanceId, true))) return;
        }
        if (this.rebuildUntil !== null && Date.now() >= this.rebuildUntil) {
          // Every user had its chance to re-assert: the first full restore removes what nobody claimed.
          this.state.rebuilding = false;
          this.rebuildUntil = null;
          if (!(await this.apply(info.instanceId, true))) return;
          this.show();
        }
      }
    } finally {
      session.cancel();
    }
  }

  /** One agent session in the background; `lost` says why it ended, unless it simply ran its time. */
  private startSession(instanceId: string) {
    const scope = new wf.CancellationScope();
    const session = { ended: false, lost: null as string | null, cancel: () => scope.cancel() };
    const lostBecause = (end: AgentSessionEnd) =>
      end.ended === 'stopping' ? `agent ${instanceId} is stopping` : end.ended === 'other-instance' ? `agent ${end.instanceId} answered instead of ${instanceId}` : null;
    scope
      .run(() => this.sessions.agentSession.executeWithOptions({ summary: `session with agent ${instanceId}` }, [{ instanceId, forMs: SESSION_MS }]))
      .then(
        (end) => void (session.lost = lostBecause(end)),
        (err: unknown) => void (session.lost = wf.isCancellation(err) ? null : `agent ${instanceId} stopped answering: ${causeOf(err)}`),
      )
      .finally(() => void (session.ended = true));
    return session;
  }

  /**
   * Brings agent `instanceId` to the desired state: the difference from what it has, or on a
   * restore everything (exactly, unless still rebuilding: then nothing unknown is removed). Rules
   * removed leave no conntrack entry behind, whoever they belonged to. False when it failed.
   */
  private async apply(instanceId: string, restore: boolean): Promise<boolean> {
    const generation = this.desiredGeneration;
    const change = this.desired.takeChange(restore ? null : this.applied);
    const removals = [...this.removals];
    const addressRemovals = [...this.addressRemovals];
    const exact = restore && !this.state.rebuilding;
    try {
      const eips = { add: change.eips.add, remove: [...new Set([...change.eips.remove, ...addressRemovals.filter((address) => !this.desired.desires(address))])] };
      const rules = { add: change.rules.add, removeOwners: [...new Set([...change.rules.removeOwners, ...removals])], ...(exact && { replaceAll: true }), flushConntrack: true };
      const changesEips = eips.add.length + eips.remove.length > 0;
      const changesRules = exact || rules.add.length + rules.removeOwners.length > 0;
      if (!exact && changesEips && changesRules && this.state.agent?.changesInOneCall && wf.patched(ONE_CALL_PATCH)) {
        await this.agent.applyGatewayChange.executeWithOptions({ summary: `change EIP addresses and NAT rules on ${this.name}` }, [{ eips, rules }]);
      } else {
        if (exact) await this.agent.reconcileEipAddresses.executeWithOptions({ summary: `restore the EIP addresses of ${this.name}` }, [Object.values(change.holding.eips)]);
        else if (changesEips) await this.agent.changeEipAddresses.executeWithOptions({ summary: `change EIP addresses on ${this.name}` }, [eips]);
        const summary = exact ? `restore the NAT rules of ${this.name}` : `change NAT rules on ${this.name}`;
        if (changesRules) await this.agent.applyNatRules.executeWithOptions({ summary }, [rules]);
      }
      this.applied = holdingAfter(restore ? null : this.applied, change);
      this.appliedBy = instanceId;
      this.appliedGeneration = generation;
      for (const owner of removals) this.removals.delete(owner);
      for (const address of addressRemovals) this.addressRemovals.delete(address);
      return true;
    } catch (err) {
      this.appliedBy = null; // what the agent has is unknown now: the next apply is a restore
      await this.setReady(false, `applying desired state failed: ${causeOf(err)}`);
      return false;
    }
  }

  /** A gateway in use is not deleted under its users: everything stays applied until no EIP names it. */
  private async waitForUsers(): Promise<void> {
    for (let attempt = 0; ; ) {
      this.userLeft = false;
      this.users = await calls.gatewayUsers.executeWithOptions({ summary: `EIPs still on ${this.name}?` }, [this.name]);
      this.show();
      if (this.users.length === 0) return;
      // An EIP that leaves unbinds, and wakes us; the timer catches one that was never bound.
      attempt = (await this.waitFor(() => this.userLeft, backoff(attempt, 1000, MAX_USERS_RECHECK_MS))) ? 0 : attempt + 1;
    }
  }

  private async stopServing(): Promise<void> {
    this.stopping = true;
    await this.serving;
  }

  /** Addresses and rules off the gateway (conntrack entries too), then nothing is desired any more; best effort when the agent is gone. */
  private async takeAllOff(): Promise<void> {
    this.desired.clear();
    this.state.rebuilding = false;
    this.show();
    for (let attempt = 1; ; attempt++) {
      const info = await this.probe();
      if ((info && (await this.apply(info.instanceId, true))) || attempt === TAKE_OFF_TRIES) return;
      await wf.sleep(backoff(attempt, 1000, 10_000));
    }
  }

  // --- readiness and status ----------------------------------------------------------------

  /** Readiness as the agent allows it; its users are woken when it changes, to show it and re-assert. */
  private async setReady(ready: boolean, reason: string): Promise<void> {
    const changed = ready !== this.state.ready;
    this.state.ready = ready;
    this.state.reason = reason;
    if (!ready) this.rebuildUntil = null; // the window starts again once its users can reach it
    this.show();
    if (changed) await this.wakeUsers();
  }

  /** Tells its users the readiness changed (they show it, and re-assert once it is ready); one wake at a time, again if it changed meanwhile. */
  private async wakeUsers(): Promise<void> {
    const wake = () => wakeUps.notifyGatewayWaiters.executeWithOptions({ summary: `tell the users of ${this.name} it is ${this.state.ready ? 'ready' : 'not ready'}` }, [this.name]).catch(() => undefined);
    if (!wf.patched(BACKGROUND_WAKE_PATCH)) return void (await wake());
    if (this.waking) return void (this.wakeAgain = true);
    this.waking = true;
    void (async () => {
      do {
        this.wakeAgain = false;
        await wake();
      } while (this.wakeAgain);
      this.waking = false;
    })();
  }

  /** The Ready condition, phase and details from the state; published only when they change (or when `force`d). */
  private show(force = false): void {
    const { ready, reason, deleting, agent } = this.state;
    const condition: ReadyCondition = deleting
      ? this.users.length > 0
        ? { status: 'False', reason: GATEWAY_IN_USE, message: `waiting for its users to be deleted: ${this.users.join(', ')}` }
        : { status: 'False', reason: Reason.Deleting, message: 'taking its addresses and rules off' }
      : ready
        ? { status: 'True', reason: Reason.Ready, message: `agent ${agent?.instanceId} is serving${this.state.rebuilding ? '; rebuilding its desired state from its users' : ''}` }
        : { status: 'False', reason: Reason.GatewayNotReady, message: reason };
    const previous = this.state.conditions?.find((c) => c.type === 'Ready');
    const same = previous && previous.status === condition.status && previous.reason === condition.reason && previous.message === condition.message;
    if (!force && same && previous.observedGeneration === this.generation) return;
    this.state.conditions = setCondition(this.state.conditions ?? [], { type: 'Ready', ...condition }, new Date(), this.generation);
    this.state.observedGeneration = this.generation;
    const phase = deleting ? 'Deleting' : ready ? 'Ready' : 'AgentNotReady';
    if (phase !== this.phase) wf.upsertSearchAttributes(searchAttributes({ phase }));
    this.phase = phase;
    wf.setCurrentDetails(`**${phase}**: ${condition.message}`);
    this.k8s.publish({ ready: condition.status === 'True', conditions: this.state.conditions, observedGeneration: this.generation });
  }

  // --- waiting and continuing as new -------------------------------------------------------

  private pending(): boolean {
    return this.desiredGeneration > this.appliedGeneration;
  }

  /** Waits for `done` (or the timeout), continuing as new when this run's budget is spent; true when done. */
  private async waitFor(done: () => boolean, timeoutMs?: number): Promise<boolean> {
    const woken = () => done() || this.budget.spent();
    if (timeoutMs === undefined) await wf.condition(woken);
    else await wf.condition(woken, timeoutMs);
    if (!done() && this.budget.spent()) await this.continueAsNew();
    return done();
  }

  /** Everything carried, after what is in flight has finished (or is cut off: its client re-sends it, and its change is carried). */
  private async continueAsNew(): Promise<never> {
    this.draining = true;
    await wf.condition(() => wf.allHandlersFinished() && (!this.pending() || !this.state.ready), DRAIN_MS);
    await this.stopServing();
    const { spec, eips, rules, ready, reason, agent, deleting, conditions = [] } = this.state;
    const carried: GatewayCarried = { ready, reason, agent, appliedBy: this.pending() ? null : this.appliedBy, removals: [...this.removals], addressRemovals: [...this.addressRemovals], rebuilding: this.state.rebuilding ?? false, deleting, users: this.users, conditions, ...(this.restoreRequested && { restore: true }) };
    const kube = this.kube && { ...this.kube, generation: this.generation };
    const next = wf.makeContinueAsNewFunc<typeof gatewayWorkflow>({ workflowTaskTimeout: ENTITY_WORKFLOW_TASK_TIMEOUT });
    return next({ spec, eips, rules, kube, carried, limits: this.input.limits, rebuildWindowMs: this.input.rebuildWindowMs });
  }

  // --- handlers ----------------------------------------------------------------------------

  /** Asks for an apply of what was recorded and waits for it; false when the agent is not ready (the next restore has it). */
  private async change(): Promise<boolean> {
    const generation = ++this.desiredGeneration;
    // Handlers run in the workflow's root scope, which the gateway's delete cancels: its users'
    // removals must still be answered, since that delete waits for those users to finish.
    await wf.CancellationScope.nonCancellable(() => wf.condition(() => this.appliedGeneration >= generation || !this.state.ready));
    return this.appliedGeneration >= generation;
  }

  // Already what the current agent has: a re-assertion costs no apply.
  private eipApplied(owner: string, eip: EipAddress): boolean {
    return this.agentHasApplied() && sameAddress(this.state.eips[owner], eip) && sameAddress(this.applied.eips[owner], eip);
  }

  private ruleApplied(rule: NatRule): boolean {
    return this.agentHasApplied() && sameRule(this.state.rules[rule.owner], rule) && sameRule(this.applied.rules[rule.owner], rule);
  }

  private agentHasApplied(): boolean {
    return this.state.ready && this.appliedBy === this.state.agent?.instanceId;
  }

  private checkRemoval(req: { owner: string }): void {
    this.checkOpen();
    if (typeof req?.owner !== 'string' || !req.owner) throw new Error('a removal needs an owner');
  }

  private checkBatch(requests: GatewayRequest[]): void {
    this.checkOpen();
    if (!Array.isArray(requests)) throw new Error('a batch is a list of requests');
  }

  /** Once draining, a request is turned away as retryable: its caller sends it again, to the next run. */
  private checkOpen(): void {
    if (this.draining) throw drainingRefusal(`gateway ${this.name}`);
  }

  // A refusal in a validator writes no history: readiness is checked there.
  private checkBind({ owner, address, prefixLength }: { owner: string } & EipAddress, fence?: Fence): void {
    this.checkOpen();
    checkFence(fence);
    parseIPv4(address, 'EIP address');
    if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) throw new Error(`bad prefix length ${prefixLength}`);
    const holder = this.desired.holderOtherThan(address, owner);
    if (holder) throw new Error(`${address} is already bound on ${this.name} by ${holder}`);
    if (!this.eipApplied(owner, { address, prefixLength }) && (!this.state.ready || this.state.deleting)) throw this.notReady();
  }

  private checkRule(rule: NatRule, fence?: Fence): void {
    this.checkOpen();
    domainCall(() => {
      checkFence(fence);
      const { name, rule: valid } = namedRule(rule);
      const conflict = dnatConflict(this.state.rules, valid);
      if (conflict) throw new NatflowError(Reason.DuplicateDnat, conflict);
      checkRuleOnGateway(this.state.spec, valid, name);
      if (!this.ruleApplied(valid) && (!this.state.ready || this.state.deleting)) throw this.notReady();
    });
  }

  /**
   * Requests in the order sent: each is checked and recorded, then one apply carries them all. A
   * bind or rule that could not be applied (the agent is not ready) is refused, and a bind refused
   * so is not left desired (its caller releases the address); removals stay recorded either way.
   */
  private async requests(requests: GatewayRequest[]): Promise<BatchAnswer<{ applied: boolean } | null>[]> {
    this.budget.countUpdate();
    const taken = requests.map((request) => answer(() => this.take(request)));
    const pending = taken.map((t) => 'ok' in t && t.ok === PENDING);
    if (!pending.includes(true)) return taken as BatchAnswer<{ applied: boolean } | null>[];
    const applied = await this.change();
    if (!applied) {
      const unbound = requests.filter((r, i) => 'bind' in r && pending[i] && sameAddress(this.state.eips[r.bind.owner], r.bind));
      for (const r of unbound) this.desired.unbind((r as { bind: { owner: string } }).bind.owner);
      if (unbound.length > 0) await this.change();
    }
    const notReady = { refused: { type: Reason.GatewayNotReady, message: this.notReady().message } };
    return taken.map((t, i) => {
      if (!pending[i]) return t as BatchAnswer<{ applied: boolean } | null>;
      const request = requests[i]!;
      // A gateway being deleted takes everything off itself: its users' removals need not wait for it.
      if ('unbind' in request || 'removeRule' in request) return { ok: { applied: applied || this.state.deleting } };
      return applied ? { ok: null } : notReady;
    });
  }

  /** Checks and records one request: its answer when it needs no apply, else PENDING. */
  private take(request: GatewayRequest): { applied: boolean } | null | typeof PENDING {
    if ('bind' in request) {
      const { owner, address, prefixLength } = request.bind;
      const eip = { address, prefixLength };
      this.checkBind(request.bind, request.fence);
      if (this.eipApplied(owner, eip)) return null;
      this.desired.bind(owner, eip);
    } else if ('unbind' in request) {
      const { owner } = request.unbind;
      this.userLeft = true;
      const held = this.state.eips[owner] ?? this.applied.eips[owner];
      if (!held) return { applied: true };
      // When the agent is down the removal is still recorded: the next restore is without the address.
      this.addressRemovals.add(held.address);
      this.desired.unbind(owner);
    } else if ('setRule' in request) {
      this.checkRule(request.setRule, request.fence);
      const { rule } = namedRule(request.setRule);
      if (this.ruleApplied(rule)) return null;
      this.desired.setRule(rule);
    } else {
      // By tag, always, until an apply has taken it off: a new incarnation does not know every rule
      // its gateway carries, and its restores only add. The agent flushes the removed rules' conntrack entries.
      this.removals.add(request.removeRule.owner);
      this.desired.removeRule(request.removeRule.owner);
    }
    return PENDING;
  }

  /** A request sent on its own (the last release's callers): a batch of one. */
  private async one<T>(request: GatewayRequest): Promise<T> {
    return unwrap((await this.requests([request]))[0]!) as T;
  }

  private onSpec({ spec, generation, kube }: SpecChange<GatewaySpec> & { kube?: { uid: string } }): void {
    this.budget.countSignal();
    // Another object than the one it knows (none: the CLI registered it): its generations start anew.
    const adopting = kube !== undefined && kube.uid !== this.kube?.uid && !this.state.deleting;
    // Stale when older; the same generation may still bring news (the VPC subnet behind it changed).
    if (!adopting && generation < this.generation) return;
    this.generation = generation;
    if (spec.externalSubnet !== this.state.spec.externalSubnet) wf.upsertSearchAttributes(searchAttributes({ subnet: spec.externalSubnet ?? '' }));
    this.state.spec = { ...spec, name: this.name }; // the name is the workflow's identity
    if (adopting) void this.adoptLater({ uid: kube.uid, generation });
    else this.show(); // the new observedGeneration
  }

  /**
   * Links a running gateway to its VpcNatGateway, as if the bridge had started it: finalizer on,
   * status written from now on, and its delete is the gateway's delete (orphan collection too).
   */
  private async adoptLater(kube: { uid: string; generation: number }): Promise<void> {
    this.kube = kube;
    this.state.kubeUid = kube.uid;
    const sync = kubeSync('vpc-nat-gw', { name: this.name, ...kube, fromKube: true });
    // Status goes to the object only once its finalizer is on: a Ready object without it could be
    // deleted with nothing holding it (patched: older runs published from the start).
    if (!wf.patched(ADOPT_BEFORE_STATUS)) this.k8s = sync;
    wf.upsertMemo(FROM_KUBERNETES_MEMO);
    const adoption = await sync.adopt();
    this.k8s = sync;
    if (adoption === 'deleting') this.delete(); // deleted meanwhile: the cleanup runs, then lets it go
    this.show(true);
  }

  private notReady(): wf.ApplicationFailure {
    const why = this.state.deleting ? 'it is being deleted' : this.state.reason;
    return wf.ApplicationFailure.nonRetryable(`gateway ${this.name} is not ready: ${why}`, Reason.GatewayNotReady);
  }
}

/** setRule's argument: the rule (validated, in its canonical form: rules are compared) and the name its messages use. */
function namedRule(rule: NatRule): { name?: string; rule: NatRule } {
  const { name, ...bare } = rule as NamedNatRule;
  return { name, rule: validateNatRule(bare) };
}

/** The failure behind an activity's: a heartbeat timeout, the agent's error. */
const causeOf = (err: unknown): string => ((err as wf.ActivityFailure).cause as Error | undefined)?.message ?? (err as Error).message;

// --- runs of the last release ------------------------------------------------------------------
//
// The gateway workflow as released before `gateway-lifecycle`, kept verbatim so that its open runs
// replay. Once such a run executes live on this code (the first wake-up after a deploy, at most a
// probe interval away), it hands over: it continues as new with its desired state, and the new run
// restores it in full (its state is complete: it was carried, not rebuilt), or cleans up when it
// was being deleted. Remove this section once no run of that release is open.

const PROBE_WHEN_READY = '30s';

async function legacyGatewayWorkflow(input: GatewayInput): Promise<void> {
  const { spec } = input;
  const agent = gatewayAgent(spec.name);
  const state: GatewayState = { spec, ready: false, reason: 'agent not probed yet', agent: null, eips: { ...input.eips }, rules: { ...input.rules }, deleting: false };
  // The rules the current agent instance has: a diff against them is all one change sends.
  let appliedRules: Record<string, NatRule> = {};
  let fullRestore = true;
  let desiredGeneration = 1; // a new run always applies its full state once
  let appliedGeneration = 0;
  let probeRequested = true;
  let failedProbes = 0;
  const handOver = (deleting: boolean) =>
    wf.continueAsNew<typeof gatewayWorkflow>({
      spec,
      eips: state.eips,
      rules: state.rules,
      ...(deleting && { carried: { ready: false, reason: 'gateway is being deleted', agent: null, appliedBy: null, removals: [], rebuilding: false, deleting, conditions: [] } }),
    });

  wf.upsertSearchAttributes(searchAttributes({ kind: 'gateway', name: spec.name, gateway: spec.name, subnet: spec.externalSubnet ?? '' }));
  const setReady = (ready: boolean, reason: string) => {
    state.ready = ready;
    state.reason = reason;
    wf.upsertSearchAttributes(searchAttributes({ phase: ready ? 'Ready' : 'AgentNotReady' }));
    wf.setCurrentDetails(ready ? `Ready: agent ${state.agent?.instanceId}` : `Not ready: ${reason}`);
  };
  const notReady = () =>
    wf.ApplicationFailure.nonRetryable(`gateway ${spec.name} is not ready: ${state.reason}`, Reason.GatewayNotReady);
  /** Records a change and waits until an apply that includes it has finished. */
  const change = async (mutate: () => void): Promise<boolean> => {
    mutate();
    const generation = ++desiredGeneration;
    await wf.condition(() => appliedGeneration >= generation || !state.ready || state.deleting);
    return appliedGeneration >= generation;
  };

  wf.setHandler(gatewayStateQuery, () => state);
  wf.setHandler(agentStartedSignal, () => void (probeRequested = true));
  // This release's callers send batches: the run hands over at once, and they send theirs again to the next run.
  let batchArrived = false;
  wf.setHandler(gatewayRequestsUpdate, () => {
    batchArrived = true;
    throw wf.ApplicationFailure.retryable(`gateway ${spec.name} is moving to a new run`, Reason.Draining);
  });
  wf.setHandler(
    bindEipUpdate,
    async ({ owner, address, prefixLength }: { owner: string } & EipAddress) => {
      if (!state.ready || state.deleting) throw notReady();
      if (await change(() => (state.eips[owner] = { address, prefixLength }))) return;
      // Nothing half-bound stays desired: the caller compensates by releasing the address.
      if (state.eips[owner]?.address === address) await change(() => delete state.eips[owner]);
      throw notReady();
    },
    {
      validator: ({ owner, address, prefixLength }: { owner: string } & EipAddress, fence?: Fence) => {
        checkFence(fence);
        parseIPv4(address, 'EIP address');
        if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) throw new Error(`bad prefix length ${prefixLength}`);
        const holder = Object.entries(state.eips).find(([o, e]) => o !== owner && e.address === address);
        if (holder) throw new Error(`${address} is already bound on ${spec.name} by ${holder[0]}`);
      },
    },
  );
  wf.setHandler(
    setRuleUpdate,
    async (rule: NatRule) => {
      if (!state.ready || state.deleting) throw notReady();
      if (await change(() => (state.rules[rule.owner] = rule))) return;
      throw notReady(); // the caller removes it again as part of its compensation
    },
    {
      validator: (rule: NatRule, fence?: Fence) =>
        domainCall(() => {
          checkFence(fence);
          validateNatRule(rule);
          const conflict = dnatConflict(state.rules, rule);
          if (conflict) throw new NatflowError(Reason.DuplicateDnat, conflict);
          const internal = rule.kind === 'snat' ? parseCidr(rule.internalCidr).first : parseIPv4(rule.internalIp);
          if (spec.internalCidr && !cidrContains(parseCidr(spec.internalCidr), internal)) {
            throw new NatflowError(Reason.InvalidSpec, `${rule.kind === 'snat' ? rule.internalCidr : rule.internalIp} is outside the VPC subnet ${spec.internalCidr} of gateway ${spec.name}`);
          }
        }),
    },
  );
  wf.setHandler(removeRuleUpdate, async ({ owner }) => {
    if (!(owner in state.rules) && !(owner in appliedRules)) return { applied: true };
    return { applied: await change(() => delete state.rules[owner]) };
  });
  wf.setHandler(unbindEipUpdate, async ({ owner }) => {
    if (!(owner in state.eips)) return { applied: true };
    // When the agent is down the removal is still recorded: the next agent restores without it.
    return { applied: await change(() => delete state.eips[owner]) };
  });

  const apply = async () => {
    const target = desiredGeneration;
    try {
      await agent.reconcileEipAddresses(Object.values(state.eips));
      const desired = { ...state.rules };
      if (fullRestore) {
        await agent.initNatChains();
        await agent.applyNatRules({ add: Object.values(desired), removeOwners: [], replaceAll: true });
        fullRestore = false;
      } else {
        const diff = ruleDiff(appliedRules, desired);
        if (diff.add.length + diff.removeOwners.length > 0) await agent.applyNatRules({ add: diff.add, removeOwners: diff.removeOwners });
        // Only once the rules are gone, or new packets would make new entries.
        if (diff.removed.length > 0) await agent.flushConntrack(diff.removed.map(conntrackTarget));
      }
      appliedRules = desired;
      appliedGeneration = target;
    } catch (err) {
      setReady(false, `applying desired state failed: ${(err as Error).message}`);
    }
  };

  const probe = async () => {
    try {
      const info = await agent.agentInfo();
      if (state.ready && info.instanceId === state.agent?.instanceId) return;
      // A new agent instance (or one coming back): restore everything before declaring ready.
      state.agent = info;
      state.ready = true; // so that apply's failure path can mark it unready again
      appliedGeneration = 0;
      fullRestore = true;
      await apply();
      if (!state.ready) return;
      failedProbes = 0;
      setReady(true, '');
      await wakeUps.notifyGatewayWaiters(spec.name);
    } catch (err) {
      failedProbes++;
      setReady(false, `agent on task queue ${gatewayTaskQueue(spec.name)} did not answer: ${(err as Error).message}`);
    }
  };

  try {
    for (;;) {
      const interval = state.ready ? PROBE_WHEN_READY : Math.min(1000 * 2 ** failedProbes, MAX_PROBE_BACKOFF_MS);
      const woken = await wf.condition(() => probeRequested || batchArrived || (state.ready && desiredGeneration > appliedGeneration), interval);
      if (wf.patched(HANDOVER_PATCH)) return await handOver(false);
      if (!woken || probeRequested) {
        probeRequested = false;
        await probe();
      }
      if (state.ready && desiredGeneration > appliedGeneration) await apply();
      const info = wf.workflowInfo();
      if ((info.continueAsNewSuggested || info.historyLength >= (input.maxHistoryLength ?? 10_000)) && desiredGeneration === appliedGeneration && wf.allHandlersFinished()) {
        await wf.continueAsNew<typeof gatewayWorkflow>({ ...input, eips: state.eips, rules: state.rules });
      }
    }
  } catch (err) {
    if (!wf.isCancellation(err)) throw err;
    if (wf.patched(HANDOVER_PATCH)) return await handOver(true);
    await wf.CancellationScope.nonCancellable(async () => {
      // Deleting the gateway: take its addresses off (best effort: an unreachable agent's pod is
      // going away with them) and tell every bound EIP, which then releases its address.
      state.deleting = true;
      setReady(false, 'gateway is being deleted');
      const owners = Object.keys(state.eips);
      state.eips = {};
      state.rules = {};
      if (state.agent) await apply();
      for (const owner of owners) {
        await wf.getExternalWorkflowHandle(owner).signal(gatewayChangedSignal).catch(() => undefined);
      }
    });
    throw err;
  }
}
