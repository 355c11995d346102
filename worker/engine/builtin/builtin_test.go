package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/worker/engine"
)

const (
	chatOp = engine.OpChatCompletions
	cmplOp = engine.OpCompletions
	embOp  = engine.OpEmbeddings
)

func chatBody(extra string) string {
	return `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about lighthouses and their lenses."}]` + extra + `}`
}

func TestConfig(t *testing.T) {
	e := testEngine(t)
	ms, err := e.Models(context.Background())
	if err != nil || len(ms) != 1 {
		t.Fatalf("Models = %v, %v", ms, err)
	}
	want := engine.Model{ID: DefaultModelID, Object: "model", Created: DefaultCreatedUnix, OwnedBy: "teegate"}
	if ms[0] != want {
		t.Fatalf("model = %+v, want %+v", ms[0], want)
	}
	custom := freshEngine(t, Config{ModelID: "tiny", Created: time.Unix(42, 0)})
	ms, _ = custom.Models(context.Background())
	if ms[0].ID != "tiny" || ms[0].Created != 42 || custom.ModelID() != "tiny" {
		t.Fatalf("custom model = %+v", ms[0])
	}
	for name, cfg := range map[string]Config{
		"negative ttft":      {Latency: Latency{TTFT: -1}},
		"negative per token": {Latency: Latency{PerToken: -1}},
		"negative dims":      {EmbeddingDims: -1},
		"huge dims":          {EmbeddingDims: MaxEmbeddingDims + 1},
		"control char id":    {ModelID: "a\nb"},
		"long id":            {ModelID: strings.Repeat("m", 257)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Models(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Models with cancelled ctx = %v", err)
	}
	if _, err := e.Do(ctx, engine.Call{Op: chatOp, Body: []byte(chatBody(""))}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with cancelled ctx = %v", err)
	}
}

func TestChatShape(t *testing.T) {
	e := testEngine(t)
	b := mustBody(t, e, chatOp, chatBody(`,"max_tokens":9,"seed":1`))
	r := parseResp(t, b)
	if r.ID != "chatcmpl-req-1" || r.Object != "chat.completion" || r.Created != fixedNow.Unix() ||
		r.Model != DefaultModelID || !strings.HasPrefix(r.SystemFingerprint, "fp_") {
		t.Fatalf("header fields: %s", b)
	}
	if len(r.Choices) != 1 || r.Choices[0].Message.Role != "assistant" || r.Choices[0].Message.Content == "" ||
		string(r.Choices[0].Message.Refusal) != "null" || string(r.Choices[0].Logprobs) != "null" ||
		r.Choices[0].FinishReason != "length" {
		t.Fatalf("choice: %s", b)
	}
	// 3 priming + 3 per message + 1 ("user") + content tokens.
	n, _ := e.codec.Count("Tell me about lighthouses and their lenses.")
	if want := (usage{3 + 3 + 1 + n, 9, 3 + 3 + 1 + n + 9}); *r.Usage != want {
		t.Fatalf("usage = %+v, want %+v", *r.Usage, want)
	}
	for _, k := range []string{`"refusal":null`, `"logprobs":null`, `"object":"chat.completion"`} {
		if !bytes.Contains(b, []byte(k)) {
			t.Fatalf("missing %s in %s", k, b)
		}
	}
	// Without a request id the id is still well formed and unique.
	r1, _ := e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(chatBody(""))})
	r2, _ := e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(chatBody(""))})
	id1, id2 := parseResp(t, r1.Body).ID, parseResp(t, r2.Body).ID
	if !strings.HasPrefix(id1, "chatcmpl-") || id1 == id2 {
		t.Fatalf("ids %q %q", id1, id2)
	}
}

