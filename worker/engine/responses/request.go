package responses

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// StatelessHint is the part of every stateless refusal that says what to
// do instead (one text for the gateway and the worker: package wire).
const StatelessHint = wire.StatelessHint

// Request is a validated Responses API request: what the translation to
// chat completions and the response object need. The body itself is never
// rewritten; Request only reads it.
type Request struct {
	Model  string
	Stream bool
	// Instructions is the system message placed before the input; nil when
	// absent or null (the response echoes it).
	Instructions *string
	// Messages is the input as chat messages, in order.
	Messages []ChatMessage
	// MaxOutputTokens, Temperature, TopP, User and ParallelToolCalls are
	// nil when absent.
	MaxOutputTokens   *int64
	Temperature       *float64
	TopP              *float64
	User              *string
	ParallelToolCalls *bool
	// Metadata, Tools, ToolChoice and Text are the request's raw values (nil
	// when absent or null), echoed in the response object.
	Metadata   json.RawMessage
	Tools      json.RawMessage
	ToolChoice json.RawMessage
	Text       json.RawMessage

	chatTools      []json.RawMessage
	chatToolChoice json.RawMessage
	responseFormat json.RawMessage
}

// ChatMessage is one chat completions message built from the input.
type ChatMessage struct {
	Role string `json:"role"`
	// Content is a string, an array of text parts, or null (an assistant
	// message that only calls tools).
	Content    json.RawMessage `json:"content"`
	ToolCalls  []ChatToolCall  `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// ChatToolCall is an assistant's function call in chat form.
type ChatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type rawRequest struct {
	Model              *string         `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       json.RawMessage `json:"instructions"`
	MaxOutputTokens    *int64          `json:"max_output_tokens"`
	Temperature        *float64        `json:"temperature"`
	TopP               *float64        `json:"top_p"`
	Stream             *bool           `json:"stream"`
	Metadata           json.RawMessage `json:"metadata"`
	User               *string         `json:"user"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	Text               json.RawMessage `json:"text"`
	ParallelToolCalls  *bool           `json:"parallel_tool_calls"`
	PreviousResponseID json.RawMessage `json:"previous_response_id"`
	Conversation       json.RawMessage `json:"conversation"`
	Background         *bool           `json:"background"`
	Prompt             json.RawMessage `json:"prompt"`
}

type rawItem struct {
	Type      *string         `json:"type"`
	Role      *string         `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    *string         `json:"call_id"`
	Name      *string         `json:"name"`
	Arguments *string         `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

type rawPart struct {
	Type    *string `json:"type"`
	Text    *string `json:"text"`
	Refusal *string `json:"refusal"`
}

type textPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Refusals of what needs stored state. The gateway checks the same fields
// first; these keep a worker reached some other way just as clear.
func statelessError(param, what string) *engine.Error {
	return engine.Errorf(400, "invalid_request_error", param, "stateless",
		"'%s' is not supported: %s %s", param, what, StatelessHint)
}

// PreviousResponseError is the 400 for previous_response_id.
func PreviousResponseError() *engine.Error {
	return statelessError("previous_response_id", "earlier responses are not stored, so they cannot be continued.")
}

func invalid(param, format string, args ...any) *engine.Error {
	return engine.InvalidRequest(param, format, args...)
}

func missing(param string) *engine.Error {
	return invalid(param, "Missing required parameter: '%s'.", param)
}

func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && string(raw) != "null"
}

func first(raw json.RawMessage) byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// decode unmarshals raw into v with an OpenAI-style 400 naming param; the
// message never quotes the body.
func decode(raw json.RawMessage, v any, param string) *engine.Error {
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		p := param
		if te.Field != "" {
			if p != "" {
				p += "."
			}
			p += te.Field
		}
		if p == "" {
			return invalid("", "The request body must be a JSON object.")
		}
		return invalid(p, "Invalid type for '%s'.", p)
	}
	if param == "" {
		return invalid("", "We could not parse the JSON body of your request.")
	}
	return invalid(param, "Invalid value for '%s'.", param)
}

// ParseRequest validates a Responses API request body.
func ParseRequest(body []byte) (*Request, error) {
	if first(body) != '{' {
		return nil, invalid("", "The request body must be a JSON object.")
	}
	var raw rawRequest
	if err := decode(body, &raw, ""); err != nil {
		return nil, err
	}
	if present(raw.PreviousResponseID) {
		return nil, PreviousResponseError()
	}
	if present(raw.Conversation) {
		return nil, statelessError("conversation", "conversations are not stored.")
	}
	if raw.Background != nil && *raw.Background {
		return nil, statelessError("background", "background responses would have to be stored until fetched.")
	}
	if present(raw.Prompt) {
		return nil, invalid("prompt", "Stored prompt templates are not supported: send the text in 'instructions' and 'input'.")
	}
	if raw.Model == nil || *raw.Model == "" {
		return nil, missing("model")
	}
	r := &Request{Model: *raw.Model, MaxOutputTokens: raw.MaxOutputTokens, Temperature: raw.Temperature,
		TopP: raw.TopP, User: raw.User, ParallelToolCalls: raw.ParallelToolCalls}
	if raw.Stream != nil {
		r.Stream = *raw.Stream
	}
	if v := r.MaxOutputTokens; v != nil && *v < 1 {
		return nil, invalid("max_output_tokens", "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 1.")
	}
	if v := r.Temperature; v != nil && !(*v >= 0 && *v <= 2) {
		return nil, invalid("temperature", "Invalid 'temperature': expected a value between 0 and 2.")
	}
	if v := r.TopP; v != nil && !(*v >= 0 && *v <= 1) {
		return nil, invalid("top_p", "Invalid 'top_p': expected a value between 0 and 1.")
	}
	if present(raw.Instructions) {
		var s string
		if err := decode(raw.Instructions, &s, "instructions"); err != nil {
			return nil, invalid("instructions", "Invalid type for 'instructions': expected a string.")
		}
		r.Instructions = &s
		r.Messages = append(r.Messages, ChatMessage{Role: "system", Content: jsonString(s)})
	}
	if present(raw.Metadata) {
		if first(raw.Metadata) != '{' {
			return nil, invalid("metadata", "Invalid type for 'metadata': expected an object.")
		}
		var m map[string]string
		if err := decode(raw.Metadata, &m, "metadata"); err != nil {
			return nil, invalid("metadata", "Invalid 'metadata': expected an object of string values.")
		}
		if len(m) > 16 {
			return nil, invalid("metadata", "Invalid 'metadata': at most 16 keys are allowed.")
		}
		r.Metadata = raw.Metadata
	}
	if err := r.parseInput(raw.Input); err != nil {
		return nil, err
	}
	if err := r.parseTools(raw.Tools, raw.ToolChoice); err != nil {
		return nil, err
	}
	if err := r.parseText(raw.Text); err != nil {
		return nil, err
	}
	return r, nil
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s) // a string always encodes
	return b
}

func (r *Request) parseInput(input json.RawMessage) error {
	switch first(input) {
	case 0, 'n':
		if !present(input) {
			return missing("input")
		}
	case '"':
		var s string
		if err := decode(input, &s, "input"); err != nil {
			return err
		}
		r.Messages = append(r.Messages, ChatMessage{Role: "user", Content: jsonString(s)})
		return nil
	case '[':
		var items []json.RawMessage
		if err := decode(input, &items, "input"); err != nil {
			return err
		}
		if len(items) == 0 {
			return invalid("input", "Invalid 'input': empty array. Expected an array with minimum length 1.")
		}
		for i, raw := range items {
			if err := r.addItem(i, raw); err != nil {
				return err
			}
		}
		return nil
	}
	return invalid("input", "Invalid type for 'input': expected a string or an array of input items.")
}

func (r *Request) addItem(i int, raw json.RawMessage) error {
	param := "input[" + strconv.Itoa(i) + "]"
	if first(raw) != '{' {
		return invalid(param, "Invalid type for '%s': expected an object.", param)
	}
	var it rawItem
	if err := decode(raw, &it, param); err != nil {
		return err
	}
	typ := "message"
	if it.Type != nil {
		typ = *it.Type
	}
	switch typ {
	case "message":
		return r.addMessage(param, &it)
	case "function_call":
		if it.CallID == nil || *it.CallID == "" {
			return missing(param + ".call_id")
		}
		if it.Name == nil || *it.Name == "" {
			return missing(param + ".name")
		}
		if it.Arguments == nil {
			return missing(param + ".arguments")
		}
		var tc ChatToolCall
		tc.ID, tc.Type = *it.CallID, "function"
		tc.Function.Name, tc.Function.Arguments = *it.Name, *it.Arguments
		// Consecutive calls belong to one assistant turn.
		if n := len(r.Messages); n > 0 && r.Messages[n-1].Role == "assistant" && r.Messages[n-1].ToolCalls != nil {
			r.Messages[n-1].ToolCalls = append(r.Messages[n-1].ToolCalls, tc)
			return nil
		}
		r.Messages = append(r.Messages, ChatMessage{Role: "assistant", Content: json.RawMessage("null"), ToolCalls: []ChatToolCall{tc}})
		return nil
	case "function_call_output":
		if it.CallID == nil || *it.CallID == "" {
			return missing(param + ".call_id")
		}
		if first(it.Output) != '"' {
			return invalid(param+".output", "Invalid type for '%s.output': expected a string.", param)
		}
		var out string
		if err := decode(it.Output, &out, param+".output"); err != nil {
			return err
		}
		r.Messages = append(r.Messages, ChatMessage{Role: "tool", Content: jsonString(out), ToolCallID: *it.CallID})
		return nil
	case "item_reference":
		return statelessError(param+".type", "items of earlier responses are not stored, so they cannot be referenced.")
	}
	return invalid(param+".type", "Input items of type '%s' are not supported; supported types are 'message', 'function_call' and 'function_call_output'.", sanitize(typ))
}

func (r *Request) addMessage(param string, it *rawItem) error {
	if it.Role == nil {
		return missing(param + ".role")
	}
	role := *it.Role
	switch role {
	case "user", "system", "developer", "assistant":
	default:
		return invalid(param+".role", "Invalid value for '%s.role': supported values are 'user', 'assistant', 'system' and 'developer'.", param)
	}
	cparam := param + ".content"
	switch first(it.Content) {
	case '"':
		var s string
		if err := decode(it.Content, &s, cparam); err != nil {
			return err
		}
		r.Messages = append(r.Messages, ChatMessage{Role: role, Content: jsonString(s)})
		return nil
	case '[':
		var parts []rawPart
		if err := decode(it.Content, &parts, cparam); err != nil {
			return err
		}
		if len(parts) == 0 {
			return invalid(cparam, "Invalid '%s': empty array. Expected an array with minimum length 1.", cparam)
		}
		out := make([]textPart, 0, len(parts))
		for j, p := range parts {
			pp := cparam + "[" + strconv.Itoa(j) + "]"
			if p.Type == nil {
				return missing(pp + ".type")
			}
			var text *string
			switch *p.Type {
			case "input_text":
				if role == "assistant" {
					return invalid(pp+".type", "Invalid value: 'input_text'. Assistant messages take 'output_text' and 'refusal' parts.")
				}
				text = p.Text
			case "output_text":
				if role != "assistant" {
					return invalid(pp+".type", "Invalid value: 'output_text'. Only assistant messages take 'output_text' parts; use 'input_text'.")
				}
				text = p.Text
			case "refusal":
				if role != "assistant" {
					return invalid(pp+".type", "Invalid value: 'refusal'. Refusal parts are only allowed in assistant messages.")
				}
				if p.Refusal == nil {
					return missing(pp + ".refusal")
				}
				text = p.Refusal
			case "input_image", "input_file", "input_audio":
				return invalid(pp+".type", "Image, file and audio inputs are not supported here; send text parts.")
			default:
				return invalid(pp+".type", "Invalid value for '%s.type': supported values are 'input_text', 'output_text' and 'refusal'.", pp)
			}
			if text == nil {
				return missing(pp + ".text")
			}
			out = append(out, textPart{Type: "text", Text: *text})
		}
		b, err := json.Marshal(out)
		if err != nil {
			return invalid(cparam, "Invalid value for '%s'.", cparam)
		}
		r.Messages = append(r.Messages, ChatMessage{Role: role, Content: b})
		return nil
	}
	if !present(it.Content) {
		return missing(cparam)
	}
	return invalid(cparam, "Invalid type for '%s': expected a string or an array of content parts.", cparam)
}

type rawTool struct {
	Type        *string         `json:"type"`
	Name        *string         `json:"name"`
	Description json.RawMessage `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      json.RawMessage `json:"strict"`
}

