// What a bench set up is taken down on every path: at its end, after a failure, and on Ctrl-C or
// SIGTERM, on which Node would otherwise exit at once and leave the lab's namespaces, the agent and
// the scratch directory (the dev server's database: hundreds of MiB after a large run) behind.

/** Steps added as things are set up, run latest first, once. */
export class Teardown {
  private readonly steps: { what: string; step: () => Promise<unknown> }[] = [];
  private running: Promise<void> | undefined;
  private interrupted = false;

  constructor(private readonly log: (line: string) => void) {}

  /** `step` undoes what was just set up; it runs before the steps added earlier. */
  add(what: string, step: () => Promise<unknown>): void {
    this.steps.push({ what, step });
  }

  /** Every step, each even when one before it failed (reported, not thrown): nothing may be left behind. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const { what, step } of [...this.steps].reverse()) await step().catch((err: unknown) => this.log(`teardown: ${what} failed: ${(err as Error)?.message ?? err}`));
    })();
    return this.running;
  }

  /**
   * On SIGINT or SIGTERM: the teardown, then exit 130. A signal that comes during it waits for it
   * (a Ctrl-C reaches `npm run bench` and the scenario it runs, and the report passes it on too).
   */
  onInterrupt(log: (line: string) => void = this.log): this {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.on(signal, () => {
        if (this.interrupted) return;
        this.interrupted = true;
        log(`${signal}: tearing everything down`);
        void this.run().finally(() => process.exit(130));
      });
    }
    return this;
  }
}
