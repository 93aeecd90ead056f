// How natflow's payloads travel: large ones gzip-compressed, small ones untouched (so the Web UI
// still shows them). Every client and worker gets the codec from its connection
// (worker/connection.ts), so nobody can forget it.
//
// Why compress rather than shard: the payloads that grow with the system are an entity's carried
// state — an IPAM's allocations in its continue-as-new input and state query, a gateway's rules —
// and they are repetitive text (workflow IDs, addresses) that shrinks ~3x. Sharding would split a
// single writer's state across workflows and turn every allocation into a cross-workflow protocol.
// Its limit, measured (test/ipam-large.test.ts): a /16 with 60,000 allocations owned by
// `natflow/eip/<name>/<uid>` is 4.6 MB of JSON and 1.6 MB compressed, under the server's 2 MB
// but not far under it — the random uids do not compress. A subnet that full is where sharding
// its allocations by address block would start to pay.
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import type { ClientOptions, ClientPlugin, ConnectionPlugin } from '@temporalio/client';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import type { NativeConnectionPlugin, ReplayWorkerOptions, WorkerOptions, WorkerPlugin } from '@temporalio/worker';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

const ENCODING = 'encoding';
/** The encoding of a compressed payload; what it was before is kept beside it. */
export const GZIP_ENCODING = 'binary/gzip';
const INNER_ENCODING = 'natflow-inner-encoding';

const text = new TextEncoder();
const fromText = new TextDecoder();

/** Payloads above this many bytes are compressed; smaller ones stay readable in the Web UI. */
export const COMPRESS_ABOVE_BYTES = 64 * 1024;

export class GzipPayloadCodec implements PayloadCodec {
  constructor(private readonly thresholdBytes = COMPRESS_ABOVE_BYTES) {}

  async encode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.all(
      payloads.map(async (payload) => {
        if ((payload.data?.byteLength ?? 0) <= this.thresholdBytes) return payload;
        const { [ENCODING]: inner, ...metadata } = payload.metadata ?? {};
        return {
          metadata: { ...metadata, [ENCODING]: text.encode(GZIP_ENCODING), ...(inner && { [INNER_ENCODING]: inner }) },
          data: new Uint8Array(await gzipAsync(payload.data!)),
        };
      }),
    );
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.all(
      payloads.map(async (payload) => {
        const encoding = payload.metadata?.[ENCODING];
        if (!encoding || fromText.decode(encoding) !== GZIP_ENCODING) return payload;
        const { [INNER_ENCODING]: inner, [ENCODING]: _, ...metadata } = payload.metadata!;
        return { metadata: { ...metadata, ...(inner && { [ENCODING]: inner }) }, data: new Uint8Array(await gunzipAsync(payload.data ?? new Uint8Array())) };
      }),
    );
  }
}

/** The codec of every natflow client and worker. */
export const natflowPayloadCodec = new GzipPayloadCodec();

/** Adds natflow's codec once, whatever else the options already carry. */
function withCodec<T extends { dataConverter?: DataConverter }>(options: T): T {
  const codecs = options.dataConverter?.payloadCodecs ?? [];
  if (codecs.includes(natflowPayloadCodec)) return options;
  return { ...options, dataConverter: { ...options.dataConverter, payloadCodecs: [...codecs, natflowPayloadCodec] } };
}

/**
 * Put on a connection (client or native), it gives the codec to every Client and Worker made
 * with that connection — the control worker, the gateway agent, the bridge, the CLI, tests —
 * and to replay workers. Idempotent: the SDK may apply a plugin twice (connection and client).
 * The codec runs outside the workflow sandbox, so bundling needs nothing.
 */
export const payloadCodecPlugin: ClientPlugin & ConnectionPlugin & NativeConnectionPlugin & WorkerPlugin = {
  name: 'natflow.payload-codec',
  configureClient: (options: Omit<ClientOptions, 'plugins'>) => withCodec(options),
  configureWorker: (options: WorkerOptions) => withCodec(options),
  configureReplayWorker: (options: ReplayWorkerOptions) => withCodec(options),
};
