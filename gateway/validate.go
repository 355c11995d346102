package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/teegate/teegate/worker/wire"
)

// parsed is what the gateway needs to know about a request to route it. The
// body itself is forwarded unchanged; this is read-only.
type parsed struct {
	Model  string
	Stream bool
}

// stopField accepts a string, null, or an array of strings.
type stopField struct{ n int }

func (s *stopField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		s.n = 1
		return nil
	default:
		var arr []string
		if err := json.Unmarshal(b, &arr); err != nil {
			return errStopShape
		}
		s.n = len(arr)
		return nil
	}
}

// peek notes that a member is present, whether it is null and its first
// byte, without keeping a copy of it (a prompt can be megabytes):
// json.RawMessage would copy each one.
type peek struct {
	set, null bool
	first     byte
}

func (p *peek) UnmarshalJSON(b []byte) error {
	p.set, p.null, p.first = true, string(b) == "null", b[0]
	return nil
}

// absent is true when the member is missing or null.
func (p peek) absent() bool { return !p.set || p.null }

type message struct {
	Role    *string `json:"role"`
	Content peek    `json:"content"`
}

type request struct {
	Model         *string `json:"model"`
	Stream        *bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	Messages            []message  `json:"messages"`
	Prompt              peek       `json:"prompt"`
	Input               peek       `json:"input"`
	N                   *int       `json:"n"`
	MaxTokens           *int       `json:"max_tokens"`
	MaxCompletionTokens *int       `json:"max_completion_tokens"`
	Temperature         *float64   `json:"temperature"`
	TopP                *float64   `json:"top_p"`
	Seed                *int64     `json:"seed"`
	User                *string    `json:"user"`
	Stop                *stopField `json:"stop"`
	Tools               []peek     `json:"tools"`
	ToolChoice          peek       `json:"tool_choice"`
	ResponseFormat      *struct {
		Type *string `json:"type"`
	} `json:"response_format"`
	// Responses API.
	Instructions       peek  `json:"instructions"`
	MaxOutputTokens    *int  `json:"max_output_tokens"`
	PreviousResponseID peek  `json:"previous_response_id"`
	Conversation       peek  `json:"conversation"`
	Background         *bool `json:"background"`
}

var validRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true}

// validate checks body for op and returns routing facts, or an APIError.
// It checks what every OpenAI-compatible server would reject, so a bad
// request never reaches a worker; engines still validate what they support.
func validate(op string, body []byte) (parsed, *APIError) {
	var p parsed
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return p, errInvalidJSON("the body is empty")
	}
	if trimmed[0] != '{' {
		return p, errInvalidJSON("the body must be a JSON object")
	}
	var r request
	// Unmarshal reads the body where it lies (a Decoder would copy it into
	// its own buffer first) and refuses anything after the object.
	if err := json.Unmarshal(trimmed, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return p, errInvalid(te.Field, fmt.Sprintf("Invalid type for '%s': expected %s.", te.Field, jsonKind(te.Type.Kind().String())))
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			if strings.HasSuffix(se.Error(), "after top-level value") {
				return p, errInvalidJSON("unexpected data after the JSON object")
			}
			return p, errInvalidJSON(fmt.Sprintf("syntax error at byte %d", se.Offset))
		}
		if errors.Is(err, errStopShape) {
			return p, errInvalid("stop", "Invalid 'stop': expected a string or an array of strings.")
		}
		return p, errInvalidJSON("malformed JSON")
	}
	if r.Model == nil || *r.Model == "" {
		return p, errInvalid("model", "You must provide a model parameter.")
	}
	p.Model = *r.Model
	if len(p.Model) > 256 {
		return p, errInvalid("model", "Invalid 'model': string too long.")
	}
	if r.Stream != nil {
		p.Stream = *r.Stream
	}
	if r.StreamOptions != nil && !p.Stream {
		return p, errInvalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	switch op {
	case wire.OpChat:
		if len(r.Messages) == 0 {
			return p, errInvalid("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.")
		}
		for i, m := range r.Messages {
			if m.Role == nil {
				return p, errInvalid(fmt.Sprintf("messages[%d].role", i), fmt.Sprintf("Missing required parameter: 'messages[%d].role'.", i))
			}
			if !validRoles[*m.Role] {
				return p, errInvalid(fmt.Sprintf("messages[%d].role", i), fmt.Sprintf("Invalid value for 'messages[%d].role': expected one of system, developer, user, assistant, tool.", i))
			}
		}
	case wire.OpCompletions:
		if r.Prompt.absent() {
			return p, errInvalid("prompt", "Missing required parameter: 'prompt'.")
		}
	case wire.OpResponses:
		if e := validateResponses(&r); e != nil {
			return p, e
		}
	case wire.OpEmbeddings:
		if r.Input.absent() {
			return p, errInvalid("input", "Missing required parameter: 'input'.")
		}
		if p.Stream {
			return p, errInvalid("stream", "Embeddings cannot be streamed.")
		}
	}
	if r.N != nil && (*r.N < 1 || *r.N > 128) {
		return p, errInvalid("n", "Invalid 'n': must be between 1 and 128.")
	}
	if r.MaxTokens != nil && *r.MaxTokens < 1 {
		return p, errInvalid("max_tokens", "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1.")
	}
	if r.MaxCompletionTokens != nil && *r.MaxCompletionTokens < 1 {
		return p, errInvalid("max_completion_tokens", "Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1.")
	}
	if r.Temperature != nil && (math.IsNaN(*r.Temperature) || *r.Temperature < 0 || *r.Temperature > 2) {
		return p, errInvalid("temperature", "Invalid 'temperature': must be between 0 and 2.")
	}
	if r.TopP != nil && (math.IsNaN(*r.TopP) || *r.TopP < 0 || *r.TopP > 1) {
		return p, errInvalid("top_p", "Invalid 'top_p': must be between 0 and 1.")
	}
	if r.Stop != nil && r.Stop.n > 4 {
		return p, errInvalid("stop", "Invalid 'stop': at most 4 stop sequences are allowed.")
	}
	if r.ResponseFormat != nil && r.ResponseFormat.Type == nil {
		return p, errInvalid("response_format.type", "Missing required parameter: 'response_format.type'.")
	}
	return p, nil
}

// validateResponses checks what only the Responses API has. The gateway
// keeps no state, so what would need it is refused here with a 400 that
// says how to send the conversation instead; the worker refuses the same.
func validateResponses(r *request) *APIError {
	if !r.PreviousResponseID.absent() {
		return errStateless("previous_response_id", "earlier responses are not stored, so they cannot be continued.")
	}
	if !r.Conversation.absent() {
		return errStateless("conversation", "conversations are not stored.")
	}
	if r.Background != nil && *r.Background {
		return errStateless("background", "background responses would have to be stored until fetched.")
	}
	if r.Input.absent() {
		return errInvalid("input", "Missing required parameter: 'input'.")
	}
	if r.Input.first != '"' && r.Input.first != '[' {
		return errInvalid("input", "Invalid type for 'input': expected a string or an array of input items.")
	}
	if !r.Instructions.absent() && r.Instructions.first != '"' {
		return errInvalid("instructions", "Invalid type for 'instructions': expected a string.")
	}
	if r.MaxOutputTokens != nil && *r.MaxOutputTokens < 1 {
		return errInvalid("max_output_tokens", "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 1.")
	}
	return nil
}

var errStopShape = errors.New("stop must be a string or an array of strings")

func jsonKind(k string) string {
	switch k {
	case "ptr", "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "float64", "float32":
		return "a number"
	}
	return "an integer"
}
