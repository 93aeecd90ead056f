// A real kube-apiserver (+ etcd) for tests, with natflow's CRDs installed: envtest-style, one
// per test file. The first use on a machine builds the binaries (temporal-dev/kube/build.sh,
// minutes); after that they come from the cache and a start takes a few seconds.
import path from 'node:path';
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions, type KubernetesObject } from '@kubernetes/client-node';
import {
  applyObjects,
  ensureKubeBinaries,
  installCrds,
  loadKubeConfig,
  readManifests,
  startKubeApiserver,
  type KubeApiserver,
  type KubeApiserverOptions,
  type KubeBinaries,
} from '../../temporal-dev/kube/apiserver.js';
import { repoRoot } from '../../temporal-dev/provision.js';
import { eventually } from './workflows.js';

export const KUBEOVN_GROUP = 'kubeovn.io';
export const KUBEOVN_VERSION = 'v1';
export const KUBEOVN_API_VERSION = `${KUBEOVN_GROUP}/${KUBEOVN_VERSION}`;

/** The kinds natflow serves, as Kube-OVN names them. */
export const KUBEOVN_KINDS = [
  { kind: 'IptablesEIP', plural: 'iptables-eips', shortName: 'eip' },
  { kind: 'IptablesFIPRule', plural: 'iptables-fip-rules', shortName: 'fip' },
  { kind: 'IptablesDnatRule', plural: 'iptables-dnat-rules', shortName: 'dnat' },
  { kind: 'IptablesSnatRule', plural: 'iptables-snat-rules', shortName: 'snat' },
  { kind: 'VpcNatGateway', plural: 'vpc-nat-gateways', shortName: 'vpc-nat-gw' },
  { kind: 'Subnet', plural: 'subnets', shortName: 'subnet' },
] as const;

export type KubeovnPlural = (typeof KUBEOVN_KINDS)[number]['plural'];

export function pluralOf(kind: string): KubeovnPlural {
  const k = KUBEOVN_KINDS.find((x) => x.kind === kind);
  if (!k) throw new Error(`not a natflow kind: ${kind}`);
  return k.plural;
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

export type ShortName = (typeof KUBEOVN_KINDS)[number]['shortName'];
export type KubeovnObject = KubernetesObject & { spec?: Record<string, unknown>; status?: Record<string, any> };
const byShortName = (short: ShortName) => KUBEOVN_KINDS.find((k) => k.shortName === short)!;
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/**
 * Kube-OVN objects by short name (`eip`, `fip`, ...), as a test writes and watches them through
 * the API. `api` is a getter: a test that restarts its apiserver keeps using the same helpers.
 */
export function kubeovnObjects(api: () => CustomObjectsApi, timeoutMs = 60_000) {
  const coords = (short: ShortName) => ({ group: KUBEOVN_GROUP, version: KUBEOVN_VERSION, plural: byShortName(short).plural });
  const get = (short: ShortName, name: string) => api().getClusterCustomObject({ ...coords(short), name }) as Promise<KubeovnObject>;
  const exists = (short: ShortName, name: string) =>
    get(short, name).then(
      () => true,
      (err) => (err instanceof ApiException && err.code === 404 ? false : Promise.reject(err)),
    );
  return {
    get,
    exists,
    list: async (short: ShortName) => ((await api().listClusterCustomObject(coords(short))) as { items: KubeovnObject[] }).items,
    create: (short: ShortName, name: string, spec: Record<string, unknown>) =>
      api().createClusterCustomObject({ ...coords(short), body: { apiVersion: KUBEOVN_API_VERSION, kind: byShortName(short).kind, metadata: { name }, spec } }) as Promise<KubeovnObject>,
    patchSpec: (short: ShortName, name: string, spec: Record<string, unknown>) => api().patchClusterCustomObject({ ...coords(short), name, body: { spec } }, mergePatch),
    del: (short: ShortName, name: string) => api().deleteClusterCustomObject({ ...coords(short), name }),
    ready: (short: ShortName, name: string) => eventually(() => get(short, name), (o) => o.status?.ready === true, timeoutMs, `${short} ${name} ready`),
    gone: (short: ShortName, name: string) => eventually(() => exists(short, name), (e) => !e, timeoutMs, `${short} ${name} gone`),
    /** The `Ready` condition of an object's status. */
    condition: (o: KubeovnObject) => (o.status?.conditions as { type: string; reason: string; message: string }[] | undefined)?.find((c) => c.type === 'Ready'),
  };
}
