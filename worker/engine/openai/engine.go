package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/propagation"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/responses"
)

const (
	// maxErrorBody bounds how much of a non-2xx body is read to find the
	// error message; the rest is dropped unread.
	maxErrorBody = 64 << 10
	// maxModelsBody bounds GET /v1/models answers.
	maxModelsBody = 8 << 20
	// maxRequestIDLen bounds the X-Request-Id header we forward.
	maxRequestIDLen = 256
)

// Causes set on a request's context so that a failed read can be told apart
// from the caller's own cancellation.
var (
	errDeadline = errors.New("engine request deadline")
	errIdle     = errors.New("engine stream idle")
	errReleased = errors.New("engine request released")
)

// Engine is an engine.Engine backed by an OpenAI-compatible HTTP server. It
// is safe for concurrent use.
type Engine struct {
	cfg    Config
	auth   string
	client *http.Client

	// sem serializes model-list refreshes; a channel rather than a mutex so
	// waiters can give up when their context ends.
	sem      chan struct{}
	cached   []engine.Model
	cachedAt time.Time
	cacheOK  bool
	// bare: the bare names asked about (withBareNames), and whether the
	// server accepts them.
	bare map[string]bool

	// noResponsesUntil: in ResponsesAuto, the server said it has no
	// /v1/responses; translate until then (Unix nanoseconds, 0: unknown).
	noResponsesUntil atomic.Int64
}

var _ engine.Engine = (*Engine)(nil)

// New validates cfg and returns an Engine. It does not contact the server.
func New(cfg Config) (*Engine, error) {
	c, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: c, sem: make(chan struct{}, 1)}
	if c.APIKey != "" {
		e.auth = "Bearer " + c.APIKey
	}
	var client http.Client
	if c.HTTPClient != nil {
		client = *c.HTTPClient
	} else {
		client.Transport = newTransport()
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	e.client = &client
	return e, nil
}

// newTransport is tuned for one engine on loopback: many concurrent
// requests to a single host, no compression (it only costs CPU there), and
// no proxy (prompts must not leave for a proxy named in the environment).
func newTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
	}
}

// BaseURL returns the normalized base URL requests are sent under.
func (e *Engine) BaseURL() string { return e.cfg.BaseURL }

// Close releases idle connections. In-flight calls and open streams are not
// affected. The Engine remains usable.
func (e *Engine) Close() error {
	e.client.CloseIdleConnections()
	return nil
}

// WithIncludeUsage returns a copy of a chat or completions request body
// whose stream_options.include_usage is true, other members kept as they
// are. It is what an upstream gets when the worker needs the usage of a
// stream whose client did not ask for it (engine.Call.IncludeUsage).
func WithIncludeUsage(body []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("adding include_usage: %w", err)
	}
	opts := map[string]json.RawMessage{}
	if raw, ok := top["stream_options"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &opts); err != nil {
			return nil, fmt.Errorf("adding include_usage: stream_options: %w", err)
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	b, err := json.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("adding include_usage: %w", err)
	}
	top["stream_options"] = b
	out, err := json.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("adding include_usage: %w", err)
	}
	return out, nil
}

// Do sends call.Body unchanged to the operation's endpoint (with
// stream_options.include_usage set when call.IncludeUsage asks for it). A non-stream
// success returns the upstream body bytes unchanged; a stream success
// returns a Stream of the upstream SSE data payloads, tied to ctx (ending ctx
// aborts the upstream request, as does Stream.Close). A non-2xx answer is
// returned as a normalized *engine.Error (see NormalizeError); transport
// failures as an error chain holding an *engine.Error: 503
// engine_unavailable with ErrUnavailable, or 504 engine_timeout with
// ErrTimeout. When ctx itself ends, the error wraps ctx.Err() instead.
func (e *Engine) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	if call.Op == engine.OpResponses {
		return e.respond(ctx, call)
	}
	return e.do(ctx, call)
}

func (e *Engine) do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	path := call.Op.Path()
	if path == "" {
		return nil, fmt.Errorf("calling engine: %w: %q", ErrUnknownOp, string(call.Op))
	}
	accept := "application/json"
	body := call.Body
	if call.Stream {
		accept = "text/event-stream"
		if call.IncludeUsage {
			b, err := WithIncludeUsage(body)
			if err != nil {
				return nil, clientError("calling engine", engine.InvalidRequest("", "We could not parse the JSON body of your request."), ErrBadResponse, err)
			}
			body = b
		}
	}
	return e.send(ctx, request{
		what:      "calling engine",
		method:    http.MethodPost,
		path:      path,
		accept:    accept,
		body:      body,
		requestID: call.RequestID,
		stream:    call.Stream,
		events:    call.Op == engine.OpResponses,
		maxBody:   e.cfg.MaxResponseBytes,
	})
}

