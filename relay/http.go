package relay

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
)

// channelView is the REST form of a cached publication.
type channelView struct {
	Channel   string          `json:"channel"`
	Data      json.RawMessage `json:"data,omitempty"`
	B64       []byte          `json:"b64data,omitempty"` // a value that is not JSON ("payload: binary"), base64
	Offset    uint64          `json:"offset"`
	Epoch     string          `json:"epoch"`
	Position  positionView    `json:"position"`
	Timestamp time.Time       `json:"timestamp"`
	// Subscribers is set in listings only.
	Subscribers *int `json:"subscribers,omitempty"`
}

type positionView struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// restData is a publication's data for a JSON reply: as JSON, or base64
// when it is not ("payload: binary"), as Centrifugo's b64data.
func restData(p *fanout.Publication) (data json.RawMessage, b64 []byte) {
	if p.Binary && !json.Valid(p.Data) {
		return nil, p.Data
	}
	return p.Data, nil
}

func viewOf(p *fanout.Publication) channelView {
	data, b64 := restData(p)
	return channelView{
		Channel:   p.Channel,
		Data:      data,
		B64:       b64,
		Offset:    protoOffset(p),
		Epoch:     p.Epoch,
		Position:  positionView{Topic: p.Pos.Stream, Partition: p.Pos.Partition, Offset: p.Pos.Offset},
		Timestamp: p.Time.UTC(),
	}
}

type errorView struct {
	Error string `json:"error"`
}

// handleChannel serves GET /v1/channels/{name}: the cached latest value,
// which a page renders before it subscribes.
func (s *Server) handleChannel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := fanout.ValidateName(name, s.cfg.Channels.MaxNameLength); err != nil {
		writeJSON(w, http.StatusBadRequest, errorView{err.Error()})
		return
	}
	user, ok := s.restUser(w, r)
	if !ok {
		return
	}
	// Access first, the same answer whether or not the channel has a
	// value: a refusal must not tell.
	if s.refuseRead(w, user, name) {
		return
	}
	p := s.hub.Last(name)
	if p == nil {
		writeJSON(w, http.StatusNotFound, errorView{"no cached value for channel " + name})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, viewOf(p))
}

// refuseRead answers a REST read of channel that user may not make: 401
// for an anonymous caller, 403 otherwise. It reports whether it did.
func (s *Server) refuseRead(w http.ResponseWriter, user, channel string) bool {
	e := s.mayRead(user, channel, false)
	if e == nil {
		return false
	}
	status := http.StatusForbidden
	if user == "" {
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgerelay"`)
	}
	writeJSON(w, status, errorView{e.Message + "; send its token as Authorization: Bearer <token>"})
	return true
}

// mapPageView is the REST form of one page of a map.
type mapPageView struct {
	Map     string         `json:"map"`
	Epoch   string         `json:"epoch"`
	Offset  uint64         `json:"offset"`
	Entries []mapEntryView `json:"entries"`
	Cursor  string         `json:"cursor"`
}

type mapEntryView struct {
	Key    string          `json:"key"`
	Data   json.RawMessage `json:"data,omitempty"`
	B64    []byte          `json:"b64data,omitempty"` // an entry that is not JSON ("payload: binary"), base64
	Offset uint64          `json:"offset"`
}

// handleMap serves GET /v1/maps/{name}?cursor=&limit=: a page of a map's
// entries in key order and the map's position, which a page renders
// before it subscribes. The page takes at most limit entries (1 to
// channels.maps.page_size, which is also the default) and no more data
// than a WebSocket state page (half of websocket.max_queue_bytes, at least
// one entry).
func (s *Server) handleMap(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := fanout.ValidateName(name, s.cfg.Channels.MaxNameLength); err != nil {
		writeJSON(w, http.StatusBadRequest, errorView{err.Error()})
		return
	}
	q := r.URL.Query()
	limit := s.cfg.Channels.Maps.PageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > limit {
			writeJSON(w, http.StatusBadRequest, errorView{fmt.Sprintf("limit: want a number from 1 to %d (channels.maps.page_size)", limit)})
			return
		}
		limit = n
	}
	cursor := q.Get("cursor")
	if cursor != "" {
		// A cursor is a key: the channel it names must be a valid name.
		if err := fanout.ValidateName(name+":"+cursor, s.cfg.Channels.MaxNameLength); err != nil {
			writeJSON(w, http.StatusBadRequest, errorView{"cursor: not a key of this map: " + err.Error()})
			return
		}
	}
	user, ok := s.restUser(w, r)
	if !ok || s.refuseRead(w, user, name) {
		return
	}
	var page mapPageView
	var entries []*fanout.Publication
	err := s.hub.ViewMap(name, func(v *fanout.MapView) {
		page.Epoch, page.Offset = v.Epoch(), v.Top()
		entries, page.Cursor = v.Page(cursor, limit, int(s.cfg.WebSocket.MaxQueueBytes)/2)
	})
	switch {
	case errors.Is(err, fanout.ErrNotMap):
		writeJSON(w, http.StatusNotFound, errorView{"not a map channel (channels.maps.rules): " + name})
		return
	case errors.Is(err, fanout.ErrMapFull), errors.Is(err, fanout.ErrTooManyMaps):
		writeJSON(w, http.StatusServiceUnavailable, errorView{err.Error() + " (channels.maps)"})
		return
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, errorView{err.Error()})
		return
	case page.Offset == 0:
		writeJSON(w, http.StatusNotFound, errorView{"no entries for map " + name})
		return
	}
	page.Map = name
	page.Entries = make([]mapEntryView, len(entries))
	for i, e := range entries {
		page.Entries[i] = mapEntryView{Key: e.Key, Offset: protoOffset(e)}
		page.Entries[i].Data, page.Entries[i].B64 = restData(e)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, page)
}

