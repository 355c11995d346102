// Package builtin is teegate's embedded default inference engine: a small,
// real, deterministic text generator that needs no GPU and no model download.
//
// It serves one model (Config.ModelID, "teegate-builtin" by default) through
// engine.Engine for chat.completions, completions (both streamed and not) and
// embeddings, reading the exact OpenAI request body and writing exact
// OpenAI-shaped response bytes. Text comes from a token-level trigram language
// model, interpolated with a bigram model, over the cl100k_base BPE token ids
// of a few kilobytes of English prose written for this project (corpus.txt,
// embedded). The prompt steers generation: completions continue from the
// prompt's last tokens; chat replies start at a sentence about the rarest word
// of the last user message that the corpus knows.
//
// Sampling honors temperature (0 is greedy), top_p, presence and frequency
// penalties, seed, n, max_tokens/max_completion_tokens (counted in sampled BPE
// tokens, exactly) and stop sequences. With a seed, the same request gives the
// same text; without one, the seed is derived from the prompt content (not
// from every body byte), so an unseeded answer is reproducible too and is the
// same streamed or not. Choice i of n uses seed+i. Sampling uses the
// platform's math.Exp and math.Log, so bit-identical text is promised per
// GOARCH, not across them. No choice repeats a 4-gram of its own recent output
// (no_repeat_ngram_size=4 in other decoders), which keeps a trigram model over
// a small corpus out of short loops, even when greedy. The model has no
// end-of-text token: a reply ends at max_tokens ("length") or at a stop
// sequence ("stop"), which keeps benchmark token counts predictable.
//
// Embeddings are feature-hashed (words weighted by their rarity in the corpus,
// word bigrams and character trigrams, into signed buckets, L2-normalized), so
// texts sharing meaningful words point in similar directions. prompt_tokens
// are counted with the real tokenizer; chat messages follow OpenAI's cookbook
// formula (3 tokens per message, 1 per name, 3 to prime the reply, plus the
// role, name and content tokens; content parts are joined with newlines).
//
// An optional latency profile imitates GPU decoding for benchmarks: a stream
// waits TTFT before its first decoding step and PerToken before each later one
// (all n choices advance together); a non-stream answer waits
// TTFT + (tokens-1)*PerToken once. Waits use timers that end on context
// cancellation and Stream.Close. Response ids are "chatcmpl-" or "cmpl-" plus
// the call's RequestID (random when empty).
//
// Client-visible failures are *engine.Error values shaped like OpenAI's (400
// invalid_request_error with param, 404 model_not_found); messages never quote
// prompt text. Tools, function calling, JSON response formats and logprobs
// are refused with a 400, as OpenAI-compatible servers do for models without
// those features. An Engine is safe for concurrent use; a Stream is used by
// one goroutine at a time, except that Close may be called from any goroutine.
package builtin