// respond serves POST /v1/responses as Config.Responses says: passed
// through to the server's own endpoint, byte for byte, or translated to
// chat completions (package responses), whose result the client's SDK
// sees the same way.
func (e *Engine) respond(ctx context.Context, call engine.Call) (*engine.Result, error) {
	switch e.cfg.Responses {
	case ResponsesPassthrough:
		return e.do(ctx, call)
	case ResponsesTranslate:
		return e.translate(ctx, call)
	}
	if until := e.noResponsesUntil.Load(); until != 0 && e.cfg.Now().UnixNano() < until {
		return e.translate(ctx, call)
	}
	res, err := e.do(ctx, call)
	if ee, ok := engine.AsError(err); ok && noEndpoint(ee) {
		e.noResponsesUntil.Store(e.cfg.Now().Add(e.cfg.ResponsesProbe).UnixNano())
		return e.translate(ctx, call)
	}
	return res, err
}

// noEndpoint reports whether a server's error says it has no such
// endpoint, rather than refusing this request (an unknown model is a 404
// too, with code model_not_found).
func noEndpoint(e *engine.Error) bool {
	switch e.Status {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return e.Code == nil || *e.Code != CodeModelNotFound
	}
	return false
}

// translate answers a Responses request with a chat completions call.
func (e *Engine) translate(ctx context.Context, call engine.Call) (*engine.Result, error) {
	req, err := responses.ParseRequest(call.Body)
	if err != nil {
		return nil, err
	}
	chat := engine.Call{Op: engine.OpChatCompletions, Body: req.ChatBody(), Stream: req.Stream, RequestID: call.RequestID}
	res, err := e.do(ctx, chat)
	if err != nil {
		return nil, err
	}
	id := responses.ResponseID(call.RequestID)
	created := e.cfg.Now().Unix()
	if req.Stream {
		now := func() int64 { return e.cfg.Now().Unix() }
		return &engine.Result{Stream: responses.NewChatStream(req, id, created, now, res.Stream)}, nil
	}
	body, err := responses.FromChat(req, id, created, res.Body)
	if err != nil {
		return nil, err
	}
	return &engine.Result{Body: body}, nil
}

type request struct {
	what      string // error prefix
	method    string
	path      string
	accept    string
	body      []byte
	requestID string
	stream    bool
	events    bool // a Responses API stream
	maxBody   int64
}

func (e *Engine) send(ctx context.Context, r request) (*engine.Result, error) {
	reqCtx, cancel := context.WithCancelCause(ctx)
	deadline := time.AfterFunc(e.cfg.Timeout, func() { cancel(errDeadline) })
	release := func() {
		deadline.Stop()
		cancel(errReleased)
	}
	var body io.Reader
	if r.method == http.MethodPost {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(reqCtx, r.method, e.cfg.BaseURL+r.path, body)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s: building request: %w", r.what, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", r.accept)
	if e.auth != "" {
		req.Header.Set("Authorization", e.auth)
	}
	// vLLM and SGLang adopt X-Request-Id as their own request id, which
	// lines their logs up with ours.
	if r.requestID != "" && len(r.requestID) <= maxRequestIDLen && validHeaderValue(r.requestID) {
		req.Header.Set("X-Request-Id", r.requestID)
	}
	// The W3C trace context of the worker's engine span, if any, so the
	// engine's own spans (vLLM, SGLang… export OpenTelemetry) join the trace.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))

	resp, err := e.client.Do(req)
	if err != nil {
		err = transportError(r.what, ctx, reqCtx, err)
		release()
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer release()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		return nil, NormalizeError(resp.StatusCode, msg)
	}
	if !r.stream {
		b, err := readBody(resp, r.maxBody)
		resp.Body.Close()
		if err != nil {
			err = bodyError(r.what, ctx, reqCtx, err)
		}
		release()
		if err != nil {
			return nil, err
		}
		return &engine.Result{Body: b}, nil
	}

	if !deadline.Stop() {
		// The deadline fired as the headers arrived; the stream is dead.
		resp.Body.Close()
		err := transportError(r.what, ctx, reqCtx, context.DeadlineExceeded)
		release()
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, perr := mime.ParseMediaType(ct); perr != nil || mt != "text/event-stream" {
			resp.Body.Close()
			release()
			return nil, clientError(r.what, badResponse("inference engine did not answer the stream request with an event stream"), ErrBadResponse, nil)
		}
	}
	st := newStream(ctx, reqCtx, cancel, resp.Body, e.cfg)
	st.events = r.events
	return &engine.Result{Stream: st}, nil
}

