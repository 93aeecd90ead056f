// The control worker's activities heartbeat while they run, so that the server learns of a worker
// that died within their heartbeat timeout (workflows/activity-proxies.ts, LIVENESS).
import { describe, expect, it } from 'vitest';
import { MockActivityEnvironment } from '@temporalio/testing';
import { heartbeating } from '../activities/heartbeats.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How many beats an attempt of `ms` sends, run as an activity with these info fields. */
async function beats(ms: number, info: ConstructorParameters<typeof MockActivityEnvironment>[0]): Promise<number> {
  const attempt = new MockActivityEnvironment(info);
  let count = 0;
  attempt.on('heartbeat', () => count++);
  expect(await attempt.run(() => heartbeating(async () => (await sleep(ms), 'done')))).toBe('done');
  await sleep(250); // nothing beats once the attempt is done
  return count;
}

describe('heartbeating', () => {
  it('beats every third of the heartbeat timeout while the attempt runs, and not once it is done', async () => {
    const count = await beats(1000, { heartbeatTimeoutMs: 300 });
    expect(count).toBeGreaterThanOrEqual(5); // about 9; fewer when the machine is busy
    expect(count).toBeLessThanOrEqual(10);
  });

  it('a short attempt does not beat at all; neither does one without a heartbeat timeout, nor a local one', async () => {
    expect(await beats(30, { heartbeatTimeoutMs: 300 })).toBe(0);
    expect(await beats(400, {})).toBe(0);
    expect(await beats(400, { heartbeatTimeoutMs: 300, isLocal: true })).toBe(0);
  });

  it('outside an activity it just runs', async () => {
    expect(await heartbeating(async () => 'done')).toBe('done');
  });
});
