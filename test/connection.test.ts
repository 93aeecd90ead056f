// natflow's Temporal connection: closing it while the client waits to retry a call does not leave
// a retry timer that fires on the closed channel (it throws "Channel has been shut down" where
// nothing catches it: a test run, or a worker process, dies of it).
import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { Metadata, status } from '@grpc/grpc-js';
import { connectTemporal, retryDelayMs, temporalTarget } from '../worker/connection.js';
import { createTestEnv } from './support/temporal-env.js';
import { uniqueQueue } from './support/workflows.js';

describe('natflow Temporal connection', () => {
  it('an update refused while its workflow continues as new is sent again within tens of milliseconds; other RESOURCE_EXHAUSTED answers back off as the SDK does', () => {
    const answer = (details: string) => ({ code: status.RESOURCE_EXHAUSTED, details, metadata: new Metadata() });
    const closing = answer('workflow operation can not be applied because workflow is closing');
    const busy = answer('namespace rate limit exceeded');
    const samples = (attempt: number, s: ReturnType<typeof answer>) => Array.from({ length: 100 }, () => retryDelayMs(attempt, s));
    expect(Math.max(...samples(1, closing))).toBeLessThan(100);
    expect(Math.max(...samples(3, closing))).toBeLessThan(200);
    expect(Math.max(...samples(10, closing))).toBeLessThanOrEqual(1200);
    expect(Math.min(...samples(1, busy))).toBeGreaterThan(1000); // the SDK's: 1.7 s, less 20 % jitter
  });

  it('a close while a call waits to be retried waits out the retry, and the call fails where it is awaited', async () => {
    const uncaught: unknown[] = [];
    const collect = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', collect);
    const server = await createTestEnv();
    const temporal = await connectTemporal(temporalTarget({ address: server.address }), { worker: false });
    try {
      // A long poll in flight (a result nobody will produce: no worker), then the server goes away:
      // the call is answered UNAVAILABLE and the client retries it on a backoff.
      const handle = await temporal.client.workflow.start('nobody-runs-this', { taskQueue: uniqueQueue('nobody'), workflowId: uniqueQueue('wf') });
      const outcome = handle.result().then(
        () => 'resolved',
        (err: Error) => `rejected: ${err.message}`,
      );
      await sleep(300);
      await server.teardown();
      await sleep(300); // retries against the stopped server are under way
      await temporal.close();
      await sleep(6_000); // longer than the client's longest backoff: every timer scheduled before the close has fired
      expect(uncaught.map(String)).toEqual([]);
      expect(await outcome).toMatch(/^rejected: /);
    } finally {
      process.off('uncaughtException', collect);
    }
  });
});
