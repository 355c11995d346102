// The Responses API with the official OpenAI Node SDK against a running
// teegate. The Go test in tests/nodesdk starts the stack, runs this file
// with `node --test`, and then verifies every exchange saved here (request
// bytes, response bytes, headers) with `teegate verify response` and the
// Go SDK's verifier. TEEGATE_OUT_DIR is where exchanges are saved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';

const baseURL = process.env.TEEGATE_BASE_URL;
const apiKey = process.env.TEEGATE_API_KEY;
const outDir = process.env.TEEGATE_OUT_DIR;
const model = process.env.TEEGATE_MODEL || 'teegate-builtin';
assert.ok(baseURL && apiKey && outDir, 'TEEGATE_BASE_URL, TEEGATE_API_KEY and TEEGATE_OUT_DIR must be set');

// recordingFetch keeps the exact bytes the SDK sent and received, which is
// what a verifier must hash (docs/attestation.md §13).
function recordingFetch(name) {
  return async (url, init) => {
    const res = await fetch(url, init);
    const body = typeof init.body === 'string' ? Buffer.from(init.body) : Buffer.from(init.body ?? '');
    const copy = res.clone();
    copy.arrayBuffer().then((buf) => {
      writeFileSync(join(outDir, `${name}.request`), body);
      writeFileSync(join(outDir, `${name}.response`), Buffer.from(buf));
      writeFileSync(join(outDir, `${name}.headers.json`), JSON.stringify({
        receipt: res.headers.get('teegate-receipt'),
        evidenceId: res.headers.get('teegate-evidence-id'),
        contentType: res.headers.get('content-type'),
      }));
    });
    return res;
  };
}

// Streams ask for the evidence inline (it rides in the receipt event);
// non-stream answers name it in Teegate-Evidence-Id, fetched by the Go test
// (a bundle inline in a header can pass Node's 16 KiB header limit).
function client(name, inline = false) {
  return new OpenAI({ baseURL, apiKey, maxRetries: 0, fetch: recordingFetch(name),
    defaultHeaders: inline ? { 'Teegate-Inline-Evidence': '1' } : {} });
}

const params = {
  model,
  instructions: 'Answer briefly.',
  input: [{ role: 'user', content: [{ type: 'input_text', text: 'Tell me about lighthouses.' }] }],
  max_output_tokens: 16,
};

test('responses.create', async () => {
  const r = await client('nonstream').responses.create(params);
  assert.equal(r.object, 'response');
  assert.ok(r.output_text.length > 0, 'output_text is empty');
  assert.equal(r.store, false);
  assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  assert.equal(r.output[0].type, 'message');
  assert.equal(r.output[0].content[0].type, 'output_text');
});

test('responses.create stream: true with for await', async () => {
  const stream = await client('stream', true).responses.create({ ...params, stream: true });
  let text = '';
  let final = null;
  const types = [];
  for await (const event of stream) {
    types.push(event.type);
    assert.equal(event.sequence_number, types.length - 1);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (event.type === 'response.completed' || event.type === 'response.incomplete') final = event.response;
  }
  assert.equal(types[0], 'response.created');
  assert.equal(types[1], 'response.in_progress');
  assert.ok(types.includes('response.output_text.delta'));
  // The receipt event comes last, as a keepalive event the SDK passes through.
  assert.equal(types.at(-1), 'keepalive');
  assert.ok(text.length > 0);
  assert.ok(final, 'no terminal event');
  assert.equal(final.output[0].content[0].text, text);
  assert.ok(final.usage.output_tokens > 0 && final.usage.input_tokens > 0);
  assert.equal(final.usage.total_tokens, final.usage.input_tokens + final.usage.output_tokens);
});

test('previous_response_id is a 400 that says the gateway is stateless', async () => {
  await assert.rejects(
    client('stateless').responses.create({ ...params, previous_response_id: 'resp_123' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'previous_response_id' &&
      /stateless/.test(e.message),
  );
});

test('responses.stream helper accumulates past the receipt event', async () => {
  const stream = client('helper').responses.stream(params);
  let deltas = '';
  stream.on('response.output_text.delta', (e) => { deltas += e.delta; });
  const final = await stream.finalResponse();
  assert.ok(final.output_text.length > 0);
  assert.equal(final.output_text, deltas);
  assert.ok(final.usage.total_tokens > 0);
});
