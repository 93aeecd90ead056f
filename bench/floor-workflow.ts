// The Temporal floor of the throughput bench: a workflow that does nothing but run `activities`
// no-op activities and then `localActivities` no-op local activities one after the other, as many
// of each as a natflow resource workflow runs on average.
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';

const remote = proxyActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1 minute' });
const local = proxyLocalActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1 minute' });

export async function floorWorkflow(activities: number, localActivities = 0): Promise<void> {
  for (let i = 0; i < activities; i++) await remote.noop();
  for (let i = 0; i < localActivities; i++) await local.noop();
}
