package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

// Reader is the read model of the destinations the admin surfaces answer
// from. It answers pages itself, rather than handing over every destination
// to be sorted per request, so that an index can serve any order and page
// of 100,000 destinations in milliseconds.
//
// A read model is a projection of the destination event log into a store
// every replica shares (a KV bucket, a database), which each replica may
// read through a view of its own (an in-memory index). Sync and EventSeq
// make the admin's own writes visible to its next read, on any replica:
// every call syncs first, and a reset answers only once EventSeq shows it.
type Reader interface {
	Get(name string) (destination.State, bool)
	// Page returns one page of the list and the number of destinations that
	// match, ordered as projection.Compare says.
	Page(q projection.Query) projection.Page
	// Ready reports whether the read model has loaded; until then every
	// admin call is answered 503.
	Ready() bool
	// Sync returns once the read model shows every write to the shared
	// store that completed before it was called.
	Sync(ctx context.Context) error
	// EventSeq returns the event-log sequence of the newest event the read
	// model shows for a destination (0 if none).
	EventSeq(ctx context.Context, name string) (uint64, error)
}

// Rooms is the read model of Synapse's destination_rooms.
type Rooms interface {
	// Rooms returns a page of a destination's rooms; known reports whether
	// any PDU for the destination was seen (Synapse then has a row for it).
	Rooms(destination string, q projection.RoomQuery) (page projection.RoomPage, known bool)
	// Ready reports whether the rooms have been loaded; until then /rooms
	// is answered 503.
	Ready() bool
}

// Resetter hands a reset to the destination's owner, and returns the
// event-log sequence through which the reset is stored, once it is; or
// destination.ErrNotFailing if the destination was not backing off.
type Resetter interface {
	Reset(ctx context.Context, destination string) (seq uint64, err error)
}

// Options are the admin listener's dependencies.
type Options struct {
	// Tokens are the accepted bearer tokens; with none, every admin call is
	// refused with 403. Empty strings are ignored.
	Tokens []string
	Reader Reader
	// Rooms answers /rooms; nil: every known destination has no rooms.
	Rooms    Rooms
	Resetter Resetter
	// Ready is /readyz: nil error means ready, otherwise the error's text is
	// the reason. nil means ready when Reader is.
	Ready func() error
	// Owners answers GET /_fedsender/partitions and the micro endpoint
	// fedsender.admin.partitions; nil: neither exists.
	Owners Owners
	// Degraded, when set and not "", is added to /readyz's "ok": the
	// service is ready but works in a reduced way (e.g. the Synapse feed
	// polling because Redis is down).
	Degraded func() string
	Log      *slog.Logger
}

// Each wait of an admin call is bounded; past it the call answers an
// error saying what it waited for, never an answer that may be stale.
const (
	// syncTimeout bounds a read's wait for its read model to catch up
	// with the shared store (503).
	syncTimeout = 5 * time.Second
	// resetTimeout bounds the owner's work on a reset: storing its event
	// (504).
	resetTimeout = 5 * time.Second
	// shownTimeout bounds the wait for the read model to show a reset
	// that is stored (504).
	shownTimeout = 5 * time.Second
)

func (o *Options) setDefaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Reader == nil {
		o.Reader = noReader{}
	}
	if o.Ready == nil {
		r := o.Reader
		o.Ready = func() error {
			if !r.Ready() {
				return ErrNotReady
			}
			return nil
		}
	}
}

// noReader stands in for a missing Reader: never ready.
type noReader struct{}

func (noReader) Get(string) (destination.State, bool)             { return destination.State{}, false }
func (noReader) Page(projection.Query) projection.Page            { return projection.Page{} }
func (noReader) Ready() bool                                      { return false }
func (noReader) Sync(context.Context) error                       { return ErrNotReady }
func (noReader) EventSeq(context.Context, string) (uint64, error) { return 0, ErrNotReady }

// handler serves the admin listener.
type handler struct {
	api
	tokens [][sha256.Size]byte // digests, so comparing takes the same time for any length
}

// New returns the admin listener's handler.
func New(opts Options) http.Handler {
	opts.setDefaults()
	h := &handler{api: api{opts: opts}}
	for _, t := range opts.Tokens {
		if t != "" {
			h.tokens = append(h.tokens, sha256.Sum256([]byte(t)))
		}
	}
	return h
}

// endpoint is one route: its method and what serves it. admin routes need a
// token and send CORS headers.
type endpoint struct {
	method string
	admin  bool
	serve  func(h *handler, w http.ResponseWriter, r *http.Request, dest string) error
}

var (
	epHealth  = endpoint{http.MethodGet, false, (*handler).healthz}
	epReady   = endpoint{http.MethodGet, false, (*handler).readyz}
	epList    = endpoint{http.MethodGet, true, (*handler).httpList}
	epDetails = endpoint{http.MethodGet, true, (*handler).httpDetails}
	epRooms   = endpoint{http.MethodGet, true, (*handler).httpRooms}
	epReset   = endpoint{http.MethodPost, true, (*handler).httpReset}
)

// destinationsPath is the root of Synapse's federation admin API.
const destinationsPath = "/_synapse/admin/v1/federation/destinations"

