// How much history an idle natflow writes: lists every running workflow's history length, waits,
// and prints what each one grew by. Run it against a live system (e.g. `npm start` with the
// examples applied): `npm run bench:idle -- --minutes 2`. A workflow that grows while nothing
// changes will, over months, reach the server's per-run limits; the target is ≤ ~10 events an hour.
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { connectTemporal, temporalTarget } from '../worker/connection.js';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '2' }, address: { type: 'string' }, namespace: { type: 'string' } } });
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error(`--minutes ${values.minutes}: a positive number`);

async function lengths(client: Client): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for await (const w of client.workflow.list({ query: 'NatflowKind IS NOT NULL AND ExecutionStatus = "Running"' })) {
    result.set(w.workflowId, (await client.workflow.getHandle(w.workflowId).describe()).historyLength);
  }
  return result;
}

const temporal = await connectTemporal(temporalTarget({ address: values.address, namespace: values.namespace }), { worker: false });
try {
  const before = await lengths(temporal.client);
  await new Promise((r) => setTimeout(r, minutes * 60_000));
  const after = await lengths(temporal.client);
  console.log(`idle history over ${minutes} min (${new Date().toISOString()})`);
  console.log('workflow\tbefore\tafter\tgrowth\tper hour');
  for (const [id, length] of after) {
    const grown = length - (before.get(id) ?? length);
    console.log(`${id}\t${before.get(id) ?? '-'}\t${length}\t+${grown}\t${Math.round((grown * 60) / minutes)}`);
  }
} finally {
  await temporal.close();
}
