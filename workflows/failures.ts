// Converting domain errors at the workflow boundary: an update or workflow that throws a plain
// Error fails its workflow task (retried forever); an ApplicationFailure fails only the call.
import { ApplicationFailure } from '@temporalio/workflow';
import { NatflowError } from '../domain/errors.js';

export function asFailure(err: unknown): unknown {
  if (err instanceof NatflowError) return ApplicationFailure.nonRetryable(err.message, err.reason);
  return err;
}

/** Runs pure domain logic, turning its errors into non-retryable failures typed by reason. */
export function domainCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw asFailure(err);
  }
}
