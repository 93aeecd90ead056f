// Coalescing of concurrent requests to one entity workflow (a subnet's IPAM, a gateway) into
// batch updates. The server takes at most 10 updates in flight per workflow and 2,000 per run,
// and each update costs a workflow task: one update per resource made a burst of a few hundred
// EIPs wedge the gateway. Here each workflow gets at most `inFlight` batches at a time from this
// client; whatever arrives meanwhile waits and goes in the next batch, so batches grow with load
// and a lone request is still sent at once.
import { ApplicationFailure } from '@temporalio/common';
import type { BatchAnswer } from '../domain/workflow-api.js';

interface Waiting<Req, Res> {
  request: Req;
  resolve: (value: Res) => void;
  reject: (err: unknown) => void;
}

interface Queue<Req, Res> {
  waiting: Waiting<Req, Res>[];
  inFlight: number;
}

export interface BatchLimits {
  /** Batches in flight per workflow from this client: two control workers stay well under the server's 10. */
  inFlight: number;
  /** Requests per batch: bounds the update's payload (far under 2 MB) and the work of one workflow task. */
  maxBatch: number;
}

export const DEFAULT_BATCH_LIMITS: BatchLimits = { inFlight: 2, maxBatch: 250 };

export class UpdateBatcher<Req, Res> {
  private readonly queues = new Map<string, Queue<Req, Res>>();

  /** `send` delivers one batch to one workflow and returns an answer per request, in order. */
  constructor(
    private readonly send: (workflowId: string, requests: Req[]) => Promise<BatchAnswer<Res>[]>,
    private readonly limits: BatchLimits = DEFAULT_BATCH_LIMITS,
  ) {}

  /**
   * The request's own answer: its value, or its refusal as a non-retryable ApplicationFailure typed
   * by reason. A failure of the whole batch (workflow not found, update aborted, draining) is
   * raised to every request in it, for each caller to handle as it would a single update's.
   */
  request(workflowId: string, request: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      let queue = this.queues.get(workflowId);
      if (!queue) this.queues.set(workflowId, (queue = { waiting: [], inFlight: 0 }));
      queue.waiting.push({ request, resolve, reject });
      this.pump(workflowId, queue);
    });
  }

  private pump(workflowId: string, queue: Queue<Req, Res>): void {
    while (queue.inFlight < this.limits.inFlight && queue.waiting.length > 0) {
      const batch = queue.waiting.splice(0, this.limits.maxBatch);
      queue.inFlight++;
      this.deliver(workflowId, batch).finally(() => {
        queue.inFlight--;
        if (queue.inFlight === 0 && queue.waiting.length === 0) this.queues.delete(workflowId);
        else this.pump(workflowId, queue);
      });
    }
  }

  private async deliver(workflowId: string, batch: Waiting<Req, Res>[]): Promise<void> {
    let answers: BatchAnswer<Res>[];
    try {
      answers = await this.send(
        workflowId,
        batch.map((w) => w.request),
      );
      if (answers.length !== batch.length) throw new Error(`workflow ${workflowId} answered ${answers.length} of ${batch.length} requests`);
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    answers.forEach((answer, i) => {
      const { resolve, reject } = batch[i]!;
      if ('ok' in answer) resolve(answer.ok);
      else reject(ApplicationFailure.nonRetryable(answer.refused.message, answer.refused.type));
    });
  }
}