// handleChannels serves GET /v1/channels?prefix=odds:&limit=100: cached
// channels whose names start with prefix, sorted by name.
func (s *Server) handleChannels(w http.ResponseWriter, r *http.Request) {
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeJSON(w, http.StatusBadRequest, errorView{"limit: want a number from 1 to 10000"})
			return
		}
		limit = n
	}
	user, ok := s.restUser(w, r)
	if !ok {
		return
	}
	infos := s.hub.Channels(r.URL.Query().Get("prefix"), limit)
	out := make([]channelView, 0, len(infos))
	// As a map page: at most half a connection's queue of values in one
	// answer (10,000 values of up to ingest.max_value_bytes would
	// otherwise be built in memory), at least one channel.
	budget, truncated := int(s.cfg.WebSocket.MaxQueueBytes)/2, false
	for _, in := range infos {
		if s.mayRead(user, in.Last.Channel, false) != nil {
			continue // never listed to whoever may not read it
		}
		if budget -= len(in.Last.Data) + len(in.Last.Channel); budget < 0 && len(out) > 0 {
			truncated = true
			break
		}
		v := viewOf(in.Last)
		n := in.Subscribers
		v.Subscribers = &n
		out = append(out, v)
	}
	body := map[string]any{"channels": out}
	if truncated {
		body["truncated"] = true
	}
	writeJSON(w, http.StatusOK, body)
}

// restUser is the user a REST request speaks for: the subject of its
// "Authorization: Bearer" token (as the connect token: Server.authenticate),
// or "" without one. A bad or expired token is answered 401 here
// (ok=false).
func (s *Server) restUser(w http.ResponseWriter, r *http.Request) (user string, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", true
	}
	token, found := strings.CutPrefix(h, "Bearer ")
	var who identity
	var perr *protocol.Error
	var d *protocol.Disconnect
	if found && token != "" {
		who, perr, d = s.authenticate(token)
	}
	if !found || token == "" || perr != nil || d != nil || (s.verifier != nil && who.user == "") {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgerelay", error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, errorView{"Authorization: want Bearer and a valid, unexpired token"})
		return "", false
	}
	return who.user, true
}

// minOperatorToken is the shortest http.operator_token accepted.
const minOperatorToken = 16

// operator checks that an operator request carries "Authorization: Bearer
// <http.operator_token>", compared in constant time (of hashes, so that
// not even the length leaks), and answers it if not: 403 when no token is
// configured, 401 for a missing or wrong one.
func (s *Server) operator(w http.ResponseWriter, r *http.Request) bool {
	want := s.cfg.HTTP.OperatorToken
	if want == "" {
		writeJSON(w, http.StatusForbidden, errorView{"operator endpoints disabled: set http.operator_token"})
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	g, k := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	if !ok || subtle.ConstantTimeCompare(g[:], k[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgerelay operator"`)
		writeJSON(w, http.StatusUnauthorized, errorView{"Authorization: want Bearer and the operator token (http.operator_token)"})
		return false
	}
	return true
}

// maxRateAddresses bounds the client addresses whose REST rate buckets are
// held at once.
const maxRateAddresses = 100_000

// limitREST wraps a /v1/ handler with the per-address rate limit
// (http.rate_per_address): past it, 429 with Retry-After.
func (s *Server) limitREST(h http.HandlerFunc) http.HandlerFunc {
	l := s.restLimits
	if l == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !l.Allow(addressKey(r.RemoteAddr), time.Now()) {
			s.metrics.restRateLimited.Inc()
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, errorView{fmt.Sprintf("more than %g requests per second from this address (http.rate_per_address)", s.cfg.HTTP.RatePerAddress)})
			return
		}
		h(w, r)
	}
}

// addressKey is the rate-limit key of a remote address: the IP, or for
// IPv6 its /64 (one host may hold a whole /64).
func addressKey(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return remote
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "draining"})
	case !s.ingest.Ready():
		reason := "kafka brokers not reachable"
		if e := s.ingest.LastError(); e != "" {
			reason += ": " + e
		}
		if s.ingest.Reachable() {
			reason = "reading the start window from kafka"
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": reason})
	case s.overloaded.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready",
			"reason": fmt.Sprintf("overloaded: connections wait more than %v for a writer", s.cfg.Overload.UnreadyAfter)})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