func TestPromptTokensCookbook(t *testing.T) {
	e := testEngine(t)
	count := func(s string) int { n, _ := e.codec.Count(s); return n }
	body := `{"model":"teegate-builtin","messages":[{"role":"system","content":"Be brief."},{"role":"user","name":"ann","content":[{"type":"text","text":"a garden"},{"type":"text","text":"in spring"}]},{"role":"assistant","content":null}],"max_tokens":1}`
	r := parseResp(t, mustBody(t, e, chatOp, body))
	want := 3 + (3 + count("system") + count("Be brief.")) +
		(3 + count("user") + 1 + count("ann") + count("a garden\nin spring")) +
		(3 + count("assistant"))
	if r.Usage.PromptTokens != want {
		t.Fatalf("prompt_tokens = %d, want %d", r.Usage.PromptTokens, want)
	}
	r = parseResp(t, mustBody(t, e, cmplOp, `{"model":"teegate-builtin","prompt":["Once upon a time","The sea"],"max_tokens":2}`))
	if want := count("Once upon a time") + count("The sea"); r.Usage.PromptTokens != want || r.Usage.CompletionTokens != 4 {
		t.Fatalf("completion usage = %+v, want prompt %d", *r.Usage, want)
	}
}

func TestDeterminism(t *testing.T) {
	e := testEngine(t)
	for _, op := range []engine.Op{chatOp, cmplOp} {
		body := func(extra string) string {
			if op == chatOp {
				return chatBody(`,"max_tokens":40` + extra)
			}
			return `{"model":"teegate-builtin","prompt":"The keeper climbed","max_tokens":40` + extra + `}`
		}
		t.Run(string(op), func(t *testing.T) {
			a := mustBody(t, e, op, body(`,"seed":11`))
			b := mustBody(t, e, op, body(`,"seed":11`))
			if !bytes.Equal(a, b) {
				t.Fatalf("same seed, different bytes:\n%s\n%s", a, b)
			}
			c := mustBody(t, e, op, body(`,"seed":12`))
			if text(t, a) == text(t, c) {
				t.Fatalf("seeds 11 and 12 gave the same text %q", text(t, a))
			}
			// Unseeded: derived from the body, so still reproducible.
			u1 := mustBody(t, e, op, body(""))
			u2 := mustBody(t, e, op, body(""))
			if !bytes.Equal(u1, u2) {
				t.Fatal("unseeded request not reproducible")
			}
			// A fresh engine gives the same bytes: nothing depends on map order.
			f := freshEngine(t, Config{})
			if !bytes.Equal(a, mustBody(t, f, op, body(`,"seed":11`))) {
				t.Fatal("fresh engine disagrees")
			}
		})
	}
	// Different prompts give different text even with the same seed.
	seen := map[string]string{}
	for _, q := range []string{"lighthouse lens", "tomatoes in the garden", "bread and yeast", "remote attestation of a processor", "the river after rain"} {
		b := mustBody(t, e, chatOp, `{"model":"teegate-builtin","messages":[{"role":"user","content":"`+q+`"}],"seed":5,"max_tokens":24}`)
		tx := text(t, b)
		if prev, dup := seen[tx]; dup {
			t.Fatalf("prompts %q and %q gave the same text", prev, q)
		}
		seen[tx] = q
	}
}

func text(t testing.TB, b []byte) string {
	t.Helper()
	r := parseResp(t, b)
	var parts []string
	for _, c := range r.Choices {
		parts = append(parts, c.Message.Content+c.Text)
	}
	return strings.Join(parts, "\x00")
}

