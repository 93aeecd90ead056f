// natflow's Temporal connection: closing it while the client waits to retry a call does not leave
// a retry timer that fires on the closed channel (it throws "Channel has been shut down" where
// nothing catches it: a test run, or a worker process, dies of it).
import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectTemporal, temporalTarget } from '../worker/connection.js';
import { createTestEnv } from './support/temporal-env.js';
import { uniqueQueue } from './support/workflows.js';

describe('natflow Temporal connection', () => {
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
