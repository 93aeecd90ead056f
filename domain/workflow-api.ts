// The one contract between natflow's processes: every signal, update and query its workflows
// answer, and every activity they call, with the types both carry. Workflows, activities, the
// workers, the bridge and the CLI all import it from here, so a message has one definition and
// one wire name, and workflows/ never imports activities/ (nor the other way round).
//
// Wire names are recorded in every history: renaming one breaks the replay of open workflows.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AuditReport, ControlObservation, GatewayReading, Repair } from './audit.js';
import type { EipSpec, EipStatus } from './eip.js';
import type { AgentInfo, AgentSessionEnd, EipAddress, GatewayReadiness, GatewaySpec, GatewayState } from './gateway.js';
import type { Allocation, AllocateRequest, IpamState, IpamSummary } from './ipam.js';
import type { KubeRef } from './kube.js';
import type { PhasedStatus } from './status.js';
import type { EipClaim, NatKind, NatSpec, NatStatus } from './nat-resources.js';
import type { ConntrackTarget, NatRule } from './nat-rules.js';
import type { SubnetSpec } from './subnet.js';

/**
 * The deadline of the activity attempt that sends an update (ms since the epoch). An entity
 * workflow refuses a request whose deadline has passed: that attempt has timed out, a retry is
 * under way, and the caller may already be giving back what the late request would take.
 */
export interface Fence {
  notAfter: number;
}

// --- batches ---------------------------------------------------------------------------------

/**
 * One request's answer in a batch update: its value, or its refusal (a failure type from
 * `Reason` and a message). A batch carries many callers' requests in one update, so that the
 * server's per-workflow limits (10 updates in flight, 2,000 a run) bound batches, not resources.
 */
export type BatchAnswer<T> = { ok: T } | { refused: { type: string; message: string } };

// --- every resource workflow (EIP, FIP, DNAT, SNAT) ----------------------------------------

/** A new spec, as an edit of the object makes it; ignored unless `generation` is newer. */
export interface SpecChange<S = EipSpec | NatSpec> {
  spec: S;
  generation: number;
}
export const specChangedSignal = defineSignal<[SpecChange]>('specChanged');
export const statusQuery = defineQuery<EipStatus | NatStatus>('status');
/** "Look at your gateway again": its readiness changed, it is new (re-assert what you hold on it), or it is being deleted. */
export const gatewayChangedSignal = defineSignal('gatewayChanged');
/** "Look at your EIP again": an EIP became ready. */
export const eipChangedSignal = defineSignal('eipChanged');

// --- the EIP workflow ------------------------------------------------------------------------

/** Where a claimed EIP lives: the address and the gateway its rules go to. */
export interface ClaimedEip {
  address: string;
  gateway: string;
  /** The EIP's `status.nat` for the claimer to write (it said it can: `NatWriter`), the EIP writing none of its own. */
  writeNat?: NatWrite;
}
/**
 * A claimer that can write its EIP's `status.nat` (as Kube-OVN's NAT rules write it): a claim that
 * only changes that field is then written by the rule's call, beside its apply, rather than by a
 * call and a workflow task of the EIP's own.
 */
export interface NatWriter {
  writesNat: true;
}
/** The EIP object's `status.nat` to change from `from` to `to`: written only while it still is `from` (else a newer status is there). */
export interface NatWrite {
  object: KubeRef;
  from: string;
  to: string;
}
/**
 * How long a claim may wait for an EIP that is taking its address as it arrives (the rule created
 * just after its EIP): answered once the EIP is Ready, or refused as not ready if that takes longer.
 */
export interface ClaimWait {
  forMs: number;
}
/** A NAT rule takes (a share of) the EIP; refused unless Ready (or soon: `ClaimWait`) and compatible with its other users. */
export const claimEipUpdate = defineUpdate<ClaimedEip, [EipClaim, Fence?, ClaimWait?, NatWriter?]>('claim');
export const unclaimEipUpdate = defineUpdate<void, [{ owner: string }]>('unclaim');
/** The NAT rules holding a claim on this EIP now (a rule holds its claim while its rule is on the gateway). */
export const eipClaimsQuery = defineQuery<EipClaim[]>('claims');
/**
 * What a NAT rule watching an EIP waits for; the EIP signals it `eipChanged` at once when that
 * already holds, else at its next change. `ready`: the EIP is Ready (a watch without `until`, as
 * older rules send it, means this). `claimable`: a claim of this `kind` would now be taken.
 * `changed`: the next change only (a rule refused by the gateway, which it must not retry in a loop).
 */
