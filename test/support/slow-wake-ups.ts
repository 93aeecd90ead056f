// A workflow interceptor for tests: every signal a workflow sends to another leaves 2 s after the
// call, on a workflow timer, so that a test can deliver a signal while a wake-up is on its way.
import { sleep, type WorkflowInterceptorsFactory } from '@temporalio/workflow';

export const interceptors: WorkflowInterceptorsFactory = () => ({
  outbound: [
    {
      async signalWorkflow(input, next) {
        await sleep(2000);
        return next(input);
      },
    },
  ],
});
