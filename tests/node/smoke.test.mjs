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
