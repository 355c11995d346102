package responses

import (
	"encoding/json"

	"github.com/teegate/teegate/worker/engine"
)

// Event is one Responses stream event: its SSE event name (always the
// JSON's "type") and its JSON payload.
type Event struct {
	Name string
	Data []byte
}

// Usage is the token accounting of a response.
type Usage struct {
	InputTokens  int64
	OutputTokens int64
	TotalTokens  int64
}

type usageJSON struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

type incompleteJSON struct {
	Reason string `json:"reason"`
}

type reasoningJSON struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

// responseJSON is the response object, members in OpenAI's order.
type responseJSON struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	Status             string            `json:"status"`
	Background         bool              `json:"background"`
	CompletedAt        *int64            `json:"completed_at"`
	Error              json.RawMessage   `json:"error"`
	IncompleteDetails  *incompleteJSON   `json:"incomplete_details"`
	Instructions       *string           `json:"instructions"`
	MaxOutputTokens    *int64            `json:"max_output_tokens"`
	MaxToolCalls       *int64            `json:"max_tool_calls"`
	Model              string            `json:"model"`
	Output             []json.RawMessage `json:"output"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Reasoning          reasoningJSON     `json:"reasoning"`
	ServiceTier        string            `json:"service_tier"`
	Store              bool              `json:"store"`
	Temperature        float64           `json:"temperature"`
	Text               json.RawMessage   `json:"text"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              json.RawMessage   `json:"tools"`
	TopP               float64           `json:"top_p"`
	Truncation         string            `json:"truncation"`
	Usage              *usageJSON        `json:"usage"`
	User               *string           `json:"user"`
	Metadata           json.RawMessage   `json:"metadata"`
}

type outputTextJSON struct {
	Type        string            `json:"type"`
	Annotations []json.RawMessage `json:"annotations"`
	Logprobs    []json.RawMessage `json:"logprobs"`
	Text        string            `json:"text"`
}

type messageJSON struct {
	ID      string           `json:"id"`
	Type    string           `json:"type"`
	Status  string           `json:"status"`
	Content []outputTextJSON `json:"content"`
	Role    string           `json:"role"`
}

