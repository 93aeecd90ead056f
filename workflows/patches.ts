// Patches of the resource workflows (EIP, FIP, DNAT, SNAT). The first call of a patch in a run
// records a marker and (the SDK's Core does this) upserts the TemporalChangeVersion search
// attribute: a visibility write, which on the dev server costs as much as an activity (measured:
// 400 workflows of 4 no-op activities, 18.0 s plain, 31.4 s with a new patch before each). A run
// started since 'lean-history' took every patch named in this code at its start, so it asks for
// none of them again; older histories ask for each where they always did. 'local-calls' is the
// next such base: a run that takes it takes 'lean-history' too, without asking for it;
// 'remote-status' the next: it takes 'local-calls' (and so 'lean-history'); 'remote-calls' the
// next: it takes 'lean-history' and every patch after it, but calls through remote activities;
// 'combined-calls' the next: it takes 'remote-calls' and every patch after it; and
// 'find-claim-apply' the newest: it takes 'combined-calls'.
//
// Every new resource workflow is of a `…V2` type (workflows/index.ts): it starts on the newest base
// without asking for it, so it records no patch marker at all. The marker's visibility write was
// a tenth of a burst (1,000 EIP+FIP pairs Ready in 70.9 s with it, 61.5 s without). The types
// without the suffix are the runs started before, which replay and continue as they did. A new
// base from now on is a new type (`…V3`): a worker that does not know it never takes its tasks.
// `eipWorkflowV3` is the first: the V2 base, and an EIP becoming ready takes the claims waiting for
// its address in the same step (workflows/eip.ts), one status write less than a V2 run. The NAT
// rules' `…V3` types: the V2 base, and a rule's release takes it off its gateway and gives its
// claim back in one call (workflows/nat-rule.ts), a workflow task and an activity less per delete.
// The `…V4` types: the V3 base; an EIP's release takes its address off its gateway and gives it
// back to its subnet in one call (workflows/eip.ts), a workflow task and an activity less per
// delete; and a deleting object's status is written only once it has lasted a moment
// (workflows/kube-sync.ts), a status write less per quick delete of a resource from Kubernetes.
// The `…V5` types: the V4 ones, and a resource from Kubernetes adopts its object in its first call
// (activities/combined-calls.ts), not in a call of its own: a call and a workflow task less per object.
// The `…V6` types: the V5 ones, and from Kubernetes a resource's first call writes the Ready status
// it makes, and its cleanup's last call (a rule's removal and unclaim, an EIP's unbind and release)
// also releases its object: a call and a workflow task less each.
import * as wf from '@temporalio/workflow';

export const LEAN_HISTORY = 'lean-history';
/** The resource workflow calls through local activities (workflows/activity-proxies.ts). */
export const LOCAL_CALLS = 'local-calls';
/**
 * Status goes to Kubernetes through remote activities (the other calls stay local): the status
 * publisher runs beside the lifecycle, and a local activity of its still running when its workflow
 * task is heartbeated, with a delete or signal arriving in the next task, replays in another order
 * than it ran (a nondeterminism error: the SDK's, see README "Known SDK issue").
 */
export const REMOTE_STATUS = 'remote-status';
/**
 * Every call goes through remote activities again. The lifecycle's own local calls met the same SDK
 * issue as the status publisher did: a local call still running when its task was heartbeated (the
 * control worker saturated: tasks of 7 s at 200 pairs), a signal or delete in the next task, and
 * the run failed every task after its next replay (the 5,000-operation soak, seed 21: EIPs e2323
 * and e2304). A stuck EIP is worth more than the throughput local calls won.
 */
export const REMOTE_CALLS = 'remote-calls';
/**
 * A new EIP takes its address (gateway ready? allocate, bind) and a NAT rule its EIP and gateway
 * (claim, set the rule) in one call each; a rule whose EIP's record names no gateway still takes
 * them one by one. It takes 'remote-calls' and every patch named since, without asking.
 */
export const COMBINED_CALLS = 'combined-calls';
/**
 * A NAT rule's first call finds its EIP, claims it (the claim waits a moment for an EIP taking its
 * address) and applies (activities/combined-calls.ts). It takes 'combined-calls'.
 */
export const FIND_CLAIM_APPLY = 'find-claim-apply';

/**
 * A run continued while giving back what it held (its gateway not ready to take the address or
 * rule off) finishes that first: older runs took a new address or EIP over the old one, which
 * then stayed allocated or claimed. Asked only by such a run, so others record no marker.
 */
export const RESUME_RELEASE = 'resume-release';

/**
 * A NAT rule continued while its gateway was not ready to take its rule tries again with what it
 * holds, on its own timer: before its first Ready, older runs claimed the EIP again and, refused
 * (an EIP being deleted refuses every claim), forgot the one the EIP waits on; since, they waited
 * for the gateway's wake-up alone. Asked only by such a run.
 */
export const RESUME_APPLY = 'resume-apply';

/**
 * What a run hands over beyond what it holds (an EIP's changes signalled during the hand-over, a
 * rule's `NatflowEip`) is taken by the next run. Asked only when there is something, so that a run
 * whose first tasks a worker from before it ran (which ignored them) replays as it ran.
 */
export const HAND_OVER = 'hand-over';

/** A resource workflow type's version: 1 for the types without a suffix, then `…V2` to `…V6`. */
export type TypeVersion = 1 | 2 | 3 | 4 | 5 | 6;

/** Whether this run takes the patch `id`; call `patches()` in the workflow's first task, before any other patch. */
export type Patched = (id: string) => boolean;

export interface RunPatches {
  lean: boolean;
  local: boolean;
  remoteStatus: boolean;
  /** A patch from before 'lean-history'. */
  patched: Patched;
  /** A patch from after it and before 'remote-calls', which older runs ask for where its behaviour starts (docs/changing-workflows.md). */
  patchedSinceLean: Patched;
  /** A patch from after 'remote-calls' and before 'combined-calls', asked the same way. */
  patchedSinceRemote: Patched;
  /** The run takes its steps in combined calls where it can ('combined-calls'). */
  combined: boolean;
  /** A rule's first call finds, claims and applies ('find-claim-apply'). */
  findFirst: boolean;
}

/** `newest`: a run of a `…V2` type, which takes every patch named here without asking. */
export function patches(newest: boolean): RunPatches {
  const all = () => true;
  const combined = { lean: true, local: false, remoteStatus: true, patched: all, patchedSinceLean: all, patchedSinceRemote: all, combined: true };
  if (newest || wf.patched(FIND_CLAIM_APPLY)) return { ...combined, findFirst: true };
  if (wf.patched(COMBINED_CALLS)) return { ...combined, findFirst: false };
  const asked: Patched = (id) => wf.patched(id);
  if (wf.patched(REMOTE_CALLS)) return { lean: true, local: false, remoteStatus: true, patched: all, patchedSinceLean: all, patchedSinceRemote: asked, combined: false, findFirst: false };
  const remoteStatus = wf.patched(REMOTE_STATUS);
  const local = remoteStatus || wf.patched(LOCAL_CALLS);
  const lean = local || wf.patched(LEAN_HISTORY);
  return { lean, local, remoteStatus, patched: (id) => lean || wf.patched(id), patchedSinceLean: asked, patchedSinceRemote: asked, combined: false, findFirst: false };
}
