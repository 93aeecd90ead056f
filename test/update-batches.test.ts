// The control worker's coalescing of requests to one entity workflow (no server: a recording send).
import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { UpdateBatcher } from '../activities/update-batches.js';
import type { BatchAnswer } from '../domain/workflow-api.js';

/** A send that records every batch and answers when told to. */
function recordingSend() {
  const sent: { workflowId: string; requests: number[]; answer: (answers: BatchAnswer<string>[] | Error) => void }[] = [];
  const send = (workflowId: string, requests: number[]) =>
    new Promise<BatchAnswer<string>[]>((resolve, reject) => sent.push({ workflowId, requests, answer: (a) => (a instanceof Error ? reject(a) : resolve(a)) }));
  return { sent, send };
}
const tick = () => new Promise((resolve) => setImmediate(resolve));
const okAll = (requests: number[]) => requests.map((r) => ({ ok: `r${r}` }));

describe('UpdateBatcher', () => {
  it('sends a lone request at once; what arrives while batches are in flight goes in the next one, per workflow', async () => {
    const { sent, send } = recordingSend();
    const batcher = new UpdateBatcher(send, { inFlight: 1, maxBatch: 100 });
    const first = batcher.request('w1', 1);
    await tick();
    expect(sent.map((s) => s.requests)).toEqual([[1]]);
    const rest = [2, 3, 4].map((r) => batcher.request('w1', r));
    const other = batcher.request('w2', 9);
    await tick();
    expect(sent.map((s) => [s.workflowId, s.requests])).toEqual([['w1', [1]], ['w2', [9]]]);
    sent[0]!.answer(okAll([1]));
    expect(await first).toBe('r1');
    await tick();
    expect(sent[2]).toMatchObject({ workflowId: 'w1', requests: [2, 3, 4] });
    sent[2]!.answer(okAll([2, 3, 4]));
    expect(await Promise.all(rest)).toEqual(['r2', 'r3', 'r4']);
    sent[1]!.answer(okAll([9]));
    expect(await other).toBe('r9');
  });

  it('keeps at most inFlight batches of at most maxBatch requests per workflow', async () => {
    const { sent, send } = recordingSend();
    const batcher = new UpdateBatcher(send, { inFlight: 2, maxBatch: 3 });
    const all = Array.from({ length: 10 }, (_, i) => batcher.request('w', i));
    await tick();
    expect(sent.map((s) => s.requests)).toEqual([[0], [1]]);
    sent[0]!.answer(okAll(sent[0]!.requests));
    await tick();
    expect(sent.map((s) => s.requests)).toEqual([[0], [1], [2, 3, 4]]);
    for (let i = 1; sent.length > i; i++) {
      sent[i]!.answer(okAll(sent[i]!.requests));
      await tick();
    }
    expect(await Promise.all(all)).toEqual(Array.from({ length: 10 }, (_, i) => `r${i}`));
    expect(sent.map((s) => s.requests)).toEqual([[0], [1], [2, 3, 4], [5, 6, 7], [8, 9]]);
  });

  it('answers each request on its own: a refusal is a non-retryable failure typed by reason; a failed batch fails each of its requests', async () => {
    const { sent, send } = recordingSend();
    const batcher = new UpdateBatcher(send, { inFlight: 1, maxBatch: 10 });
    const a = batcher.request('w', 1);
    const [b, c] = [2, 3].map((r) => batcher.request('w', r));
    await tick();
    sent[0]!.answer(new Error('update aborted'));
    await expect(a).rejects.toThrow('update aborted');
    await tick();
    sent[1]!.answer([{ ok: 'r2' }, { refused: { type: 'AddressTaken', message: 'taken' } }]);
    expect(await b).toBe('r2');
    const refusal = await c!.catch((err: unknown) => err);
    expect(refusal).toBeInstanceOf(ApplicationFailure);
    expect(refusal).toMatchObject({ type: 'AddressTaken', message: 'taken', nonRetryable: true });
    // An answer that does not fit the batch fails it rather than mis-answering anyone.
    const d = batcher.request('w', 4);
    await tick();
    sent[2]!.answer([]);
    await expect(d).rejects.toThrow('answered 0 of 1 requests');
  });
});
