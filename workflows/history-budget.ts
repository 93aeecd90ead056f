// A workflow run's budget against the server's per-run limits (51,200 events, 10,000 signals,
// 2,000 updates, and a history size limit): an entity that lives for months continues as new
// long before any of them, in whatever state it is, carrying its state to the next run.
import type { Duration } from '@temporalio/common';
import * as wf from '@temporalio/workflow';
import type { HistoryLimits } from '../domain/history-limits.js';

/** A workflow's wait: true when `done` holds; continues as new instead when the run's budget is spent first. */
export type WaitFor = (done: () => boolean, timeout?: string | number) => Promise<boolean>;

/** Far below the server's limits, so a burst arriving during the hand-over still fits. */
export const DEFAULT_HISTORY_LIMITS: HistoryLimits = { events: 5_000, signals: 1_000, updates: 500 };

export class HistoryBudget {
  private signals = 0;
  private updates = 0;
  private readonly limits: HistoryLimits;

  /** `enabled: false` for runs of an older release, which must wait exactly as they did (replay). */
  constructor(
    overrides: Partial<HistoryLimits> = {},
    private readonly enabled = true,
  ) {
    this.limits = { ...DEFAULT_HISTORY_LIMITS, ...overrides };
  }

  countSignal(): void {
    this.signals++;
  }

  countUpdate(): void {
    this.updates++;
  }

  /**
   * Waits for `done` (or the timeout); when this run's budget is spent first, `continueAsNew`
   * ends the run, carrying everything. True when `done` holds.
   */
  async wait(done: () => boolean, timeout: Duration | undefined, continueAsNew: () => Promise<never>): Promise<boolean> {
    const woken = this.enabled ? () => done() || this.spent() : done;
    if (timeout === undefined) await wf.condition(woken);
    else await wf.condition(woken, timeout);
    if (this.enabled && !done() && this.spent()) await continueAsNew();
    return done();
  }

  /** `wait` with this run's `continueAsNew`: what a resource workflow waits with everywhere. */
  waiter(continueAsNew: () => Promise<never>): WaitFor {
    return (done, timeout) => this.wait(done, timeout as Duration | undefined, continueAsNew);
  }

  /** True once the server suggests continue-as-new or any count reaches its limit. */
  spent(): boolean {
    const info = wf.workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= this.limits.events || this.signals >= this.limits.signals || this.updates >= this.limits.updates;
  }
}
