// Test helpers for running natflow's workflows against a real (throwaway) Temporal dev server.
import { randomUUID } from 'node:crypto';
import { bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { WorkflowHandle } from '@temporalio/client';
import { workflowBundleOptions } from '../../worker/control.js';

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;

/** One webpack bundle per test process, shared by every worker it creates. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ ...workflowBundleOptions, logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } as never });
  return bundle;
}

export const uniqueQueue = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;
export const uid = () => randomUUID();

/**
 * Polls `probe` until `accept` holds and returns that value, failing after `timeoutMs` with the
 * last value or error seen (a probe may throw while, e.g., visibility has not caught up yet).
 */
export async function eventually<T>(probe: () => Promise<T>, accept: (value: T) => boolean, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (accept(value)) return value;
      last = value;
    } catch (err) {
      last = err instanceof Error ? `error: ${err.message}` : err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)}`);
}

/** Cancels a workflow (a delete) and waits until it has finished its cleanup. */
export async function deleteAndWait(handle: WorkflowHandle): Promise<void> {
  await handle.cancel();
  await handle.result().catch(() => undefined);
}
