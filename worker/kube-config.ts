// How every natflow process loads its cluster's KubeConfig: with one connection pool per cluster
// and user. @kubernetes/client-node (2.0) builds a new undici Agent for every API request, so each
// request opened its own TLS connection: under a burst (finalizers and status of a thousand
// objects) the handshakes cost the control worker and the apiserver more CPU than the requests
// (measured: TLS setup ~9 % of the control worker's main thread in `bench:throughput --path api`).
import { KubeConfig } from '@kubernetes/client-node';

type Dispatcher = unknown;
interface DispatcherFactory {
  createDispatcher(cluster: { name?: string; server?: string } | null, agentOptions: unknown): Dispatcher;
}

/** `kc`, made to reuse one dispatcher (and its kept-alive connections) per cluster and user. */
function reuseConnections(kc: KubeConfig): KubeConfig {
  // A private method of the client's (the one place it makes the Agent); checked, so that an
  // upgrade that renames it fails loudly here instead of quietly reconnecting per request.
  const factory = kc as unknown as DispatcherFactory;
  const create = factory.createDispatcher;
  if (typeof create !== 'function') throw new Error('@kubernetes/client-node: KubeConfig.createDispatcher is gone; see worker/kube-config.ts');
  const pool = new Map<string, Dispatcher>();
  factory.createDispatcher = function (cluster, agentOptions) {
    const key = JSON.stringify([cluster?.name, cluster?.server, kc.getCurrentUser()?.name]);
    if (!pool.has(key)) pool.set(key, create.call(this, cluster, agentOptions));
    return pool.get(key);
  };
  return kc;
}

/** The KubeConfig of `file`, or the default one (KUBECONFIG, ~/.kube/config, in-cluster). */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return reuseConnections(kc);
}
