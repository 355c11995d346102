// An independent verifier of teegate evidence bundles, receipts, stream
// digests and fresh-mode batch proofs, written from docs/attestation.md
// alone (section numbers below refer to it) with nothing but Node's
// built-in modules, and checked against attest/testdata/vectors. It exists
// to prove that the document is enough for a third party: if the Go code and
// the document drift apart, these tests fail.
//
// Out of scope, as the document says (§4.4 steps 5–6, §11): vendor quote
// and GPU report verification (Intel TDX/SGX, AMD SEV-SNP, NVIDIA SPDM). The
// vectors carry a test-only fake evidence format, described in the vectors'
// README, which the tests verify in place of the vendor formats.
//
// Run: node --test independent-verifier.test.mjs (the Go test in
// tests/nodesdk runs it). No npm packages are needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const VECTORS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../attest/testdata/vectors');
const vec = (name) => fs.readFileSync(path.join(VECTORS, name));
const vecJSON = (name) => JSON.parse(vec(name).toString('utf8'));

// ---------------------------------------------------------------------------
// Errors: one code per check, named as in the document's reference errors.

class VerifyError extends Error {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.code = code;
  }
}
const fail = (code, detail) => { throw new VerifyError(code, detail); };

// ---------------------------------------------------------------------------
// §1 Conventions: bytes, hex, b64u, time.

const enc = new TextEncoder();
const ascii = (s) => Buffer.from(s, 'latin1');
const concat = (...parts) => Buffer.concat(parts.map((p) => Buffer.from(p)));
const sha256 = (...parts) => crypto.createHash('sha256').update(concat(...parts)).digest();
const sha512 = (...parts) => crypto.createHash('sha512').update(concat(...parts)).digest();
const u32be = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const hex = (b) => Buffer.from(b).toString('hex');

// fromHex accepts only lowercase hex of the given byte length (§12: uppercase
// would not re-encode to the signed bytes).
function fromHex(s, len, code = 'ErrMalformed') {
  if (typeof s !== 'string' || s.length !== 2 * len || !/^[0-9a-f]*$/.test(s)) fail(code, 'bad hex');
  return Buffer.from(s, 'hex');
}

const b64u = (b) => Buffer.from(b).toString('base64url');

// fromB64u is the strict decoder §1 asks for: no padding, only the base64url
// alphabet, zero trailing bits. Buffer's own decoder is lenient, so the
// result is re-encoded and compared.
function fromB64u(s, code = 'ErrMalformed') {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) fail(code, 'bad base64url');
  const b = Buffer.from(s, 'base64url');
  if (b64u(b) !== s) fail(code, 'non-canonical base64url');
  return b;
}

const TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;
function parseTime(s, code = 'ErrMalformed') {
  const m = typeof s === 'string' && TIME.exec(s);
  if (!m) fail(code, 'bad time');
  const ms = Date.parse(s);
  if (Number(m[1]) < 2000 || Number.isNaN(ms) || new Date(ms).toISOString().replace('.000Z', 'Z') !== s) fail(code, 'bad time');
  return ms;
}

// ---------------------------------------------------------------------------
// §1 Canonical JSON (RFC 8785 restricted): written from the rules in the
// document, not with JSON.stringify, so that the encoder is checked too.

function canonString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) fail('ErrMalformed', 'lone surrogate');
      out += s[i] + s[i + 1];
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      fail('ErrMalformed', 'lone surrogate');
    } else if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0d) out += '\\r';
    else if (c < 0x20) out += '\\u00' + c.toString(16).padStart(2, '0');
    else out += s[i];
  }
  return out + '"';
}

function canonText(v) {
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (typeof v === 'string') return canonString(v);
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) fail('ErrMalformed', 'number outside [0, 2^53-1]');
    return String(v);
  }
  if (Array.isArray(v)) return '[' + v.map(canonText).join(',') + ']';
  if (v !== null && typeof v === 'object') {
    // Sorting JS strings compares UTF-16 code units: RFC 8785's order.
    const keys = Object.keys(v).sort();
    return '{' + keys.map((k) => canonString(k) + ':' + canonText(v[k])).join(',') + '}';
  }
  fail('ErrMalformed', 'null or unsupported JSON value');
}

const canonical = (v) => Buffer.from(enc.encode(canonText(v)));

// plainIntegers reports whether every number in JSON text is written as
// digits only (§1): JSON.parse would read 2.0 or 2e0 as the integer 2,
// which re-encodes to other bytes than were received.
function plainIntegers(text) {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      let j = i;
      while (j < text.length && /[0-9.eE+-]/.test(text[j])) j++;
      if (!/^[0-9]+$/.test(text.slice(i, j))) return false;
      i = j - 1;
    }
  }
  return true;
}

// parseJSON decodes UTF-8 strictly (§1: strings MUST be valid UTF-8).
function parseJSON(bytes, code = 'ErrMalformed') {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    fail(code, 'not UTF-8');
  }
  if (!plainIntegers(text)) fail(code, 'number with a sign, fraction or exponent');
  try {
    return JSON.parse(text);
  } catch {
    fail(code, 'not JSON');
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const utf8Len = (s) => Buffer.byteLength(s, 'utf8');

function checkMembers(o, required, optional = [], what = 'object') {
  if (!isObject(o)) fail('ErrMalformed', `${what} is not an object`);
  for (const k of required) if (!Object.hasOwn(o, k)) fail('ErrMalformed', `${what} lacks ${k}`);
  for (const k of Object.keys(o)) {
    if (!required.includes(k) && !optional.includes(k)) fail('ErrMalformed', `${what} has unknown member ${k}`);
  }
}

function checkString(s, min, max, what) {
  if (typeof s !== 'string' || utf8Len(s) < min || utf8Len(s) > max) fail('ErrMalformed', `bad ${what}`);
  return s;
}

function checkInt(n, what) {
  if (!Number.isSafeInteger(n) || n < 0) fail('ErrMalformed', `bad ${what}`);
  return n;
}

// ---------------------------------------------------------------------------
// Ed25519 with raw 32-byte keys (RFC 8032), through JWK import.

function publicKeyFromRaw(raw) {
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(raw) }, format: 'jwk' });
}

function ed25519Verify(pubRaw, msg, sig) {
  if (pubRaw.length !== 32 || sig.length !== 64) return false;
  try {
    return crypto.verify(null, msg, publicKeyFromRaw(pubRaw), sig);
  } catch {
    return false;
  }
}

// Private keys are only needed by the tests, to forge variants of the
// vectors (key.json gives the seeds): PKCS#8 wraps the 32-byte seed.
function privateKeyFromSeed(seed) {
  const der = concat(Buffer.from('302e020100300506032b657004220420', 'hex'), seed);
  return crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
}
const rawPublic = (priv) => fromB64u(crypto.createPublicKey(priv).export({ format: 'jwk' }).x);
const ed25519Sign = (priv, msg) => crypto.sign(null, msg, priv);

// ---------------------------------------------------------------------------
// §3 Binding.

const gpuNonce = (signingPub, epochNonce) => sha256(ascii('teegate/gpu/v1'), signingPub, epochNonce);

function gpuEvidenceDigestInput(gpus) {
  const parts = [u32be(gpus.length)];
  for (const g of gpus) {
    // An unreported cc_mode is the empty string: every GPU has four fields.
    for (const field of [ascii(g.arch), ascii(g.ccMode), g.report, g.certChain]) parts.push(u32be(field.length), field);
  }
  return concat(...parts);
}
const gpuEvidenceDigest = (gpus) => sha256(gpuEvidenceDigestInput(gpus));

// The epoch window (§2, §4.1) is hashed as u64be(not_before) ||
// u64be(not_after) || u64be(grace_seconds), the times in Unix seconds.
const u64be = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; };
const epochWindowBytes = (e) => concat(u64be(e.notBefore / 1000), u64be(e.notAfter / 1000), u64be(e.graceSeconds));
const reportData = (signingPub, hpkePub, gpuDigest, epochNonce, epoch) =>
  sha512(ascii('teegate/evidence/v2'), signingPub, hpkePub, gpuDigest, epochNonce, epochWindowBytes(epoch));

