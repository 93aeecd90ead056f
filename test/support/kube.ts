// A real kube-apiserver (+ etcd) for tests, with natflow's CRDs installed: envtest-style, one
// per test file. The first use on a machine builds the binaries (temporal-dev/kube/build.sh,
// minutes); after that they come from the cache and a start takes a few seconds.
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { ApiException, CustomObjectsApi, KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { mergePatch } from '../../activities/kube.js';
import { crd, KUBEOVN_API_VERSION, KUBEOVN_KINDS, type KubeKind } from '../../domain/kube.js';
import {
  applyObjects,
  ensureKubeBinaries,
  installCrds,
  readManifests,
  startKubeApiserver,
  type KubeApiserver,
  type KubeApiserverOptions,
  type KubeBinaries,
} from '../../temporal-dev/kube/apiserver.js';
import { repoRoot } from '../../temporal-dev/provision.js';
import { loadKubeConfig } from '../../worker/kube-config.js';
import { eventually } from './workflows.js';

/** The kinds natflow serves as a list; each one's key in KUBEOVN_KINDS is its kubectl short name. */
export const KUBEOVN_KIND_LIST = (Object.entries(KUBEOVN_KINDS) as [KubeKind, (typeof KUBEOVN_KINDS)[KubeKind]][]).map(([shortName, k]) => ({ shortName, ...k }));

/** natflow's short name of an object's `kind` (IptablesEIP → eip). */
export function shortNameOf(kind: string): KubeKind {
  const k = KUBEOVN_KIND_LIST.find((x) => x.kind === kind);
  if (!k) throw new Error(`not a natflow kind: ${kind}`);
  return k.shortName;
}

export const examplesDir = () => path.join(repoRoot(), 'deploy', 'examples');

export interface KubeEnv {
  kube: KubeApiserver;
  kubeconfigPath: string;
  kc: KubeConfig;
  custom: CustomObjectsApi;
  binaries: KubeBinaries;
  /** Server-side applies the YAML files of a directory (default: deploy/examples). */
  applyDir(dir?: string): Promise<KubernetesObject[]>;
  /** Stops kube-apiserver and etcd (and removes their temp dir unless a dataDir was given). */
  stop(): Promise<void>;
}

/** Binaries only (builds them on first use): call it in a beforeAll with a long timeout. */
export { ensureKubeBinaries };

/** Starts kube-apiserver + etcd and installs natflow's CRDs. */
export async function startKube(opts: KubeApiserverOptions = {}): Promise<KubeEnv> {
  const kube = await startKubeApiserver(opts);
  try {
    await installCrds(kube.kubeconfigPath);
  } catch (e) {
    await kube.stop();
    throw e;
  }
  const kc = loadKubeConfig(kube.kubeconfigPath);
  return {
    kube,
    kubeconfigPath: kube.kubeconfigPath,
    kc,
    custom: kc.makeApiClient(CustomObjectsApi),
    binaries: kube.binaries,
    applyDir: async (dir = examplesDir()) => applyObjects(kc, await readManifests(dir)),
    stop: () => kube.stop(),
  };
}

/**
 * The file's kube-apiserver for a describe block: started (binaries built on first use) before
 * its tests and stopped after them. Returns a getter, valid once the tests run.
 */
export function useKube(): () => KubeEnv {
  let env: KubeEnv | undefined;
  beforeAll(async () => {
    await ensureKubeBinaries();
    env = await startKube();
  }, 60 * 60_000);
  afterAll(async () => {
    await env?.stop();
  }, 60_000);
  return () => env ?? assertNever('the kube-apiserver is used before it has started');
}

function assertNever(message: string): never {
  throw new Error(message);
}

/** The example Subnets and the example VpcNatGateway, renamed to a test's own lab gateway. */
export async function applyExampleNetwork(kc: KubeConfig, gateway: string): Promise<void> {
  const objects = (await readManifests(examplesDir())).filter((o) => o.kind === 'Subnet' || o.kind === 'VpcNatGateway');
  for (const o of objects) if (o.kind === 'VpcNatGateway') o.metadata!.name = gateway;
  await applyObjects(kc, objects);
}

export type KubeovnObject = KubernetesObject & { spec?: Record<string, unknown>; status?: Record<string, any> };

/**
 * Kube-OVN objects by short name (`eip`, `fip`, ...), as a test writes and watches them through
 * the API. `api` is a getter: a test that restarts its apiserver keeps using the same helpers.
 */
export function kubeovnObjects(api: () => CustomObjectsApi, timeoutMs = 60_000) {
  const coords = crd;
  const get = (short: KubeKind, name: string) => api().getClusterCustomObject({ ...coords(short), name }) as Promise<KubeovnObject>;
  const exists = (short: KubeKind, name: string) =>
    get(short, name).then(
      () => true,
      (err) => (err instanceof ApiException && err.code === 404 ? false : Promise.reject(err)),
    );
  return {
    get,
    exists,
    list: async (short: KubeKind) => ((await api().listClusterCustomObject(coords(short))) as { items: KubeovnObject[] }).items,
    create: (short: KubeKind, name: string, spec: Record<string, unknown>) =>
      api().createClusterCustomObject({ ...coords(short), body: { apiVersion: KUBEOVN_API_VERSION, kind: KUBEOVN_KINDS[short].kind, metadata: { name }, spec } }) as Promise<KubeovnObject>,
    patchSpec: (short: KubeKind, name: string, spec: Record<string, unknown>) => api().patchClusterCustomObject({ ...coords(short), name, body: { spec } }, mergePatch),
    del: (short: KubeKind, name: string) => api().deleteClusterCustomObject({ ...coords(short), name }),
    ready: (short: KubeKind, name: string) => eventually(() => get(short, name), (o) => o.status?.ready === true, timeoutMs, `${short} ${name} ready`),
    gone: (short: KubeKind, name: string) => eventually(() => exists(short, name), (e) => !e, timeoutMs, `${short} ${name} gone`),
    /** The `Ready` condition of an object's status. */
    condition: (o: KubeovnObject) => (o.status?.conditions as { type: string; reason: string; message: string }[] | undefined)?.find((c) => c.type === 'Ready'),
  };
}