export type WatchUntil = { until?: 'ready' | 'changed' } | { until: 'claimable'; kind: NatKind };
export type EipWatch = { watcher: string } & WatchUntil;
/** A NAT rule waiting on this EIP (not ready, or a refused claim): signal it `eipChanged` when what it waits for holds. */
export const watchEipSignal = defineSignal<[EipWatch]>('watchEip');

// --- the gateway workflow --------------------------------------------------------------------

export const agentStartedSignal = defineSignal<[AgentInfo]>('agentStarted');
/** Resolves once the address is on the gateway. */
export const bindEipUpdate = defineUpdate<void, [{ owner: string } & EipAddress, Fence?]>('bindEip');
/** `applied` is false when the agent is down (it is restored without the address). */
export const unbindEipUpdate = defineUpdate<{ applied: boolean }, [{ owner: string }]>('unbindEip');
/** Sets (or replaces) a rule; resolves once applied. */
export const setRuleUpdate = defineUpdate<void, [NatRule, Fence?]>('setRule');
/** Removes a rule and its conntrack entries; `applied` is false when the agent is down (it is restored without it). */
export const removeRuleUpdate = defineUpdate<{ applied: boolean }, [{ owner: string }]>('removeRule');
/**
 * Its wire name is 'state', as the IPAM's (another workflow type: no clash). Not renamed: clients of
 * this release query runs that the last release's workers may still serve, which answer only
 * 'state' (test/gateway-handover.test.ts queries one).
 */
export const gatewayStateQuery = defineQuery<GatewayState>('state');
/** One of the four gateway requests above, with the fence of the attempt that sent it. */
export type GatewayRequest =
  | { bind: { owner: string } & EipAddress; fence?: Fence }
  | { unbind: { owner: string } }
  | { setRule: NatRule; fence?: Fence }
  | { removeRule: { owner: string } };
/** Answers: bind and setRule `null`, unbind and removeRule `{ applied }`. Resolves once every change in it is applied (or the agent is not ready). */
export const gatewayRequestsUpdate = defineUpdate<BatchAnswer<{ applied: boolean } | null>[], [GatewayRequest[]]>('gatewayRequests');
/**
 * The gateway's spec changed (its VpcNatGateway, or the VPC subnet behind it). `kube` names the
 * VpcNatGateway: a gateway workflow linked to no object (registered by the CLI, as `npm start`
 * does) or to an older one adopts it.
 */
export const gatewaySpecSignal = defineSignal<[SpecChange<GatewaySpec> & { kube?: { uid: string } }]>('gatewaySpecChanged');
/**
 * "Bring your agent to your desired state, exactly": the audit's repair of what a gateway carries
 * that its workflow did not put there, or lost (the same full restore a new agent instance gets).
 */
export const restoreGatewaySignal = defineSignal('restoreGateway');
/** `setRule`'s rule may carry its resource's name, for messages only: it is not part of the rule (rules are compared). */
export type NamedNatRule = NatRule & { name?: string };

// --- the IPAM workflow -----------------------------------------------------------------------

export const allocateUpdate = defineUpdate<Allocation, [AllocateRequest, Fence?]>('allocate');
/** The address released, or null when the owner held none. */
export const releaseUpdate = defineUpdate<string | null, [{ owner: string }]>('release');
/** Wire name 'state', kept for the last release's runs (see gatewayStateQuery). */
export const ipamStateQuery = defineQuery<IpamState>('state');
export type IpamRequest = { allocate: AllocateRequest; fence?: Fence } | { release: { owner: string } };
/** Allocations and releases in the order sent; answers: an `Allocation`, or the address released (null when none was held). */
export const ipamRequestsUpdate = defineUpdate<BatchAnswer<Allocation | string | null>[], [IpamRequest[]]>('ipamRequests');
/** The Subnet's spec changed (excludeIps, gateway, ...). */
export const subnetSpecSignal = defineSignal<[SpecChange<SubnetSpec>]>('subnetSpecChanged');
/** `state` without the allocations: small at any subnet size (what the bridge asks at every resync). */
export const ipamUsageQuery = defineQuery<IpamSummary>('usage');