// ---------------------------------------------------------------------------
// §4 Evidence bundle.

const MAX_BUNDLE = 1 << 20;
const BUNDLE_REQUIRED = ['cpu_evidence', 'created', 'epoch', 'epoch_nonce', 'gpus', 'hpke_pub', 'signature', 'signing_pub', 'tee', 'version', 'worker'];
const MAX_GRACE_SECONDS = 30 * 24 * 3600;
const TEES = ['tdx', 'sgx', 'sev-snp'];
const CC_MODES = ['on', 'off', 'devtools'];

function bytesOf(s, len, what) {
  const b = fromB64u(s);
  if (len !== undefined && b.length !== len) fail('ErrMalformed', `${what} is not ${len} bytes`);
  return b;
}

// decodeBundle is §4.4 step 1: size, schema, lengths, version, and the
// byte-for-byte canonical form (§4.2).
function decodeBundle(bytes) {
  if (bytes.length > MAX_BUNDLE) fail('ErrMalformed', 'bundle over 1 MiB');
  const o = parseJSON(bytes);
  // §15: version 1 bundles (no epoch member) are refused by name, before
  // the schema check that would call them malformed.
  if (isObject(o) && o.version === 1) fail('ErrUnsupportedVersion', 'bundle version 1 is no longer accepted');
  checkMembers(o, BUNDLE_REQUIRED, ['simulated_roots'], 'bundle');
  if (!Number.isSafeInteger(o.version)) fail('ErrMalformed', 'bad version');
  if (o.version !== 2) fail('ErrUnsupportedVersion', `version ${o.version}`);
  if (!TEES.includes(o.tee)) fail('ErrMalformed', 'tee is not tdx, sgx or sev-snp');
  if (!Array.isArray(o.gpus) || o.gpus.length > 64) fail('ErrMalformed', 'bad gpus');
  const gpus = o.gpus.map((g, i) => {
    checkMembers(g, ['arch', 'cert_chain', 'report'], ['cc_mode'], `gpus[${i}]`);
    checkString(g.arch, 1, 32, 'gpu arch');
    let ccMode = '';
    if (Object.hasOwn(g, 'cc_mode')) {
      // Optional strings are omitted when empty (§1): "" is not canonical.
      if (g.cc_mode === '') fail('ErrNonCanonical', 'empty cc_mode written');
      if (!CC_MODES.includes(g.cc_mode)) fail('ErrMalformed', 'cc_mode is not on, off or devtools');
      ccMode = g.cc_mode;
    }
    const report = bytesOf(g.report);
    if (report.length === 0) fail('ErrMalformed', 'empty GPU report');
    return { arch: g.arch, ccMode, certChain: bytesOf(g.cert_chain), report };
  });
  checkMembers(o.worker, ['id'], ['models', 'provider'], 'worker');
  checkString(o.worker.id, 1, 256, 'worker id');
  if (Object.hasOwn(o.worker, 'provider')) {
    if (o.worker.provider === '') fail('ErrNonCanonical', 'empty provider written');
    checkString(o.worker.provider, 1, 256, 'worker provider');
  }
  if (Object.hasOwn(o.worker, 'models')) {
    if (!Array.isArray(o.worker.models) || o.worker.models.length > 256) fail('ErrMalformed', 'bad worker models');
    // Optional members are omitted when empty (§4.1): [] is not canonical.
    if (o.worker.models.length === 0) fail('ErrNonCanonical', 'empty models written');
    o.worker.models.forEach((m) => checkString(m, 1, 256, 'model'));
  }
  let simulatedRoots = null;
  if (Object.hasOwn(o, 'simulated_roots')) {
    if (!Array.isArray(o.simulated_roots) || o.simulated_roots.length > 4) fail('ErrMalformed', 'bad simulated_roots');
    if (o.simulated_roots.length === 0) fail('ErrNonCanonical', 'empty simulated_roots written');
    simulatedRoots = o.simulated_roots.map((r) => bytesOf(r));
    if (simulatedRoots.some((r) => r.length === 0)) fail('ErrMalformed', 'empty simulated root');
  }
  const cpuEvidence = bytesOf(o.cpu_evidence);
  if (cpuEvidence.length === 0) fail('ErrMalformed', 'empty cpu_evidence');
  // §4.1 epoch: not_before < not_after, 0 <= grace_seconds <= 30 days,
  // and the bundle's created inside [not_before, not_after + grace].
  checkMembers(o.epoch, ['grace_seconds', 'not_after', 'not_before'], [], 'epoch');
  const epoch = {
    notBefore: parseTime(o.epoch.not_before),
    notAfter: parseTime(o.epoch.not_after),
    graceSeconds: checkInt(o.epoch.grace_seconds, 'grace_seconds'),
  };
  if (epoch.graceSeconds > MAX_GRACE_SECONDS) fail('ErrMalformed', 'grace over 30 days');
  if (epoch.notBefore >= epoch.notAfter) fail('ErrMalformed', 'epoch not_before not before not_after');
  epoch.erasedAt = epoch.notAfter + epoch.graceSeconds * 1000;
  const created = parseTime(o.created);
  if (created < epoch.notBefore || created > epoch.erasedAt) fail('ErrMalformed', 'created outside its epoch');
  const b = {
    json: o,
    cpuEvidence,
    created,
    epoch,
    epochNonce: bytesOf(o.epoch_nonce, 32, 'epoch_nonce'),
    gpus,
    hpkePub: bytesOf(o.hpke_pub, 32, 'hpke_pub'),
    signature: bytesOf(o.signature, 64, 'signature'),
    signingPub: bytesOf(o.signing_pub, 32, 'signing_pub'),
    simulatedRoots,
    tee: o.tee,
  };
  if (!canonical(o).equals(bytes)) fail('ErrNonCanonical', 'bundle bytes are not canonical');
  return b;
}

const bundleId = (bytes) => hex(sha256(bytes));

function bundleSigningInput(o) {
  const rest = { ...o };
  delete rest.signature;
  return concat(ascii('teegate/bundle/v1'), [0], canonical(rest));
}

// verifyBundle runs §4.4 in order. Steps 5 and 6 are delegated to
// opts.cpu[tee](evidence) -> 64-byte report data and opts.gpu(gpu) ->
// 32-byte nonce, which throw on failure: real verifiers implement the
// vendor formats there; the tests plug in the vectors' fake format.
function verifyBundle(bytes, opts) {
  const b = decodeBundle(bytes);
  if (b.simulatedRoots && !opts.allowSimulated) fail('ErrSimulatedNotAllowed', 'simulated evidence');
  if (!ed25519Verify(b.signingPub, bundleSigningInput(b.json), b.signature)) {
    fail('ErrBundleSignature', 'bundle signature does not verify');
  }
  const skew = opts.skewMs ?? 5 * 60 * 1000;
  if (b.created > opts.now + skew) fail('ErrEvidenceExpired', 'created in the future');
  if (opts.maxAgeMs !== undefined && opts.now - b.created > opts.maxAgeMs) fail('ErrEvidenceExpired', 'too old');
  const cpu = opts.cpu[b.tee];
  if (!cpu) fail('ErrUnknownTEE', `no verifier for ${b.tee}`);
  const cpuReportData = cpu(b.cpuEvidence);
  const nonces = b.gpus.map((g) => opts.gpu(g));
  const want = reportData(b.signingPub, b.hpkePub, gpuEvidenceDigest(b.gpus), b.epochNonce, b.epoch);
  if (!want.equals(cpuReportData)) fail('ErrBindingReportData', 'report data does not bind the keys and GPUs');
  const wantNonce = gpuNonce(b.signingPub, b.epochNonce);
  for (const n of nonces) if (!wantNonce.equals(n)) fail('ErrBindingGPUNonce', 'GPU nonce does not bind the key');
  // §4.4: the claimed CC mode of each GPU, "unknown" where not reported.
  return { ...b, id: bundleId(bytes), ccModes: b.gpus.map((g) => g.ccMode || 'unknown') };
}