type chatFunction struct {
	Name        string          `json:"name"`
	Description json.RawMessage `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      json.RawMessage `json:"strict,omitempty"`
}

func (r *Request) parseTools(tools, choice json.RawMessage) error {
	if present(tools) {
		if first(tools) != '[' {
			return invalid("tools", "Invalid type for 'tools': expected an array.")
		}
		var list []rawTool
		if err := decode(tools, &list, "tools"); err != nil {
			return err
		}
		r.Tools = tools
		for i, t := range list {
			param := "tools[" + strconv.Itoa(i) + "]"
			if t.Type == nil {
				return missing(param + ".type")
			}
			if *t.Type != "function" {
				return invalid(param+".type", "Tools of type '%s' are not supported; only 'function' tools are.", sanitize(*t.Type))
			}
			if t.Name == nil || *t.Name == "" {
				return missing(param + ".name")
			}
			fn := chatFunction{Name: *t.Name}
			if present(t.Description) {
				fn.Description = t.Description
			}
			if present(t.Parameters) {
				fn.Parameters = t.Parameters
			}
			if present(t.Strict) {
				fn.Strict = t.Strict
			}
			b, err := json.Marshal(struct {
				Type     string       `json:"type"`
				Function chatFunction `json:"function"`
			}{"function", fn})
			if err != nil {
				return invalid(param, "Invalid value for '%s'.", param)
			}
			r.chatTools = append(r.chatTools, b)
		}
	}
	if !present(choice) {
		return nil
	}
	r.ToolChoice = choice
	switch first(choice) {
	case '"':
		var s string
		if err := decode(choice, &s, "tool_choice"); err != nil {
			return err
		}
		switch s {
		case "auto", "none", "required":
			r.chatToolChoice = choice
			return nil
		}
		return invalid("tool_choice", "Invalid value for 'tool_choice': supported values are 'auto', 'none', 'required' or a function.")
	case '{':
		var c struct {
			Type *string `json:"type"`
			Name *string `json:"name"`
		}
		if err := decode(choice, &c, "tool_choice"); err != nil {
			return err
		}
		if c.Type == nil || *c.Type != "function" || c.Name == nil || *c.Name == "" {
			return invalid("tool_choice", "Invalid value for 'tool_choice': only {\"type\":\"function\",\"name\":…} objects are supported.")
		}
		b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": *c.Name}})
		r.chatToolChoice = b
		return nil
	}
	return invalid("tool_choice", "Invalid type for 'tool_choice': expected a string or an object.")
}

func (r *Request) parseText(text json.RawMessage) error {
	if !present(text) {
		return nil
	}
	if first(text) != '{' {
		return invalid("text", "Invalid type for 'text': expected an object.")
	}
	var t struct {
		Format json.RawMessage `json:"format"`
	}
	if err := decode(text, &t, "text"); err != nil {
		return err
	}
	r.Text = text
	if !present(t.Format) {
		return nil
	}
	var f struct {
		Type        *string         `json:"type"`
		Name        *string         `json:"name"`
		Schema      json.RawMessage `json:"schema"`
		Description json.RawMessage `json:"description"`
		Strict      json.RawMessage `json:"strict"`
	}
	if first(t.Format) != '{' {
		return invalid("text.format", "Invalid type for 'text.format': expected an object.")
	}
	if err := decode(t.Format, &f, "text.format"); err != nil {
		return err
	}
	if f.Type == nil {
		return missing("text.format.type")
	}
	switch *f.Type {
	case "text", "json_object":
		r.responseFormat, _ = json.Marshal(map[string]string{"type": *f.Type})
	case "json_schema":
		if f.Name == nil || *f.Name == "" {
			return missing("text.format.name")
		}
		if !present(f.Schema) {
			return missing("text.format.schema")
		}
		js := map[string]json.RawMessage{"name": jsonString(*f.Name), "schema": f.Schema}
		if present(f.Description) {
			js["description"] = f.Description
		}
		if present(f.Strict) {
			js["strict"] = f.Strict
		}
		r.responseFormat, _ = json.Marshal(map[string]any{"type": "json_schema", "json_schema": js})
	default:
		return invalid("text.format.type", "Invalid value for 'text.format.type': supported values are 'text', 'json_object' and 'json_schema'.")
	}
	return nil
}

// ChatBody is the chat completions request equivalent to r: instructions
// as a system message, the input as messages, max_output_tokens as
// max_tokens, tools and tool_choice in chat form, text.format as
// response_format; a stream asks for usage in its last chunk.
func (r *Request) ChatBody() []byte {
	type streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
	body := struct {
		Model             string            `json:"model"`
		Messages          []ChatMessage     `json:"messages"`
		MaxTokens         *int64            `json:"max_tokens,omitempty"`
		Temperature       *float64          `json:"temperature,omitempty"`
		TopP              *float64          `json:"top_p,omitempty"`
		User              *string           `json:"user,omitempty"`
		Tools             []json.RawMessage `json:"tools,omitempty"`
		ToolChoice        json.RawMessage   `json:"tool_choice,omitempty"`
		ParallelToolCalls *bool             `json:"parallel_tool_calls,omitempty"`
		ResponseFormat    json.RawMessage   `json:"response_format,omitempty"`
		Stream            bool              `json:"stream,omitempty"`
		StreamOptions     *streamOptions    `json:"stream_options,omitempty"`
	}{
		Model: r.Model, Messages: r.Messages, MaxTokens: r.MaxOutputTokens, Temperature: r.Temperature,
		TopP: r.TopP, User: r.User, Tools: r.chatTools, ToolChoice: r.chatToolChoice,
		ResponseFormat: r.responseFormat, Stream: r.Stream,
	}
	if len(r.chatTools) > 0 {
		body.ParallelToolCalls = r.ParallelToolCalls
	}
	if r.Stream {
		body.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	b, err := json.Marshal(body)
	if err != nil { // only strings, numbers and already valid raw JSON
		panic("responses: encoding chat body: " + err.Error())
	}
	return b
}

// sanitize bounds a client-chosen name quoted in an error.
func sanitize(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\'' {
			return -1
		}
		return r
	}, s), "")
}
