package builtin

import (
	"strconv"
	"unicode/utf8"
)

// Responses are written by hand into one buffer: it is the hot path of every
// request, and the bytes are what the receipt signs, so their layout is
// fixed here rather than left to reflection.

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. It escapes what JSON requires
// plus U+2028/U+2029 (as encoding/json does, for JavaScript consumers), and
// writes invalid UTF-8 as U+FFFD so the output is always valid JSON.
func appendString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var r rune
		var size int
		switch v := any(s).(type) {
		case string:
			r, size = utf8.DecodeRuneInString(v[i:])
		case []byte:
			r, size = utf8.DecodeRune(v[i:])
		}
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, '}')
}

// appendBody writes the non-stream chat.completion or text_completion.
func (e *Engine) appendBody(b []byte, p *plan, texts [][]byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, p.id)
	if p.chat {
		b = append(b, `,"object":"chat.completion","created":`...)
	} else {
		b = append(b, `,"object":"text_completion","created":`...)
	}
	b = strconv.AppendInt(b, p.created, 10)
	b = append(b, `,"model":`...)
	b = appendString(b, e.cfg.ModelID)
	b = append(b, `,"choices":[`...)
	for i, t := range texts {
		if i > 0 {
			b = append(b, ',')
		}
		if p.chat {
			b = append(b, `{"index":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, `,"message":{"role":"assistant","content":`...)
			b = appendString(b, t)
			b = append(b, `,"refusal":null},"logprobs":null,"finish_reason":"`...)
		} else {
			b = append(b, `{"text":`...)
			b = appendString(b, t)
			b = append(b, `,"index":`...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, `,"logprobs":null,"finish_reason":"`...)
		}
		b = append(b, p.finish[i]...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"usage":`...)
	b = appendUsage(b, p.promptTokens, p.completionTokens())
	b = append(b, `,"system_fingerprint":`...)
	b = appendString(b, e.fingerprint)
	return append(b, '}')
}

// chunkHead is the fixed start of every stream chunk of p, up to and
// including `"choices":[`.
func (e *Engine) chunkHead(p *plan) []byte {
	b := append([]byte(nil), `{"id":`...)
	b = appendString(b, p.id)
	if p.chat {
		b = append(b, `,"object":"chat.completion.chunk","created":`...)
	} else {
		b = append(b, `,"object":"text_completion","created":`...)
	}
	b = strconv.AppendInt(b, p.created, 10)
	b = append(b, `,"model":`...)
	b = appendString(b, e.cfg.ModelID)
	b = append(b, `,"system_fingerprint":`...)
	b = appendString(b, e.fingerprint)
	return append(b, `,"choices":[`...)
}

// chunk kinds
const (
	chunkRole   = iota // chat: first chunk of a choice
	chunkText          // text delta (or echo)
	chunkFinish        // empty delta with finish_reason
)

// appendChunk writes one stream chunk holding one choice.
func appendChunk(b, head []byte, p *plan, kind, i int, text []byte, finish string) []byte {
	b = append(b, head...)
	if p.chat {
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		switch kind {
		case chunkRole:
			b = append(b, `,"delta":{"role":"assistant","content":"","refusal":null}`...)
		case chunkText:
			b = append(b, `,"delta":{"content":`...)
			b = appendString(b, text)
			b = append(b, '}')
		default:
			b = append(b, `,"delta":{}`...)
		}
	} else {
		b = append(b, `{"text":`...)
		b = appendString(b, text)
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
	}
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = append(b, finish...)
		b = append(b, '"')
	}
	b = append(b, "}]"...)
	if p.includeUsage {
		b = append(b, `,"usage":null`...)
	}
	return append(b, '}')
}

// appendUsageChunk writes the stream_options.include_usage chunk.
func appendUsageChunk(b, head []byte, p *plan) []byte {
	b = append(b, head...)
	b = append(b, `],"usage":`...)
	b = appendUsage(b, p.promptTokens, p.completionTokens())
	return append(b, '}')
}