func TestMaxTokensExact(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		name string
		op   engine.Op
		body string
		want int
	}{
		{"chat max_tokens 1", chatOp, chatBody(`,"max_tokens":1`), 1},
		{"chat max_tokens 7", chatOp, chatBody(`,"max_tokens":7,"temperature":1.7`), 7},
		{"chat max_completion_tokens", chatOp, chatBody(`,"max_completion_tokens":33,"max_tokens":2`), 33},
		{"chat default", chatOp, chatBody(``), DefaultChatMaxTokens},
		{"chat long", chatOp, chatBody(`,"max_tokens":700,"temperature":0`), 700},
		{"completion default", cmplOp, `{"model":"teegate-builtin","prompt":"x"}`, DefaultCompletionMaxTokens},
		{"completion 50", cmplOp, `{"model":"teegate-builtin","prompt":"The lens","max_tokens":50}`, 50},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := e.plan(engine.Call{Op: tc.op, Body: []byte(tc.body)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.runBody(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			if p.produced[0] != tc.want || len(p.samplers[0].hist) != tc.want {
				t.Fatalf("sampled %d tokens, want %d", p.produced[0], tc.want)
			}
			r := parseResp(t, mustBody(t, e, tc.op, tc.body))
			if r.Usage.CompletionTokens != tc.want || r.Choices[0].FinishReason != "length" {
				t.Fatalf("usage %+v finish %q", *r.Usage, r.Choices[0].FinishReason)
			}
			s := summarize(t, mustStream(t, e, tc.op, tc.body), tc.op == chatOp)
			contentChunks := 0
			for _, c := range s.chunks {
				if len(c.Choices) == 1 && ((c.Choices[0].Delta != nil && c.Choices[0].Delta.Content != nil && c.Choices[0].Delta.Role == nil) ||
					(c.Choices[0].Text != nil && c.Choices[0].FinishReason == nil)) {
					contentChunks++
				}
			}
			if contentChunks == 0 || contentChunks > tc.want {
				t.Fatalf("%d content chunks for %d tokens", contentChunks, tc.want)
			}
		})
	}
}

func TestStopSequences(t *testing.T) {
	e := testEngine(t)
	base := chatBody(`,"max_tokens":60,"temperature":0`)
	full := parseResp(t, mustBody(t, e, chatOp, base)).Choices[0].Message.Content
	if len(full) < 40 {
		t.Fatalf("greedy text too short: %q", full)
	}
	// A stop that spans several tokens, found in the middle of the text.
	mid := full[len(full)/2 : len(full)/2+7]
	first := strings.Index(full, mid)
	word := strings.Fields(full)[3]
	cases := []struct {
		name, stop, want, finish string
	}{
		{"string", fmt.Sprintf("%q", mid), full[:first], "stop"},
		{"array", fmt.Sprintf("[%q,%q]", "zzzz-not-there", mid), full[:first], "stop"},
		{"earliest wins", fmt.Sprintf("[%q,%q]", mid, word), full[:strings.Index(full, word)], "stop"},
		{"absent", `["qqqq"]`, full, "length"},
		{"empty ignored", `[""]`, full, "length"},
		{"null", `null`, full, "length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := chatBody(`,"max_tokens":60,"temperature":0,"stop":` + tc.stop)
			r := parseResp(t, mustBody(t, e, chatOp, body))
			if got := r.Choices[0].Message.Content; got != tc.want || r.Choices[0].FinishReason != tc.finish {
				t.Fatalf("content %q finish %q, want %q %q", got, r.Choices[0].FinishReason, tc.want, tc.finish)
			}
			s := summarize(t, mustStream(t, e, chatOp, body), true)
			if s.texts[0] != tc.want || s.finish[0] != tc.finish {
				t.Fatalf("stream %q %q, want %q %q", s.texts[0], s.finish[0], tc.want, tc.finish)
			}
		})
	}
}

