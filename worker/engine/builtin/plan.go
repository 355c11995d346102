package builtin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/teegate/teegate/worker/engine"
)

// maxCompletionChoices bounds n times the number of prompts of a legacy
// completion, so one request cannot ask for unbounded work.
const maxCompletionChoices = 64

// plan is a validated generation request: everything needed to produce the
// response, streamed or not.
type plan struct {
	chat         bool
	id           string
	created      int64
	promptTokens int
	maxTokens    int
	includeUsage bool

	samplers []sampler
	emitters []emitter
	echo     []string // completions with echo: text shown before each choice
	produced []int
	finish   []string // "" while the choice is still generating
	active   int
	steps    int
}

// promptInfo is one prompt after tokenization.
type promptInfo struct {
	ids  []uint
	text string // for topic words and echo
	hash uint64
}

func (e *Engine) plan(call engine.Call) (*plan, error) {
	if call.Op == engine.OpChatCompletions {
		return e.planChat(call)
	}
	return e.planCompletion(call)
}

func (e *Engine) newPlan(chat bool, call engine.Call, s *sampling) *plan {
	p := &plan{chat: chat, created: e.cfg.Now().Unix(), maxTokens: s.maxTokens, includeUsage: s.includeUsage || call.IncludeUsage}
	prefix := "cmpl-"
	if chat {
		prefix = "chatcmpl-"
	}
	if call.RequestID != "" {
		p.id = prefix + call.RequestID
	} else {
		var b [12]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		p.id = prefix + hex.EncodeToString(b[:])
	}
	return p
}

