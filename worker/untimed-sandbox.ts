// An SDK Worker whose workflow sandbox is entered without Node's per-call execution timeout.
//
// The SDK bounds each call into a workflow's sandbox (several per activation: the jobs, each round
// of unblocked conditions, the completion) with `vm`'s `timeout` option, 5 s by default, to fail a
// workflow task that never yields. Node enforces that timeout with a watchdog thread created and
// joined for every call (nodejs/node#47739): ~220 µs of CPU a call here against ~2 µs without, on
// the one thread that runs every resource workflow. Without it, in interleaved 1,000-pair bursts, the
// control process used 4–21 % less CPU and the burst took 0–16 % less time, the more the busier the
// machine (README, Benchmarks, seventh stop).
//
// What is given up: a resource workflow activation that never yields (a bug: their loops run over
// one resource's own claims and watchers) blocks that thread instead of failing its task after 5 s.
// The entity workflows (gateway, IPAM), whose activations carry whole batches and gateways of
// thousands of rules, keep the SDK's watchdog; replay in CI runs under it too.
import { Worker } from '@temporalio/worker';

export class UntimedSandboxWorker extends Worker {
  protected static override createWorkflowCreator(...[bundle, options, logger]: Parameters<typeof Worker.createWorkflowCreator>): ReturnType<typeof Worker.createWorkflowCreator> {
    // `undefined` is the only value `vm` reads as "no timeout"; the SDK's option type has no room for it.
    return super.createWorkflowCreator(bundle, { ...options, isolateExecutionTimeoutMs: undefined as unknown as number }, logger);
  }
}
