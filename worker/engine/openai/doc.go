// Package openai is the engine adapter for OpenAI-compatible inference
// servers (vLLM, SGLang, llama.cpp server, Ollama, TGI) reached over HTTP,
// normally on loopback inside the same confidential VM as the worker. Do
// posts the call's exact body bytes to the operation's /v1 endpoint and
// hands back the server's exact bytes: the whole JSON body of a non-stream
// answer, or each SSE data payload of a stream, in order, ending with io.EOF
// at "data: [DONE]"; a stream that ends without [DONE] is an error, never a
// silent short answer. Closing a stream, or ending the context given to Do,
// aborts the upstream request so the engine stops generating. Every failure
// the client should see is an OpenAI-shaped *engine.Error: upstream error
// bodies in the shapes these servers use are normalized with the upstream
// status kept, an unreachable engine is 503 engine_unavailable and a slow
// one 504 engine_timeout. Error values carry only the upstream error message
// (cleaned and capped), never prompt or completion text. The package reads no
// environment and uses no proxy; redirects are never followed, so a prompt
// goes to the configured base URL and nowhere else.
package openai
