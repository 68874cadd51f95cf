package admin

import (
	"errors"
	"net/http"
)

// The errors the admin API answers with. Handlers return them (usually with
// the exact text the client sees, see withMessage); errorTable maps them to
// an HTTP status and a Matrix errcode in this one place.
var (
	// ErrMissingToken: no access token, or an Authorization header that is
	// not "Bearer <token>".
	ErrMissingToken = errors.New("admin: missing access token")
	// ErrUnknownToken: an access token that is not one of the configured ones.
	ErrUnknownToken = errors.New("admin: unknown access token")
	// ErrForbidden: the admin API is off (no token configured).
	ErrForbidden = errors.New("admin: not a server admin")
	// ErrInvalidParam: a query parameter has a bad value.
	ErrInvalidParam = errors.New("admin: invalid query parameter")
	// ErrBadRequest: a request Synapse refuses without a specific errcode.
	ErrBadRequest = errors.New("admin: bad request")
	// ErrUnknownDestination: the read model does not know the destination.
	ErrUnknownDestination = errors.New("admin: unknown destination")
	// ErrResetNotNeeded: a reset of a destination that is not backing off.
	ErrResetNotNeeded = errors.New("admin: reset not needed")
	// ErrNotReady: the read model has not finished loading, or cannot
	// catch up with its store.
	ErrNotReady = errors.New("admin: read model is not ready")
	// ErrTimeout: a reset was not confirmed by the destination's owner, or
	// not shown by the read model, in time.
	ErrTimeout = errors.New("admin: timed out")
	// ErrNotJSON: a micro request's body is not a JSON object.
	ErrNotJSON = errors.New("admin: request is not a JSON object")
	// ErrMissingParam: a micro request lacks a required parameter.
	ErrMissingParam = errors.New("admin: missing parameter")

	errUnrecognized     = errors.New("admin: unrecognized request")
	errMethodNotAllowed = errors.New("admin: method not allowed")
)

// Matrix error codes used here.
const (
	codeMissingToken = "M_MISSING_TOKEN"
	codeUnknownToken = "M_UNKNOWN_TOKEN"
	codeForbidden    = "M_FORBIDDEN"
	codeInvalidParam = "M_INVALID_PARAM"
	codeMissingParam = "M_MISSING_PARAM"
	codeNotJSON      = "M_NOT_JSON"
	codeNotFound     = "M_NOT_FOUND"
	codeUnrecognized = "M_UNRECOGNIZED"
	codeUnknown      = "M_UNKNOWN"
)

// errorTable maps each sentinel to its answer, on both surfaces: the HTTP
// status and Matrix error body, and for the NATS micro service the same body
// with the status as the micro error code (Nats-Service-Error-Code) and the
// message as its description (Nats-Service-Error). message is the default
// text; an error made by withMessage brings its own.
var errorTable = []struct {
	err     error
	status  int
	errcode string
	message string
}{
	{ErrMissingToken, http.StatusUnauthorized, codeMissingToken, "Missing access token"},
	{ErrUnknownToken, http.StatusUnauthorized, codeUnknownToken, "Invalid access token passed."},
	{ErrForbidden, http.StatusForbidden, codeForbidden, "You are not a server admin"},
	{ErrInvalidParam, http.StatusBadRequest, codeInvalidParam, "Invalid query parameter"},
	{ErrBadRequest, http.StatusBadRequest, codeUnknown, "Bad request"},
	{ErrUnknownDestination, http.StatusNotFound, codeNotFound, "Unknown destination"},
	{ErrResetNotNeeded, http.StatusBadRequest, codeUnknown, "The retry timing does not need to be reset for this destination."},
	{ErrNotReady, http.StatusServiceUnavailable, codeUnknown, "read model is not ready"},
	{ErrTimeout, http.StatusGatewayTimeout, codeUnknown, "Timed out"},
	{ErrNotJSON, http.StatusBadRequest, codeNotJSON, "Content not JSON."},
	{ErrMissingParam, http.StatusBadRequest, codeMissingParam, "Missing parameter"},
	{errUnrecognized, http.StatusNotFound, codeUnrecognized, "Unrecognized request"},
	{errMethodNotAllowed, http.StatusMethodNotAllowed, codeUnrecognized, "Unrecognized request"},
}

// messageError carries the exact text a client sees for a sentinel.
type messageError struct {
	kind error
	msg  string
}

func (e *messageError) Error() string { return e.kind.Error() + ": " + e.msg }
func (e *messageError) Unwrap() error { return e.kind }

// withMessage returns kind with the text the client sees.
func withMessage(kind error, msg string) error {
	return &messageError{kind: kind, msg: msg}
}

// matrixError is the body of every error answer.
type matrixError struct {
	Errcode string `json:"errcode"`
	Error   string `json:"error"`
	// SoftLogout is sent with M_UNKNOWN_TOKEN, as the client-server API
	// (and Synapse) do: false, the token is simply not valid.
	SoftLogout *bool `json:"soft_logout,omitempty"`
}

// answer returns the status and body for err; ok is false for an error the
// table does not know (a bug or a failing dependency: 500).
func answer(err error) (status int, body matrixError, ok bool) {
	for _, e := range errorTable {
		if !errors.Is(err, e.err) {
			continue
		}
		body = matrixError{Errcode: e.errcode, Error: e.message}
		var me *messageError
		if errors.As(err, &me) {
			body.Error = me.msg
		}
		if e.errcode == codeUnknownToken {
			body.SoftLogout = new(bool)
		}
		return e.status, body, true
	}
	// Synapse's answer to an unexpected exception.
	return http.StatusInternalServerError, matrixError{Errcode: codeUnknown, Error: "Internal server error"}, false
}
