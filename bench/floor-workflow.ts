// The Temporal floor of the throughput bench: a workflow that does nothing but run `activities`
// no-op activities one after the other, as many as a natflow resource workflow runs on average.
import { proxyActivities } from '@temporalio/workflow';

const { noop } = proxyActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1 minute' });

export async function floorWorkflow(activities: number): Promise<void> {
  for (let i = 0; i < activities; i++) await noop();
}
