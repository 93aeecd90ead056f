// The lifecycle of one IptablesEIP. Order is the point of this workflow: gateway ready → allocate
// → bind on the gateway → Ready; a failure after allocation releases before waiting again; a
// delete (cancellation) at any moment runs the cleanup in a non-cancellable scope. Activities that
// take or give something wait for their own cancellation to complete, so the cleanup never races
// an allocation still in flight.
import * as wf from '@temporalio/workflow';
import { eipAddressChanged, normalizeEipSpec, type EipInput, type EipPhase, type EipSpec, type EipStatus } from '../domain/eip.js';
import { Reason } from '../domain/errors.js';
import type { Allocation } from '../domain/ipam.js';
import type { ResourceRef } from '../domain/names.js';
import { claimConflict, type EipClaim } from '../domain/nat-resources.js';
import { searchAttributes } from '../domain/search-attributes.js';
import { setCondition } from '../domain/status.js';
import { claimEipUpdate, gatewayChangedSignal, specChangedSignal, statusQuery, unclaimEipUpdate, type Fence } from '../domain/workflow-api.js';
import { calls } from './activity-proxies.js';
import { checkFence, checkSpec, refusal, type ReadyCondition } from './failures.js';
import { adoptedLifecycle, kubeSync } from './kube-sync.js';
import { backoff, phaseReporter } from './resource-status.js';

/** A refused allocation (unknown subnet, address taken) is tried again this often, or on a spec change. */
const RETRY_FAILED_AFTER = '5m';

export async function eipWorkflow(input: EipInput): Promise<void> {
  const eip = new Eip(input);
  await adoptedLifecycle(eip.k8s, () => eip.lifecycle(), () => eip.cleanup());
}

class Eip {
  /** validate → wait for the gateway → allocate → bind → serve (Ready) → give back; again after a change that needs it. */
  async lifecycle(): Promise<void> {
    for (;;) {
      this.specChanged = false;
      const spec = checkSpec(() => normalizeEipSpec(this.name, this.spec));
      if (!spec.ok) {
        this.setPhase('Invalid', spec.invalid);
        await wf.condition(() => this.specChanged);
        continue;
      }
      const { natGwDp: gateway, externalSubnet: subnet } = spec.value;
      this.status.natGwDp = gateway;
      wf.upsertSearchAttributes(searchAttributes({ gateway, subnet }));
      if (!(await this.waitForGateway(gateway))) continue;
      const allocation = await this.allocate(subnet, spec.value.v4ip);
      if (!allocation) continue;
      if (!(await this.bind(gateway, allocation))) continue;
      await this.serve(gateway, allocation.address);
      await this.releaseAll();
    }
  }

  /** The delete: wait for the EIP's users to go, give everything back, then let the object go. */
  cleanup(): Promise<void> {
    return wf.CancellationScope.nonCancellable(async () => {
      this.deleting = true;
      if (this.claims.size > 0) {
        this.setPhase('Deleting', { status: 'False', reason: Reason.EipInUse, message: `waiting for its users to be deleted: ${this.users()}` });
        await wf.condition(() => this.claims.size === 0);
      }
      this.setPhase('Deleting', { status: 'False', reason: Reason.Deleting, message: 'removing the address and releasing it' });
      await this.releaseAll();
      this.setPhase('Deleted', { status: 'False', reason: Reason.Deleting, message: 'nothing is held any more' });
      await this.k8s.release();
    });
  }

  private readonly resource: ResourceRef;
  private readonly name: string;
  private readonly owner = wf.workflowInfo().workflowId;
  private spec: EipSpec;
  private generation: number;
  private specChanged = false;
  private gatewayChanged = false;
  private deleting = false;
  private readonly status: EipStatus;
  // What may be held right now: set before the call that takes it, cleared after the call that gives it back.
  private held: { subnet: string } | null = null;
  private bound: { gateway: string } | null = null;
  /** The NAT rules using this EIP, by owner. */
  private readonly claims = new Map<string, EipClaim>();
  readonly k8s;
  private readonly setPhase: (phase: EipPhase, condition: ReadyCondition) => void;