// ---------------------------------------------------------------------------
// The vectors' fake evidence (attest/testdata/vectors/README.md), standing in
// for §4.4 steps 5–6.

const keys = vecJSON('key.json');
const cpuKey = privateKeyFromSeed(Buffer.from(keys.fake_cpu_seed, 'hex'));
const gpuKey = privateKeyFromSeed(Buffer.from(keys.fake_gpu_seed, 'hex'));
const signingKey = privateKeyFromSeed(Buffer.from(keys.ed25519_seed, 'hex'));
const cpuPub = rawPublic(cpuKey);
const gpuPub = rawPublic(gpuKey);

function fakeCPU(ev) {
  const body = ev.subarray(0, 72);
  if (ev.length !== 136 || !body.subarray(0, 8).equals(ascii('FAKECPU1')) ||
      !ed25519Verify(cpuPub, body, ev.subarray(72))) {
    fail('ErrCPUEvidence', 'fake CPU evidence does not verify');
  }
  return body.subarray(8, 72);
}

function fakeGPU(g) {
  const body = g.report.subarray(0, 40);
  if (g.report.length !== 104 || !body.subarray(0, 8).equals(ascii('FAKEGPU1')) ||
      !g.certChain.equals(gpuPub) || !ed25519Verify(g.certChain, body, g.report.subarray(40))) {
    fail('ErrGPUEvidence', 'fake GPU report does not verify');
  }
  return body.subarray(8, 40);
}

const makeFakeCPU = (rd) => { const b = concat(ascii('FAKECPU1'), rd); return concat(b, ed25519Sign(cpuKey, b)); };
const makeFakeGPU = (nonce) => { const b = concat(ascii('FAKEGPU1'), nonce); return concat(b, ed25519Sign(gpuKey, b)); };

const NOW = Date.parse('2026-11-27T10:01:00Z');
const bundleOpts = { now: NOW, cpu: { tdx: fakeCPU }, gpu: fakeGPU };

// ---------------------------------------------------------------------------
// §7 Receipts.

const RECEIPT_REQUIRED = ['created', 'evidence_id', 'model', 'request_id', 'request_sha256', 'response_sha256', 'stream', 'usage', 'version'];

function decodeReceiptBody(r) {
  checkMembers(r, RECEIPT_REQUIRED, ['nonce', 'usage_source'], 'receipt');
  if (!Number.isSafeInteger(r.version)) fail('ErrMalformed', 'bad version');
  // §15: version 1 receipts are refused by name.
  if (r.version === 1) fail('ErrUnsupportedVersion', 'receipt version 1 is no longer accepted');
  if (r.version !== 2) fail('ErrUnsupportedVersion', `version ${r.version}`);
  parseTime(r.created);
  fromHex(r.evidence_id, 32);
  fromHex(r.request_sha256, 32);
  fromHex(r.response_sha256, 32);
  checkString(r.model, 0, 256, 'model');
  checkString(r.request_id, 1, 256, 'request_id');
  if (Object.hasOwn(r, 'nonce')) checkString(r.nonce, 1, 256, 'nonce');
  if (typeof r.stream !== 'boolean') fail('ErrMalformed', 'bad stream');
  checkMembers(r.usage, ['completion_tokens', 'prompt_tokens', 'total_tokens'], [], 'usage');
  Object.values(r.usage).forEach((n) => checkInt(n, 'usage'));
  // §7: where the usage comes from, when the receipt says.
  if (Object.hasOwn(r, 'usage_source') && !['engine', 'engine_requested', 'none'].includes(r.usage_source)) {
    fail('ErrMalformed', 'usage_source is not engine, engine_requested or none');
  }
  return r;
}

function decodeBatch(b) {
  checkMembers(b, ['evidence_id', 'leaf_index', 'proof', 'root', 'tree_size'], [], 'batch');
  fromHex(b.evidence_id, 32);
  fromHex(b.root, 32);
  checkInt(b.leaf_index, 'leaf_index');
  checkInt(b.tree_size, 'tree_size');
  if (!Array.isArray(b.proof) || b.proof.length > 64) fail('ErrMalformed', 'bad proof');
  b.proof.forEach((p) => fromHex(p, 32));
  return b;
}

// §7.4: a parser accepts the header value, the envelope JSON, the chunk
// JSON or the chunk's data: line.
function parseEnvelope(input) {
  let s = Buffer.isBuffer(input) ? input.toString('utf8') : input;
  s = s.trim();
  if (s.startsWith('data:')) s = s.slice(5).trimStart();
  let o = s.startsWith('{') ? parseJSON(Buffer.from(s)) : parseJSON(fromB64u(s));
  if (isObject(o) && Object.hasOwn(o, 'teegate_receipt')) o = o.teegate_receipt;
  checkMembers(o, ['receipt', 'signature'], ['batch'], 'envelope');
  return {
    receipt: decodeReceiptBody(o.receipt),
    signature: bytesOf(o.signature, 64, 'signature'),
    batch: Object.hasOwn(o, 'batch') ? decodeBatch(o.batch) : null,
  };
}

// §7.2: computed from the decoded values, not from the bytes received.
const receiptSigningInput = (r) => concat(ascii('teegate/receipt/v1'), [0], canonical(r));

// ---------------------------------------------------------------------------
// §8 Stream digest.

// sseLines splits bytes into lines ending in LF, CRLF or CR.
function sseLines(bytes) {
  const lines = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x0a || bytes[i] === 0x0d) {
      lines.push(bytes.subarray(start, i));
      if (bytes[i] === 0x0d && bytes[i + 1] === 0x0a) i++;
      start = i + 1;
    }
  }
  if (start < bytes.length) lines.push(bytes.subarray(start));
  return lines;
}

function isReceiptEvent(p) {
  if (p[0] !== 0x7b) return false;
  try {
    const o = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(p));
    return isObject(o) && Object.hasOwn(o, 'teegate_receipt');
  } catch {
    return false;
  }
}

// dataPayload is the value of a data: line (one optional space removed),
// or null for any other line.
function dataPayload(line) {
  if (!line.subarray(0, 5).equals(ascii('data:'))) return null;
  let p = line.subarray(5);
  if (p[0] === 0x20) p = p.subarray(1);
  return p;
}

// streamDigest (§8): every line before the receipt line except comment
// lines is hashed, length-prefixed, after the domain string; after the
// receipt line only a blank line, [DONE] and a blank line may follow
// (ErrDataAfterReceipt). Returns the hashed lines, the data payloads among
// them, the digest and the receipt event payload (null when none).
function streamDigest(bytes) {
  const lines = sseLines(bytes);
  const hashed = [];
  const payloads = [];
  let receiptEvent = null;
  let i = 0;
  for (; i < lines.length; i++) {
    const line = lines[i];
    const p = dataPayload(line);
    if (p && isReceiptEvent(p)) { receiptEvent = p; break; }
    if (line[0] === 0x3a) continue; // a comment
    if (p) payloads.push(p);
    hashed.push(line);
  }
  if (receiptEvent) {
    const tail = lines.slice(i + 1);
    const done = (l) => { const p = dataPayload(l); return p !== null && p.equals(ascii('[DONE]')); };
    const ok = tail.length === 0 ||
      (tail[0].length === 0 && tail.length <= 3 &&
       (tail.length < 2 || done(tail[1])) &&
       (tail.length < 3 || tail[2].length === 0));
    if (!ok) fail('ErrDataAfterReceipt', 'data after the receipt line');
  }
  const digest = sha256(ascii('teegate/stream/v2'), [0], ...hashed.flatMap((l) => [u32be(l.length), l]));
  return { lines: hashed, payloads, digest, receiptEvent };
}

// ---------------------------------------------------------------------------
// §9 Merkle tree (RFC 6962 / RFC 9162 §2.1).

const leafHash = (data) => sha256([0], data);
const nodeHash = (l, r) => sha256([1], l, r);