// --- activities ------------------------------------------------------------------------------

/** A ready EIP as a NAT rule sees it, found by name. */
export interface EipForRule {
  workflowId: string;
  ready: boolean;
  /** Its phase, when it is not ready. */
  reason: string;
  /** Its gateway, as its visibility record names it (rules of the last release's lookups have none). */
  gateway?: string;
}

/** A refusal carried in an answer rather than thrown: its reason (the failure type) and message. */
export interface Refused {
  reason: string;
  message: string;
}

/**
 * What `takeAddress` did: the address allocated and bound, or the step that was refused. `mayHold`:
 * something may be held (the bind was refused after the allocation, or an earlier attempt of the
 * call, which timed out, may have taken what this one was refused), so the caller gives it back.
 */
export type TakenAddress = ({ bound: Allocation } & ReadyWritten) | { refused: Refused; step: 'gateway' | 'allocate' | 'bind'; mayHold: boolean };

/**
 * A first call from the newest types that writes its resource's Ready status itself once it has
 * made it Ready (`readyStatus` of `status`, the one before, with what it took and the worker's
 * clock; `generation`, the one it observes): a status write, its call and a workflow task fewer
 * per resource. A worker from before it ignores the field; a write that fails is left to the run.
 */
export interface WritesReady {
  writeReady?: { object: KubeRef; status: PhasedStatus; generation: number };
}
/** The status such a call wrote, when it did. */
export interface ReadyWritten {
  readyWritten?: PhasedStatus;
}

/**
 * A first call that was to adopt its Kubernetes object first (`adopt`) found it gone or being
 * deleted, and did nothing else; `mayHold`: an earlier attempt of the call, which timed out, may
 * have adopted it and taken what it takes.
 */
export interface NotAdopted {
  notAdopted: 'gone' | 'deleting';
  mayHold: boolean;
}

/**
 * What `claimAndApply` did: the EIP claimed and the rule applied; claimed and the rule not applied
 * (refused, or the EIP is on another gateway than expected); or the claim refused (`mayHold` as in
 * `TakenAddress`: an earlier attempt may have claimed and applied).
 */
export type ClaimedAndApplied = ({ applied: ClaimedEip } & ReadyWritten) | { claimed: ClaimedEip; notApplied: Refused } | { claimRefused: Refused; mayHold: boolean };

/**
 * What `findClaimAndApply` did: the EIP found and `claimAndApply`'s answer; or only what a lookup
 * answers (null: no such EIP; not ready, and asked to wake the rule), with `mayHold` when an
 * earlier attempt of the call may have claimed and applied.
 */
export type FoundClaimedAndApplied = { eip: EipForRule; taken: ClaimedAndApplied } | { eip: EipForRule | null; mayHold: boolean };

export interface TakeAddressRequest extends WritesReady {
  gateway: string;
  subnet: string;
  owner: string;
  requested?: string;
  wake?: { eip: string; woken: string[] };
}
export type FindClaimAndApplyRequest = { eip: string; watch: EipWatch; rule: NatRule } & EipClaim & WritesReady;

/**
 * Calls from one workflow to another, made as activities (a workflow cannot send an update):
 * the resource workflows' way to the IPAM, gateway and EIP workflows. Run by the control worker.
 */
