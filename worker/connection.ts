// How every natflow process (workers, bridge, CLI, main job) reaches Temporal: flags win, then
// the environment, then the local dev server.
import { setTimeout as sleep } from 'node:timers/promises';
import { status as grpcStatus, type StatusObject } from '@grpc/grpc-js';
import { Client, Connection, defaultGrpcRetryOptions, makeGrpcRetryInterceptor } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { payloadCodecPlugin } from './payload-codec.js';

export interface TemporalTarget {
  address: string;
  namespace: string;
}

export function temporalTarget(overrides: Partial<TemporalTarget> = {}): TemporalTarget {
  return {
    address: overrides.address ?? process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    namespace: overrides.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default',
  };
}

export interface TemporalConnections {
  /** What workers poll with. */
  nativeConnection: NativeConnection;
  /** What starts, signals and queries workflows (the bridge, the CLI, the workflow-call activities). */
  client: Client;
  close(): Promise<void>;
}

const sdkRetries = defaultGrpcRetryOptions();
/** The server's answer to an update sent while its workflow completes a task that continues it as new. */
const WORKFLOW_CLOSING = /workflow is closing/;

/**
 * How long the client waits before it sends a failed call again: as the SDK does, but an update
 * refused because its workflow is continuing as new is sent again within a few tens of
 * milliseconds, when the next run takes it. The SDK waits out every RESOURCE_EXHAUSTED from 1.7 s
 * (a server short of capacity): a gateway that continued as new under a steady 40 requests/s made
 * its requests of that moment 2 s late, its users' p99 latency.
 */
export function retryDelayMs(attempt: number, status: StatusObject): number {
  if (status.code === grpcStatus.RESOURCE_EXHAUSTED && WORKFLOW_CLOSING.test(status.details)) return Math.min(1000, 30 * 1.7 ** attempt) * (0.8 + Math.random() * 0.4);
  return sdkRetries.delayFunction(attempt, status);
}

/**
 * The client's retries of a failed call (a backoff of up to 5 s) wait on a timer that closing the
 * connection does not stop, and one firing after the close throws "Channel has been shut down"
 * where nothing can catch it (in CI: a gateway query told "query buffer is full" as its worker
 * stopped). So a close first stops new retries and waits out the ones already scheduled.
 */
function retriesEndingWithClose() {
  let closing = false;
  let lastRetryAt = 0;
  const interceptor = makeGrpcRetryInterceptor({
    retryableDecider: (attempt, status) => !closing && sdkRetries.retryableDecider(attempt, status),
    delayFunction: (attempt, status) => {
      const delay = retryDelayMs(attempt, status);
      lastRetryAt = Math.max(lastRetryAt, Date.now() + delay);
      return delay;
    },
  });
  const drain = async () => {
    closing = true;
    const wait = lastRetryAt - Date.now();
    if (wait > 0) await sleep(wait + 100); // the last retry has started: a call in flight is allowed to end after close
  };
  return { interceptor, drain };
}

/**
 * A client connection, and with `worker` a worker's native connection, to the same target. Both
 * carry natflow's payload codec: every Client and Worker made with them encodes alike.
 */
export async function connectTemporal(target: TemporalTarget): Promise<TemporalConnections>;
export async function connectTemporal(target: TemporalTarget, opts: { worker: false }): Promise<Omit<TemporalConnections, 'nativeConnection'>>;
export async function connectTemporal(target: TemporalTarget, opts: { worker?: boolean } = {}): Promise<Partial<TemporalConnections>> {
  const nativeConnection = opts.worker === false ? undefined : await NativeConnection.connect({ address: target.address, plugins: [payloadCodecPlugin] });
  const retries = retriesEndingWithClose();
  const connection = await Connection.connect({ address: target.address, plugins: [payloadCodecPlugin], interceptors: [retries.interceptor] });
  return {
    nativeConnection,
    client: new Client({ connection, namespace: target.namespace }),
    async close() {
      await retries.drain();
      await connection.close();
      await nativeConnection?.close();
    },
  };
}
