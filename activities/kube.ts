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
/** A JSON merge patch (RFC 7386): how natflow writes finalizers (with a resourceVersion) and the bridge a Subnet's usage. */
export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
/** A JSON patch (RFC 6902): its `test` operations make a write conditional on what the object holds. */
const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
const sameUid = (ref: KubeRef) => ({ op: 'test', path: '/metadata/uid', value: ref.uid });

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

  /**
   * One request: a JSON patch whose first operation tests the uid, so that it writes this object and
   * never a new one of the same name (refused, 422), without reading it first. A 422 is read again
   * to tell a replaced object (fine) from a status the schema refuses (an error).
   */
  async function writeStatus(ref: KubeRef, status: Record<string, unknown>): Promise<void> {
    try {
      await api.patchClusterCustomObjectStatus({ ...coords(ref), body: [sameUid(ref), { op: 'add', path: '/status', value: status }] }, jsonPatch);
    } catch (err) {
      if (isStatus(err, 404) || (isStatus(err, 422) && !(await current(ref)))) return;
      throw err;
    }
  }

  /** A JSON patch made conditional by its `test` operations: 'refused' when a test failed (422), 'gone' when the object is (404). */
  async function patchIf(patch: () => Promise<unknown>): Promise<'applied' | 'refused' | 'gone'> {
    try {
      await patch();
      return 'applied';
    } catch (err) {
      if (isStatus(err, 422)) return 'refused';
      if (isStatus(err, 404)) return 'gone';
      throw err;
    }
  }

  /**
   * Takes natflow's finalizer off this object if its finalizers are still `read` (uid and list
   * tested, one request): true when done or the object is gone, false when a test failed (422:
   * other finalizers than those, or another object of the name).
   */
  async function takeFinalizerOff(ref: KubeRef, read: string[]): Promise<boolean> {
    const rest = read.filter((f) => f !== FINALIZER);
    return (await patchIf(() => api.patchClusterCustomObject({ ...coords(ref), body: [sameUid(ref), { op: 'test', path: '/metadata/finalizers', value: read }, { op: 'replace', path: '/metadata/finalizers', value: rest }] }, jsonPatch))) !== 'refused';
  }

  /**
   * A new object's adoption in one request, without reading it first: natflow's finalizer added as
   * its only one, the uid tested and the finalizers tested absent (then it is not being deleted
   * either: such an object without finalizers is gone). False when a test failed (422: it has
   * finalizers, ours perhaps, or another object took the name) or it is gone (404): read it then.
   */
  async function addOnlyFinalizer(ref: KubeRef): Promise<boolean> {
    return (await patchIf(() => api.patchClusterCustomObject({ ...coords(ref), body: [sameUid(ref), { op: 'test', path: '/metadata/finalizers', value: null }, { op: 'add', path: '/metadata/finalizers', value: [FINALIZER] }] }, jsonPatch))) === 'applied';
  }

  async function setFinalizers(ref: KubeRef, obj: KubeObject, finalizers: string[]): Promise<void> {
    // resourceVersion makes this a compare-and-swap: a concurrent change gives 409, and a retry.
    const body = { metadata: { resourceVersion: obj.metadata?.resourceVersion, finalizers } };
    await api.patchClusterCustomObject({ ...coords(ref), body }, mergePatch);
  }

  return withHeartbeats<KubeActivities>({
    // The first step of every lifecycle: a delete can never outrun cleanup.
    async kubeAdopt(ref) {
      if (await addOnlyFinalizer(ref)) return { exists: true, deleting: false }; // the usual case: a new object
      const obj = await current(ref);
      if (!obj) return { exists: false, deleting: false };
      if (obj.metadata?.deletionTimestamp) return { exists: true, deleting: true };
      const finalizers = obj.metadata?.finalizers ?? [];
      if (!finalizers.includes(FINALIZER)) await setFinalizers(ref, obj, [...finalizers, FINALIZER]);
      return { exists: true, deleting: false };
    },

    /** Writes status (the whole of it) to this object: an object that is gone, or replaced by another of the same name, is fine. */
    async kubePublishStatus(ref) {
      await writeStatus(ref, ref.status);
    },

    async kubeWriteNat({ object, from, to }) {
      // Conditional on the value the EIP had before: a status of the EIP's written since is newer (refused, and left).
      await patchIf(() => api.patchClusterCustomObjectStatus({ ...coords(object), body: [sameUid(object), { op: 'test', path: '/status/nat', value: from }, { op: 'add', path: '/status/nat', value: to }] }, jsonPatch));
    },

    async kubeRelease(ref) {
      // The usual case, ours the only finalizer: one request takes it off, and the object goes.
      if (await takeFinalizerOff(ref, [FINALIZER])) return;
      const obj = await current(ref);
      const finalizers = obj?.metadata?.finalizers ?? [];
      if (!obj || !finalizers.includes(FINALIZER)) return;
      // Another finalizer keeps the object once ours is off: its status is still read, so it is written first.
      if (ref.status) await writeStatus(ref, ref.status);
      // Conditional on the finalizers read, not on the resourceVersion, which the status write moved on.
      if (!(await takeFinalizerOff(ref, finalizers))) throw new Error(`the finalizers of ${ref.kind} ${ref.name} changed while ours was taken off: read again`);
    },
  });
}
