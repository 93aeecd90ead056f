// Test helpers for running natflow's workflows against a real (throwaway) Temporal dev server.
import { expect } from 'vitest';
import { randomUUID } from 'node:crypto';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { WorkflowHandle, WorkflowHandleWithFirstExecutionRunId, WorkflowStartOptions } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Workflow } from '@temporalio/workflow';
import { defaultPayloadConverter } from '@temporalio/common';
import type { EipSpec, EipStatus } from '../../domain/eip.js';
import type { ResourceKind } from '../../domain/names.js';
import type { NatSpecs, NatStatus } from '../../domain/nat-resources.js';
import { statusQuery } from '../../domain/workflow-api.js';
import { resourceStart, resourceStatus, type Resources } from '../../starter/resources.js';
import { workflowBundleOptions } from '../../worker/control.js';
import { statusesWritten, type fakeKube } from './fake-calls.js';

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
const quietBundler = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } as never;

/** One webpack bundle per test process, shared by every worker it creates. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ ...workflowBundleOptions, logger: quietBundler });
  return bundle;
}

/** A bundle of its own with these workflow interceptor modules (files), for the test that needs it. */
export const workflowBundleWithInterceptors = (modules: string[]) => bundleWorkflowCode({ ...workflowBundleOptions, workflowInterceptorModules: modules, logger: quietBundler });

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

/**
 * Runs `body` with a worker serving `activities` (on a task queue of its own) and one workflow
 * started on it; the worker stops when `body` ends, whatever the workflow is doing then.
 */
export async function withWorkflow<W extends Workflow, R>(
  env: Pick<TestWorkflowEnvironment, 'client' | 'nativeConnection'>,
  activities: object,
  workflow: W,
  start: Omit<WorkflowStartOptions<W>, 'taskQueue'>,
  body: (handle: WorkflowHandleWithFirstExecutionRunId<W>) => Promise<R>,
  bundle = workflowBundle(),
): Promise<R> {
  const taskQueue = uniqueQueue(workflow.name || 'workflow');
  const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: await bundle, activities });
  return worker.runUntil(async () => body(await env.client.workflow.start(workflow, { ...start, taskQueue } as WorkflowStartOptions<W>)));
}

// --- resource workflows: status and phases ---------------------------------------------------

/** The status a resource workflow of this kind answers. */
export type StatusOfKind<K extends ResourceKind> = K extends 'eip' ? EipStatus : NatStatus;
/** A resource workflow's handle that knows its kind, so that its status is typed. */
export type ResourceHandle<K extends ResourceKind> = WorkflowHandleWithFirstExecutionRunId & { readonly kind: K };

/**
 * `withWorkflow` for one resource (`<kind>1`, a fresh uid, generation 1), started as the CLI and
 * the bridge start it (`resourceStart`).
 */
export function withResource<K extends ResourceKind, R>(
  env: Pick<TestWorkflowEnvironment, 'client' | 'nativeConnection'>,
  activities: object,
  kind: K,
  spec: K extends 'eip' ? EipSpec : NatSpecs[Exclude<K, 'eip'>],
  body: (handle: ResourceHandle<K>) => Promise<R>,
  bundle?: Promise<WorkflowBundleWithSourceMap>,
): Promise<R> {
  const { workflow, options } = resourceStart(kind, { name: `${kind}1`, uid: uid(), generation: 1 }, spec);
  return withWorkflow(env, activities, workflow, options, (handle) => body(Object.assign(handle, { kind })), bundle);
}

/**
 * Deletes a resource from Kubernetes (its kube calls recorded by `kube`) once its Ready status is
 * written: the statuses written a second after the delete and by its end, and the phase of the
 * status its release carried. `before` runs just before the delete, `meanwhile` after that second.
 */
export async function statusesAroundDelete(handle: WorkflowHandle, kube: ReturnType<typeof fakeKube>, steps: { before?: () => Promise<unknown>; meanwhile?: () => Promise<unknown> } = {}) {
  await eventually(async () => statusesWritten(kube), (w) => w.includes('Ready/Ready'), 10_000, 'Ready written');
  await steps.before?.();
  await handle.cancel();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const soon = statusesWritten(kube);
  await steps.meanwhile?.();
  await handle.result().catch(() => undefined);
  return { soon, all: statusesWritten(kube), released: kube.args.kubeRelease?.[0]?.[0].status?.phase };
}

/**
 * A resource from Kubernetes, once Ready, deleted: how many status calls its history made
 * (`kubePublishStatus`), once it is checked that Ready was the one status written, and that the
 * first one written is the status the workflow shows, its times included.
 */
