// How every natflow process (workers, bridge, CLI, main job) reaches Temporal: flags win, then
// the environment, then the local dev server.
import { setTimeout as sleep } from 'node:timers/promises';
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

/**
 * The client's retries of a failed call (a backoff of up to 5 s) wait on a timer that closing the
 * connection does not stop, and one firing after the close throws "Channel has been shut down"
 * where nothing can catch it (in CI: a gateway query told "query buffer is full" as its worker
 * stopped). So a close first stops new retries and waits out the ones already scheduled.
 */
function retriesEndingWithClose() {
  const defaults = defaultGrpcRetryOptions();
  let closing = false;
  let lastRetryAt = 0;
  const interceptor = makeGrpcRetryInterceptor({
    retryableDecider: (attempt, status) => !closing && defaults.retryableDecider(attempt, status),
    delayFunction: (attempt, status) => {
      const delay = defaults.delayFunction(attempt, status);
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
