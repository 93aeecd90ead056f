// Kubernetes writes for resources that come from the cluster (via the bridge): the finalizer
// that keeps a deleted object until its cleanup has run, and status in Kube-OVN's fields.
// Order is the workflows' job (check → finalizer → side effects; cleanup → finalizer last);
// these calls are each idempotent and tolerate conflicts by retrying.
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { crd, FINALIZER, type KubeRef } from '../domain/kube.js';
import type { KubeActivities } from '../domain/workflow-api.js';
import { withHeartbeats } from './heartbeats.js';

interface KubeObject {
  metadata?: { uid?: string; resourceVersion?: string; finalizers?: string[]; deletionTimestamp?: string };
}

const isStatus = (err: unknown, code: number) => err instanceof ApiException && err.code === code;
/** A JSON merge patch (RFC 7386): what every natflow write to Kubernetes sends. */
export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export function createKubeActivities(kubeConfig: KubeConfig): KubeActivities {
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  const coords = (ref: KubeRef) => ({ ...crd(ref.kind), name: ref.name });

  /** The object with this uid, or null when it is gone (or a new object took the name). */
  async function current(ref: KubeRef): Promise<KubeObject | null> {
    try {
      const obj = (await api.getClusterCustomObject(coords(ref))) as KubeObject;
      return obj.metadata?.uid === ref.uid ? obj : null;
    } catch (err) {
      if (isStatus(err, 404)) return null;
      throw err;
    }
  }

  async function setFinalizers(ref: KubeRef, obj: KubeObject, finalizers: string[]): Promise<void> {
    // resourceVersion makes this a compare-and-swap: a concurrent change gives 409, and a retry.
    const body = { metadata: { resourceVersion: obj.metadata?.resourceVersion, finalizers } };
    await api.patchClusterCustomObject({ ...coords(ref), body }, mergePatch);
  }

  return withHeartbeats<KubeActivities>({
    // The first step of every lifecycle: a delete can never outrun cleanup.
    async kubeAdopt(ref) {
      const obj = await current(ref);
      if (!obj) return { exists: false, deleting: false };
      if (obj.metadata?.deletionTimestamp) return { exists: true, deleting: true };
      const finalizers = obj.metadata?.finalizers ?? [];
      if (!finalizers.includes(FINALIZER)) await setFinalizers(ref, obj, [...finalizers, FINALIZER]);
      return { exists: true, deleting: false };
    },

    /** Writes status (merge patch on the status subresource); an object that is gone is fine. */
    async kubePublishStatus(ref) {
      if (!(await current(ref))) return;
      try {
        await api.patchClusterCustomObjectStatus({ ...coords(ref), body: { status: ref.status } }, mergePatch);
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    },

    async kubeRelease(ref) {
      const obj = await current(ref);
      const finalizers = obj?.metadata?.finalizers ?? [];
      if (!obj || !finalizers.includes(FINALIZER)) return;
      try {
        // Without ours, the object goes at once unless another finalizer keeps it: only then is its status read again.
        if (ref.status && finalizers.some((f) => f !== FINALIZER)) await api.patchClusterCustomObjectStatus({ ...coords(ref), body: { status: ref.status } }, mergePatch);
        await setFinalizers(ref, obj, finalizers.filter((f) => f !== FINALIZER));
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    },
  });
}