  constructor(input: EipInput) {
    this.resource = input.resource;
    this.name = input.resource.name;
    this.spec = input.spec;
    this.generation = input.resource.generation;
    this.status = { phase: 'Pending', ready: false, ip: '', natGwDp: this.spec?.natGwDp ?? '', nat: '', conditions: [], observedGeneration: this.generation };
    this.k8s = kubeSync('eip', input.resource);
    this.setPhase = phaseReporter(this.status, this.k8s, () => this.generation);

    wf.setHandler(statusQuery, () => this.status);
    wf.setHandler(claimEipUpdate, (claim: EipClaim) => this.claim(claim), { validator: (claim: EipClaim, fence?: Fence) => this.checkClaim(claim, fence) });
    wf.setHandler(unclaimEipUpdate, ({ owner }) => {
      this.claims.delete(owner);
      this.showUsers();
    });
    wf.setHandler(gatewayChangedSignal, () => void (this.gatewayChanged = true));
    wf.setHandler(specChangedSignal, ({ spec, generation }) => this.onSpec(spec as EipSpec, generation));
    wf.upsertSearchAttributes(searchAttributes({ kind: 'eip', name: this.name, gateway: this.spec?.natGwDp ?? '', subnet: this.spec?.externalSubnet ?? '' }));
  }

  // --- the steps ---------------------------------------------------------------------------