// route finds the endpoint of a path as sent (still percent-encoded), and the
// destination in it. The path is split before it is decoded, so "%2F" in a
// name does not make a new segment (as in Synapse). A segment that does not
// decode gives a name that is not valid, hence unknown.
func route(escaped string) (ep endpoint, dest string, ok bool) {
	switch escaped {
	case "/healthz", "/livez": // /livez: the Kubernetes name of the same cheap check
		return epHealth, "", true
	case "/readyz":
		return epReady, "", true
	case destinationsPath:
		return epList, "", true
	case PartitionsPath:
		return epPartitions, "", true
	}
	rest, found := strings.CutPrefix(escaped, destinationsPath+"/")
	if !found {
		return endpoint{}, "", false
	}
	seg, tail, _ := strings.Cut(rest, "/")
	switch tail {
	case "":
		if strings.HasSuffix(rest, "/") {
			return endpoint{}, "", false
		}
		ep = epDetails
	case "rooms":
		ep = epRooms
	case "reset_connection":
		if seg == "" { // Synapse's pattern wants at least one character here
			return endpoint{}, "", false
		}
		ep = epReset
	default:
		return endpoint{}, "", false
	}
	dest, err := url.PathUnescape(seg)
	if err != nil {
		dest = seg // fails servername validation: '%' is not allowed
	}
	return ep, dest, true
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, dest, ok := route(r.URL.EscapedPath())
	if ok && ep.admin {
		setCORS(w.Header())
		if r.Method == http.MethodOptions {
			// A browser's preflight (synapse-admin runs in one); it carries
			// no token.
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	var err error
	switch {
	case !ok:
		err = errUnrecognized
	case r.Method != ep.method && !(ep.method == http.MethodGet && r.Method == http.MethodHead):
		w.Header().Set("Allow", allowed(ep.method))
		err = errMethodNotAllowed
	case ep.admin:
		if err = h.authorize(r); err == nil {
			err = ep.serve(h, w, r, dest)
		}
	default:
		err = ep.serve(h, w, r, dest)
	}
	if err != nil {
		h.writeError(w, r, dest, err)
	}
}

func allowed(method string) string {
	if method == http.MethodGet {
		return "GET, HEAD"
	}
	return method
}

// setCORS sets the headers Synapse sends so browser tools can call the API.
// A wildcard origin is safe: the token travels in a header, never a cookie.
func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
}

// authorize checks the request's access token the way Synapse finds it.
// Tokens are never logged.
func (h *handler) authorize(r *http.Request) error {
	if len(h.tokens) == 0 {
		return ErrForbidden
	}
	tok, err := accessToken(r)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for _, t := range h.tokens { // no early exit: the time does not say which token
		match |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	if match != 1 {
		return ErrUnknownToken
	}
	return nil
}

// accessToken returns the token of "Authorization: Bearer <token>" or of the
// access_token query parameter, with Synapse's errors.
func accessToken(r *http.Request) (string, error) {
	headers := r.Header.Values("Authorization")
	query, inQuery := parseQuery(r.URL.RawQuery)["access_token"]
	if len(headers) > 0 {
		switch {
		case inQuery:
			return "", withMessage(ErrMissingToken, "Mixing Authorization headers and access_token query parameters.")
		case len(headers) > 1:
			return "", withMessage(ErrMissingToken, "Too many Authorization headers.")
		}
		parts := strings.Split(headers[0], " ")
		if len(parts) != 2 || parts[0] != "Bearer" {
			return "", withMessage(ErrMissingToken, "Invalid Authorization header.")
		}
		return parts[1], nil
	}
	if len(query) == 0 || query[0] == "" {
		return "", ErrMissingToken
	}
	return query[0], nil
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request, _ string) error {
	writeText(w, http.StatusOK, "ok")
	return nil
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request, _ string) error {
	if err := h.opts.Ready(); err != nil {
		writeText(w, http.StatusServiceUnavailable, err.Error())
		return nil
	}
	if h.opts.Degraded != nil {
		if msg := h.opts.Degraded(); msg != "" {
			writeText(w, http.StatusOK, "ok, degraded: "+msg)
			return nil
		}
	}
	writeText(w, http.StatusOK, "ok")
	return nil
}

// httpList is GET /destinations.
func (h *handler) httpList(w http.ResponseWriter, r *http.Request, _ string) error {
	out, err := h.list(r.Context(), parseQuery(r.URL.RawQuery))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// httpDetails is GET /destinations/{destination}.
func (h *handler) httpDetails(w http.ResponseWriter, r *http.Request, dest string) error {
	out, err := h.show(r.Context(), dest)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// httpRooms is GET /destinations/{destination}/rooms.
func (h *handler) httpRooms(w http.ResponseWriter, r *http.Request, dest string) error {
	out, err := h.rooms(r.Context(), dest, parseQuery(r.URL.RawQuery))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// httpReset is POST /destinations/{destination}/reset_connection. The body
// is not read (Synapse ignores it too): synapse-admin sends none, with no
// Content-Type.
func (h *handler) httpReset(w http.ResponseWriter, r *http.Request, dest string) error {
	if err := h.reset(r.Context(), dest); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
	w.WriteHeader(status)
	w.Write([]byte(text))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only plain structs are written: a bug
		status, body = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
	w.WriteHeader(status)
	w.Write(body)
}

func (h *handler) writeError(w http.ResponseWriter, r *http.Request, dest string, err error) {
	status, body, known := answer(err)
	if !known {
		h.opts.Log.Error("admin request failed", "method", r.Method, "path", r.URL.Path,
			"destination", dest, "error", err)
	}
	if errors.Is(err, ErrNotReady) {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}
