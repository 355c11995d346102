package gateway

import (
	"net/http"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/teegate/teegate/worker/wire"
)

// APIError is an error the client sees, in OpenAI's shape: the wire
// package's, whose table gives each wire code its status and type.
type APIError = wire.Error

// The table of client-visible errors. Every failure the gateway produces
// itself comes from here; worker and engine errors arrive already shaped.
func errInvalidJSON(detail string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error",
		Message: "We could not parse the JSON body of your request. (" + detail + ")"}
}

func errInvalid(param, msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Message: msg}
}

func errMissingKey() *APIError {
	return &APIError{Status: http.StatusUnauthorized, Type: "invalid_request_error",
		Message: "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'."}
}

func errBadKey() *APIError {
	return &APIError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
		Message: "Incorrect API key provided."}
}

func errForbidden() *APIError {
	return &APIError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "forbidden",
		Message: "This API key may not use this endpoint."}
}

func errModelNotFound(model string) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
		Message: "The model `" + truncate(model, 256) + "` does not exist or you do not have access to it."}
}

// errStateless refuses a Responses parameter that needs stored state.
func errStateless(param, what string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Code: "stateless",
		Message: "'" + param + "' is not supported: " + what + " " + wire.StatelessHint}
}

// errNoStoredResponse answers GET (and DELETE, cancel, input_items) of
// /v1/responses/{id}: nothing is ever stored to answer with.
func errNoStoredResponse() *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "response_not_found",
		Message: "Responses are not stored, so none can be retrieved, cancelled or deleted. " + wire.StatelessHint}
}

func errNotFound() *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: "Unknown request URL. Please check the URL and method."}
}

func errMethod() *APIError {
	return &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: "This method is not allowed for this URL."}
}

func errTooLarge(limit int) *APIError {
	return &APIError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
		Message: "The request body is larger than the limit of " + strconv.Itoa(limit) + " bytes."}
}

func errRateLimited(retryAfter int, what string) *APIError {
	return &APIError{Status: http.StatusTooManyRequests, Type: what, Code: "rate_limit_exceeded",
		Message: "Rate limit reached for " + what + " per minute on this API key. Retry after the time in the Retry-After header.", RetryAfter: retryAfter}
}

func errBudget(budget, spent int64) *APIError {
	return &APIError{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
		Message: "This API key has used its token budget (" + strconv.FormatInt(spent, 10) + " of " + strconv.FormatInt(budget, 10) + " tokens). Ask the key's administrator for more."}
}

func errNoCapacity() *APIError {
	return wire.Errorf(wire.CodeNoCapacity, "No attested worker is available for this model right now. Please retry.")
}

func errDeadline() *APIError {
	return wire.Errorf(wire.CodeDeadline, "The request did not complete before its deadline.")
}

func errInternal() *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: "server_error",
		Message: "The server had an error while processing your request."}
}

func errUpstream() *APIError {
	return wire.Errorf(wire.CodeBadReply, "The worker sent a malformed reply.")
}

func errWorkerGone() *APIError {
	return wire.Errorf(wire.CodeWorkerGone, "The worker serving this request went away before it finished. Please retry.")
}

// send writes e as the response.
func send(c *fiber.Ctx, e *APIError) error {
	if e.RetryAfter > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(e.RetryAfter))
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(e.Status).Send(e.Body())
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
