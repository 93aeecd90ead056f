// A workflow run's budget against the server's per-run limits (51,200 events, 10,000 signals,
// 2,000 updates, and a history size limit): an entity that lives for months continues as new
// long before any of them, in whatever state it is, carrying its state to the next run.
import * as wf from '@temporalio/workflow';

export interface HistoryLimits {
  events: number;
  signals: number;
  updates: number;
}

/** Far below the server's limits, so a burst arriving during the hand-over still fits. */
export const DEFAULT_HISTORY_LIMITS: HistoryLimits = { events: 5_000, signals: 1_000, updates: 500 };

export class HistoryBudget {
  private signals = 0;
  private updates = 0;
  private readonly limits: HistoryLimits;

  constructor(overrides: Partial<HistoryLimits> = {}) {
    this.limits = { ...DEFAULT_HISTORY_LIMITS, ...overrides };
  }

  countSignal(): void {
    this.signals++;
  }

  countUpdate(): void {
    this.updates++;
  }

  /** True once the server suggests continue-as-new or any count reaches its limit. */
  spent(): boolean {
    const info = wf.workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= this.limits.events || this.signals >= this.limits.signals || this.updates >= this.limits.updates;
  }
}
