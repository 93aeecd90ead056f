import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { startDevServer } from '/work/main/temporal-dev/dev-server.js';
import { connectTemporal, temporalTarget } from '/work/main/worker/connection.js';
import { RESOURCE_TUNING } from '/work/main/worker/control.js';
Runtime.install({ logger: new DefaultLogger('ERROR'), shutdownSignals: [] });
const scratch = await mkdtemp(path.join(os.tmpdir(), 'floorp-'));
const server = await startDevServer({ port: 17533, uiPort: 18533, dbFile: path.join(scratch, 't.sqlite'), dynamicConfig: JSON.parse(process.env.DYN ?? '{}') });
const { client, nativeConnection } = await connectTemporal(temporalTarget({ address: server.address }));
const taskQueue = 'fq';
const worker = await Worker.create({ connection: nativeConnection, taskQueue, workflowsPath: '/work/main/bench/floor-workflow.ts', activities: { noop: async () => undefined }, ...RESOURCE_TUNING, ...JSON.parse(process.env.WOPTS ?? '{}') });
await worker.runUntil(async () => {
  for (const acts of (process.argv[2] ?? '4,2,1').split(',').map(Number)) {
    const t0 = Date.now();
    const handles: any[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: 50 }, async () => { while (next < 2000) { const i = next++; handles.push(await client.workflow.start('floorWorkflow', { taskQueue, workflowId: `f-${acts}-${i}`, args: [acts, 0] })); } }));
    await Promise.all(handles.map((h) => h.result()));
    console.log(`2000 workflows x ${acts} activities: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
});
await server.stop();
process.exit(0);