type functionCallJSON struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	Arguments string `json:"arguments"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
}

// item is one output item being built.
type item struct {
	call bool
	id   string
	text []byte // message text, or function call arguments
	// function calls
	callID, name string
	done         bool
}

// Emitter builds one response: the events of its stream, in order with
// their sequence numbers, and the final response object, from text deltas,
// tool call deltas and the finish. Stream and non-stream answers run
// through it, so both carry the same object. Not safe for concurrent use.
type Emitter struct {
	base   responseJSON
	msgID  string
	seq    int64
	items  []*item
	open   int         // index of the message item taking text, -1 if none
	calls  map[int]int // chat tool call index → output index
	events []Event
	final  []byte
}

// NewEmitter starts the response id (e.g. "resp_<request id>") created at
// created (Unix seconds) for model.
func NewEmitter(req *Request, id string, created int64, model string) *Emitter {
	if model == "" {
		model = req.Model
	}
	r := responseJSON{
		ID: id, Object: "response", CreatedAt: created, Status: "in_progress",
		Error: json.RawMessage("null"), Instructions: req.Instructions, MaxOutputTokens: req.MaxOutputTokens,
		Model: model, Output: []json.RawMessage{}, ParallelToolCalls: true, ServiceTier: "default",
		Temperature: 1, Text: json.RawMessage(`{"format":{"type":"text"}}`), ToolChoice: json.RawMessage(`"auto"`),
		Tools: json.RawMessage(`[]`), TopP: 1, Truncation: "disabled", User: req.User, Metadata: json.RawMessage(`{}`),
	}
	if req.ParallelToolCalls != nil {
		r.ParallelToolCalls = *req.ParallelToolCalls
	}
	if req.Temperature != nil {
		r.Temperature = *req.Temperature
	}
	if req.TopP != nil {
		r.TopP = *req.TopP
	}
	if req.Text != nil {
		r.Text = req.Text
	}
	if req.ToolChoice != nil {
		r.ToolChoice = req.ToolChoice
	}
	if req.Tools != nil {
		r.Tools = req.Tools
	}
	if req.Metadata != nil {
		r.Metadata = req.Metadata
	}
	suffix := id
	if len(suffix) > 5 && suffix[:5] == "resp_" {
		suffix = suffix[5:]
	}
	return &Emitter{base: r, msgID: "msg_" + suffix, open: -1, calls: map[int]int{}}
}

// SetModel names the model that answered (the engine's, once known).
func (e *Emitter) SetModel(model string) {
	if model != "" {
		e.base.Model = model
	}
}

func (e *Emitter) emit(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own types
		panic("responses: encoding event: " + err.Error())
	}
	e.events = append(e.events, Event{Name: name, Data: b})
	e.seq++
}

// Start emits response.created and response.in_progress.
func (e *Emitter) Start() {
	snap := e.base
	for _, name := range []string{"response.created", "response.in_progress"} {
		e.emit(name, struct {
			Type     string       `json:"type"`
			Seq      int64        `json:"sequence_number"`
			Response responseJSON `json:"response"`
		}{name, e.seq, snap})
	}
}

func (e *Emitter) outputText(text []byte) outputTextJSON {
	return outputTextJSON{Type: "output_text", Annotations: []json.RawMessage{}, Logprobs: []json.RawMessage{}, Text: string(text)}
}

func (e *Emitter) itemJSON(it *item) any {
	status := "in_progress"
	if it.done {
		status = "completed"
	}
	if it.call {
		return functionCallJSON{ID: it.id, Type: "function_call", Status: status, Arguments: string(it.text), CallID: it.callID, Name: it.name}
	}
	content := []outputTextJSON{}
	if it.done {
		content = append(content, e.outputText(it.text))
	}
	return messageJSON{ID: it.id, Type: "message", Status: status, Content: content, Role: "assistant"}
}

func (e *Emitter) addItem(it *item) int {
	e.items = append(e.items, it)
	idx := len(e.items) - 1
	e.emit("response.output_item.added", struct {
		Type  string `json:"type"`
		Seq   int64  `json:"sequence_number"`
		Index int    `json:"output_index"`
		Item  any    `json:"item"`
	}{"response.output_item.added", e.seq, idx, e.itemJSON(it)})
	return idx
}

type partEvent struct {
	Type         string         `json:"type"`
	Seq          int64          `json:"sequence_number"`
	ItemID       string         `json:"item_id"`
	OutputIndex  int            `json:"output_index"`
	ContentIndex int            `json:"content_index"`
	Part         outputTextJSON `json:"part"`
}

// Text adds a text delta to the assistant message, opening it first.
func (e *Emitter) Text(delta string) {
	if delta == "" {
		return
	}
	e.openMessage()
	it := e.items[e.open]
	it.text = append(it.text, delta...)
	e.emit("response.output_text.delta", struct {
		Type         string            `json:"type"`
		Seq          int64             `json:"sequence_number"`
		ItemID       string            `json:"item_id"`
		OutputIndex  int               `json:"output_index"`
		ContentIndex int               `json:"content_index"`
		Delta        string            `json:"delta"`
		Logprobs     []json.RawMessage `json:"logprobs"`
	}{"response.output_text.delta", e.seq, it.id, e.open, 0, delta, []json.RawMessage{}})
}

func (e *Emitter) openMessage() {
	if e.open >= 0 {
		return
	}
	id := e.msgID
	if len(e.items) > 0 {
		id += "_" + itoa(len(e.items))
	}
	e.open = e.addItem(&item{id: id})
	e.emit("response.content_part.added", partEvent{"response.content_part.added", e.seq, id, e.open, 0, e.outputText(nil)})
}

// ToolCall adds to the chat tool call with this index: its id and name when
// first seen, then argument text.
func (e *Emitter) ToolCall(index int, callID, name, args string) {
	idx, ok := e.calls[index]
	if !ok {
		e.closeMessage()
		id := "fc_" + e.msgID[len("msg_"):] + "_" + itoa(len(e.items))
		idx = e.addItem(&item{call: true, id: id, callID: callID, name: name})
		e.calls[index] = idx
	}
	it := e.items[idx]
	if it.callID == "" {
		it.callID = callID
	}
	if it.name == "" {
		it.name = name
	}
	if args == "" {
		return
	}
	it.text = append(it.text, args...)
	e.emit("response.function_call_arguments.delta", struct {
		Type        string `json:"type"`
		Seq         int64  `json:"sequence_number"`
		ItemID      string `json:"item_id"`
		OutputIndex int    `json:"output_index"`
		Delta       string `json:"delta"`
	}{"response.function_call_arguments.delta", e.seq, it.id, idx, args})
}

func (e *Emitter) itemDone(idx int) {
	e.emit("response.output_item.done", struct {
		Type  string `json:"type"`
		Seq   int64  `json:"sequence_number"`
		Index int    `json:"output_index"`
		Item  any    `json:"item"`
	}{"response.output_item.done", e.seq, idx, e.itemJSON(e.items[idx])})
}

func (e *Emitter) closeMessage() {
	if e.open < 0 {
		return
	}
	idx := e.open
	it := e.items[idx]
	e.open = -1
	e.emit("response.output_text.done", struct {
		Type         string            `json:"type"`
		Seq          int64             `json:"sequence_number"`
		ItemID       string            `json:"item_id"`
		OutputIndex  int               `json:"output_index"`
		ContentIndex int               `json:"content_index"`
		Text         string            `json:"text"`
		Logprobs     []json.RawMessage `json:"logprobs"`
	}{"response.output_text.done", e.seq, it.id, idx, 0, string(it.text), []json.RawMessage{}})
	e.emit("response.content_part.done", partEvent{"response.content_part.done", e.seq, it.id, idx, 0, e.outputText(it.text)})
	it.done = true
	e.itemDone(idx)
}

func (e *Emitter) closeCalls() {
	for idx, it := range e.items {
		if !it.call || it.done {
			continue
		}
		e.emit("response.function_call_arguments.done", struct {
			Type        string `json:"type"`
			Seq         int64  `json:"sequence_number"`
			ItemID      string `json:"item_id"`
			OutputIndex int    `json:"output_index"`
			Name        string `json:"name"`
			Arguments   string `json:"arguments"`
		}{"response.function_call_arguments.done", e.seq, it.id, idx, it.name, string(it.text)})
		it.done = true
		e.itemDone(idx)
	}
}

// Finish closes every open item and emits the terminal event:
// response.completed, or response.incomplete when the chat finish reason
// says the output was cut ("length": max_output_tokens, "content_filter").
// completedAt is the Unix time the answer finished.
func (e *Emitter) Finish(finishReason string, u Usage, completedAt int64) {
	if e.final != nil {
		return
	}
	if len(e.items) == 0 {
		e.openMessage() // an empty answer is still one (empty) message
	}
	e.closeMessage()
	e.closeCalls()
	r := e.base
	r.Output = make([]json.RawMessage, 0, len(e.items))
	for _, it := range e.items {
		b, _ := json.Marshal(e.itemJSON(it))
		r.Output = append(r.Output, b)
	}
	uj := &usageJSON{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, TotalTokens: u.TotalTokens}
	if uj.TotalTokens == 0 {
		uj.TotalTokens = uj.InputTokens + uj.OutputTokens
	}
	r.Usage = uj
	name := "response.completed"
	switch finishReason {
	case "length":
		r.Status, r.IncompleteDetails, name = "incomplete", &incompleteJSON{"max_output_tokens"}, "response.incomplete"
	case "content_filter":
		r.Status, r.IncompleteDetails, name = "incomplete", &incompleteJSON{"content_filter"}, "response.incomplete"
	default:
		r.Status = "completed"
		r.CompletedAt = &completedAt
	}
	final, err := json.Marshal(r)
	if err != nil {
		panic("responses: encoding response: " + err.Error())
	}
	e.final = final
	e.emit(name, struct {
		Type     string          `json:"type"`
		Seq      int64           `json:"sequence_number"`
		Response json.RawMessage `json:"response"`
	}{name, e.seq, final})
}

// Drain returns the events emitted since the last call.
func (e *Emitter) Drain() []Event {
	ev := e.events
	e.events = nil
	return ev
}

// Response is the final response object (nil before Finish).
func (e *Emitter) Response() []byte { return e.final }

// Seq is the sequence number the next event will carry.
func (e *Emitter) Seq() int64 { return e.seq }

// ErrorEvent is the payload of a stream's "error" event for an engine
// failure after the stream started; seq is its sequence number.
func ErrorEvent(seq int64, e *engine.Error) []byte {
	b, _ := json.Marshal(struct {
		Type    string  `json:"type"`
		Seq     int64   `json:"sequence_number"`
		Code    *string `json:"code"`
		Message string  `json:"message"`
		Param   *string `json:"param"`
	}{"error", seq, e.Code, e.Message, e.Param})
	return b
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