function mth(leaves) {
  if (leaves.length === 0) return sha256();
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

// verifyInclusion is RFC 9162 §2.1.3.2.
function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && r.equals(root);
}

// §9.2: the tree head, u64be(tree_size) || root, after the domain string.
const batchNonce = (treeSize, root) => sha256(ascii('teegate/batch/v2'), u64be(treeSize), root);

// §9.4, all failures ErrBatchProof. fresh is a verified bundle (verifyBundle).
function verifyBatch(env, bundle, fresh) {
  const b = env.batch;
  if (!fresh || fresh.id !== b.evidence_id) fail('ErrBatchProof', 'fresh bundle id');
  // §9.4 step 2: the same epoch and machine, not only the same key.
  const same = fresh.signingPub.equals(bundle.signingPub) && fresh.hpkePub.equals(bundle.hpkePub) &&
    fresh.tee === bundle.tee && canonical(fresh.json.worker).equals(canonical(bundle.json.worker)) &&
    canonical(fresh.json.epoch).equals(canonical(bundle.json.epoch)) &&
    JSON.stringify(fresh.simulatedRoots ?? []) === JSON.stringify(bundle.simulatedRoots ?? []) &&
    fresh.gpus.length === bundle.gpus.length &&
    fresh.gpus.every((g, i) => g.arch === bundle.gpus[i].arch && g.ccMode === bundle.gpus[i].ccMode && g.certChain.equals(bundle.gpus[i].certChain));
  if (!same) fail('ErrBatchProof', 'fresh bundle of another epoch or machine');
  if (fresh.created < parseTime(env.receipt.created) - 5 * 60 * 1000) fail('ErrBatchProof', 'fresh bundle before the receipt');
  const root = fromHex(b.root, 32, 'ErrBatchProof');
  if (!fresh.epochNonce.equals(batchNonce(b.tree_size, root))) fail('ErrBatchProof', 'batch nonce');
  const leaf = leafHash(receiptSigningInput(env.receipt));
  if (!verifyInclusion(b.leaf_index, b.tree_size, leaf, b.proof.map((p) => fromHex(p, 32)), root)) {
    fail('ErrBatchProof', 'inclusion proof');
  }
}

// §10 Receipt verification, in order. ctx: {request, response | responseDigest,
// nonce?, bundle (verified), fresh? (verified), now?, ignoreEpoch?}.
function verifyReceipt(input, ctx) {
  const env = parseEnvelope(input);
  const r = env.receipt;
  if (r.evidence_id !== ctx.bundle.id) fail('ErrEvidenceMismatch', 'evidence id');
  if (!ed25519Verify(ctx.bundle.signingPub, receiptSigningInput(r), env.signature)) {
    fail('ErrReceiptSignature', 'receipt signature does not verify');
  }
  // §10 step 4: not in the future, inside the bundle's epoch window, not
  // before the bundle (5 min skew everywhere).
  const created = parseTime(r.created);
  const skew = 5 * 60 * 1000;
  if (created > (ctx.now ?? NOW) + skew) fail('ErrReceiptTime', 'receipt in the future');
  if (!ctx.ignoreEpoch) {
    if (created < ctx.bundle.epoch.notBefore - skew) fail('ErrReceiptEpoch', 'receipt before its key epoch');
    if (created > ctx.bundle.epoch.erasedAt + skew) fail('ErrReceiptEpoch', "receipt after its epoch's keys were erased");
  }
  if (created < ctx.bundle.created - skew) fail('ErrReceiptTime', 'receipt before its bundle');
  if (r.request_sha256 !== hex(sha256(ctx.request))) fail('ErrRequestHash', 'request hash');
  const digest = ctx.responseDigest ?? sha256(ctx.response);
  if (r.response_sha256 !== hex(digest)) fail('ErrResponseHash', 'response hash');
  if (ctx.nonce !== undefined) {
    if (r.nonce !== ctx.nonce) fail('ErrNonceMismatch', 'nonce');
    if (!env.batch) fail('ErrBatchProof', 'nonce sent but no batch proof');
  }
  if (env.batch) verifyBatch(env, ctx.bundle, ctx.fresh);
  return env;
}

// ---------------------------------------------------------------------------
// Helpers for the negative tests.

function flip(buf, i) {
  const b = Buffer.from(buf);
  b[i] ^= 0x01;
  return b;
}

function expectCode(fn, code, name = '') {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof VerifyError, `${name}: not a VerifyError: ${e}`);
    assert.equal(e.code, code, `${name}: ${e.message}`);
    return true;
  }, `${name}: no error, want ${code}`);
}

function throwsVerifyError(fn) {
  try {
    fn();
  } catch (e) {
    if (e instanceof VerifyError) return e.code;
    throw e;
  }
  return null;
}

// signBundle re-signs a bundle object with the vectors' signing key.
// signedEnvelope signs a receipt body with the vector key.
function signedEnvelope(r) {
  const sig = crypto.sign(null, receiptSigningInput(r), signingKey);
  return JSON.stringify({ receipt: r, signature: b64u(sig) });
}

function signBundle(o, key = signingKey) {
  const rest = { ...o };
  delete rest.signature;
  return canonical({ ...rest, signature: b64u(ed25519Sign(key, bundleSigningInput(rest))) });
}

// forgeBundle rebuilds a bundle around chosen binding inputs with the fake
// evidence keys: evidence that verifies, so that only the binding steps are
// left to catch what was changed.
function forgeBundle({ epochNonce, nonceForGPU, reportDataFor, signingPub, hpkePub, key, ccMode = 'on', epoch }) {
  const base = vecJSON('bundle.json');
  const spub = signingPub ?? fromB64u(base.signing_pub);
  const hpub = hpkePub ?? fromB64u(base.hpke_pub);
  const en = epochNonce ?? fromB64u(base.epoch_nonce);
  const report = makeFakeGPU(nonceForGPU ?? gpuNonce(spub, en));
  const chain = rawPublic(gpuKey);
  const gpus = [{ arch: 'hopper', ccMode, report, certChain: chain }];
  const ep = epoch ?? base.epoch;
  const window = { notBefore: parseTime(ep.not_before), notAfter: parseTime(ep.not_after), graceSeconds: ep.grace_seconds };
  const rd = reportDataFor ?? reportData(spub, hpub, gpuEvidenceDigest(gpus), en, window);
  const o = {
    ...base,
    epoch: ep,
    cpu_evidence: b64u(makeFakeCPU(rd)),
    epoch_nonce: b64u(en),
    gpus: [{ arch: 'hopper', ...(ccMode ? { cc_mode: ccMode } : {}), cert_chain: b64u(chain), report: b64u(report) }],
    hpke_pub: b64u(hpub),
    signing_pub: b64u(spub),
  };
  return signBundle(o, key);
}

// ---------------------------------------------------------------------------
// Tests against the vectors.

const bundleBytes = vec('bundle.json');
const binding = vecJSON('binding.json');
const request = vec('request.json');
const response = vec('response.json');

test('key.json: the seed gives the published public keys', () => {
  assert.equal(hex(rawPublic(signingKey)), keys.ed25519_public);
  assert.equal(keys.ed25519_seed, hex(sha256(ascii('vector/sign'))));
  assert.equal(keys.x25519_private, hex(sha256(ascii('vector/hpke'))));
  assert.equal(keys.fake_cpu_seed, hex(sha256(ascii('vector-machine/cpu'))));
  assert.equal(keys.fake_gpu_seed, hex(sha256(ascii('vector-machine/gpu'))));
  const x = crypto.createPrivateKey({
    key: concat(Buffer.from('302e020100300506032b656e04220420', 'hex'), Buffer.from(keys.x25519_private, 'hex')),
    format: 'der', type: 'pkcs8',
  });
  assert.equal(hex(fromB64u(crypto.createPublicKey(x).export({ format: 'jwk' }).x)), keys.x25519_public);
});

