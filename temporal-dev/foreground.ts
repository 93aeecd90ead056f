// Running a local service in the foreground until Ctrl-C (or SIGTERM), then stopping it once.
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
