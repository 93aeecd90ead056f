// The control worker: runs every natflow workflow and the activities that talk to Temporal
// itself (IPAM and gateway updates). Kubernetes writes join it with the bridge.
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { KubeConfig } from '@kubernetes/client-node';
import { createControlActivities } from '../activities/control.js';
import { createKubeActivities } from '../activities/kube.js';
import { CONTROL_TASK_QUEUE } from '../domain/names.js';
import { temporalTarget, type TemporalTarget } from './connection.js';

export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
/**
 * How the workflow code is bundled: one definition for the worker, the tests and the replay
 * of recorded histories, so that replay runs exactly what the worker runs.
 */
export const workflowBundleOptions = { workflowsPath } as const;

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

export async function createControlWorker(opts: ControlWorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace ?? 'default',
    taskQueue: opts.taskQueue ?? CONTROL_TASK_QUEUE,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : workflowBundleOptions),
    activities: { ...createControlActivities(opts.client), ...(opts.kubeConfig ? createKubeActivities(opts.kubeConfig) : {}) },
  });
}

export async function runControlWorker(target: TemporalTarget = temporalTarget()): Promise<void> {
  const connection = await NativeConnection.connect({ address: target.address });
  const client = new Client({ connection: await Connection.connect({ address: target.address }), namespace: target.namespace });
  const worker = await createControlWorker({ connection, client, namespace: target.namespace });
  await worker.run();
  await connection.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runControlWorker();
}