// readBody reads a success body whole, allocating once when the length is
// known.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, errTooLarge
	}
	if resp.ContentLength >= 0 {
		b := make([]byte, resp.ContentLength)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

var errTooLarge = errors.New("response body exceeds limit")

func unavailable() *engine.Error {
	return engine.Errorf(http.StatusServiceUnavailable, typeServer, "", CodeEngineUnavailable, "inference engine is unavailable")
}

func timedOut() *engine.Error {
	return engine.Errorf(http.StatusGatewayTimeout, typeServer, "", CodeEngineTimeout, "inference engine timed out")
}

func badResponse(msg string) *engine.Error {
	return engine.Errorf(http.StatusBadGateway, typeServer, "", CodeBadResponse, "%s", msg)
}

// transportError classifies a failure to get a response. The caller's own
// cancellation is reported as such (not as an engine failure); otherwise the
// engine was slow (504) or unreachable (503).
func transportError(what string, ctx, reqCtx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if context.Cause(reqCtx) == errDeadline {
		return clientError(what, timedOut(), ErrTimeout, err)
	}
	return clientError(what, unavailable(), ErrUnavailable, err)
}

// bodyError classifies a failure while reading a success body.
func bodyError(what string, ctx, reqCtx context.Context, err error) error {
	if errors.Is(err, errTooLarge) {
		return clientError(what, badResponse("inference engine response is too large"), ErrBadResponse, err)
	}
	return transportError(what, ctx, reqCtx, err)
}

// Models lists the models from GET /v1/models, cached for
// Config.ModelRefresh, plus the configured aliases of listed models and the
// bare names the server accepts for listed "NAME:latest" models (see
// RefreshModels). Object and owned_by are filled in when the server leaves
// them out. The returned slice is the caller's.
func (e *Engine) Models(ctx context.Context) ([]engine.Model, error) {
	return e.models(ctx, false)
}

// RefreshModels is Models read from the server now, whatever the cache
// holds (engine.Refresher): the worker calls it on its own schedule so a
// model added to the server is offered and a removed one withdrawn, and a
// failure tells it the engine cannot serve. A failed refresh keeps the
// previous list cached for Models.
func (e *Engine) RefreshModels(ctx context.Context) ([]engine.Model, error) {
	return e.models(ctx, true)
}

var _ engine.Refresher = (*Engine)(nil)

func (e *Engine) models(ctx context.Context, force bool) ([]engine.Model, error) {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("listing models: %w", ctx.Err())
	}
	defer func() { <-e.sem }()
	now := e.cfg.Now()
	if age := now.Sub(e.cachedAt); !force && e.cacheOK && age >= 0 && age < e.cfg.ModelRefresh {
		return slices.Clone(e.cached), nil
	}
	res, err := e.send(ctx, request{
		what:    "listing models",
		method:  http.MethodGet,
		path:    "/v1/models",
		accept:  "application/json",
		maxBody: maxModelsBody,
	})
	if err != nil {
		return nil, err
	}
	models, err := parseModelList(res.Body)
	if err != nil {
		return nil, clientError("listing models", badResponse("inference engine sent an unreadable model list"), ErrBadResponse, err)
	}
	models = e.withAliases(models)
	models = e.withBareNames(ctx, models)
	e.cached, e.cachedAt, e.cacheOK = models, now, true
	return slices.Clone(models), nil
}

// latestTag is the tag a bare model name stands for on Ollama.
const latestTag = ":latest"

// withBareNames adds, for each listed "NAME:latest" whose NAME is neither
// listed nor an alias, the model NAME when the server says it knows it
// (GET /v1/models/NAME answers that model): Ollama lists "tiny:latest" and
// serves "tiny". The server is asked once per name while its target stays
// listed; an answer other than the model or a 404 is asked again at the
// next refresh. Called with e.sem held.
func (e *Engine) withBareNames(ctx context.Context, models []engine.Model) []engine.Model {
	if e.cfg.NoBareNames {
		return models
	}
	listed := make(map[string]bool, len(models))
	for _, m := range models {
		listed[m.ID] = true
	}
	known := make(map[string]bool, len(e.bare))
	out := models
	for _, m := range models {
		bare, ok := strings.CutSuffix(m.ID, latestTag)
		if !ok || bare == "" || listed[bare] {
			continue
		}
		accepted, asked := e.bare[bare]
		if !asked {
			got, err := e.lookup(ctx, bare)
			switch {
			case err == nil:
				accepted, asked = got.ID == bare, true
			case isNotFound(err):
				accepted, asked = false, true
			}
		}
		if asked {
			known[bare] = accepted
		}
		if accepted {
			alias := m
			alias.ID = bare
			listed[bare] = true
			out = append(out, alias)
		}
	}
	e.bare = known
	return out
}

