// The control worker: runs every natflow workflow, the workflow-call activities (updates to the
// IPAM, gateway and EIP workflows) and, for resources from Kubernetes, the kube activities. It is
// two SDK workers on one bundle: the resource workflows on the control queue (their calls run as
// local activities, each workflow task holding its slot while they wait), the IPAM and gateway
// workflows they wait on on a queue of their own, so those always have slots to answer with.
import { fileURLToPath } from 'node:url';
import type { Client } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig } from './kube-config.js';
import { createAuditActivities } from '../activities/audit.js';
import { createKubeActivities } from '../activities/kube.js';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import { CONTROL_TASK_QUEUE, entityTaskQueue } from '../domain/names.js';
import { connectTemporal, temporalTarget, type TemporalTarget } from './connection.js';
import { payloadCodecPlugin } from './payload-codec.js';
import { isMainModule } from './process.js';
import { UntimedSandboxWorker } from './untimed-sandbox.js';

export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

/**
 * The domain modules the workflows use: plain functions and constants, no state, nothing of the
 * workflow API. The SDK evaluates every other module of the bundle again for each workflow it
 * starts (its module state is the workflow's); these it evaluates once per worker thread
 * (`preloadModules`): a thousand EIP+FIP pairs cost the control process ~1 CPU second less.
 * test/bundle.test.ts keeps them free of the workflow API and of module state.
 */
export const SHARED_DOMAIN_MODULES = ['audit', 'eip', 'errors', 'gateway', 'gateway-desired', 'ip', 'ipam', 'kube', 'names', 'nat-resources', 'nat-rules', 'nat-table', 'search-attributes', 'status', 'subnet'];

function sharedDomainModules(): string[] {
  return SHARED_DOMAIN_MODULES.map((name) => fileURLToPath(new URL(`../domain/${name}.ts`, import.meta.url)));
}

/**
 * How the workflow code is bundled and its payloads decoded: one definition for the worker, the
 * tests and the replay of recorded histories, so that replay runs exactly what the worker runs.
 */
export const workflowBundleOptions = { workflowsPath, preloadModules: sharedDomainModules(), plugins: [payloadCodecPlugin] };

export interface ControlWorkerOptions {
  /** Connection the worker polls with. */
  connection: NativeConnection;
  /** Client the activities use to reach IPAM and gateway workflows. */
  client: Client;
  namespace?: string;
  taskQueue?: string;
  /** A pre-built bundle, to skip bundling (tests share one). */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** The cluster of resources started by the kube bridge (finalizers and status go there). */
  kubeConfig?: KubeConfig;
}

/**
 * Sized for a burst on a small machine. A resource workflow's task holds its slot while its local
 * activities wait for the IPAM and gateway workflows to answer, so a burst needs many slots (they
 * cost nothing while waiting); every resource workflow of a burst stays cached, so that none is
 * replayed from its history to take its next step: 12,000, the 10,000 workflows of 5,000 EIP+FIP
 * pairs (with 4,000 they became Ready in 399.7 s, workflow tasks of 5 s and more; with 12,000 in
 * 296.1 s, for 4.0 GiB of RSS instead of 2.7). Remote activities (older runs, the entity
 * workflows' own calls) mostly wait too.
 */
const RESOURCE_TUNING = {
  maxConcurrentWorkflowTaskExecutions: 200,
  maxConcurrentLocalActivityExecutions: 400,
  maxConcurrentActivityTaskExecutions: 500,
  maxCachedWorkflows: 12000,
} satisfies Partial<WorkerOptions>;

/**
 * The SDK worker of the resource workflows: their settings, their sandbox entered without the
 * per-call watchdog (worker/untimed-sandbox.ts). The bench's floor runs on one too, so that it
 * runs as they do.
 */
export function createResourceWorker(options: WorkerOptions): Promise<Worker> {
  return UntimedSandboxWorker.create({ ...options, ...RESOURCE_TUNING });
}

/** A few IPAM and gateway workflows, each handling batches: the defaults, with a small cache. */
const ENTITY_TUNING = {
  maxCachedWorkflows: 200,
} satisfies Partial<WorkerOptions>;

/** The two SDK workers of the control process: `shutdown()` stops the resource worker, then the entity worker. */
export interface ControlWorker {
  run(): Promise<void>;
  shutdown(): void;
}

export async function createControlWorker(opts: ControlWorkerOptions): Promise<ControlWorker> {
  const taskQueue = opts.taskQueue ?? CONTROL_TASK_QUEUE;
  const stopping = new AbortController();
  const kube = opts.kubeConfig ? createKubeActivities(opts.kubeConfig) : undefined;
  const common = {
    connection: opts.connection,
    namespace: opts.namespace ?? 'default',
    workflowBundle: opts.workflowBundle ?? (await bundleWorkflowCode({ ...workflowBundleOptions, logger: Runtime.instance().logger })),
    activities: {
      ...createWorkflowCallActivities(opts.client, undefined, stopping.signal, kube),
      ...kube,
      ...createAuditActivities(opts.client, opts.kubeConfig, taskQueue),
    },
  };
  const resources = await createResourceWorker({ ...common, taskQueue });
  const entities = await Worker.create({ ...common, taskQueue: entityTaskQueue(taskQueue), ...ENTITY_TUNING });
  const stop = (worker: Worker) => worker.getState() === 'RUNNING' && worker.shutdown();
  return {
    async run() {
      // The resource worker drains first: the calls its workflows still wait on are answered by
      // the entity workflows until it has stopped. Either one failing stops the other.
      const resourcesRun = resources.run().finally(() => stop(entities));
      const entitiesRun = entities.run().finally(() => stop(resources));
      await Promise.all([resourcesRun, entitiesRun]);
    },
    shutdown() {
      stopping.abort(); // local activities end their attempts at once (see activities/workflow-calls.ts)
      stop(resources);
    },
  };
}

export async function runControlWorker(target: TemporalTarget = temporalTarget(), kubeConfig?: KubeConfig): Promise<void> {
  const temporal = await connectTemporal(target);
  const worker = await createControlWorker({ connection: temporal.nativeConnection, client: temporal.client, namespace: target.namespace, kubeConfig });
  await worker.run();
  await temporal.close();
}

if (isMainModule(import.meta.url)) {
  // `--kubeconfig`: the cluster of the bridge's objects (finalizers and status are written there).
  const { values } = (await import('node:util')).parseArgs({ options: { address: { type: 'string' }, namespace: { type: 'string' }, kubeconfig: { type: 'string' } } });
  const kubeConfig = values.kubeconfig ? loadKubeConfig(values.kubeconfig) : undefined;
  await runControlWorker(temporalTarget({ address: values.address, namespace: values.namespace }), kubeConfig);
}