func (e *Engine) planChat(call engine.Call) (*plan, error) {
	var req chatRequest
	if err := decodeJSON(call.Body, &req, ""); err != nil {
		return nil, err
	}
	if err := checkModel(e, req.Model); err != nil {
		return nil, err
	}
	if req.Messages == nil {
		return nil, missing("messages")
	}
	msgs := *req.Messages
	if len(msgs) == 0 {
		return nil, engine.InvalidRequest("messages", "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	promptTokens := 3 // every reply is primed with <|start|>assistant<|message|>
	var steer promptInfo
	convo := uint64(fnvOffset) // hash of the conversation, for unseeded requests
	steerIsUser := false
	for i, raw := range msgs {
		param := "messages[" + strconv.Itoa(i) + "]"
		var m chatMessage
		if err := decodeJSON(raw, &m, param); err != nil {
			return nil, err
		}
		if m.Role == nil {
			return nil, missing(param + ".role")
		}
		role := *m.Role
		switch role {
		case "system", "developer", "user", "assistant":
		case "tool", "function":
			return nil, e.unsupported(param+".role", "tools")
		default:
			return nil, engine.InvalidRequest(param+".role", "Invalid value for '%s.role': supported values are 'system', 'developer', 'user' and 'assistant'.", param)
		}
		if !isNull(m.ToolCalls) || !isNull(m.FunctionCall) {
			return nil, e.unsupported(param+".tool_calls", "tools")
		}
		text, err := e.chatText(i, &m, role)
		if err != nil {
			return nil, err
		}
		convo = fnv64(fnv64(convo, []byte(role)), []byte{0})
		convo = fnv64(fnv64(convo, []byte(text)), []byte{0})
		if m.Name != nil {
			convo = fnv64(convo, []byte(*m.Name))
		}
		convo = fnv64(convo, []byte{1})
		promptTokens += 3 + e.roleTokens[role]
		if m.Name != nil {
			n, err := e.codec.Count(*m.Name)
			if err != nil {
				return nil, fmt.Errorf("counting name tokens: %w", err)
			}
			promptTokens += 1 + n
		}
		if role == "user" || !steerIsUser {
			ids, _, err := e.codec.Encode(text)
			if err != nil {
				return nil, fmt.Errorf("tokenizing message: %w", err)
			}
			promptTokens += len(ids)
			steer = promptInfo{ids: ids, text: text}
			steerIsUser = role == "user"
		} else {
			n, err := e.codec.Count(text)
			if err != nil {
				return nil, fmt.Errorf("counting message tokens: %w", err)
			}
			promptTokens += n
		}
	}
	if !isNull(req.Tools) && string(req.Tools) != "[]" {
		return nil, e.unsupported("tools", "tools")
	}
	if !isNull(req.ToolChoice) && string(req.ToolChoice) != `"none"` {
		return nil, e.unsupported("tool_choice", "tools")
	}
	if !isNull(req.Functions) {
		return nil, e.unsupported("functions", "tools")
	}
	if !isNull(req.FunctionCall) && string(req.FunctionCall) != `"none"` {
		return nil, e.unsupported("function_call", "tools")
	}
	if rf := req.ResponseFormat; rf != nil {
		switch {
		case rf.Type == nil:
			return nil, missing("response_format.type")
		case *rf.Type == "text":
		case *rf.Type == "json_object" || *rf.Type == "json_schema":
			return nil, e.unsupported("response_format", "response_format "+*rf.Type)
		default:
			return nil, engine.InvalidRequest("response_format.type", "Invalid value for 'response_format.type': supported values are 'text', 'json_object' and 'json_schema'.")
		}
	}
	if req.Logprobs != nil && *req.Logprobs {
		return nil, e.unsupported("logprobs", "logprobs")
	}
	if req.TopLogprobs != nil && *req.TopLogprobs != 0 {
		return nil, e.unsupported("top_logprobs", "logprobs")
	}
	f := commonFields{
		maxTokens: req.MaxTokens, maxParam: "max_tokens", defaultMax: DefaultChatMaxTokens,
		stop: req.Stop, temperature: req.Temperature, topP: req.TopP, seed: req.Seed, n: req.N,
		stream: req.Stream != nil && *req.Stream, streamOptions: req.StreamOptions,
		freq: req.FrequencyPenalty, pres: req.PresencePenalty,
	}
	if req.MaxCompletionTokens != nil {
		f.maxTokens, f.maxParam = req.MaxCompletionTokens, "max_completion_tokens"
	}
	s, err := checkSampling(f)
	if err != nil {
		return nil, err
	}
	if promptTokens+s.maxTokens > ContextWindow {
		return nil, contextTooLong(promptTokens, s.maxTokens, "messages")
	}
	p := e.newPlan(true, call, &s)
	p.promptTokens = promptTokens
	steer.hash = hashIDs(steer.ids)
	base := baseSeed(s.seed, convo)
	for i := range s.n {
		e.addChoice(p, &s, &steer, base+int64(i), true)
	}
	return p, nil
}

func contextTooLong(prompt, completion int, param string) *engine.Error {
	return engine.Errorf(400, "invalid_request_error", param, "context_length_exceeded",
		"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the prompt, %d for the completion). Please reduce the prompt or the completion length.",
		ContextWindow, prompt+completion, prompt, completion)
}

func (e *Engine) planCompletion(call engine.Call) (*plan, error) {
	var req completionRequest
	if err := decodeJSON(call.Body, &req, ""); err != nil {
		return nil, err
	}
	if err := checkModel(e, req.Model); err != nil {
		return nil, err
	}
	prompts, err := e.parsePrompts(req.Prompt)
	if err != nil {
		return nil, err
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return nil, e.unsupported("suffix", "suffix")
	}
	if req.Logprobs != nil && *req.Logprobs != 0 {
		return nil, e.unsupported("logprobs", "logprobs")
	}
	s, err := checkSampling(commonFields{
		maxTokens: req.MaxTokens, maxParam: "max_tokens", defaultMax: DefaultCompletionMaxTokens,
		stop: req.Stop, temperature: req.Temperature, topP: req.TopP, seed: req.Seed, n: req.N,
		stream: req.Stream != nil && *req.Stream, streamOptions: req.StreamOptions,
		freq: req.FrequencyPenalty, pres: req.PresencePenalty,
	})
	if err != nil {
		return nil, err
	}
	if req.BestOf != nil && *req.BestOf != s.n {
		return nil, e.unsupported("best_of", "best_of other than n")
	}
	if len(prompts)*s.n > maxCompletionChoices {
		return nil, engine.InvalidRequest("n", "Invalid 'n': n times the number of prompts must be at most %d.", maxCompletionChoices)
	}
	p := e.newPlan(false, call, &s)
	echo := req.Echo != nil && *req.Echo
	all := uint64(fnvOffset)
	for _, pr := range prompts {
		all = mix64(all ^ hashIDs(pr.ids))
	}
	base := baseSeed(s.seed, all)
	for pi := range prompts {
		pr := &prompts[pi]
		if len(pr.ids)+s.maxTokens > ContextWindow {
			return nil, contextTooLong(len(pr.ids), s.maxTokens, "prompt")
		}
		p.promptTokens += len(pr.ids)
		pr.hash = hashIDs(pr.ids)
		for j := range s.n {
			e.addChoice(p, &s, pr, base+int64(pi*s.n+j), false)
			if echo {
				p.echo = append(p.echo, pr.text)
			}
		}
	}
	return p, nil
}

// parsePrompts accepts a string, an array of strings, an array of token ids
// or an array of arrays of token ids.
func (e *Engine) parsePrompts(raw json.RawMessage) ([]promptInfo, *engine.Error) {
	bad := engine.InvalidRequest("prompt", "Invalid type for 'prompt': expected a string, an array of strings, an array of integers or an array of arrays of integers.")
	if isNull(raw) {
		return nil, missing("prompt")
	}
	fromText := func(s string) (promptInfo, *engine.Error) {
		ids, _, err := e.codec.Encode(s)
		if err != nil {
			return promptInfo{}, engine.InvalidRequest("prompt", "Invalid 'prompt': the text cannot be tokenized.")
		}
		return promptInfo{ids: ids, text: s}, nil
	}
	fromIDs := func(ids []int64) (promptInfo, *engine.Error) {
		if len(ids) == 0 {
			return promptInfo{}, engine.InvalidRequest("prompt", "Invalid 'prompt': a token array must not be empty.")
		}
		pr := promptInfo{ids: make([]uint, len(ids))}
		for i, id := range ids {
			if id < 0 || id > 1<<20 {
				return promptInfo{}, engine.InvalidRequest("prompt", "Invalid 'prompt': token id out of range.")
			}
			pr.ids[i] = uint(id)
		}
		text, err := e.codec.Decode(pr.ids)
		if err != nil {
			return promptInfo{}, engine.InvalidRequest("prompt", "Invalid 'prompt': token id out of range.")
		}
		pr.text = strings.ToValidUTF8(text, "\ufffd")
		return pr, nil
	}
	switch firstByte(raw) {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, bad
		}
		pr, err := fromText(s)
		if err != nil {
			return nil, err
		}
		return []promptInfo{pr}, nil
	case '[':
	default:
		return nil, bad
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, bad
	}
	if len(items) == 0 {
		return nil, engine.InvalidRequest("prompt", "Invalid 'prompt': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	switch firstByte(items[0]) {
	case '"':
		var ss []string
		if json.Unmarshal(raw, &ss) != nil {
			return nil, bad
		}
		out := make([]promptInfo, 0, len(ss))
		for _, s := range ss {
			pr, err := fromText(s)
			if err != nil {
				return nil, err
			}
			out = append(out, pr)
		}
		return out, nil
	case '[':
		var lists [][]int64
		if json.Unmarshal(raw, &lists) != nil {
			return nil, bad
		}
		out := make([]promptInfo, 0, len(lists))
		for _, l := range lists {
			pr, err := fromIDs(l)
			if err != nil {
				return nil, err
			}
			out = append(out, pr)
		}
		return out, nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) != nil {
		return nil, bad
	}
	pr, err := fromIDs(ids)
	if err != nil {
		return nil, err
	}
	return []promptInfo{pr}, nil
}

// baseSeed is the request's seed or, for an unseeded request, one derived
// from its prompt content. Deriving it from the prompt rather than from every
// body byte keeps an unseeded answer reproducible and the same whether it is
// streamed or not and whatever its max_tokens (a longer budget extends the
// same text).
func baseSeed(seed *int64, promptHash uint64) int64 {
	if seed != nil {
		return *seed
	}
	return int64(mix64(promptHash ^ 0x5eed))
}

func hashIDs(ids []uint) uint64 {
	h := uint64(fnvOffset)
	for _, id := range ids {
		h = mix64(h ^ uint64(id))
	}
	return h
}

// addChoice appends one choice: its sampler starts from the prompt's tail
// (completions, when the corpus knows the last token) or from the start of a
// corpus sentence about the prompt's topic.
func (e *Engine) addChoice(p *plan, s *sampling, pr *promptInfo, seed int64, chat bool) {
	m := e.m
	g := sampler{m: m, a: -1, temp: s.temp, topP: s.topP, freqPen: s.freq, presPen: s.pres,
		hist: make([]int32, 0, s.maxTokens)}
	g.r.s = mix64(uint64(seed)) ^ pr.hash
	if s.freq != 0 || s.pres != 0 {
		g.counts = make([]uint16, len(m.pieces))
	}
	greedy := s.temp == 0
	placed := false
	if !chat && len(pr.ids) > 0 {
		if b, ok := m.toLocal[pr.ids[len(pr.ids)-1]]; ok {
			g.b = b
			if len(pr.ids) > 1 {
				if a, ok := m.toLocal[pr.ids[len(pr.ids)-2]]; ok {
					g.a = a
				}
			}
			placed = true
		}
	}
	if !placed {
		var k int32
		if sents := m.topicSentences(pr.text); sents != nil {
			k = sents[0]
			if !greedy {
				k = sents[g.r.next()%uint64(len(sents))]
			}
		} else {
			h := pr.hash
			if !greedy {
				h = g.r.next()
			}
			k = int32(h % uint64(len(m.sentStart)))
		}
		n := int32(len(m.seq))
		at := func(i int32) int32 { return m.seq[((i%n)+n)%n] }
		start := m.sentStart[k]
		g.a, g.b = at(start-2), at(start-1)
		g.forced = []int32{at(start), at(start + 1)}
	}
	p.samplers = append(p.samplers, g)
	p.emitters = append(p.emitters, emitter{stops: s.stops, trimLead: chat})
	p.produced = append(p.produced, 0)
	p.finish = append(p.finish, "")
	p.active++
}

// stepChoice generates one token of choice i. It returns the text to show
// (valid until the next call for that choice) and, when the choice ended,
// its finish reason.
func (p *plan) stepChoice(i int, sc *scratch) ([]byte, string) {
	g := &p.samplers[i]
	tok := g.next(sc)
	p.produced[i]++
	last := p.produced[i] >= p.maxTokens
	delta, stopped := p.emitters[i].push(g.m.pieces[tok], last)
	switch {
	case stopped:
		p.finish[i] = "stop"
	case last:
		p.finish[i] = "length"
	default:
		return delta, ""
	}
	p.active--
	return delta, p.finish[i]
}

func (p *plan) completionTokens() int {
	n := 0
	for _, c := range p.produced {
		n += c
	}
	return n
}

// runBody generates every choice, waits the latency profile once for the
// whole answer, and serializes the response.
func (e *Engine) runBody(ctx context.Context, p *plan) ([]byte, error) {
	sc := newScratch(e.m)
	texts := make([][]byte, len(p.samplers))
	for i := range p.samplers {
		if p.echo != nil {
			texts[i] = append(texts[i], p.echo[i]...)
		}
		for p.finish[i] == "" {
			d, _ := p.stepChoice(i, sc)
			texts[i] = append(texts[i], d...)
			if p.produced[i]%512 == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
		}
		p.steps = max(p.steps, p.produced[i])
	}
	lat := e.cfg.Latency
	if wait := lat.TTFT + time.Duration(p.steps-1)*lat.PerToken; wait > 0 {
		if err := e.sleep(ctx, wait, nil); err != nil {
			return nil, err
		}
	}
	return e.appendBody(make([]byte, 0, 256+len(p.samplers)*(200)+totalLen(texts)*11/10), p, texts), nil
}

func totalLen(b [][]byte) int {
	n := 0
	for _, x := range b {
		n += len(x)
	}
	return n
}
