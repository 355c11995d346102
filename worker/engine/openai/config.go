package openai

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults applied to zero Config fields.
const (
	DefaultTimeout           = 10 * time.Minute
	DefaultStreamIdleTimeout = 2 * time.Minute
	DefaultModelRefresh      = 30 * time.Second
	DefaultMaxResponseBytes  = 64 << 20
	// DefaultOwnedBy fills owned_by for models the server lists without one.
	DefaultOwnedBy = "teegate"
)

// Config configures an Engine. Zero durations and limits take the defaults
// above; negative ones are invalid.
type Config struct {
	// BaseURL is the server's root, for example http://127.0.0.1:8000. A
	// trailing "/v1" and trailing slashes are accepted and removed; other
	// path prefixes (a router's "/ollama") are kept. Only http and https.
	BaseURL string
	// APIKey, when set, is sent upstream as "Authorization: Bearer <key>".
	APIKey string
	// HTTPClient is used for all requests. It is copied, and the copy never
	// follows redirects: a prompt is sent to BaseURL and nowhere else. Its
	// own Timeout, if any, also bounds streams. Nil means a client with a
	// loopback-tuned transport that never uses a proxy.
	HTTPClient *http.Client
	// Timeout bounds a whole non-stream request, and for a stream the wait
	// for the response headers.
	Timeout time.Duration
	// StreamIdleTimeout bounds the wait for each stream event, the first
	// included. Time the consumer spends between Next calls does not count.
	StreamIdleTimeout time.Duration
	// ModelRefresh is how long Models reuses the list from GET /v1/models
	// (default DefaultModelRefresh); RefreshModels always asks.
	ModelRefresh time.Duration
	// ModelAliases maps an extra model name to advertise onto the listed
	// upstream model it stands for. The request body is never rewritten, so
	// the server itself must accept the alias: for example Ollama lists
	// "llama3:latest" and also serves "llama3". An alias is advertised only
	// while its target is listed.
	ModelAliases map[string]string
	// NoBareNames turns off advertising the bare names the server accepts
	// for its "NAME:latest" models (Engine.Models).
	NoBareNames bool
	// MaxResponseBytes bounds a non-stream response body.
	MaxResponseBytes int64
	// MaxEventBytes bounds one stream event's data (see NewSSEReader).
	MaxEventBytes int
	// Responses says how POST /v1/responses reaches the server:
	// ResponsesPassthrough sends it to the server's own /v1/responses and
	// relays the answer unchanged; ResponsesTranslate turns it into a chat
	// completions call (package responses); ResponsesAuto ("", the
	// default) passes through until the server answers that it has no
	// such endpoint (404, 405 or 501 not about a model), then translates,
	// asking again after ResponsesProbe.
	Responses ResponsesMode
	// ResponsesProbe is how long ResponsesAuto remembers that the server
	// lacks /v1/responses (default DefaultResponsesProbe).
	ResponsesProbe time.Duration
	// Now is the clock for the model cache; nil means time.Now.
	Now func() time.Time
}

// ResponsesMode is Config.Responses.
type ResponsesMode string

// The Responses modes.
const (
	ResponsesAuto        ResponsesMode = "auto"
	ResponsesPassthrough ResponsesMode = "passthrough"
	ResponsesTranslate   ResponsesMode = "translate"
)

// DefaultResponsesProbe is the default Config.ResponsesProbe.
const DefaultResponsesProbe = 10 * time.Minute

// ParseResponsesMode reads a --responses flag value.
func ParseResponsesMode(s string) (ResponsesMode, error) {
	switch m := ResponsesMode(strings.ToLower(s)); m {
	case "", ResponsesAuto:
		return ResponsesAuto, nil
	case ResponsesPassthrough, ResponsesTranslate:
		return m, nil
	}
	return "", fmt.Errorf("%w: responses mode %q is not auto, passthrough or translate", ErrInvalidConfig, s)
}

// Validate reports whether c can build an Engine.
func (c Config) Validate() error {
	_, err := c.normalized()
	return err
}

// normalized validates c and returns a copy with defaults applied and
// BaseURL reduced to scheme://host[:port][/prefix] without a trailing slash.
func (c Config) normalized() (Config, error) {
	base, err := normalizeBaseURL(c.BaseURL)
	if err != nil {
		return c, err
	}
	c.BaseURL = base
	if c.APIKey != "" && !validHeaderValue(c.APIKey) {
		return c, fmt.Errorf("%w: APIKey holds characters not allowed in a header", ErrInvalidConfig)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Timeout", c.Timeout}, {"StreamIdleTimeout", c.StreamIdleTimeout}, {"ModelRefresh", c.ModelRefresh}} {
		if d.v < 0 {
			return c, fmt.Errorf("%w: %s is negative", ErrInvalidConfig, d.name)
		}
	}
	mode, err := ParseResponsesMode(string(c.Responses))
	if err != nil {
		return c, err
	}
	c.Responses = mode
	if c.ResponsesProbe < 0 {
		return c, fmt.Errorf("%w: ResponsesProbe is negative", ErrInvalidConfig)
	}
	c.ResponsesProbe = orDefault(c.ResponsesProbe, DefaultResponsesProbe)
	if c.MaxResponseBytes < 0 || c.MaxEventBytes < 0 {
		return c, fmt.Errorf("%w: size limits must not be negative", ErrInvalidConfig)
	}
	c.Timeout = orDefault(c.Timeout, DefaultTimeout)
	c.StreamIdleTimeout = orDefault(c.StreamIdleTimeout, DefaultStreamIdleTimeout)
	c.ModelRefresh = orDefault(c.ModelRefresh, DefaultModelRefresh)
	c.MaxResponseBytes = orDefault(c.MaxResponseBytes, DefaultMaxResponseBytes)
	c.MaxEventBytes = orDefault(c.MaxEventBytes, DefaultMaxEventBytes)
	if c.Now == nil {
		c.Now = time.Now
	}
	aliases := make(map[string]string, len(c.ModelAliases))
	for alias, target := range c.ModelAliases {
		if alias == "" || target == "" || alias == target {
			return c, fmt.Errorf("%w: model alias %q -> %q must name two different models", ErrInvalidConfig, alias, target)
		}
		aliases[alias] = target
	}
	c.ModelAliases = aliases
	return c, nil
}

func orDefault[T time.Duration | int64 | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func normalizeBaseURL(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("%w: BaseURL is empty", ErrInvalidConfig)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: parsing BaseURL: %w", ErrInvalidConfig, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%w: BaseURL scheme %q is not http or https", ErrInvalidConfig, u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("%w: BaseURL has no host", ErrInvalidConfig)
	case u.User != nil:
		// Credentials in the URL would end up in error strings and logs.
		return "", fmt.Errorf("%w: BaseURL must not carry credentials; use APIKey", ErrInvalidConfig)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("%w: BaseURL must not have a query or fragment", ErrInvalidConfig)
	}
	path := strings.TrimRight(u.EscapedPath(), "/")
	path = strings.TrimSuffix(path, "/v1")
	path = strings.TrimRight(path, "/")
	return u.Scheme + "://" + u.Host + path, nil
}

// validHeaderValue reports whether s is printable ASCII (or tab), which is
// all net/http accepts in a field value without rejecting the request.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}