test('canonical JSON follows §1', () => {
  const cases = [
    [{ b: 1, a: [true, false, 'x'] }, '{"a":[true,false,"x"],"b":1}'],
    ['"\\\b\t\n\f\r\u0001\u001f', '"\\"\\\\\\b\\t\\n\\f\\r\\u0001\\u001f"'],
    ['/<>&\u2028é😀', '"/<>&\u2028é😀"'],
    [{ z: {}, y: [] }, '{"y":[],"z":{}}'],
    [9007199254740991, '9007199254740991'],
  ];
  for (const [v, want] of cases) assert.equal(canonical(v).toString('utf8'), want);
  for (const bad of [null, 1.5, -1, 2 ** 53, { a: null }, '\ud800']) {
    expectCode(() => canonical(bad), 'ErrMalformed');
  }
});

test('strict base64url (§1)', () => {
  assert.deepEqual(fromB64u('AAE'), Buffer.from([0, 1]));
  for (const bad of ['AAE=', 'AA+E', 'AAF', 'A', 'AA/E', 'AA\nE', 'AAE\r\n']) expectCode(() => fromB64u(bad), 'ErrMalformed');
});

test('bundle id from the canonical bytes (§4.2)', () => {
  const id = vec('bundle.id').toString('utf8').trim();
  assert.equal(bundleId(bundleBytes), id);
  const b = decodeBundle(bundleBytes);
  assert.ok(canonical(b.json).equals(bundleBytes));
});

test('bundle self-signature (§4.3)', () => {
  const b = decodeBundle(bundleBytes);
  assert.ok(ed25519Verify(b.signingPub, bundleSigningInput(b.json), b.signature));
  assert.equal(hex(b.signingPub), keys.ed25519_public);
  assert.equal(hex(b.hpkePub), keys.x25519_public);
});

test('binding values recomputed from the bundle members (§3)', () => {
  const b = decodeBundle(bundleBytes);
  assert.equal(hex(b.epochNonce), binding.epoch_nonce);
  assert.deepEqual(b.gpus.map((g) => ({ arch: g.arch, cc_mode: g.ccMode, cert_chain: hex(g.certChain), report: hex(g.report) })), binding.gpus);
  assert.equal(hex(gpuEvidenceDigestInput(b.gpus)), binding.gpu_evidence_digest_input);
  const digest = gpuEvidenceDigest(b.gpus);
  assert.equal(hex(digest), binding.gpu_evidence_digest);
  const nonce = gpuNonce(b.signingPub, b.epochNonce);
  assert.equal(hex(nonce), binding.gpu_nonce);
  assert.deepEqual(b.json.epoch, binding.epoch);
  const rdInput = concat(ascii('teegate/evidence/v2'), b.signingPub, b.hpkePub, digest, b.epochNonce, epochWindowBytes(b.epoch));
  assert.equal(hex(rdInput), binding.report_data_input);
  const rd = reportData(b.signingPub, b.hpkePub, digest, b.epochNonce, b.epoch);
  assert.ok(rd.equals(sha512(rdInput)));
  assert.equal(hex(rd), binding.report_data);
  // The fake evidence carries exactly these values.
  assert.ok(fakeCPU(b.cpuEvidence).equals(rd));
  for (const g of b.gpus) assert.ok(fakeGPU(g).equals(nonce));
  assert.equal(hex(gpuEvidenceDigest([])), hex(sha256(Buffer.alloc(4))));
});

test('bundle verifies per §4.4', () => {
  const v = verifyBundle(bundleBytes, bundleOpts);
  assert.equal(v.id, vec('bundle.id').toString('utf8').trim());
  assert.deepEqual(v.ccModes, ['on', 'on']);
  // The TEE's statement of each GPU's mode reaches the result; an
  // unreported mode is "unknown" (§4.1), for the policy to reject.
  for (const [mode, want] of [['devtools', 'devtools'], ['off', 'off'], ['', 'unknown']]) {
    assert.deepEqual(verifyBundle(forgeBundle({ ccMode: mode }), bundleOpts).ccModes, [want]);
  }
  expectCode(() => verifyBundle(bundleBytes, { ...bundleOpts, now: Date.parse('2026-11-27T09:50:00Z') }), 'ErrEvidenceExpired');
  expectCode(() => verifyBundle(bundleBytes, { ...bundleOpts, maxAgeMs: 30_000 }), 'ErrEvidenceExpired');
});

test('bundle negatives: each check fails with its error', () => {
  const base = vecJSON('bundle.json');
  // withGPU0 changes members of the first GPU (undefined removes one).
  const withGPU0 = (m) => {
    const g = { ...base.gpus[0], ...m };
    for (const k of Object.keys(g)) if (g[k] === undefined) delete g[k];
    return { ...base, gpus: [g, ...base.gpus.slice(1)] };
  };
  const sig = fromB64u(base.signature);
  const cases = [
    ['signature byte', canonical({ ...base, signature: b64u(flip(sig, 10)) }), 'ErrBundleSignature'],
    ['worker id, not re-signed', canonical({ ...base, worker: { ...base.worker, id: 'worker-vectos' } }), 'ErrBundleSignature'],
    ['created, not re-signed', canonical({ ...base, created: '2026-11-27T10:00:01Z' }), 'ErrBundleSignature'],
    ['whitespace', Buffer.from(bundleBytes.toString('utf8').replace('{"cpu', '{ "cpu')), 'ErrNonCanonical'],
    ['unknown member', canonical({ ...base, extra: 'x' }), 'ErrMalformed'],
    ['version 3', canonical({ ...base, version: 3 }), 'ErrUnsupportedVersion'],
    ['version 1 (refused by name, §15)', (() => {
      const v1 = { ...base, version: 1 };
      delete v1.epoch;
      return signBundle(v1);
    })(), 'ErrUnsupportedVersion'],
    // §4.1 epoch window: changed, not re-signed; re-signed (the key's
    // signature is not enough: the report data binds the window); malformed.
    ['epoch not_after, not re-signed', canonical({ ...base, epoch: { ...base.epoch, not_after: '2036-11-27T11:00:00Z' } }), 'ErrBundleSignature'],
    ['epoch not_after, re-signed', signBundle({ ...base, epoch: { ...base.epoch, not_after: '2036-11-27T11:00:00Z' } }), 'ErrBindingReportData'],
    ['epoch not_before, re-signed', signBundle({ ...base, epoch: { ...base.epoch, not_before: '2026-11-27T09:00:00Z' } }), 'ErrBindingReportData'],
    ['epoch grace, re-signed', signBundle({ ...base, epoch: { ...base.epoch, grace_seconds: base.epoch.grace_seconds + 1 } }), 'ErrBindingReportData'],
    ['epoch missing', (() => { const o = { ...base }; delete o.epoch; return signBundle(o); })(), 'ErrMalformed'],
    ['epoch unknown member', signBundle({ ...base, epoch: { ...base.epoch, x: 1 } }), 'ErrMalformed'],
    ['epoch grace negative', Buffer.from(bundleBytes.toString('utf8').replace(`"grace_seconds":${base.epoch.grace_seconds}`, '"grace_seconds":-1')), 'ErrMalformed'],
    ['epoch grace over 30 days', signBundle({ ...base, epoch: { ...base.epoch, grace_seconds: MAX_GRACE_SECONDS + 1 } }), 'ErrMalformed'],
    ['epoch empty', signBundle({ ...base, epoch: { ...base.epoch, not_after: base.epoch.not_before } }), 'ErrMalformed'],
    ['created before its epoch', signBundle({ ...base, epoch: { ...base.epoch, not_before: '2026-11-27T10:00:01Z' } }), 'ErrMalformed'],
    ['created after its erasure', signBundle({ ...base, epoch: { not_before: '2026-11-27T09:00:00Z', not_after: '2026-11-27T09:59:00Z', grace_seconds: 59 } }), 'ErrMalformed'],
    ['simulated roots', signBundle({ ...base, simulated_roots: [b64u(Buffer.from('root'))] }), 'ErrSimulatedNotAllowed'],
    ['tee outside the schema', signBundle({ ...base, tee: 'tpm' }), 'ErrMalformed'],
    ['tee without a verifier', signBundle({ ...base, tee: 'sgx' }), 'ErrUnknownTEE'],
    ['created before 2000', signBundle({ ...base, created: '1999-12-31T23:59:59Z' }), 'ErrMalformed'],
    ['empty model name', signBundle({ ...base, worker: { id: 'w', models: [''] } }), 'ErrMalformed'],
    ['empty models array', signBundle({ ...base, worker: { id: 'w', models: [] } }), 'ErrNonCanonical'],
    ['empty provider', signBundle({ ...base, worker: { id: 'w', provider: '' } }), 'ErrNonCanonical'],
    ['CPU evidence byte', signBundle({ ...base, cpu_evidence: b64u(flip(fromB64u(base.cpu_evidence), 20)) }), 'ErrCPUEvidence'],
    ['epoch nonce byte, re-signed', signBundle({ ...base, epoch_nonce: b64u(flip(fromB64u(base.epoch_nonce), 0)) }), 'ErrBindingReportData'],
    ['hpke_pub byte, re-signed', signBundle({ ...base, hpke_pub: b64u(flip(fromB64u(base.hpke_pub), 31)) }), 'ErrBindingReportData'],
    ['signing key swapped, re-signed with it', signBundle(
      { ...base, signing_pub: b64u(rawPublic(gpuKey)) }, gpuKey), 'ErrBindingReportData'],
    ['report data byte in otherwise valid CPU evidence', (() => {
      const rd = fakeCPU(fromB64u(base.cpu_evidence));
      return signBundle({ ...base, cpu_evidence: b64u(makeFakeCPU(flip(rd, 5))) });
    })(), 'ErrBindingReportData'],
    ['GPU nonce byte in otherwise valid GPU report', forgeBundle({
      nonceForGPU: flip(gpuNonce(fromB64u(base.signing_pub), fromB64u(base.epoch_nonce)), 3),
    }), 'ErrBindingGPUNonce'],
    ['cc_mode, not re-signed', canonical(withGPU0({ cc_mode: 'devtools' })), 'ErrBundleSignature'],
    ['cc_mode devtools, re-signed', signBundle(withGPU0({ cc_mode: 'devtools' })), 'ErrBindingReportData'],
    ['cc_mode removed, re-signed', signBundle(withGPU0({ cc_mode: undefined })), 'ErrBindingReportData'],
    ['cc_mode empty', signBundle(withGPU0({ cc_mode: '' })), 'ErrNonCanonical'],
    ['cc_mode outside the schema', signBundle(withGPU0({ cc_mode: 'unknown' })), 'ErrMalformed'],
  ];
  // The forger itself produces verifying bundles when nothing is changed.
  verifyBundle(forgeBundle({}), bundleOpts);
  for (const [name, bytes, code] of cases) {
    expectCode(() => verifyBundle(bytes, bundleOpts), code, name);
  }
});

