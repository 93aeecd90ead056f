// What every natflow program does the same way as a process: know whether its file is the one
// that was started, and stop once, cleanly, on Ctrl-C, SIGTERM or the loss of its launcher.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** True in the file `node`/`tsx` was asked to run (the ES-module form of `require.main === module`). */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

/** Runs in the foreground until Ctrl-C (or SIGTERM, or its parent process dies), then calls `stop` once and exits. */
export function stopOnSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
  // Orphaned (the launcher, e.g. `tsx` or npm, was killed with SIGKILL and passed nothing on):
  // stop as on Ctrl-C rather than run on unseen, holding the servers' ports.
  const parent = process.ppid;
  setInterval(() => process.ppid !== parent && shutdown(), 1000).unref();
  // Keep the event loop alive until a signal arrives (the service may be a reused one).
  setInterval(() => undefined, 1 << 30);
}