func isNotFound(err error) bool {
	ee, ok := engine.AsError(err)
	return ok && ee.Status == http.StatusNotFound
}

// Model returns one model: from the list when it is there, otherwise from
// GET /v1/models/{id}, which some servers answer for names they accept but
// do not list. An unknown model is a 404 *engine.Error with code
// model_not_found.
func (e *Engine) Model(ctx context.Context, id string) (engine.Model, error) {
	models, err := e.Models(ctx)
	if err != nil {
		return engine.Model{}, err
	}
	for _, m := range models {
		if m.ID == id {
			return m, nil
		}
	}
	notFound := engine.Errorf(http.StatusNotFound, typeInvalidRequest, "model", CodeModelNotFound, "model %q is not served by this engine", id)
	if id == "" {
		return engine.Model{}, notFound
	}
	m, err := e.lookup(ctx, id)
	if isNotFound(err) {
		return engine.Model{}, notFound
	}
	return m, err
}

// lookup asks GET /v1/models/{id}.
func (e *Engine) lookup(ctx context.Context, id string) (engine.Model, error) {
	res, err := e.send(ctx, request{
		what:    "looking up model",
		method:  http.MethodGet,
		path:    "/v1/models/" + url.PathEscape(id),
		accept:  "application/json",
		maxBody: maxModelsBody,
	})
	if err != nil {
		return engine.Model{}, err
	}
	var m modelJSON
	if err := unmarshalModel(res.Body, &m); err != nil || m.ID == "" {
		return engine.Model{}, clientError("looking up model", badResponse("inference engine sent an unreadable model"), ErrBadResponse, err)
	}
	return m.model(), nil
}

func (e *Engine) withAliases(models []engine.Model) []engine.Model {
	if len(e.cfg.ModelAliases) == 0 {
		return models
	}
	byID := make(map[string]engine.Model, len(models))
	for _, m := range models {
		byID[m.ID] = m
	}
	aliases := make([]string, 0, len(e.cfg.ModelAliases))
	for alias := range e.cfg.ModelAliases {
		aliases = append(aliases, alias)
	}
	slices.Sort(aliases)
	for _, alias := range aliases {
		target, ok := byID[e.cfg.ModelAliases[alias]]
		if _, taken := byID[alias]; !ok || taken {
			continue
		}
		target.ID = alias
		byID[alias] = target
		models = append(models, target)
	}
	return models
}

type modelJSON struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created json.RawMessage `json:"created"`
	OwnedBy string          `json:"owned_by"`
}

func (m modelJSON) model() engine.Model {
	out := engine.Model{ID: m.ID, Object: m.Object, OwnedBy: m.OwnedBy, Created: parseCreated(m.Created)}
	// Every OpenAI model object says "model"; some servers omit or vary it.
	out.Object = "model"
	if out.OwnedBy == "" {
		out.OwnedBy = DefaultOwnedBy
	}
	return out
}

// parseCreated accepts an integer, a float (truncated) or a decimal string;
// anything else is 0 rather than a failure, since created is informative.
func parseCreated(raw json.RawMessage) int64 {
	s := string(bytes.Trim(bytes.TrimSpace(raw), `"`))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= -1<<62 && f <= 1<<62 {
		return int64(f)
	}
	return 0
}

func unmarshalModel(body []byte, m *modelJSON) error {
	if firstByte(body) != '{' {
		return errors.New("model is not a JSON object")
	}
	return json.Unmarshal(body, m)
}

// parseModelList reads {"object":"list","data":[...]} (OpenAI, vLLM,
// Ollama, llama.cpp), a bare array, or a single model object. Models without
// an id are skipped; repeated ids are listed once.
func parseModelList(body []byte) ([]engine.Model, error) {
	var items []modelJSON
	switch firstByte(body) {
	case '[':
		if err := json.Unmarshal(body, &items); err != nil {
			return nil, fmt.Errorf("parsing model list: %w", err)
		}
	case '{':
		var top struct {
			Data *[]modelJSON `json:"data"`
			modelJSON
		}
		if err := json.Unmarshal(body, &top); err != nil {
			return nil, fmt.Errorf("parsing model list: %w", err)
		}
		switch {
		case top.Data != nil:
			items = *top.Data
		case top.ID != "":
			items = []modelJSON{top.modelJSON}
		default:
			return nil, errors.New("parsing model list: no data")
		}
	default:
		return nil, errors.New("parsing model list: not JSON")
	}
	out := make([]engine.Model, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		if it.ID == "" || seen[it.ID] {
			continue
		}
		seen[it.ID] = true
		out = append(out, it.model())
	}
	return out, nil
}
