// The payload codec on its own: large payloads go out gzip-compressed and come back identical;
// small ones are left as they are, so the Web UI still shows them.
import { describe, expect, it } from 'vitest';
import { defaultPayloadConverter } from '@temporalio/common';
import { COMPRESS_ABOVE_BYTES, GZIP_ENCODING, GzipPayloadCodec } from '../worker/payload-codec.js';

const codec = new GzipPayloadCodec();
const encoding = (p: { metadata?: Record<string, Uint8Array> | null }) => new TextDecoder().decode(p.metadata!.encoding);

describe('payload codec', () => {
  it('leaves a small payload untouched', async () => {
    const small = defaultPayloadConverter.toPayload({ owner: 'natflow/eip/e1/uid-1', address: '172.18.0.2' });
    const [encoded] = await codec.encode([small]);
    expect(encoded).toBe(small);
    expect(encoding(encoded!)).toBe('json/plain');
    expect(await codec.decode([small])).toEqual([small]);
  });

  it('compresses a large payload and round-trips it, keeping its metadata', async () => {
    const allocations = Object.fromEntries(Array.from({ length: 5_000 }, (_, i) => [`natflow/eip/eip-${i}/${crypto.randomUUID()}`, `172.18.${i >> 8}.${i & 255}`]));
    const large = defaultPayloadConverter.toPayload({ allocations });
    large.metadata!.extra = new TextEncoder().encode('kept');
    expect(large.data!.byteLength).toBeGreaterThan(COMPRESS_ABOVE_BYTES);

    const [encoded] = await codec.encode([large]);
    expect(encoding(encoded!)).toBe(GZIP_ENCODING);
    expect(encoded!.data!.byteLength).toBeLessThan(large.data!.byteLength / 2);

    const [decoded] = await codec.decode([encoded!]);
    expect(decoded).toEqual(large);
    expect(defaultPayloadConverter.fromPayload(decoded!)).toEqual({ allocations });
  });
});
