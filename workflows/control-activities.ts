// The control activities as resource workflows call them. They retry until they succeed (each
// is idempotent), and a cancelled workflow waits for one in flight to finish: its cleanup must
// never race an allocation, claim or apply that is still going on.
import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control.js';

export const control = proxyActivities<ControlActivities>({
  startToCloseTimeout: '60s',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});
