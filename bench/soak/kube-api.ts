// The soak's hands on the Kubernetes API: Kube-OVN objects created, patched and deleted as a user
// (kubectl) would, retried through an apiserver restart the way a user retries. An answer from
// the API (404, 409, 422) is final; no answer (connection refused, 5xx, 429) is tried again.
import { ApiException, CustomObjectsApi, type KubernetesObject } from '@kubernetes/client-node';
import { mergePatch } from '../../activities/kube.js';
import { crd, KUBEOVN_API_VERSION, KUBEOVN_KINDS, type KubeKind } from '../../domain/kube.js';
import { loadKubeConfig } from '../../worker/kube-config.js';

export type KubeObject = KubernetesObject & { spec?: Record<string, unknown>; status?: Record<string, any> };
export type Spec = Record<string, string>;

/** What the API answered: done, or refused with its code and message. */
export type Answer = { ok: true } | { ok: false; code: number; message: string };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function transient(err: unknown): boolean {
  if (err instanceof ApiException) return err.code >= 500 || err.code === 429 || err.code === 0;
  return true; // no answer at all: connection refused or reset, TLS, timeout
}

function refusal(err: unknown): Answer {
  const e = err as ApiException<unknown>;
  let message = String(e.message ?? err);
  try {
    const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
    if (typeof (body as { message?: unknown })?.message === 'string') message = (body as { message: string }).message;
  } catch {
    // the client's own message
  }
  return { ok: false, code: e.code, message: message.split('\n')[0]! };
}

export class KubeApi {
  readonly custom: CustomObjectsApi;
  /** Transient failures retried (a measure of how long the API was away). */
  retries = 0;

  constructor(kubeconfigPath: string, private readonly retryForMs = 180_000) {
    this.custom = loadKubeConfig(kubeconfigPath).makeApiClient(CustomObjectsApi);
  }

  /** Runs `fn` until the API answers (or `retryForMs` pass); an answer that is an error is thrown. */
  async retried<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.retryForMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!transient(err) || Date.now() > deadline) {
          if (transient(err)) throw new Error(`${what}: no answer from the apiserver for ${this.retryForMs / 1000} s: ${String((err as Error).message ?? err).split('\n')[0]}`);
          throw err;
        }
        this.retries++;
        await sleep(Math.min(250 * 2 ** attempt, 2000));
      }
    }
  }

  /** Creates an object; a 409 after a retried (maybe applied) attempt counts as created. */
  async create(kind: KubeKind, name: string, spec: Spec): Promise<Answer> {
    let attempts = 0;
    try {
      await this.retried(`create ${kind} ${name}`, () => {
        attempts++;
        return this.custom.createClusterCustomObject({ ...crd(kind), body: { apiVersion: KUBEOVN_API_VERSION, kind: KUBEOVN_KINDS[kind].kind, metadata: { name }, spec } });
      });
      return { ok: true };
    } catch (err) {
      if (err instanceof ApiException && err.code === 409 && attempts > 1) return { ok: true };
      if (err instanceof ApiException) return refusal(err);
      throw err;
    }
  }

  async patchSpec(kind: KubeKind, name: string, spec: Spec): Promise<Answer> {
    try {
      await this.retried(`patch ${kind} ${name}`, () => this.custom.patchClusterCustomObject({ ...crd(kind), name, body: { spec } }, mergePatch));
      return { ok: true };
    } catch (err) {
      if (err instanceof ApiException) return refusal(err);
      throw err;
    }
  }

  /** Deletes an object; already gone (a retried delete) counts as deleted. */
  async del(kind: KubeKind, name: string): Promise<Answer> {
    try {
      await this.retried(`delete ${kind} ${name}`, () => this.custom.deleteClusterCustomObject({ ...crd(kind), name }));
      return { ok: true };
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return { ok: true };
      if (err instanceof ApiException) return refusal(err);
      throw err;
    }
  }

  async get(kind: KubeKind, name: string): Promise<KubeObject | null> {
    try {
      return (await this.retried(`get ${kind} ${name}`, () => this.custom.getClusterCustomObject({ ...crd(kind), name }))) as KubeObject;
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return null;
      throw err;
    }
  }

  async list(kind: KubeKind): Promise<KubeObject[]> {
    return ((await this.retried(`list ${kind}`, () => this.custom.listClusterCustomObject(crd(kind)))) as { items: KubeObject[] }).items;
  }
}

/** The Ready condition of an object's status. */
export function readyCondition(o: KubeObject): { reason: string; message: string } | undefined {
  return (o.status?.conditions as { type: string; reason: string; message: string }[] | undefined)?.find((c) => c.type === 'Ready');
}
