// Patches of the resource workflows (EIP, FIP, DNAT, SNAT). The first call of a patch in a run
// records a marker and (the SDK's Core does this) upserts the TemporalChangeVersion search
// attribute: a visibility write, which on the dev server costs as much as an activity (measured:
// 400 workflows of 4 no-op activities, 18.0 s plain, 31.4 s with a new patch before each). A run
// started since 'lean-history' took every patch named in this code at its start, so it asks for
// none of them again; older histories ask for each where they always did. 'local-calls' is the
// next such base: a run that takes it takes 'lean-history' too, without asking for it; and
// 'remote-status' the next: it takes 'local-calls' (and so 'lean-history').
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

/** Whether this run takes the patch `id`; call `patches()` in the workflow's first task, before any other patch. */
export type Patched = (id: string) => boolean;

export function patches(): { lean: boolean; local: boolean; remoteStatus: boolean; patched: Patched } {
  const remoteStatus = wf.patched(REMOTE_STATUS);
  const local = remoteStatus || wf.patched(LOCAL_CALLS);
  const lean = local || wf.patched(LEAN_HISTORY);
  return { lean, local, remoteStatus, patched: (id) => lean || wf.patched(id) };
}
