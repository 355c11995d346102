package builtin

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/teegate/teegate/worker/engine"
)

type streamOptions struct {
	IncludeUsage *bool `json:"include_usage"`
}

type responseFormat struct {
	Type *string `json:"type"`
}

// chatRequest is the subset of an OpenAI chat request the engine reads;
// fields are pointers or raw so "absent", null and wrong types can be told
// apart. Unknown fields are ignored, as vLLM does.
type chatRequest struct {
	Model               *string            `json:"model"`
	Messages            *[]json.RawMessage `json:"messages"`
	MaxTokens           *int               `json:"max_tokens"`
	MaxCompletionTokens *int               `json:"max_completion_tokens"`
	Stop                json.RawMessage    `json:"stop"`
	Temperature         *float64           `json:"temperature"`
	TopP                *float64           `json:"top_p"`
	Seed                *int64             `json:"seed"`
	N                   *int               `json:"n"`
	Stream              *bool              `json:"stream"`
	StreamOptions       *streamOptions     `json:"stream_options"`
	User                *string            `json:"user"`
	FrequencyPenalty    *float64           `json:"frequency_penalty"`
	PresencePenalty     *float64           `json:"presence_penalty"`
	Logprobs            *bool              `json:"logprobs"`
	TopLogprobs         *int               `json:"top_logprobs"`
	Tools               json.RawMessage    `json:"tools"`
	ToolChoice          json.RawMessage    `json:"tool_choice"`
	Functions           json.RawMessage    `json:"functions"`
	FunctionCall        json.RawMessage    `json:"function_call"`
	ResponseFormat      *responseFormat    `json:"response_format"`
}

type chatMessage struct {
	Role         *string         `json:"role"`
	Content      json.RawMessage `json:"content"`
	Name         *string         `json:"name"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	FunctionCall json.RawMessage `json:"function_call"`
}

type contentPart struct {
	Type    *string `json:"type"`
	Text    *string `json:"text"`
	Refusal *string `json:"refusal"`
}

type completionRequest struct {
	Model            *string         `json:"model"`
	Prompt           json.RawMessage `json:"prompt"`
	MaxTokens        *int            `json:"max_tokens"`
	Stop             json.RawMessage `json:"stop"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	Seed             *int64          `json:"seed"`
	N                *int            `json:"n"`
	BestOf           *int            `json:"best_of"`
	Echo             *bool           `json:"echo"`
	Suffix           *string         `json:"suffix"`
	Logprobs         *int            `json:"logprobs"`
	Stream           *bool           `json:"stream"`
	StreamOptions    *streamOptions  `json:"stream_options"`
	User             *string         `json:"user"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	PresencePenalty  *float64        `json:"presence_penalty"`
}

type embeddingRequest struct {
	Model          *string         `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat *string         `json:"encoding_format"`
	User           *string         `json:"user"`
}

// decodeJSON unmarshals into v and maps failures to OpenAI-style 400s. The
// messages never quote the body: it may hold prompt text. prefix is the
// param path of v inside the body ("" for the body itself).
func decodeJSON(data []byte, v any, prefix string) *engine.Error {
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		param := joinParam(prefix, te.Field)
		got, _, _ := strings.Cut(te.Value, " ") // "number 1.5" -> "number"
		if param == "" {
			return engine.InvalidRequest("", "The request body must be a JSON object, but got %s instead.", article(got))
		}
		return engine.InvalidRequest(param, "Invalid type for '%s': expected %s, but got %s instead.", param, expected(te.Type.Kind().String()), article(got))
	}
	if prefix != "" { // a sub-document of an already parsed body: cannot be malformed
		return engine.InvalidRequest(prefix, "Invalid value for '%s'.", prefix)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return engine.InvalidRequest("", "We could not parse the JSON body of your request: syntax error at byte offset %d.", se.Offset)
	}
	return engine.InvalidRequest("", "We could not parse the JSON body of your request: it ends early or is not JSON.")
}

func joinParam(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	}
	return prefix + "." + field
}

func expected(kind string) string {
	switch kind {
	case "int", "int64", "int32":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	}
	return "an object"
}