export interface WorkflowCallActivities {
  /**
   * An EIP's three steps in one call, in their order: is the gateway ready, allocate, bind; a refusal
   * is answered, never thrown. Once bound, the
   * rules waiting for EIP `wake.eip` by name are woken (`notifyEipWaiters`), but those in `wake.woken`.
   */
  takeAddress(req: TakeAddressRequest): Promise<TakenAddress>;
  /**
   * `takeAddress` after adopting its Kubernetes object `adopt` (`kubeAdopt`): gone or being
   * deleted, nothing else is done. A name of its own, not a field of `takeAddress`: a worker from
   * before it, which would ignore the field, never takes the call.
   */
  adoptAndTakeAddress(req: TakeAddressRequest & { adopt: KubeRef }): Promise<TakenAddress | NotAdopted>;
  allocateAddress(req: { subnet: string; owner: string; requested?: string }): Promise<Allocation>;
  releaseAddress(req: { subnet: string; owner: string }): Promise<string | null>;
  gatewayReadiness(gateway: string): Promise<GatewayReadiness>;
  bindAddress(req: { gateway: string; owner: string } & EipAddress): Promise<void>;
  unbindAddress(req: { gateway: string; owner: string }): Promise<{ applied: boolean }>;
  /**
   * An EIP's release in one call: its address off `gateway`, then, once the gateway has applied
   * that, its allocation back to `subnet`. Not applied (the gateway is not ready): the allocation
   * is kept, and the caller asks again.
   */
  unbindAndRelease(req: { gateway: string; subnet: string; owner: string } & LastCall): Promise<Removed>;
  /** `watch`: when the EIP exists but is not ready, it is asked at once to wake the rule once that holds. */
  eipForRule(eip: string, watch?: EipWatch): Promise<EipForRule | null>;
  claimEip(req: { eipWorkflowId: string; wait?: ClaimWait } & Partial<NatWriter> & EipClaim): Promise<ClaimedEip>;
  /**
   * A NAT rule's two steps in one call: claim the EIP, then set `rule` (its `eip` filled with the
   * claimed address) on the claimed EIP's gateway, if that is `gateway`. A refusal is answered,
   * never thrown; a rule refused keeps the claim.
   */
  claimAndApply(req: { eipWorkflowId: string; gateway: string; rule: NatRule } & EipClaim): Promise<ClaimedAndApplied>;
  /**
   * A NAT rule's first call: find EIP `eip` by name, claim it (waiting a moment for one that is
   * taking its address), set `rule` on its gateway. Not found, or not ready in time: the lookup's
   * answer, with the EIP asked to wake `watch.watcher` once it is ready.
   */
  findClaimAndApply(req: FindClaimAndApplyRequest): Promise<FoundClaimedAndApplied>;
  /** `findClaimAndApply` after adopting its Kubernetes object `adopt`, as `adoptAndTakeAddress`. */
  adoptAndFindClaimAndApply(req: FindClaimAndApplyRequest & { adopt: KubeRef }): Promise<FoundClaimedAndApplied | NotAdopted>;
  /**
   * What a `findClaimAndApply` may have taken, given back in one call: the rule `ruleOwner` off
   * every gateway by its tag, then the claim of `owner` on EIP `eipWorkflowId` (when known) or on
   * the EIP named `eip`.
   */
  giveBackByIdentity(req: { eip: string; owner: string; ruleOwner: string; eipWorkflowId?: string }): Promise<void>;
  /**
   * A NAT rule's release in one call: rule `owner` and its conntrack entries off `gateway`, then,
   * once the gateway has applied that, the claim of `claimOwner` on EIP `eipWorkflowId` given back.
   * Not applied (the gateway is not ready): the claim is kept, and the caller asks again.
   */
  removeRuleAndUnclaim(req: { gateway: string; owner: string; eipWorkflowId: string; claimOwner: string } & LastCall): Promise<Removed>;
  unclaimEip(req: { eipWorkflowId: string; owner: string }): Promise<void>;
  setGatewayRule(req: { gateway: string; rule: NatRule }): Promise<void>;
  removeGatewayRule(req: { gateway: string; owner: string }): Promise<{ applied: boolean }>;
  /** Gives back an EIP's address and binding by owner, in every subnet and gateway (a cleanup that no longer knows where). */
  releaseEverywhere(req: { owner: string }): Promise<void>;
  /** Removes a rule by its tag from every gateway (a cleanup that no longer knows where it was applied). */
  removeGatewayRuleEverywhere(req: { owner: string }): Promise<void>;
  /** Signals `gatewayChanged` to every running resource workflow naming this gateway; returns how many. */
  notifyGatewayWaiters(gateway: string): Promise<number>;
  /** The EIPs (running workflows) that name this gateway, as `eip <name>`. */
  gatewayUsers(gateway: string): Promise<string[]>;
  /** Wakes the NAT rules waiting for EIP `eip` (without a name: for any EIP), but those in `woken` (the EIP's watchers, woken by it already); returns how many. */
  notifyEipWaiters(eip?: string, woken?: string[]): Promise<number>;
}

/** A finalizer to take off, with the status not yet written (written first if another finalizer keeps the object). */
export type KubeRelease = KubeRef & { status?: Record<string, unknown> };

