// A minimal reproduction of an SDK issue (README, "Known SDK issue"): a local activity still running
// when its workflow task is heartbeated, a cancellation delivered in the task the heartbeat opens,
// and both issuing commands replay in another order than they ran. Not a test: it prints what it saw.
//   npx tsx test/sdk-repro/local-activity-heartbeat/driver.ts      (about 20 s; expect "replay FAILED: [TMPRL1100] ...")
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import proto from '@temporalio/proto';
import { fileURLToPath } from 'node:url';
import { findOrProvisionTemporalCli } from '../../../temporal-dev/provision.js';
import { PHASE } from './workflow.js';

Runtime.install({ logger: new DefaultLogger('ERROR') });
const workflowsPath = fileURLToPath(new URL('./workflow.ts', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const activities = {
  async alwaysFails() {
    await sleep(1000); // an apiserver that takes a second to fail
    throw new Error('apiserver down');
  },
};

const env = await TestWorkflowEnvironment.createLocal({
  server: { executable: { type: 'existing-path', path: await findOrProvisionTemporalCli() }, ip: '127.0.0.1', searchAttributes: [PHASE], log: { format: 'pretty', level: 'never' } },
});
try {
  const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'minimal', workflowsPath, activities });
  const history = await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('minimal', { taskQueue: 'minimal', workflowId: 'minimal', workflowTaskTimeout: '10s' });
    await sleep(3000); // cancel while the first WFT is still held open by the LA's local retries
    await handle.cancel();
    await handle.result().catch(() => undefined);
    return handle.fetchHistory();
  });
  console.log(history.events!.map((e) => `${e.eventId}:${proto.temporal.api.enums.v1.EventType[e.eventType!]!.replace('EVENT_TYPE_', '')}`).join(' '));
  await Worker.runReplayHistory({ workflowsPath }, history);
  console.log('replay OK');
} catch (err) {
  console.log('replay FAILED:', /\[TMPRL\d+\][^"]*/.exec((err as Error).message)?.[0] ?? err);
} finally {
  await env.teardown();
}
