// Stopping a local server process: politely first, then for sure.
import type { ChildProcess } from 'node:child_process';

const STOP_TIMEOUT_MS = 15_000;

/** SIGTERM, then SIGKILL if it has not exited within the timeout; resolves once it has exited. */
export async function terminate(child: ChildProcess, exited: Promise<unknown>, hasExited: () => boolean, timeoutMs = STOP_TIMEOUT_MS): Promise<void> {
  if (hasExited()) return;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)))]);
  clearTimeout(timer);
  if (timedOut && !hasExited()) {
    child.kill('SIGKILL');
    await exited;
  }
}