/**
 * A cleanup's last call (the newest types): once its own steps are done and applied, it also
 * releases the Kubernetes object `releaseObject` (`kubeRelease`), a call and a workflow task fewer
 * per deleted object. A worker from before it ignores the field; the answer says whether it did.
 */
export interface LastCall {
  releaseObject?: KubeRelease;
}

/** What a removal answered: applied on its gateway (else asked again); `objectReleased` when it released its object too. */
export interface Removed {
  applied: boolean;
  objectReleased?: true;
}

/** Kubernetes writes for resources that come from the cluster. Run by the control worker. */
export interface KubeActivities {
  /** Is the object there and not being deleted? Then the finalizer goes on, before anything else. */
  kubeAdopt(ref: KubeRef): Promise<{ exists: boolean; deleting: boolean }>;
  kubePublishStatus(ref: KubeRef & { status: Record<string, unknown> }): Promise<void>;
  /** An EIP's `status.nat`, handed to its claimer (`NatWrite`). */
  kubeWriteNat(write: NatWrite): Promise<void>;
  /** Removes the finalizer: the last step of every cleanup. `status`, the last one not written yet, is written first if another finalizer keeps the object. */
  kubeRelease(ref: KubeRelease): Promise<void>;
}

/** The audit's control side. Run by the control worker. */
export interface AuditActivities {
  /** Every running resource workflow, every gateway's and IPAM's state, and (with Kubernetes) the objects; the gateways' readings come from their agents. */
  observeControl(): Promise<ControlObservation>;
  /** Applies one repair that goes through a workflow or the API, after checking it is still needed and safe. */
  repair(repair: Repair): Promise<{ result: 'applied' | 'skipped'; detail: string }>;
  /** Whether an EIP holds `address` now (bound on the gateway, or allocated in any IPAM), and whether a rule on the gateway forwards it. */
  addressInUse(req: { gateway: string; address: string }): Promise<{ held: boolean; forwarded: boolean }>;
}

/** The audit workflow's input: `fix` applies the repairs; `graceMs` separates the two observations whose common findings it reports. */
export interface AuditInput {
  fix?: boolean;
  graceMs?: number;
}
export type { AuditReport };

/** The activities a gateway agent runs, on its gateway's own task queue. */
export interface GatewayAgentActivities {
  agentInfo(): Promise<AgentInfo>;
  /** Makes the EIP addresses on the external interface exactly `desired`. */
  reconcileEipAddresses(desired: EipAddress[]): Promise<{ added: string[]; removed: string[] }>;
  /** Creates natflow's chains and jumps; idempotent. */
  initNatChains(): Promise<void>;
  /**
   * One batch: removes rules by owner tag, adds the missing ones (`replaceAll`: nothing else stays);
   * `flushConntrack`: then flushes the conntrack entries of every rule it removed (`flushed`).
   */
  applyNatRules(change: { add: NatRule[]; removeOwners: string[]; replaceAll?: boolean; flushConntrack?: boolean }): Promise<{ added: number; removed: number; flushed?: number }>;
  flushConntrack(targets: ConntrackTarget[]): Promise<number>;
  /**
   * The gateway workflow's liveness check, which writes no history while all is well: runs on
   * agent `instanceId` for `forMs`, heartbeating; returns early when its agent stops, or at once
   * when another instance picked it up. A heartbeat timeout means the agent is gone.
   */
  agentSession(req: { instanceId: string; forMs: number }): Promise<AgentSessionEnd>;
  /** Adds `add` and removes the addresses in `remove`; every other EIP address stays. */
  changeEipAddresses(change: { add: EipAddress[]; remove: string[] }): Promise<{ added: string[]; removed: string[] }>;
  /** `changeEipAddresses`, then `applyNatRules`, in one call (an agent whose info says `changesInOneCall`). */
  applyGatewayChange(change: { eips: Parameters<GatewayAgentActivities['changeEipAddresses']>[0]; rules: Parameters<GatewayAgentActivities['applyNatRules']>[0] }): Promise<void>;
  /** What the gateway really carries, for the audit: natflow's chains but their static rules, the external interface's addresses, translated conntrack entries (null when the table is too large to list). */
  readGateway(): Promise<GatewayReading>;
  /** The audit's repair of rules someone else left in natflow's chains: deletes those still there and untagged; returns how many. */
  removeUntaggedRules(rules: { chain: string; spec: string[] }[]): Promise<number>;
}
