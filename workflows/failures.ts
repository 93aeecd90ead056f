// Errors at the workflow boundary: a domain error (NatflowError) becomes a condition a user
// reads, or a non-retryable failure typed by its reason; an activity's refusal becomes a condition.
import * as wf from '@temporalio/workflow';
import { NatflowError, Reason } from '../domain/errors.js';
import type { ConditionInput } from '../domain/status.js';
import type { BatchAnswer, Fence } from '../domain/workflow-api.js';

/** What the Ready condition says (its type is always Ready). */
export type ReadyCondition = Omit<ConditionInput, 'type'>;

/** Refuses a request sent by an activity attempt that has already timed out (see Fence). */
export function checkFence(fence: Fence | undefined): void {
  if (fence && Date.now() > fence.notAfter) {
    throw wf.ApplicationFailure.nonRetryable(`the request's attempt timed out at ${new Date(fence.notAfter).toISOString()}`, Reason.StaleRequest);
  }
}

/** A request turned away by an entity workflow about to continue as new: retryable, its caller sends it again to the next run. */
export function drainingRefusal(what: string): wf.ApplicationFailure {
  return wf.ApplicationFailure.retryable(`${what} is moving to a new run`, Reason.Draining);
}

/** The application failure an activity failed with: a remote activity's comes wrapped in an ActivityFailure, a local one's as it is. */
function applicationCause(err: unknown): wf.ApplicationFailure | undefined {
  const cause = err instanceof wf.ActivityFailure ? err.cause : err;
  return cause instanceof wf.ApplicationFailure ? cause : undefined;
}

/** An activity's definite "no" (a non-retryable failure from the workflow it asked): nothing was taken. */
export function isRefusal(err: unknown): boolean {
  return applicationCause(err)?.nonRetryable === true;
}

/** The condition for an activity's refusal: its failure type is the reason. */
export function refusal(err: unknown, fallbackReason: string): ReadyCondition {
  const cause = applicationCause(err);
  return { status: 'False', reason: cause?.type ?? fallbackReason, message: cause?.message ?? String(err) };
}

/** Runs a spec check: its value, or the Invalid condition its NatflowError describes. */
export function checkSpec<T>(check: () => T): { ok: true; value: T } | { ok: false; invalid: ReadyCondition } {
  try {
    return { ok: true, value: check() };
  } catch (err) {
    if (!(err instanceof NatflowError)) throw err;
    return { ok: false, invalid: { status: 'False', reason: err.reason, message: err.message } };
  }
}

/**
 * Runs pure domain logic in an update handler or validator, its NatflowError turned into a
 * non-retryable failure typed by reason: a plain Error would fail the workflow task (retried
 * forever) instead of the one call.
 */
export function domainCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof NatflowError) throw wf.ApplicationFailure.nonRetryable(err.message, err.reason);
    throw err;
  }
}

/**
 * One request of a batch update: its value, or its refusal as the failure type and message a
 * validator's throw would have given its caller (the caller's activity raises it as such).
 */
export function answer<T>(request: () => T): BatchAnswer<T> {
  try {
    return { ok: request() };
  } catch (err) {
    if (err instanceof NatflowError) return { refused: { type: err.reason, message: err.message } };
    if (err instanceof wf.ApplicationFailure) return { refused: { type: err.type ?? 'Error', message: err.message } };
    if (err instanceof Error) return { refused: { type: 'Error', message: err.message } };
    throw err;
  }
}

/** A batch of one, answered as a single update is: its value, or its refusal thrown. */
export function unwrap<T>(reply: BatchAnswer<T>): T {
  if ('ok' in reply) return reply.ok;
  throw wf.ApplicationFailure.nonRetryable(reply.refused.message, reply.refused.type);
}
