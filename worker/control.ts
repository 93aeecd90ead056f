// The control worker: runs every natflow workflow, the workflow-call activities (updates to the
// IPAM, gateway and EIP workflows) and, for resources from Kubernetes, the kube activities.
import { fileURLToPath } from 'node:url';
import type { Client } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { KubeConfig } from '@kubernetes/client-node';
import { createKubeActivities } from '../activities/kube.js';
import { createWorkflowCallActivities } from '../activities/workflow-calls.js';
import { CONTROL_TASK_QUEUE } from '../domain/names.js';
import { connectTemporal, temporalTarget, type TemporalTarget } from './connection.js';
import { payloadCodecPlugin } from './payload-codec.js';
import { isMainModule } from './process.js';

export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
/**
 * How the workflow code is bundled and its payloads decoded: one definition for the worker, the
 * tests and the replay of recorded histories, so that replay runs exactly what the worker runs.
 */
export const workflowBundleOptions = { workflowsPath, plugins: [payloadCodecPlugin] };

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
 * Sized for a burst on a small machine. Its activities are calls to other workflows: they mostly
 * wait, so many run at once; every resource workflow of a burst stays cached, so that none is
 * replayed from its history to take its next step.
 */
const WORKER_TUNING = {
  maxConcurrentActivityTaskExecutions: 500,
  maxCachedWorkflows: 4000,
} satisfies Partial<WorkerOptions>;

export async function createControlWorker(opts: ControlWorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace ?? 'default',
    taskQueue: opts.taskQueue ?? CONTROL_TASK_QUEUE,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : workflowBundleOptions),
    activities: { ...createWorkflowCallActivities(opts.client), ...(opts.kubeConfig ? createKubeActivities(opts.kubeConfig) : {}) },
    ...WORKER_TUNING,
  });
}

export async function runControlWorker(target: TemporalTarget = temporalTarget()): Promise<void> {
  const temporal = await connectTemporal(target);
  const worker = await createControlWorker({ connection: temporal.nativeConnection, client: temporal.client, namespace: target.namespace });
  await worker.run();
  await temporal.close();
}

if (isMainModule(import.meta.url)) {
  await runControlWorker();
}