export async function statusCallsOfReadyThenDelete<K extends ResourceKind>(handle: ResourceHandle<K>, kube: ReturnType<typeof fakeKube>): Promise<number> {
  const ready = await workflowPhase(handle, 'Ready');
  await eventually(async () => statusesWritten(kube), (w) => w.includes('Ready/Ready'), 10_000, 'Ready written');
  expect(kube.args.kubePublishStatus?.[0]?.[0].status).toEqual(ready);
  await deleteAndWait(handle);
  expect(statusesWritten(kube)).toEqual(['Ready/Ready']);
  return (await historyOf(handle)).filter((e) => isCallOf(e, 'kubePublishStatus')).length;
}

/** The `status` query of a resource workflow, typed by its kind. */
export const statusOf = <K extends ResourceKind>(handle: WorkflowHandle & { readonly kind: K }) => handle.query(statusQuery) as Promise<StatusOfKind<K>>;

/** Polls a status until its phase is `phase`; returns that status. */
export function untilPhase<S extends { phase: string }>(status: () => Promise<S>, phase: S['phase'], timeoutMs = 30_000, what = `phase ${phase}`): Promise<S> {
  return eventually(status, (s) => s.phase === phase, timeoutMs, what);
}

/** A resource workflow's status once its phase is `phase`. */
export const workflowPhase = <K extends ResourceKind>(handle: ResourceHandle<K>, phase: StatusOfKind<K>['phase'], timeoutMs = 20_000) =>
  untilPhase(() => statusOf(handle), phase, timeoutMs, `${handle.kind} ${phase}`);

/** A resource's status (found by name, as the CLI finds it) once its phase is `phase`. */
export const resourcePhase = <K extends ResourceKind>(r: Resources, kind: K, name: string, phase: StatusOfKind<K>['phase'], timeoutMs = 30_000) =>
  untilPhase(() => resourceStatus(r, kind, name), phase, timeoutMs, `${kind} ${name} ${phase}`);

// --- history ---------------------------------------------------------------------------------

export interface HistoryEntry {
  /** The event's attributes field without `EventAttributes` (`workflowExecutionSignaled`, `timerFired`, ...), or `localActivity` for a local activity's marker. */
  type: string;
  /** The activity type of `activityTaskScheduled` and `localActivity`, the signal name of `workflowExecutionSignaled`. */
  name?: string;
}

/** The SDK's marker of a local activity, with its activity type in the marker's JSON data. */
function localActivityType(attributes: { markerName?: string | null; details?: Record<string, { payloads?: { data?: Uint8Array | null }[] | null }> | null }): string | undefined {
  if (attributes.markerName !== 'core_local_activity') return undefined;
  const data = attributes.details?.data?.payloads?.[0]?.data;
  return data ? (JSON.parse(Buffer.from(data).toString()) as { activity_type?: string }).activity_type : undefined;
}

/** A workflow's history (current run), one entry per event, in order. */
export async function historyOf(handle: WorkflowHandle): Promise<HistoryEntry[]> {
  const { events } = await handle.fetchHistory();
  return (events ?? []).map((event) => {
    const [key, attributes] = Object.entries(event).find(([k, v]) => k.endsWith('EventAttributes') && v != null) ?? ['unknownEventAttributes', {}];
    const localActivity = localActivityType(attributes as never);
    if (localActivity !== undefined) return { type: 'localActivity', name: localActivity };
    const a = attributes as { activityType?: { name?: string }; signalName?: string };
    const name = a.activityType?.name ?? a.signalName ?? undefined;
    return { type: key.slice(0, -'EventAttributes'.length), ...(name !== undefined && { name }) };
  });
}

/** Whether a history entry is a call of activity `name`, remote (scheduled) or local (its marker). */
export const isCallOf = (entry: HistoryEntry, name: string) => (entry.type === 'activityTaskScheduled' || entry.type === 'localActivity') && entry.name === name;

/**
 * What a workflow's run wrote to visibility, in order: for each workflow task that upserted
 * search attributes, the natflow attributes it set (`{ NatflowPhase: 'Ready' }`, ...), and
 * `TemporalChangeVersion` where a patch was recorded. Each entry is one visibility write.
 */
export async function visibilityWrites(handle: WorkflowHandle): Promise<Record<string, string>[]> {
  const { events } = await handle.fetchHistory();
  const writes: Record<string, string>[] = [];
  let task: Record<string, string> | null = null;
  for (const event of events ?? []) {
    if (event.workflowTaskCompletedEventAttributes) task = null;
    const fields = event.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields;
    if (!fields) continue;
    if (!task) writes.push((task = {}));
    for (const [key, payload] of Object.entries(fields)) task[key] = String(defaultPayloadConverter.fromPayload(payload));
  }
  return writes;
}
