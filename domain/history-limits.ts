// A workflow run's limits against the server's per-run limits (workflows/history-budget.ts keeps
// the budget): shared by every workflow's input, which may lower them (tests), and the starters.

/** When a run continues as new: history length in events, signals and updates received. */
export interface HistoryLimits {
  events: number;
  signals: number;
  updates: number;
}
