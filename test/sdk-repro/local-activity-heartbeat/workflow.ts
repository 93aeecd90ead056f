// Smallest trigger found: a local activity still running when a workflow task is heartbeated
// (it outlives 80% of the 10 s WFT timeout), a cancel delivered in the heartbeat's new WFT, and
// the cancel handler and the LA's continuation both issuing commands a few microtasks later.
import * as wf from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const PHASE = defineSearchAttributeKey('ReproPhase', SearchAttributeType.KEYWORD);

const { alwaysFails } = wf.proxyLocalActivities<{ alwaysFails(): Promise<void> }>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
  localRetryThreshold: '4s',
});

export async function minimal(): Promise<void> {
  // Background, outside cancellation: one LA (1 s attempts + 1 s, 2 s, 4 s local backoffs,
  // then an 8 s server-timer backoff, i.e. a timer command when it resolves at ~11 s).
  void wf.CancellationScope.nonCancellable(() => alwaysFails());
  try {
    await wf.sleep('300s');
  } catch (err) {
    await wf.CancellationScope.nonCancellable(async () => {
      for (let i = 0; i < 5; i++) await Promise.resolve(); // a few awaits, as any real cleanup has
      wf.upsertSearchAttributes([{ key: PHASE, value: 'Deleted' }]); // any command (a wf.sleep alone fails too)
      await wf.sleep('1s'); // the rest of the cleanup (keeps the run open until the LA has resolved)
    });
    throw err;
  }
}
