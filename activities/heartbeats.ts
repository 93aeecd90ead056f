// Heartbeats for the control worker's activities that have a heartbeat timeout: the server's way
// to learn that the worker running an attempt is gone (a SIGKILL), so that the attempt is made
// again after the heartbeat timeout instead of its whole start-to-close timeout.
import { Context } from '@temporalio/activity';

/**
 * Runs `attempt`, heartbeating every third of the heartbeat timeout while it is not done. The
 * first beat waits that long too: most attempts end within a second, and a beat costs a request.
 * Outside an activity, for a local one (its workflow task is what lives) or without a heartbeat
 * timeout, it just runs `attempt`.
 */
export async function heartbeating<T>(attempt: () => Promise<T>): Promise<T> {
  let context: Context;
  try {
    context = Context.current();
  } catch {
    return attempt(); // called outside an activity (a script or a test)
  }
  const timeoutMs = context.info.heartbeatTimeoutMs;
  if (context.info.isLocal || !timeoutMs) return attempt();
  const beat = setInterval(() => context.heartbeat(), timeoutMs / 3);
  try {
    return await attempt();
  } finally {
    clearInterval(beat);
  }
}

/** Every function of `activities`, heartbeating (see `heartbeating`). */
export function withHeartbeats<T extends object>(activities: T): T {
  return Object.fromEntries(Object.entries(activities).map(([name, fn]) => [name, (...args: unknown[]) => heartbeating(() => (fn as (...a: unknown[]) => Promise<unknown>)(...args))])) as T;
}
