// A workflow's link to its Kubernetes object (a resource's, or a gateway's VpcNatGateway), when it has one (started by the bridge):
// adopt it first (it still exists and is not being deleted → finalizer on), publish status as it
// changes, release it last (finalizer off). Resources without an object (the CLI) skip all three.
import * as wf from '@temporalio/workflow';
import type { KubeRef } from '../domain/kube.js';
import type { ResourceRef } from '../domain/names.js';
import { kube as remoteKube, type CallProxies } from './activity-proxies.js';

export interface KubeSync {
  /** 'gone': the object no longer exists, there is nothing to do; 'deleting': only cleanup is left. */
  adopt(): Promise<'adopted' | 'gone' | 'deleting'>;
  /** Publishes the latest status soon; intermediate ones may be skipped. */
  publish(status: Record<string, unknown>): void;
  /** The cleanup has begun (see `deletingStatusLasts`). */
  cleaningUp(): void;
  release(): Promise<void>;
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
}

/**
 * `kube`: the proxy its calls go through (a resource workflow's are local since 'local-calls');
 * `status`: the one status writes go through.
 */
export function kubeSync(kind: KubeRef['kind'], resource: ResourceRef, kube: CallProxies['kube'] = remoteKube, status: CallProxies['status'] = kube, options: KubeSyncOptions = {}): KubeSync {
  const ref = { kind, name: resource.name, uid: resource.uid };
  if (!resource.fromKube) return { adopt: async () => 'adopted', publish: () => undefined, cleaningUp: () => undefined, release: async () => undefined };
  const { finalStatusWithRelease = false, deletingStatusLasts = false } = options;

  let latest: Record<string, unknown> | null = null;
  let version = 0;
  let published = 0;
  /** A status write is in flight. */
  let writing = false;
  /** The release has begun: what is left to write goes with it. */
  let releasing = false;
  /** The cleanup has begun. */
  let cleaning = false;
  // One publisher, outside cancellation, always sending the newest status: a burst of phase
  // changes costs one write, and the final status still goes out while cleanup runs.
  void wf.CancellationScope.nonCancellable(async () => {
    for (;;) {
      await wf.condition(() => version > published && !releasing);
      // Cleaning up (the V4 types): a change is written DELETING_STATUS_AFTER_MS later (the newest
      // status then); released before that (or in the same activation as the timer), the release
      // took it, and this publisher is done.
      if (cleaning && deletingStatusLasts) {
        await wf.condition(() => releasing, DELETING_STATUS_AFTER_MS);
        if (releasing) continue;
      }
      const sending = version;
      writing = true;
      await status.kubePublishStatus.executeWithOptions({ summary: `status of ${kind} ${resource.name}` }, [{ ...ref, status: latest! }]);
      writing = false;
      published = sending;
    }
  });
  return {
    async adopt() {
      const { exists, deleting } = await kube.kubeAdopt.executeWithOptions({ summary: `${kind} ${resource.name} exists? add finalizer` }, [ref]);
      return !exists ? 'gone' : deleting ? 'deleting' : 'adopted';
    },
    publish(status) {
      latest = status;
      version++;
    },
    cleaningUp() {
      cleaning = true;
    },
    async release() {
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
 * (cancellation), then `cleanup` — which also runs alone for an object already being deleted.
 * A run continued as new (`carried`: what the last run carried) was adopted already and goes on
 * where the last one was: in its cleanup when it was deleting.
 */
export async function adoptedLifecycle(k8s: KubeSync, lifecycle: () => Promise<void>, cleanup: () => Promise<void>, carried?: { deleting?: boolean }): Promise<void> {
  const adoption = carried === undefined ? await k8s.adopt() : carried.deleting ? 'deleting' : 'adopted';
  if (adoption === 'gone') return;
  if (adoption === 'deleting') {
    k8s.cleaningUp();
    return cleanup();
  }
  try {
    await lifecycle();
  } catch (err) {
    // A delete is decided by the scope, not by the error: the call in flight when it arrived may
    // have failed in its own way (a timeout, a transient error) and must not skip the cleanup.
    if (!wf.isCancellation(err) && !wf.CancellationScope.current().consideredCancelled) throw err;
    k8s.cleaningUp();
    await cleanup();
    throw wf.isCancellation(err) ? err : new wf.CancelledFailure('deleted');
  }
}
