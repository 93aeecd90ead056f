// What every natflow program does the same way as a process: know whether its file is the one
// that was started, and stop once, cleanly, on Ctrl-C or SIGTERM.
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

/** Runs in the foreground until Ctrl-C (or SIGTERM), then calls `stop` once and exits. */
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
  // Keep the event loop alive until a signal arrives (the service may be a reused one).
  setInterval(() => undefined, 1 << 30);
}
