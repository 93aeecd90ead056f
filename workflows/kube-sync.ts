// A workflow's link to its Kubernetes object (a resource's, or a gateway's VpcNatGateway), when it has one (started by the bridge):
// adopt it first (it still exists and is not being deleted → finalizer on), publish status as it
// changes, release it last (finalizer off). Resources without an object (the CLI) skip all three.
import * as wf from '@temporalio/workflow';
import type { KubeRef } from '../domain/kube.js';
import type { ResourceRef } from '../domain/names.js';
import { sameStatus, type PhasedStatus } from '../domain/status.js';
import type { KubeRelease, NotAdopted as NotAdoptedAnswer, Removed, WritesReady } from '../domain/workflow-api.js';
import { kube as remoteKube, type CallProxies } from './activity-proxies.js';

export interface KubeSync {
  /**
   * 'gone': the object no longer exists, there is nothing to do; 'deleting': only cleanup is left.
   * With `adoptsWithFirstCall`, 'adopted' at once: the lifecycle's first call adopts it.
   */
  adopt(): Promise<'adopted' | 'gone' | 'deleting'>;
  /** The object a call is still to adopt before it does anything, while none has (`adoptsWithFirstCall`). */
  adoption(): KubeRef | undefined;
  /**
   * A lifecycle's first call: through `adopting`, with the object to adopt first, while no call has
   * adopted it; else through `plain`. The object gone or being deleted: NotAdopted thrown (for
   * `adoptedLifecycle`), after `nothingHeld()` when no earlier attempt of the call may hold anything.
   */
  firstCall<A extends object, R extends object>(
    calls: FirstCalls<A, R>,
    req: A,
    summary: string,
    nothingHeld: () => void,
    before: () => { status: PhasedStatus; generation: number },
  ): Promise<R>;
  /** Adopts the object with a call of its own, if no call has yet; NotAdopted thrown when it is gone or being deleted. */
  ensureAdopted(): Promise<void>;
  /**
   * Publishes the latest status soon; intermediate ones may be skipped. `passing`: a step it only
   * passes through (see `deletingWritesOnlyWaits`). `written`: the status the first call wrote
   * (`writesReadyWithFirstCall`: made from `firstCall`'s `before()`, sent with the call; no status
   * of the publisher's is written while it runs): when it is this one, it is not written again.
   */
  publish(status: Record<string, unknown>, opts?: { passing?: boolean; written?: PhasedStatus }): void;
  /**
   * `status` is written by another's call (an EIP's `status.nat`, by the rule that claimed it): it
   * counts as published, when nothing of this publisher's is pending or in flight (a write of that
   * could land after the other's), nor handed over since its last write (two handed-over writes,
   * each conditional on the value before it, could land in either order; a write of the
   * publisher's carries everything). The object to write to; undefined when not handed over (then
   * publish it).
   */
  handOver(status: Record<string, unknown>): KubeRef | undefined;
  /** The cleanup has begun (see `deletingStatusLasts`). */
  cleaningUp(): void;
  /**
   * The cleanup's last call, `call(releaseObject)`: with `releasesWithLastCall`, made with the object
   * to release once its own steps are applied and `final()`, the status the cleanup will end with
   * (written only if another finalizer keeps the object), after a status write in flight has landed;
   * no status is written until it answers, and `release()` has nothing left to do if it released
   * the object. Without, made at once without it: older types' commands keep their recorded order.
   */
  lastCall<R extends Removed>(call: (releaseObject?: KubeRelease) => Promise<R>, final: () => Record<string, unknown>): Promise<R>;
  release(): Promise<void>;
}

/** A call through either kind of activity proxy, with the summary the Web UI shows. */
interface Call<A, R> {
  executeWithOptions(options: { summary: string }, args: [A]): Promise<R>;
}
/** A lifecycle's first call, with and without the adoption of its object. */
interface FirstCalls<A, R> {
  plain: Call<A & WritesReady, R>;
  adopting: Call<A & WritesReady & { adopt: KubeRef }, R | NotAdoptedAnswer>;
}

/**
 * How long a deleting object's status change waits before it is written (the newest status then),
 * in the runs that wait: most cleanups end sooner, and then the object goes with the release,
 * which carries the status not yet written. A status nobody could have read costs a write and a
 * workflow task.
 */
export const DELETING_STATUS_AFTER_MS = 3_000;