func TestGreedyAndTopP(t *testing.T) {
	e := testEngine(t)
	g1 := text(t, mustBody(t, e, chatOp, chatBody(`,"temperature":0,"seed":1,"max_tokens":30`)))
	g2 := text(t, mustBody(t, e, chatOp, chatBody(`,"temperature":0,"seed":999,"max_tokens":30`)))
	if g1 != g2 {
		t.Fatalf("greedy depends on seed:\n%q\n%q", g1, g2)
	}
	r := parseResp(t, mustBody(t, e, chatOp, chatBody(`,"temperature":0,"n":3,"max_tokens":30`)))
	for _, c := range r.Choices {
		if c.Message.Content != r.Choices[0].Message.Content {
			t.Fatal("greedy choices differ")
		}
	}
	// Greedy picks the argmax of the model's distribution at each step.
	p, err := e.plan(engine.Call{Op: cmplOp, Body: []byte(`{"model":"teegate-builtin","prompt":"The lens is","max_tokens":12,"temperature":0}`)})
	if err != nil {
		t.Fatal(err)
	}
	g := p.samplers[0]
	sc := newScratch(e.m)
	for range 12 {
		probe := g
		probe.hist = append([]int32(nil), g.hist...)
		lo, n := e.m.scores(g.a, g.b, sc.s)
		probe.blockRepeats(lo, sc.s[:n])
		best := 0
		for j := 1; j < n; j++ {
			if sc.s[j] > sc.s[best] {
				best = j
			}
		}
		if tok := g.next(sc); tok != e.m.bigNext[lo+int32(best)] {
			t.Fatalf("greedy picked %d, argmax is %d", tok, e.m.bigNext[lo+int32(best)])
		}
	}
	// top_p so small that only the most likely token survives equals greedy
	// (completions continue the prompt, so the start does not depend on the seed).
	cb := func(extra string) string {
		return `{"model":"teegate-builtin","prompt":"A garden begins with the","max_tokens":30` + extra + `}`
	}
	greedy := text(t, mustBody(t, e, cmplOp, cb(`,"temperature":0`)))
	for _, seed := range []int{1, 2, 3} {
		if got := text(t, mustBody(t, e, cmplOp, cb(fmt.Sprintf(`,"top_p":0,"temperature":1.5,"seed":%d`, seed)))); got != greedy {
			t.Fatalf("top_p 0 seed %d = %q, want greedy %q", seed, got, greedy)
		}
	}
	// A wide nucleus at high temperature leaves the greedy path.
	differs := false
	for seed := range 5 {
		if text(t, mustBody(t, e, cmplOp, cb(fmt.Sprintf(`,"top_p":1,"temperature":2,"seed":%d`, seed)))) != greedy {
			differs = true
		}
	}
	if !differs {
		t.Fatal("sampling never left the greedy path")
	}
}

func TestChoicesN(t *testing.T) {
	e := testEngine(t)
	r := parseResp(t, mustBody(t, e, chatOp, chatBody(`,"n":3,"seed":40,"max_tokens":12`)))
	if len(r.Choices) != 3 || r.Usage.CompletionTokens != 36 {
		t.Fatalf("choices %d usage %+v", len(r.Choices), *r.Usage)
	}
	for i, c := range r.Choices {
		if c.Index != i {
			t.Fatalf("choice %d has index %d", i, c.Index)
		}
		// Choice i uses seed+i: it equals choice 0 of a request with that seed.
		one := parseResp(t, mustBody(t, e, chatOp, chatBody(fmt.Sprintf(`,"n":1,"seed":%d,"max_tokens":12`, 40+i))))
		if one.Choices[0].Message.Content != c.Message.Content {
			t.Fatalf("choice %d differs from seed %d", i, 40+i)
		}
	}
	if r.Choices[0].Message.Content == r.Choices[1].Message.Content && r.Choices[1].Message.Content == r.Choices[2].Message.Content {
		t.Fatal("all sampled choices are identical")
	}
	// Legacy completions: n per prompt, indexes prompt*n+j.
	c := parseResp(t, mustBody(t, e, cmplOp, `{"model":"teegate-builtin","prompt":["The sea","Bread"],"n":2,"max_tokens":3}`))
	if len(c.Choices) != 4 || c.Choices[3].Index != 3 || c.Usage.CompletionTokens != 12 {
		t.Fatalf("completion choices: %+v", c)
	}
}