test('bundle negatives: every flipped byte of bundle.json fails', () => {
  const id = bundleId(bundleBytes);
  for (let i = 0; i < bundleBytes.length; i++) {
    const bad = flip(bundleBytes, i);
    assert.notEqual(bundleId(bad), id);
    assert.ok(throwsVerifyError(() => verifyBundle(bad, bundleOpts)), `flip at ${i} verified`);
  }
});

test('non-stream receipt: signature over recomputed JCS, request and response hashes (§7, §10)', () => {
  const bundle = verifyBundle(bundleBytes, bundleOpts);
  const envBytes = vec('receipt.envelope.json');
  const header = vec('receipt.header.txt').toString('utf8').trim();
  assert.ok(fromB64u(header).equals(envBytes));
  for (const input of [envBytes, header, envBytes.toString('utf8')]) {
    const env = verifyReceipt(input, { bundle, request, response });
    assert.equal(env.receipt.request_id, 'req-vector-1');
    assert.equal(env.receipt.stream, false);
  }
  const env = parseEnvelope(envBytes);
  // The signing input is recomputed from the parsed JSON; it matches the
  // published one, and so does the envelope written canonically.
  assert.equal(hex(receiptSigningInput(env.receipt)), vec('receipt.signing_input.hex').toString('utf8').trim());
  assert.ok(canonical(env.receipt).equals(vec('receipt.body.json')));
  assert.ok(canonical(JSON.parse(envBytes)).equals(envBytes));
  // A receipt written with other whitespace and member order still verifies:
  // the signature is checked over the re-encoding, not the received bytes.
  const o = JSON.parse(envBytes);
  const reordered = JSON.stringify({ signature: o.signature, receipt: { version: 2, ...o.receipt } }, null, 2);
  verifyReceipt(reordered, { bundle, request, response });
});

test('non-stream receipt negatives', () => {
  const bundle = verifyBundle(bundleBytes, bundleOpts);
  const o = vecJSON('receipt.envelope.json');
  const sig = fromB64u(o.signature);
  const ctx = { bundle, request, response };
  const withReceipt = (r) => JSON.stringify({ ...o, receipt: { ...o.receipt, ...r } });
  const cases = [
    ['signature byte', JSON.stringify({ ...o, signature: b64u(flip(sig, 63)) }), ctx, 'ErrReceiptSignature'],
    ['usage changed', withReceipt({ usage: { ...o.receipt.usage, completion_tokens: 3 } }), ctx, 'ErrReceiptSignature'],
    ['model changed', withReceipt({ model: 'builtio' }), ctx, 'ErrReceiptSignature'],
    ['nonce added', withReceipt({ nonce: 'n' }), ctx, 'ErrReceiptSignature'],
    ['usage_source added', withReceipt({ usage_source: 'engine_requested' }), ctx, 'ErrReceiptSignature'],
    ['usage_source unknown', withReceipt({ usage_source: 'guess' }), ctx, 'ErrMalformed'],
    ['usage_source empty', withReceipt({ usage_source: '' }), ctx, 'ErrMalformed'],
    ['evidence id', withReceipt({ evidence_id: '0'.repeat(64) }), ctx, 'ErrEvidenceMismatch'],
    ['uppercase hex', withReceipt({ request_sha256: o.receipt.request_sha256.toUpperCase() }), ctx, 'ErrMalformed'],
    ['unknown member', withReceipt({ extra: 1 }), ctx, 'ErrMalformed'],
    ['null nonce', withReceipt({ nonce: null }), ctx, 'ErrMalformed'],
    ['empty nonce', withReceipt({ nonce: '' }), ctx, 'ErrMalformed'],
    ['missing model', JSON.stringify({ ...o, receipt: { ...o.receipt, model: undefined } }), ctx, 'ErrMalformed'],
    ['usage written 2e0', JSON.stringify(o).replace('"completion_tokens":2', '"completion_tokens":2e0'), ctx, 'ErrMalformed'],
    ['usage written 2.0', JSON.stringify(o).replace('"completion_tokens":2', '"completion_tokens":2.0'), ctx, 'ErrMalformed'],
    ['usage over 2^53-1', JSON.stringify(o).replace('"completion_tokens":2', '"completion_tokens":9007199254740993'), ctx, 'ErrMalformed'],
    ['line break in signature', JSON.stringify({ ...o, signature: o.signature.slice(0, 40) + '\n' + o.signature.slice(40) }), ctx, 'ErrMalformed'],
    ['float usage', JSON.stringify(o).replace('"completion_tokens":2', '"completion_tokens":2.5'), ctx, 'ErrMalformed'],
    ['version 1 (refused by name, §15)', withReceipt({ version: 1 }), ctx, 'ErrUnsupportedVersion'],
    ['version 3', withReceipt({ version: 3 }), ctx, 'ErrUnsupportedVersion'],
    ['request byte', JSON.stringify(o), { ...ctx, request: flip(request, 30) }, 'ErrRequestHash'],
    ['response byte', JSON.stringify(o), { ...ctx, response: flip(response, 100) }, 'ErrResponseHash'],
    ['client nonce expected', JSON.stringify(o), { ...ctx, nonce: 'client-nonce' }, 'ErrNonceMismatch'],
    // Re-signed with the vector key, so only the time is wrong (finding 3).
    ['dated before its epoch', signedEnvelope({ ...o.receipt, created: '2026-11-27T09:00:00Z' }), ctx, 'ErrReceiptEpoch'],
    ['dated before its epoch, epoch ignored', signedEnvelope({ ...o.receipt, created: '2026-11-27T09:00:00Z' }), { ...ctx, ignoreEpoch: true }, 'ErrReceiptTime'],
    ['dated 2001', signedEnvelope({ ...o.receipt, created: '2001-01-01T00:00:00Z' }), ctx, 'ErrReceiptEpoch'],
    ["dated after its epoch's keys were erased", signedEnvelope({ ...o.receipt, created: '2026-11-27T11:20:00Z' }), { ...ctx, now: Date.parse('2026-11-27T11:21:00Z') }, 'ErrReceiptEpoch'],
    ['dated a year after its epoch', signedEnvelope({ ...o.receipt, created: '2027-11-27T11:00:00Z' }), { ...ctx, now: Date.parse('2027-11-27T11:00:00Z') }, 'ErrReceiptEpoch'],
    ['dated in the future', signedEnvelope({ ...o.receipt, created: '2026-11-27T11:00:00Z' }), ctx, 'ErrReceiptTime'],
    ['dated 9999', signedEnvelope({ ...o.receipt, created: '9999-01-01T00:00:00Z' }), ctx, 'ErrReceiptTime'],
  ];
  for (const [name, input, c, code] of cases) {
    expectCode(() => verifyReceipt(input, c), code, name);
  }
  const envBytes = vec('receipt.envelope.json');
  for (let i = 0; i < envBytes.length; i++) {
    assert.ok(throwsVerifyError(() => verifyReceipt(flip(envBytes, i), ctx)), `envelope flip at ${i} verified`);
  }
  for (let i = 0; i < request.length; i++) expectCode(() => verifyReceipt(envBytes, { ...ctx, request: flip(request, i) }), 'ErrRequestHash');
  for (let i = 0; i < response.length; i++) expectCode(() => verifyReceipt(envBytes, { ...ctx, response: flip(response, i) }), 'ErrResponseHash');
});