export interface KubeSyncOptions {
  /**
   * Runs since 'combined-calls': the status not yet written when the finalizer comes off goes with
   * the release, which writes it only if another finalizer keeps the object (else it is gone the
   * moment ours is off): one call less.
   */
  finalStatusWithRelease?: boolean;
  /**
   * The V4 types: once the cleanup has begun, a status change is written DELETING_STATUS_AFTER_MS
   * later, the newest status then (a cleanup waiting for its users or its gateway still shows why);
   * a quick delete writes none, its last status going with the release. Takes
   * `finalStatusWithRelease` (without it, a release would wait out the delay).
   */
  deletingStatusLasts?: boolean;
  /**
   * The V5 types: the object is adopted by the lifecycle's first call (`adoption()`, carried by its
   * combined first call), a call and a workflow task fewer per object than a call of its own.
   */
  adoptsWithFirstCall?: boolean;
  /**
   * The V5 types: once the cleanup has begun, a status it only passes through (its rules or its
   * address being taken off: `passing`) is not written at all, only one that waits (for its users,
   * its gateway), as `deletingStatusLasts` says; the release carries the last one. In a burst of
   * deletes every cleanup outlasted the delay, and each wrote a status nobody could read: a timer,
   * a call and two workflow tasks per object when they were scarcest. Takes `deletingStatusLasts`
   * and `finalStatusWithRelease` (without it, a release would wait for a write that never comes).
   */
  deletingWritesOnlyWaits?: boolean;
  /**
   * The V6 types: the cleanup's last call (a NAT rule's removal and unclaim, an EIP's unbind and
   * release) releases the object once its own steps are applied (`lastCall`), not a
   * `kubeRelease` call of its own: a call and a workflow task fewer per deleted object. Takes
   * `finalStatusWithRelease`.
   */
  releasesWithLastCall?: boolean;
  /**
   * The V6 types: the lifecycle's first call writes the Ready status it makes (`firstCall`'s
   * `before`, `publish`'s `written`), not a `kubePublishStatus` call of the publisher's: a call and a
   * workflow task fewer per resource that becomes Ready at once.
   */
  writesReadyWithFirstCall?: boolean;
}

/**
 * A lifecycle's first call found its object gone or being deleted (`adoptsWithFirstCall`), and took
 * nothing, unless `mayHold`: an earlier attempt of the call may have.
 */
export class NotAdopted extends Error {
  constructor(
    readonly answer: 'gone' | 'deleting',
    readonly mayHold: boolean,
  ) {
    super(`its object is ${answer}`);
  }
}

/**
 * `kube`: the proxy its calls go through (a resource workflow's are local since 'local-calls');
 * `status`: the one status writes go through.
 */
