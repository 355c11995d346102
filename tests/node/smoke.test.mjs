// Smoke tests of a running teegate with the official OpenAI Node SDK.
// The Go test in tests/nodesdk starts the stack and runs this file with
// `node --test`, passing TEEGATE_BASE_URL and TEEGATE_API_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.TEEGATE_BASE_URL;
const apiKey = process.env.TEEGATE_API_KEY;
const model = process.env.TEEGATE_MODEL || 'teegate-builtin';
assert.ok(baseURL && apiKey, 'TEEGATE_BASE_URL and TEEGATE_API_KEY must be set');

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

test('chat completion', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Tell me about lighthouses.' }], max_tokens: 16, seed: 1,
  });
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(r.usage.total_tokens > 0);
});

test('chat completion stream with usage', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 12, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    for (const c of chunk.choices) text += c.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(chunks > 1);
  assert.ok(text.length > 0);
  assert.ok(usage && usage.completion_tokens > 0);
});

test('legacy completion', async () => {
  const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8 });
  assert.ok(r.choices[0].text.length > 0);
});

test('embeddings', async () => {
  const r = await client.embeddings.create({ model, input: ['a lighthouse', 'a garden'] });
  assert.equal(r.data.length, 2);
  assert.ok(r.data[0].embedding.length > 0);
});

test('models list and retrieve', async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert.ok(ids.includes(model));
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
});

test('unknown model is a 404 model_not_found', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found',
  );
});

test('wrong key is a 401', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});

test('invalid parameter is a 400', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], temperature: 7 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.type === 'invalid_request_error',
  );
});

// Inline evidence (issue 11, finding 6): an 18 KB bundle in a header broke
// Node's fetch (undici caps headers at 16 KiB: UND_ERR_HEADERS_OVERFLOW)
// and proxies (8 KiB). A non-stream answer now names its bundle in
// Teegate-Evidence-Id and the client fetches it; a stream carries it in its
// receipt event.
const inline = { 'Teegate-Inline-Evidence': '1' };
const headerBytes = (h) => { let n = 0; h.forEach((v, k) => { n += k.length + v.length + 4; }); return n; };
const sha256hex = async (buf) => Buffer.from(await crypto.subtle.digest('SHA-256', buf)).toString('hex');

test('plain fetch: non-stream answer with inline evidence, headers under 8 KiB, bundle fetched by id', async () => {
  const r = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json', ...inline },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8 }),
  });
  assert.equal(r.status, 200);
  assert.ok(headerBytes(r.headers) < 8192, `${headerBytes(r.headers)} bytes of headers`);
  assert.equal(r.headers.get('teegate-evidence'), null);
  assert.ok(r.headers.get('teegate-receipt'));
  const body = await r.json();
  assert.ok(body.choices[0].message.content.length > 0);
  const id = r.headers.get('teegate-evidence-id');
  const ev = await fetch(`${baseURL}/attestation/evidence/${id}`, { headers: { Authorization: `Bearer ${apiKey}` } });
  assert.equal(ev.status, 200);
  assert.equal(await sha256hex(await ev.arrayBuffer()), id);
});

test('plain fetch: stream with inline evidence in its receipt event', async () => {
  const r = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json', ...inline },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, stream: true }),
  });
  assert.equal(r.status, 200);
  assert.ok(headerBytes(r.headers) < 8192);
  const text = await r.text();
  const line = text.split('\n').find((l) => l.includes('"teegate_receipt"'));
  const chunk = JSON.parse(line.slice('data: '.length));
  assert.equal(chunk.teegate_receipt.receipt.evidence_id, r.headers.get('teegate-evidence-id'));
  assert.ok(chunk.teegate_evidence && chunk.teegate_evidence.signing_pub);
  assert.ok(text.endsWith('data: [DONE]\n\n'));
});

test('official SDK: answers with inline evidence, stream and non-stream', async () => {
  const c = new OpenAI({ baseURL, apiKey, maxRetries: 0, defaultHeaders: inline });
  const { data, response } = await c.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8,
  }).withResponse();
  assert.ok(data.choices[0].message.content.length > 0);
  assert.ok(response.headers.get('teegate-evidence-id'));
  const stream = await c.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, stream: true,
  });
  let receipt = null;
  let text = '';
  for await (const chunk of stream) {
    for (const ch of chunk.choices) text += ch.delta?.content ?? '';
    if (chunk.teegate_receipt) receipt = chunk;
  }
  assert.ok(text.length > 0);
  assert.ok(receipt && receipt.teegate_evidence, 'receipt chunk with its bundle');
});
