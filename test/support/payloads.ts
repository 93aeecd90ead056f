// Payload sizes as the server sees them, against its 2 MB limit per payload: a value encoded by
// natflow's data converter (payload codec included), and the largest payload in a history.
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { natflowPayloadCodec } from '../../worker/payload-codec.js';

type History = Awaited<ReturnType<WorkflowHandle['fetchHistory']>>;

export const PAYLOAD_LIMIT = 2 * 1024 * 1024;

/** The size a value takes on the wire, through natflow's data converter. */
export async function wireSize(value: unknown): Promise<number> {
  const [payload] = await natflowPayloadCodec.encode([defaultPayloadConverter.toPayload(value)]);
  return payload!.data!.byteLength;
}

/**
 * The largest payload anywhere in a history (inputs, results, update requests, continue-as-new
 * inputs, ...) and the kind of event that carries it: each is one payload to the server's limit.
 */
export function largestPayload(history: History): { bytes: number; event: string } {
  let largest = { bytes: 0, event: '' };
  const visit = (value: unknown, event: string): void => {
    if (!value || typeof value !== 'object' || ArrayBuffer.isView(value)) return;
    for (const [key, child] of Object.entries(value)) {
      if (key === 'payloads' && Array.isArray(child)) {
        for (const p of child as { data?: Uint8Array | null }[]) {
          const bytes = p.data?.byteLength ?? 0;
          if (bytes > largest.bytes) largest = { bytes, event };
        }
      } else visit(child, event);
    }
  };
  for (const e of history.events ?? []) {
    for (const [key, attributes] of Object.entries(e)) if (key.endsWith('Attributes')) visit(attributes, key.replace(/EventAttributes$/, ''));
  }
  return largest;
}