export function kubeSync(kind: KubeRef['kind'], resource: ResourceRef, kube: CallProxies['kube'] = remoteKube, status: CallProxies['status'] = kube, options: KubeSyncOptions = {}): KubeSync {
  const ref = { kind, name: resource.name, uid: resource.uid };
  if (!resource.fromKube) {
    return { adopt: async () => 'adopted', adoption: () => undefined, firstCall: ({ plain }, req, summary) => plain.executeWithOptions({ summary }, [req]), ensureAdopted: async () => undefined, publish: () => undefined, handOver: () => undefined, cleaningUp: () => undefined, lastCall: (call) => call(), release: async () => undefined };
  }
  const { finalStatusWithRelease = false, deletingStatusLasts = false, adoptsWithFirstCall = false, deletingWritesOnlyWaits = false, releasesWithLastCall = false, writesReadyWithFirstCall = false } = options;
  /** No call has adopted the object yet (`adoptsWithFirstCall`). */
  let unadopted = false;
  const adoptByCall = async () => {
    const { exists, deleting } = await kube.kubeAdopt.executeWithOptions({ summary: `${kind} ${resource.name} exists? add finalizer` }, [ref]);
    return !exists ? 'gone' : deleting ? 'deleting' : 'adopted';
  };

  let latest: Record<string, unknown> | null = null;
  /** The latest status is of a step it only passes through. */
  let latestPassing = false;
  let version = 0;
  let published = 0;
  /** A status write is in flight. */
  let writing = false;
  /** The release has begun (or a last call that may release is under way): what is left to write goes with it. */
  let releasing = false;
  /** The cleanup has begun. */
  let cleaning = false;
  /** The cleanup's last call released the object. */
  let releasedByCall = false;
  /** A first call that may write the status is under way: the publisher waits, its write could land after the call's. */
  let callWrites = false;
  /** A status was handed over since the publisher's last write. */
  let handed = false;
  // One publisher, outside cancellation, always sending the newest status: a burst of phase
  // changes costs one write, and the final status still goes out while cleanup runs.
  /** A status the cleanup only passes through, which the V5 types leave to the release. */
  const unwrittenWhileDeleting = () => cleaning && deletingWritesOnlyWaits && latestPassing;
  void wf.CancellationScope.nonCancellable(async () => {
    for (;;) {
      await wf.condition(() => version > published && !releasing && !callWrites && !unwrittenWhileDeleting());
      // Cleaning up (the V4 types): a change is written DELETING_STATUS_AFTER_MS later (the newest
      // status then); released before that (or in the same activation as the timer), the release
      // took it, and this publisher is done.
      if (cleaning && deletingStatusLasts) {
        await wf.condition(() => releasing, DELETING_STATUS_AFTER_MS);
        if (releasing || unwrittenWhileDeleting()) continue;
      }
      const sending = version;
      writing = true;
      await status.kubePublishStatus.executeWithOptions({ summary: `status of ${kind} ${resource.name}` }, [{ ...ref, status: latest! }]);
      writing = false;
      handed = false;
      published = sending;
    }
  });
  /** A first call, through `adopting` while no call has adopted the object (see `KubeSync.firstCall`). */
  async function firstCallOf<A extends object, R extends object>({ plain, adopting }: FirstCalls<A, R>, req: A, summary: string, nothingHeld: () => void): Promise<R> {
    if (!unadopted) return plain.executeWithOptions({ summary }, [req]);
    const answer = await adopting.executeWithOptions({ summary: `adopt ${kind} ${resource.name}, ${summary}` }, [{ ...req, adopt: ref }]);
    if ('notAdopted' in answer) {
      if (!answer.mayHold) nothingHeld();
      throw new NotAdopted(answer.notAdopted, answer.mayHold);
    }
    unadopted = false;
    return answer;
  }

  return {
    async adopt() {
      if (!adoptsWithFirstCall) return adoptByCall();
      unadopted = true;
      return 'adopted';
    },
    adoption: () => (unadopted ? ref : undefined),
    firstCall(calls, req, summary, nothingHeld, before) {
      if (!writesReadyWithFirstCall) return firstCallOf(calls, req, summary, nothingHeld); // as older types always made it
      return (async () => {
        try {
          callWrites = true; // the publisher's write could land after the call's
          await wf.condition(() => !writing); // rejected by a delete meanwhile: the flag still comes down
          return await firstCallOf(calls, { ...req, writeReady: { object: ref, ...before() } }, summary, nothingHeld);
        } finally {
          callWrites = false;
        }
      })();
    },
    async ensureAdopted() {
      if (!unadopted) return;
      const adoption = await adoptByCall();
      if (adoption !== 'adopted') throw new NotAdopted(adoption, false);
      unadopted = false;
    },
    publish(status, opts = {}) {
      // The first call wrote this one, and no write of the publisher's can land after it.
      const writtenAlready = opts.written !== undefined && !writing && sameStatus(status, opts.written);
      latest = status;
      latestPassing = opts.passing ?? false;
      version++;
      if (writtenAlready) published = version;
    },
    handOver(status) {
      if (handed || writing || releasing || callWrites || cleaning || published !== version) return undefined;
      handed = true;
      latest = status;
      latestPassing = false;
      published = ++version;
      return ref;
    },
    cleaningUp() {
      cleaning = true;
    },
    lastCall(call, final) {
      if (!releasesWithLastCall) return call();
      releasing = true; // the publisher waits for the answer: a write then could land after the object went
      return wf.condition(() => !writing).then(async () => {
        try {
          const answer = await call({ ...ref, status: final() });
          releasedByCall = answer.objectReleased === true; // not when not applied, nor by a worker from before V6
          return answer;
        } finally {
          releasing = releasedByCall;
        }
      });
    },
    async release() {
      if (releasedByCall) {
        published = version; // the status the call carried was the one the cleanup ends with
        return;
      }
      if (!finalStatusWithRelease) {
        await wf.condition(() => published === version); // the last status lands before the object may go
        await kube.kubeRelease.executeWithOptions({ summary: `remove finalizer of ${kind} ${resource.name}` }, [ref]);
        return;
      }
      releasing = true;
      await wf.condition(() => !writing); // a write in flight lands before the object may go
      const unwritten = version > published ? { status: latest! } : {};
      await kube.kubeRelease.executeWithOptions({ summary: `remove finalizer of ${kind} ${resource.name}` }, [{ ...ref, ...unwritten }]);
      published = version;
    },
  };
}

/**
 * Every resource lifecycle's frame: adopt the object first; run `lifecycle` until a delete
 * (cancellation), then `cleanup` — which also runs alone (`alone`: this run took nothing it knows
 * of) for an object already being deleted, or gone after an attempt that may have taken something.
 * A run continued as new (`carried`: what the last run carried) was adopted already (unless it
 * says `unadopted`) and goes on where the last one was: in its cleanup when it was deleting.
 */
export async function adoptedLifecycle(k8s: KubeSync, lifecycle: () => Promise<void>, cleanup: (alone: boolean) => Promise<void>, carried?: { deleting?: boolean; unadopted?: boolean }): Promise<void> {
  const adoption = carried === undefined ? await k8s.adopt() : carried.deleting ? 'deleting' : carried.unadopted ? await k8s.adopt() : 'adopted';
  if (adoption === 'gone') return;
  if (adoption === 'deleting') {
    k8s.cleaningUp();
    return cleanup(true);
  }
  try {
    await lifecycle();
  } catch (err) {
    // Its first call found the object gone or deleting (adoptsWithFirstCall): as the adoption above.
    if (err instanceof NotAdopted) {
      if (err.answer === 'gone' && !err.mayHold) return;
      k8s.cleaningUp();
      return cleanup(true);
    }
    // A delete is decided by the scope, not by the error: the call in flight when it arrived may
    // have failed in its own way (a timeout, a transient error) and must not skip the cleanup.
    if (!wf.isCancellation(err) && !wf.CancellationScope.current().consideredCancelled) throw err;
    k8s.cleaningUp();
    await cleanup(k8s.adoption() !== undefined); // deleted before any call adopted it: as one only cleaning up
    throw wf.isCancellation(err) ? err : new wf.CancelledFailure('deleted');
  }
}