test('stream digest over the recorded SSE stream (§8) and its receipt', () => {
  const bundle = verifyBundle(bundleBytes, bundleOpts);
  const sse = vec('stream.sse');
  const want = vecJSON('stream.json');
  const { lines, payloads, digest, receiptEvent } = streamDigest(sse);
  assert.deepEqual(payloads.map((p) => p.toString('utf8')), want.payloads);
  assert.deepEqual(lines.map((l) => l.toString('utf8')), want.hashed_lines);
  assert.equal(hex(digest), want.response_sha256);
  assert.ok(receiptEvent);
  const chunk = JSON.parse(receiptEvent);
  assert.deepEqual(chunk.choices, []);
  const env = verifyReceipt(receiptEvent, { bundle, request: vec('stream.request.json'), responseDigest: digest });
  assert.equal(env.receipt.stream, true);
  assert.ok(canonical(env.receipt).equals(Buffer.from(want.receipt_body)));
  assert.equal(b64u(env.signature), want.signature);

  // Other line terminators and comment lines anywhere: same digest.
  const text = sse.toString('utf8');
  const at = text.indexOf('data: {"id":"chatcmpl-vs","object":"chat.completion.chunk","created":1795773601,"model":"builtin","choices":[],"teegate_receipt"');
  const variants = [
    text.replaceAll('\n', '\r\n'),
    text.replaceAll('\n', '\r'),
    ': hello\n' + text.slice(0, at).replaceAll('\n\n', '\n: c\n\n') + text.slice(at),
  ];
  for (const v of variants) assert.equal(hex(streamDigest(Buffer.from(v)).digest), want.response_sha256);
  // No lines before the receipt: SHA-256 of the domain string alone.
  assert.equal(hex(streamDigest(Buffer.from('data: {"teegate_receipt":{}}\n\n')).digest), hex(sha256(ascii('teegate/stream/v2'), [0])));
});

test('stream negatives', () => {
  const bundle = verifyBundle(bundleBytes, bundleOpts);
  const sse = vec('stream.sse');
  const ctx = { bundle, request: vec('stream.request.json') };
  const check = (bytes) => {
    const { digest, receiptEvent } = streamDigest(bytes);
    if (!receiptEvent) fail('ErrMalformed', 'no receipt event');
    return verifyReceipt(receiptEvent, { ...ctx, responseDigest: digest });
  };
  check(sse);
  const text = sse.toString('utf8');
  const want = vecJSON('stream.json').payloads;
  const receiptLine = text.split('\n').find((l) => l.includes('teegate_receipt'));
  const head = text.slice(0, text.indexOf(receiptLine));
  const tail = text.slice(text.indexOf(receiptLine));
  const cases = [
    // Re-chunking the same bytes changes the digest (the length prefix).
    ['re-chunked', [want[0] + want[1].slice(0, 10), want[1].slice(10), want[2]].map((p) => `data: ${p}\n\n`).join('') + tail, 'ErrResponseHash'],
    ['dropped payload', want.slice(1).map((p) => `data: ${p}\n\n`).join('') + tail, 'ErrResponseHash'],
    // Framing an SSE parser acts on (issue 11, finding 2).
    ['event: line', 'event: error\n' + text, 'ErrResponseHash'],
    ['id: line', 'id: 9\n' + text, 'ErrResponseHash'],
    ['retry: line', 'retry: 1\n' + text, 'ErrResponseHash'],
    ['blank lines removed', head.replaceAll('\n\n', '\n') + tail, 'ErrResponseHash'],
    ['one blank line removed', head.replace('\n\n', '\n') + tail, 'ErrResponseHash'],
    ['blank line added', '\n' + text, 'ErrResponseHash'],
    ['data space dropped', text.replace('data: ', 'data:'), 'ErrResponseHash'],
    // Anything after the receipt but [DONE] (finding 1).
    ['chunk before [DONE]', head + receiptLine + `\n\ndata: ${want[1]}\n\ndata: [DONE]\n\n`, 'ErrDataAfterReceipt'],
    ['chunk after [DONE]', text + `data: ${want[1]}\n\n`, 'ErrDataAfterReceipt'],
    ['chunk in the receipt event', head + receiptLine + `\ndata: ${want[1]}\n\ndata: [DONE]\n\n`, 'ErrDataAfterReceipt'],
    ['event line after the receipt', head + receiptLine + '\nevent: x\n\ndata: [DONE]\n\n', 'ErrDataAfterReceipt'],
    ['comment after the receipt', head + receiptLine + '\n\n: x\ndata: [DONE]\n\n', 'ErrDataAfterReceipt'],
  ];
  for (const [name, bytes, code] of cases) expectCode(() => check(Buffer.from(bytes)), code, name);
  // Every flipped byte before the receipt line fails, except inside the
  // text of a comment line (SSE parsers ignore comments, and so does the
  // digest); so does every flipped byte of the teegate_receipt member.
  const bin = sse.toString('latin1');
  const receiptStart = bin.indexOf(receiptLine);
  const inComment = (i) => {
    const ls = bin.lastIndexOf('\n', i - 1) + 1;
    return bin[ls] === ':' && i > ls && bin[i] !== '\n';
  };
  for (let i = 0; i < receiptStart; i++) {
    if (inComment(i)) { check(flip(sse, i)); continue; }
    // Flipping the LF just before the receipt line glues it to the line
    // before: the receipt event is gone.
    const code = i === receiptStart - 1 ? 'ErrMalformed' : 'ErrResponseHash';
    assert.equal(throwsVerifyError(() => check(flip(sse, i))), code, `flip at ${i}`);
  }
  const memberStart = bin.indexOf('"teegate_receipt"');
  const memberEnd = receiptStart + receiptLine.length - 1; // the chunk's closing brace
  for (let i = memberStart; i < memberEnd; i++) {
    assert.ok(throwsVerifyError(() => check(flip(sse, i))), `receipt flip at ${i} verified`);
  }
  // Every flipped byte after the receipt line fails too: the tail is fixed.
  for (let i = receiptStart + receiptLine.length; i < bin.length; i++) {
    assert.ok(throwsVerifyError(() => check(flip(sse, i))), `tail flip at ${i} verified`);
  }
});

