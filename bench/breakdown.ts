// Where a scenario's time went, read from the histories afterwards (nothing is measured during the
// run): for each step from one history event to the next (an activity's steps named by its type),
// how long it took, p50 and p99, and how much of the sampled workflows' time it took in all. A
// workflow task waiting to start is the worker's or the server's queue; an activity from scheduled
// to completed is the call (for a resource, its updates to the gateway and the EIP; for the
// gateway, its agent's apply). An activity's start is written into its history with its end (with
// the start's time), so a step that ends at a start can be short, even negative.
//
//   npm run bench:throughput -- --pairs 0 --latency 60 --breakdown
import type { Client } from '@temporalio/client';
import proto from '@temporalio/proto';

type HistoryEvent = proto.temporal.api.history.v1.IHistoryEvent;
const { EventType } = proto.temporal.api.enums.v1;

/** One run's history events. */
export type History = HistoryEvent[];
/** Milliseconds each step took, by step. */
export type Steps = Map<string, number[]>;

const eventName = (e: HistoryEvent) =>
  (EventType[e.eventType ?? 0] ?? String(e.eventType))
    .replace(/^EVENT_TYPE_/, '')
    .toLowerCase()
    .replace(/_(\w)/g, (_, c: string) => c.toUpperCase());

const eventMs = (e: HistoryEvent) => Number(e.eventTime?.seconds ?? 0) * 1000 + Math.round((e.eventTime?.nanos ?? 0) / 1e6);

/** One run's history events, read once for every window they are broken down in. */
export async function historyOf(client: Client, run: { workflowId: string; runId?: string }): Promise<History> {
  return (await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory()).events ?? [];
}

/**
 * Adds the steps of one run's history to `steps`: those that ended in `window` (ms, inclusive), and
 * from `requestedAt` (when the client asked for the workflow) to its start, when given.
 */
export function addSteps(steps: Steps, events: History, window: [number, number], requestedAt?: number): void {
  const activityTypes = new Map<string, string>();
  let previous: { name: string; at: number } | undefined = requestedAt === undefined ? undefined : { name: 'requested', at: requestedAt };
  for (const e of events) {
    const scheduled = e.activityTaskScheduledEventAttributes;
    if (scheduled) activityTypes.set(String(e.eventId), scheduled.activityType?.name ?? '?');
    const of = e.activityTaskStartedEventAttributes ?? e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes ?? e.activityTaskCanceledEventAttributes;
    const activity = scheduled ? activityTypes.get(String(e.eventId)) : of && activityTypes.get(String(of.scheduledEventId));
    const current = { name: activity ? `${eventName(e)} (${activity})` : eventName(e), at: eventMs(e) };
    if (previous && current.at >= window[0] && current.at <= window[1]) {
      const step = `${previous.name} → ${current.name}`;
      let times = steps.get(step);
      if (!times) steps.set(step, (times = []));
      times.push(current.at - previous.at);
    }
    previous = current;
  }
}

/** The value below which a share `p` of `values` lies (NaN for none). */
export function quantile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

/** The steps that took the most time in all, with their p50 and p99. */
export function printSteps(title: string, steps: Steps, top = 12): void {
  const rows = [...steps].map(([step, ms]) => ({ step, ms, total: ms.reduce((a, b) => a + b, 0) })).sort((a, b) => b.total - a.total);
  console.log(`\n${title}`);
  console.log(['total s', 'n', 'p50 ms', 'p99 ms', 'step'].join('\t'));
  for (const { step, ms, total } of rows.slice(0, top)) console.log([(total / 1000).toFixed(1), ms.length, quantile(ms, 0.5), quantile(ms, 0.99), step].join('\t'));
}