func article(jsonKind string) string {
	switch jsonKind {
	case "array", "object":
		return "an " + jsonKind
	case "bool":
		return "a boolean"
	case "":
		return "a value of another type"
	}
	return "a " + jsonKind
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// firstByte returns the first non-space byte of raw (0 when empty).
func firstByte(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

func missing(param string) *engine.Error {
	return engine.InvalidRequest(param, "Missing required parameter: '%s'.", param)
}

func checkModel(e *Engine, model *string) *engine.Error {
	if model == nil {
		return missing("model")
	}
	if *model != e.cfg.ModelID {
		// The model name comes from the client; quote it as OpenAI does, but
		// bounded and sanitized so a log line stays one short line.
		name := *model
		if len(name) > 64 {
			name = name[:64] + "..."
		}
		name = strings.ToValidUTF8(strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, name), "")
		return engine.Errorf(404, "invalid_request_error", "", "model_not_found",
			"The model `%s` does not exist or you do not have access to it.", name)
	}
	return nil
}

func (e *Engine) unsupported(param, what string) *engine.Error {
	return engine.InvalidRequest(param, "model %s does not support %s", e.cfg.ModelID, what)
}

// sampling holds the validated decoding parameters shared by chat and
// completions.
type sampling struct {
	maxTokens    int
	stops        [][]byte
	temp, topP   float64
	seed         *int64
	n            int
	freq, pres   float64
	includeUsage bool
}

type commonFields struct {
	maxTokens     *int
	maxParam      string
	defaultMax    int
	stop          json.RawMessage
	temperature   *float64
	topP          *float64
	seed          *int64
	n             *int
	stream        bool
	streamOptions *streamOptions
	freq, pres    *float64
}

func checkSampling(f commonFields) (sampling, *engine.Error) {
	s := sampling{maxTokens: f.defaultMax, temp: 1, topP: 1, n: 1, seed: f.seed}
	if f.maxTokens != nil {
		v := *f.maxTokens
		if v < 1 {
			return s, engine.InvalidRequest(f.maxParam, "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", f.maxParam, v)
		}
		if v > MaxCompletionTokens {
			return s, engine.InvalidRequest(f.maxParam, "Invalid '%s': %d is greater than the maximum of %d completion tokens this model supports.", f.maxParam, v, MaxCompletionTokens)
		}
		s.maxTokens = v
	}
	if f.temperature != nil {
		v := *f.temperature
		if !(v >= 0 && v <= 2) {
			return s, engine.InvalidRequest("temperature", "Invalid 'temperature': expected a value between 0 and 2.")
		}
		s.temp = v
	}
	if f.topP != nil {
		v := *f.topP
		if !(v >= 0 && v <= 1) {
			return s, engine.InvalidRequest("top_p", "Invalid 'top_p': expected a value between 0 and 1.")
		}
		s.topP = v
	}
	if f.n != nil {
		v := *f.n
		if v < 1 || v > MaxChoices {
			return s, engine.InvalidRequest("n", "Invalid 'n': expected a value between 1 and %d, but got %d instead.", MaxChoices, v)
		}
		s.n = v
	}
	for _, p := range []struct {
		v     *float64
		name  string
		store *float64
	}{{f.freq, "frequency_penalty", &s.freq}, {f.pres, "presence_penalty", &s.pres}} {
		if p.v == nil {
			continue
		}
		if !(*p.v >= -2 && *p.v <= 2) {
			return s, engine.InvalidRequest(p.name, "Invalid '%s': expected a value between -2 and 2.", p.name)
		}
		*p.store = *p.v
	}
	if f.streamOptions != nil {
		if !f.stream {
			return s, engine.InvalidRequest("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		s.includeUsage = f.streamOptions.IncludeUsage != nil && *f.streamOptions.IncludeUsage
	}
	stops, err := parseStop(f.stop)
	if err != nil {
		return s, err
	}
	s.stops = stops
	return s, nil
}

// parseStop accepts null, a string, or an array of up to 4 strings. Empty
// strings are ignored: they would stop before the first byte.
func parseStop(raw json.RawMessage) ([][]byte, *engine.Error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []string
	switch firstByte(raw) {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, engine.InvalidRequest("stop", "Invalid value for 'stop'.")
		}
		list = []string{s}
	case '[':
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, engine.InvalidRequest("stop", "Invalid type for 'stop': expected a string or an array of strings.")
		}
		if len(list) > 4 {
			return nil, engine.InvalidRequest("stop", "Invalid 'stop': expected an array with maximum length 4, but got an array with length %d instead.", len(list))
		}
	default:
		return nil, engine.InvalidRequest("stop", "Invalid type for 'stop': expected a string or an array of strings.")
	}
	var out [][]byte
	for _, s := range list {
		if s != "" {
			out = append(out, []byte(s))
		}
	}
	return out, nil
}

// chatText renders a message's content as plain text: a string, or the text
// (and refusal) parts of an array joined by newlines.
func (e *Engine) chatText(i int, msg *chatMessage, role string) (string, *engine.Error) {
	param := "messages[" + strconv.Itoa(i) + "].content"
	switch firstByte(msg.Content) {
	case 0, 'n':
		if isNull(msg.Content) {
			if role == "assistant" {
				return "", nil
			}
			return "", missing(param)
		}
	case '"':
		var s string
		if err := decodeJSON(msg.Content, &s, param); err != nil {
			return "", err
		}
		return s, nil
	case '[':
		var parts []json.RawMessage
		if err := decodeJSON(msg.Content, &parts, param); err != nil {
			return "", err
		}
		if len(parts) == 0 {
			return "", engine.InvalidRequest(param, "Invalid '%s': empty array. Expected an array with minimum length 1, but got an empty array instead.", param)
		}
		var sb strings.Builder
		for j, raw := range parts {
			pp := param + "[" + strconv.Itoa(j) + "]"
			var p contentPart
			if err := decodeJSON(raw, &p, pp); err != nil {
				return "", err
			}
			if p.Type == nil {
				return "", missing(pp + ".type")
			}
			var text *string
			switch *p.Type {
			case "text":
				text = p.Text
				if text == nil {
					return "", missing(pp + ".text")
				}
			case "refusal":
				if role != "assistant" {
					return "", engine.InvalidRequest(pp+".type", "Invalid value: 'refusal'. Refusal parts are only allowed in assistant messages.")
				}
				text = p.Refusal
				if text == nil {
					return "", missing(pp + ".refusal")
				}
			case "image_url", "input_audio", "file":
				return "", e.unsupported(pp+".type", "image, audio or file inputs")
			default:
				return "", engine.InvalidRequest(pp+".type", "Invalid value for '%s.type': supported values are 'text' and 'refusal'.", pp)
			}
			if j > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString(*text)
		}
		return sb.String(), nil
	}
	return "", engine.InvalidRequest(param, "Invalid type for '%s': expected a string or an array of content parts.", param)
}