  /** Waits until the gateway's agent is ready; false when the spec changed meanwhile. */
  private async waitForGateway(gateway: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      this.gatewayChanged = false;
      const readiness = await calls.gatewayReadiness.executeWithOptions({ summary: `is ${gateway} ready?` }, [gateway]);
      if (readiness.ready) return true;
      this.setPhase('WaitingForGateway', { status: 'False', reason: readiness.exists ? Reason.GatewayNotReady : Reason.GatewayNotFound, message: readiness.reason });
      // A gateway that becomes ready wakes us; the timer is the fallback.
      await wf.condition(() => this.gatewayChanged || this.specChanged, backoff(attempt, 1000, 60_000));
      if (this.specChanged) return false;
      const info = wf.workflowInfo();
      if ((info.continueAsNewSuggested || info.historyLength > 5_000) && !this.held && !this.bound) {
        await wf.continueAsNew<typeof eipWorkflow>({ resource: { ...this.resource, generation: this.generation }, spec: this.spec });
      }
    }
  }

  /** The address, or null (nothing held) after showing a refusal and waiting for a retry or a spec change. */
  private async allocate(subnet: string, requested: string | undefined): Promise<Allocation | null> {
    this.setPhase('Allocating', { status: 'False', reason: 'Allocating', message: `allocating from ${subnet}` });
    this.held = { subnet };
    try {
      const allocation = await calls.allocateAddress.executeWithOptions({ summary: `allocate ${requested || 'an address'} from ${subnet}` }, [{ subnet, owner: this.owner, requested }]);
      this.status.ip = allocation.address;
      return allocation;
    } catch (err) {
      if (wf.isCancellation(err)) throw err;
      this.held = null; // the allocation was refused: nothing is held
      this.setPhase('Failed', refusal(err, 'AllocationFailed'));
      // Level-triggered: the subnet may appear or the address be freed.
      await wf.condition(() => this.specChanged, RETRY_FAILED_AFTER);
      return null;
    }
  }

  /** Puts the address on the gateway; false (after releasing it) when the gateway refused. */
  private async bind(gateway: string, allocation: Allocation): Promise<boolean> {
    this.setPhase('Binding', { status: 'False', reason: 'Binding', message: `adding ${allocation.address} on ${gateway}` });
    this.bound = { gateway };
    try {
      await calls.bindAddress.executeWithOptions({ summary: `add ${allocation.address}/${allocation.prefixLength} on ${gateway}` }, [{ gateway, owner: this.owner, address: allocation.address, prefixLength: allocation.prefixLength }]);
      return true;
    } catch (err) {
      if (wf.isCancellation(err)) throw err;
      await this.releaseAll(); // nothing stays held while we wait for the gateway again
      return false;
    }
  }

  /** Ready until the gateway goes away or the address must change (and no rule uses it). */
  private async serve(gateway: string, address: string): Promise<void> {
    this.setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `${address} is bound on ${gateway}` });
    // Added after the first release: rules created before their EIP no longer wait for their
    // next re-check (up to 30 s) but start at once. Patched, so older histories still replay.
    if (wf.patched('wake-rules-on-eip-ready')) await calls.notifyEipWaiters.executeWithOptions({ summary: 'wake NAT rules waiting for an EIP' }, []);
    let applied = this.spec;
    for (;;) {
      await this.stayReady(gateway);
      if (!this.specChanged) return;
      this.specChanged = false;
      if (eipAddressChanged(applied, this.spec)) {
        if (this.claims.size === 0) return;
        // Moving an address under live NAT rules would break them silently: refuse, keep serving.
        this.status.conditions = setCondition(this.status.conditions, { type: 'Valid', status: 'False', reason: Reason.EipInUse, message: `the address cannot change while used by ${this.users()}` }, new Date(), this.generation);
        this.spec = applied;
        continue;
      }
      applied = this.spec; // nothing natflow acts on changed: just observe the generation
      this.setPhase('Ready', { status: 'True', reason: Reason.Ready, message: `${address} is bound on ${gateway}` });
    }
  }

  /** Waits while ready; returns when the spec changed or the gateway went away. */
  private async stayReady(gateway: string): Promise<void> {
    for (;;) {
      await wf.condition(() => this.specChanged || this.gatewayChanged);
      if (this.specChanged) return;
      this.gatewayChanged = false;
      if (!(await calls.gatewayReadiness(gateway)).exists) return;
    }
  }

  /** Gives back whatever may be held. Both calls are idempotent, so "may" is enough. */
  private async releaseAll(): Promise<void> {
    if (this.bound) {
      await calls.unbindAddress.executeWithOptions({ summary: `unbind ${this.status.ip || 'EIP'} from ${this.bound.gateway}` }, [{ gateway: this.bound.gateway, owner: this.owner }]);
      this.bound = null;
    }
    if (this.held) {
      await calls.releaseAddress.executeWithOptions({ summary: `release ${this.status.ip || 'EIP'} to ${this.held.subnet}` }, [{ subnet: this.held.subnet, owner: this.owner }]);
      this.held = null;
    }
    this.status.ip = '';
  }

  // --- handlers ----------------------------------------------------------------------------

  private checkClaim(claim: EipClaim, fence: Fence | undefined): void {
    checkFence(fence);
    if (this.status.phase !== 'Ready' || this.deleting) throw wf.ApplicationFailure.nonRetryable(`EIP ${this.name} is not ready (${this.status.phase})`, Reason.EipNotReady);
    const conflict = claimConflict(claim.kind, [...this.claims.values()], claim.owner);
    if (conflict) throw wf.ApplicationFailure.nonRetryable(`EIP ${this.name}: ${conflict}`, Reason.EipInUse);
  }

  private claim(claim: EipClaim) {
    this.claims.set(claim.owner, claim);
    this.showUsers();
    return { address: this.status.ip, gateway: this.status.natGwDp };
  }

  private onSpec(spec: EipSpec, generation: number): void {
    if (generation <= this.generation) return; // a repeat or a stale update
    if (spec?.natGwDp !== this.spec.natGwDp && this.spec.natGwDp) {
      this.status.conditions = setCondition(this.status.conditions, { type: 'Valid', status: 'False', reason: Reason.InvalidSpec, message: `spec.natGwDp is immutable (still ${this.spec.natGwDp})` }, new Date(), generation);
      return;
    }
    this.spec = spec;
    this.generation = generation;
    this.specChanged = true;
  }

  private users(): string {
    return [...this.claims.values()].map((c) => `${c.kind} ${c.name}`).join(', ');
  }

  /** Kube-OVN's `status.nat`: the kinds of NAT using this EIP. */
  private showUsers(): void {
    this.status.nat = [...new Set([...this.claims.values()].map((c) => c.kind))].sort().join(',');
    this.k8s.publish({ ...this.status });
  }
}
