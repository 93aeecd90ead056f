// Kubernetes writes for resources that come from the cluster (via the bridge): the finalizer
// that keeps a deleted object until its cleanup has run, and status in Kube-OVN's fields.
// Order is the workflows' job (check → finalizer → side effects; cleanup → finalizer last);
// these calls are each idempotent and tolerate conflicts by retrying.
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { ResourceKind } from '../domain/names.js';

export const FINALIZER = 'natflow.io/cleanup';
export const KUBEOVN_GROUP = 'kubeovn.io';
export const KUBEOVN_VERSION = 'v1';
export const PLURALS: Record<ResourceKind, string> = {
  eip: 'iptables-eips',
  fip: 'iptables-fip-rules',
  dnat: 'iptables-dnat-rules',
  snat: 'iptables-snat-rules',
};

export interface KubeRef {
  kind: ResourceKind;
  name: string;
  uid: string;
}

interface KubeObject {
  metadata?: { uid?: string; resourceVersion?: string; finalizers?: string[]; deletionTimestamp?: string };
}

export type KubeActivities = ReturnType<typeof createKubeActivities>;

const isStatus = (err: unknown, code: number) => err instanceof ApiException && err.code === code;
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export function createKubeActivities(kubeConfig: KubeConfig) {
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  const coords = (ref: KubeRef) => ({ group: KUBEOVN_GROUP, version: KUBEOVN_VERSION, plural: PLURALS[ref.kind], name: ref.name });

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

  return {
    /**
     * The first step of every lifecycle: is the object still there, and not being deleted? If so
     * the finalizer goes on before anything else happens, so a delete can never outrun cleanup.
     */
    async kubeAdopt(ref: KubeRef): Promise<{ exists: boolean; deleting: boolean }> {
      const obj = await current(ref);
      if (!obj) return { exists: false, deleting: false };
      if (obj.metadata?.deletionTimestamp) return { exists: true, deleting: true };
      const finalizers = obj.metadata?.finalizers ?? [];
      if (!finalizers.includes(FINALIZER)) await setFinalizers(ref, obj, [...finalizers, FINALIZER]);
      return { exists: true, deleting: false };
    },

    /** Writes status (merge patch on the status subresource); an object that is gone is fine. */
    async kubePublishStatus(ref: KubeRef & { status: Record<string, unknown> }): Promise<void> {
      if (!(await current(ref))) return;
      try {
        await api.patchClusterCustomObjectStatus({ ...coords(ref), body: { status: ref.status } }, mergePatch);
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    },

    /** The last step of every cleanup: lets Kubernetes remove the object. */
    async kubeRelease(ref: KubeRef): Promise<void> {
      const obj = await current(ref);
      const finalizers = obj?.metadata?.finalizers ?? [];
      if (!obj || !finalizers.includes(FINALIZER)) return;
      try {
        await setFinalizers(ref, obj, finalizers.filter((f) => f !== FINALIZER));
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    },
  };
}