test('batch: leaves, root, every inclusion proof and the batch nonce (§9)', () => {
  const batch = vecJSON('batch.json');
  const inputs = batch.signing_inputs.map((h) => Buffer.from(h, 'hex'));
  const leaves = inputs.map(leafHash);
  assert.deepEqual(leaves.map(hex), batch.leaf_hashes);
  const root = mth(leaves);
  assert.equal(hex(root), batch.root);
  batch.proofs.forEach((proof, i) => {
    assert.ok(verifyInclusion(i, leaves.length, leaves[i], proof.map((p) => Buffer.from(p, 'hex')), root), `leaf ${i}`);
  });
  // The tree size and the root (its 32 raw bytes) enter the nonce.
  assert.equal(batch.tree_size, leaves.length);
  assert.equal(hex(batchNonce(leaves.length, root)), batch.batch_nonce);
  const freshBytes = vec('fresh.bundle.json');
  assert.equal(bundleId(freshBytes), batch.fresh_bundle_id);
  const fresh = verifyBundle(freshBytes, bundleOpts);
  assert.equal(hex(fresh.epochNonce), batch.batch_nonce);

  // Inclusion proofs for other tree sizes, from the RFC 9162 rules.
  for (let n = 1; n <= 9; n++) {
    const ls = Array.from({ length: n }, (_, i) => leafHash(Buffer.from([i])));
    const r = mth(ls);
    for (let i = 0; i < n; i++) {
      const proof = auditPath(i, ls);
      assert.ok(verifyInclusion(i, n, ls[i], proof, r), `n=${n} i=${i}`);
      if (proof.length > 0) assert.ok(!verifyInclusion(i, n, ls[i], [flip(proof[0], 0), ...proof.slice(1)], r));
    }
  }
});

// auditPath is RFC 9162 §2.1.3.1's PATH, used to test verifyInclusion on
// more shapes than the vectors have.
function auditPath(m, leaves) {
  const n = leaves.length;
  if (n === 1) return [];
  let k = 1;
  while (k * 2 < n) k *= 2;
  if (m < k) return [...auditPath(m, leaves.slice(0, k)), mth(leaves.slice(k))];
  return [...auditPath(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

test('fresh receipt: nonce, batch proof and fresh bundle (§9.4, §10)', () => {
  const bundle = verifyBundle(bundleBytes, bundleOpts);
  const fresh = verifyBundle(vec('fresh.bundle.json'), bundleOpts);
  const envBytes = vec('fresh.envelope.json');
  const ctx = { bundle, fresh, request, response, nonce: 'client-nonce-1' };
  const env = verifyReceipt(envBytes, ctx);
  assert.equal(hex(receiptSigningInput(env.receipt)), vecJSON('batch.json').signing_inputs[1]);

  const o = vecJSON('fresh.envelope.json');
  const withBatch = (b) => JSON.stringify({ ...o, batch: { ...o.batch, ...b } });
  const proof = o.batch.proof;
  const cases = [
    ['proof byte', withBatch({ proof: [hex(flip(Buffer.from(proof[0], 'hex'), 0)), proof[1]] }), ctx, 'ErrBatchProof'],
    ['proof entry dropped', withBatch({ proof: proof.slice(0, 1) }), ctx, 'ErrBatchProof'],
    ['root byte', withBatch({ root: hex(flip(Buffer.from(o.batch.root, 'hex'), 31)) }), ctx, 'ErrBatchProof'],
    ['leaf index', withBatch({ leaf_index: 0 }), ctx, 'ErrBatchProof'],
    ['leaf index out of range', withBatch({ leaf_index: 3 }), ctx, 'ErrBatchProof'],
    ['tree size', withBatch({ tree_size: 2 }), ctx, 'ErrBatchProof'],
    ['fresh bundle id', withBatch({ evidence_id: bundle.id }), ctx, 'ErrBatchProof'],
    ['no batch with a nonce', JSON.stringify({ receipt: o.receipt, signature: o.signature }), ctx, 'ErrBatchProof'],
    ['wrong client nonce', JSON.stringify(o), { ...ctx, nonce: 'client-nonce-2' }, 'ErrNonceMismatch'],
    ['fresh bundle of the epoch instead', JSON.stringify(o), { ...ctx, fresh: bundle }, 'ErrBatchProof'],
  ];
  for (const [name, input, c, code] of cases) expectCode(() => verifyReceipt(input, c), code, name);
  // The path of leaf 1 in a tree of 3 ([leaf 0, leaf 2]) is also a valid
  // path in a tree of 4 where leaf 2's hash stands for the right subtree;
  // the fresh bundle commits to the tree size, so the claim is refused
  // (issue 11, finding 4).
  const leaf1 = leafHash(receiptSigningInput(env.receipt));
  assert.ok(verifyInclusion(1, 4, leaf1, proof.map((p) => Buffer.from(p, 'hex')), Buffer.from(o.batch.root, 'hex')));
  expectCode(() => verifyReceipt(withBatch({ tree_size: 4 }), ctx), 'ErrBatchProof', 'tree size 3 -> 4');

  // A fresh bundle whose evidence verifies but whose epoch nonce is not the
  // batch nonce (one byte flipped): only §9.4 step 3 catches it.
  const wrongNonce = forgeBundle({ epochNonce: flip(fromB64u(vecJSON('fresh.bundle.json').epoch_nonce), 7) });
  const forged = verifyBundle(wrongNonce, bundleOpts);
  expectCode(() => verifyReceipt(withBatch({ evidence_id: forged.id }), { ...ctx, fresh: forged }), 'ErrBatchProof');
  // A fresh bundle under another signing key: §9.4 step 2.
  const otherKey = forgeBundle({
    epochNonce: fromB64u(vecJSON('fresh.bundle.json').epoch_nonce),
    signingPub: rawPublic(gpuKey), key: gpuKey,
  });
  const other = verifyBundle(otherKey, bundleOpts);
  expectCode(() => verifyReceipt(withBatch({ evidence_id: other.id }), { ...ctx, fresh: other }), 'ErrBatchProof');
  // The genuine fresh bundle with another epoch window, its evidence
  // re-made to bind it: it verifies, but is not of the receipt's epoch.
  const fj = vecJSON('fresh.bundle.json');
  const fd = decodeBundle(vec('fresh.bundle.json'));
  const ep2 = { ...fj.epoch, grace_seconds: fj.epoch.grace_seconds + 60 };
  const w2 = { notBefore: parseTime(ep2.not_before), notAfter: parseTime(ep2.not_after), graceSeconds: ep2.grace_seconds };
  const otherEpoch = verifyBundle(signBundle({
    ...fj, epoch: ep2,
    cpu_evidence: b64u(makeFakeCPU(reportData(fd.signingPub, fd.hpkePub, gpuEvidenceDigest(fd.gpus), fd.epochNonce, w2))),
  }), bundleOpts);
  expectCode(() => verifyReceipt(withBatch({ evidence_id: otherEpoch.id }), { ...ctx, fresh: otherEpoch }), 'ErrBatchProof', 'fresh bundle of another epoch window');

  for (let i = 0; i < envBytes.length; i++) {
    assert.ok(throwsVerifyError(() => verifyReceipt(flip(envBytes, i), ctx)), `fresh envelope flip at ${i} verified`);
  }
  const freshBytes = vec('fresh.bundle.json');
  for (let i = 0; i < freshBytes.length; i++) {
    assert.ok(throwsVerifyError(() => verifyBundle(flip(freshBytes, i), bundleOpts)), `fresh bundle flip at ${i} verified`);
  }
});