// TestStreamMatchesBody checks that a client reassembling a stream gets
// exactly the non-stream answer, for a spread of parameters.
func TestStreamMatchesBody(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		name     string
		op       engine.Op
		body, so string // so: stream_options, added to the stream request only
	}{
		{"chat", chatOp, chatBody(`,"seed":3,"max_tokens":25`), ""},
		{"chat usage", chatOp, chatBody(`,"seed":3,"max_tokens":25`), `{"include_usage":true}`},
		{"chat n stop", chatOp, chatBody(`,"seed":4,"n":3,"max_tokens":40,"stop":[". ","\n"]`), `{"include_usage":true}`},
		{"chat penalties", chatOp, chatBody(`,"seed":5,"max_tokens":50,"presence_penalty":2,"frequency_penalty":-1,"top_p":0.8,"temperature":0.6`), ""},
		{"chat usage false", chatOp, chatBody(`,"seed":3,"max_tokens":5`), `{"include_usage":false}`},
		{"chat unseeded", chatOp, chatBody(`,"max_tokens":30,"temperature":1.2`), `{}`},
		{"completion", cmplOp, `{"model":"teegate-builtin","prompt":"The lighthouse","seed":1,"max_tokens":20}`, `{"include_usage":true}`},
		{"completion echo n", cmplOp, `{"model":"teegate-builtin","prompt":["Soil is","The café"],"echo":true,"n":2,"max_tokens":8}`, ""},
		{"completion tokens", cmplOp, `{"model":"teegate-builtin","prompt":[[9906,1917],[791,23496]],"max_tokens":6}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := mustBody(t, e, tc.op, tc.body)
			r := parseResp(t, body)
			extra := `"stream":true,`
			if tc.so != "" {
				extra += `"stream_options":` + tc.so + `,`
			}
			streamBody := strings.Replace(tc.body, `{"model"`, `{`+extra+`"model"`, 1)
			payloads := mustStream(t, e, tc.op, streamBody)
			chat := tc.op == chatOp
			s := summarize(t, payloads, chat)
			for i, c := range r.Choices {
				want := c.Message.Content + c.Text
				if s.texts[i] != want || s.finish[i] != c.FinishReason {
					t.Fatalf("choice %d: stream %q/%q, body %q/%q", i, s.texts[i], s.finish[i], want, c.FinishReason)
				}
				if chat && !s.roleSeen[i] {
					t.Fatalf("choice %d: no role chunk", i)
				}
			}
			if len(s.finish) != len(r.Choices) {
				t.Fatalf("%d finishes for %d choices", len(s.finish), len(r.Choices))
			}
			wantUsage := strings.Contains(tc.so, `true`)
			if wantUsage {
				if s.usage == nil || *s.usage != *r.Usage || s.nUsage != len(payloads)-1 {
					t.Fatalf("usage chunk %+v (null in %d of %d), want %+v", s.usage, s.nUsage, len(payloads), *r.Usage)
				}
				if last := payloads[len(payloads)-1]; !bytes.Contains(last, []byte(`"choices":[]`)) {
					t.Fatalf("last chunk %s", last)
				}
			} else if s.usage != nil || s.nUsage != 0 {
				t.Fatal("usage present without include_usage")
			}
			obj := "chat.completion.chunk"
			if !chat {
				obj = "text_completion"
			}
			for _, c := range s.chunks {
				if c.Object != obj || c.ID != r.ID || c.Created != r.Created || c.Model != r.Model || c.SystemFingerprint != r.SystemFingerprint {
					t.Fatalf("chunk header %+v vs body %+v", c, r)
				}
			}
			if chat {
				first := payloads[0]
				if !bytes.Contains(first, []byte(`"delta":{"role":"assistant","content":"","refusal":null}`)) {
					t.Fatalf("first chunk %s", first)
				}
			}
		})
	}
}

func TestStreamLifecycle(t *testing.T) {
	e := testEngine(t)
	r, err := e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(chatBody(`,"stream":true,"max_tokens":500`)), Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Stream.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = r.Stream.Close()
	_ = r.Stream.Close() // idempotent
	if _, err := r.Stream.Next(context.Background()); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	r, _ = e.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(chatBody(`,"stream":true`)), Stream: true})
	defer r.Stream.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Stream.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with cancelled ctx = %v", err)
	}
	if _, err := r.Stream.Next(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("a failed stream must stay failed, got %v", err)
	}
}

// TestLatencyProfile observes the waits through the sleep hook (no clock
// reads), then checks that real waits end on cancellation and on Close.
func TestLatencyProfile(t *testing.T) {
	e := freshEngine(t, Config{Latency: Latency{TTFT: 200 * time.Millisecond, PerToken: 20 * time.Millisecond}})
	var mu sync.Mutex
	var waits []time.Duration
	e.sleep = func(ctx context.Context, d time.Duration, stop <-chan struct{}) error {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return nil
	}
	mustBody(t, e, chatOp, chatBody(`,"max_tokens":10,"n":2`))
	if len(waits) != 1 || waits[0] != 200*time.Millisecond+9*20*time.Millisecond {
		t.Fatalf("non-stream waits %v", waits)
	}
	waits = nil
	mustStream(t, e, chatOp, chatBody(`,"max_tokens":4,"n":2,"stream":true`))
	want := []time.Duration{200 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("stream waits %v, want %v (one per decoding step)", waits, want)
	}

	slow := freshEngine(t, Config{Latency: Latency{TTFT: time.Hour, PerToken: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := slow.Do(ctx, engine.Call{Op: chatOp, Body: []byte(chatBody(""))})
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("non-stream after cancel = %v", err)
	}
	r, err := slow.Do(context.Background(), engine.Call{Op: chatOp, Body: []byte(chatBody(`,"stream":true`)), Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Stream.Next(context.Background()); err != nil { // role chunk: no wait
		t.Fatal(err)
	}
	go func() {
		_, err := r.Stream.Next(context.Background()) // blocks in the TTFT wait
		done <- err
	}()
	_ = r.Stream.Close()
	if err := <-done; !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Next after Close during wait = %v", err)
	}
	r, _ = slow.Do(context.Background(), engine.Call{Op: cmplOp, Body: []byte(`{"model":"teegate-builtin","prompt":"x","stream":true}`), Stream: true})
	defer r.Stream.Close()
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		_, err := r.Stream.Next(ctx)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stream Next after cancel = %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	e := testEngine(t)
	bodies := []string{
		chatBody(`,"seed":1,"max_tokens":20`),
		chatBody(`,"seed":2,"n":2,"max_tokens":20,"presence_penalty":1`),
		`{"model":"teegate-builtin","prompt":"The river","max_tokens":20}`,
	}
	want := make([][]byte, len(bodies))
	for i, b := range bodies {
		op := chatOp
		if i == 2 {
			op = cmplOp
		}
		want[i] = mustBody(t, e, op, b)
	}
	embWant := mustBody(t, e, embOp, `{"model":"teegate-builtin","input":"a quiet harbour"}`)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 6 {
				i := (g + k) % len(bodies)
				op := chatOp
				if i == 2 {
					op = cmplOp
				}
				stream := k%2 == 0
				r, err := e.Do(context.Background(), engine.Call{Op: op, Body: []byte(bodies[i]), Stream: stream, RequestID: "req-1"})
				if err != nil {
					errs <- err
					return
				}
				if !stream {
					if !bytes.Equal(r.Body, want[i]) {
						errs <- fmt.Errorf("body %d differs under concurrency", i)
					}
				} else {
					for {
						if _, err := r.Stream.Next(context.Background()); err != nil {
							break
						}
					}
					_ = r.Stream.Close()
				}
				eb, err := e.Do(context.Background(), engine.Call{Op: embOp, Body: []byte(`{"model":"teegate-builtin","input":"a quiet harbour"}`)})
				if err != nil || !bytes.Equal(eb.Body, embWant) {
					errs <- fmt.Errorf("embedding differs under concurrency: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
