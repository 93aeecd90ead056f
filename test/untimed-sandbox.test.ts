// The resource worker enters its workflows' sandbox without the SDK's per-call execution timeout
// (worker/untimed-sandbox.ts): a workflow task that computes longer than that timeout completes
// there, where a plain SDK worker with the same timeout fails it.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { bundleWorkflowCode, Worker, type WorkerOptions } from '@temporalio/worker';
import { UntimedSandboxWorker } from '../worker/untimed-sandbox.js';
import { useTestEnv } from './support/temporal-env.js';
import { eventually, uniqueQueue } from './support/workflows.js';

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } as never;
/** Far longer than the timeout below on any machine (~0.3 s here). */
const ROUNDS = 200_000_000;
/** The SDK's 5 s default, shortened through its option that the SDK's types no longer show (a test that can then take a second, not ten). */
const TIMEOUT = { isolateExecutionTimeout: '20ms' };

describe('the resource worker’s sandbox', () => {
  const env = useTestEnv();
  const bundle = bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./support/spin-workflow.ts', import.meta.url)), logger: quiet });

  /** The spinning workflow on a worker of this class: whether it completed, and its failed tasks' messages (until one of them). */
  async function spinOn(workerClass: typeof Worker): Promise<{ completed: boolean; failures: (string | null | undefined)[] }> {
    const taskQueue = uniqueQueue(workerClass.name);
    const worker = await workerClass.create({ connection: env().nativeConnection, taskQueue, workflowBundle: await bundle, ...TIMEOUT } as WorkerOptions);
    return worker.runUntil(async () => {
      const handle = await env().client.workflow.start('spinWorkflow', { taskQueue, workflowId: taskQueue, args: [ROUNDS] });
      const events = await eventually(
        async () => (await handle.fetchHistory()).events ?? [],
        (events) => events.some((e) => e.workflowExecutionCompletedEventAttributes || e.workflowTaskFailedEventAttributes),
        30_000,
        'the workflow to complete or its task to fail',
      );
      const completed = events.some((e) => e.workflowExecutionCompletedEventAttributes);
      if (!completed) await handle.terminate();
      return { completed, failures: events.filter((e) => e.workflowTaskFailedEventAttributes).map((e) => e.workflowTaskFailedEventAttributes?.failure?.message) };
    });
  }

  it('lets a workflow task compute past the SDK’s isolate timeout', async () => {
    expect(await spinOn(UntimedSandboxWorker)).toEqual({ completed: true, failures: [] });
  });

  it('where a plain SDK worker fails that task', async () => {
    const { completed, failures } = await spinOn(Worker);
    expect(completed).toBe(false);
    expect(failures).toEqual([expect.stringMatching(/timed out/)]);
  });
});
