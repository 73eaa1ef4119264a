package protocol

import "encoding/json"

// Reply answers one command. Exactly one of Error or a result is set.
type Reply struct {
	ID            uint32               `json:"id,omitempty"`
	Error         *Error               `json:"error,omitempty"`
	Connect       *ConnectResult       `json:"connect,omitempty"`
	Subscribe     *SubscribeResult     `json:"subscribe,omitempty"`
	Unsubscribe   *struct{}            `json:"unsubscribe,omitempty"`
	RPC           *RPCResult           `json:"rpc,omitempty"`
	History       *HistoryResult       `json:"history,omitempty"`
	Presence      *PresenceResult      `json:"presence,omitempty"`
	PresenceStats *PresenceStatsResult `json:"presence_stats,omitempty"`
	Ping          *struct{}            `json:"ping,omitempty"`
	Refresh       *RefreshResult       `json:"refresh,omitempty"`
	SubRefresh    *SubRefreshResult    `json:"sub_refresh,omitempty"`
	// Push is a push in a batch of replies (a server-side subscription's
	// subscribe push and cached value); it has no ID.
	Push *Push `json:"push,omitempty"`
}

// Push is an asynchronous message about channel: a publication, or a
// subscribe push announcing a server-side subscription (one the client
// did not ask for: the connection token's channels claim).
type Push struct {
	Channel     string           `json:"channel"`
	Pub         *Publication     `json:"pub,omitempty"`
	Subscribe   *SubscribePush   `json:"subscribe,omitempty"`
	Unsubscribe *UnsubscribePush `json:"unsubscribe,omitempty"`
}

// UnsubscribePush ends a subscription from the server side: below 2500
// the SDKs unsubscribe for good, from 2500 on they subscribe again.
type UnsubscribePush struct {
	Code   uint32 `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// SubscribePush announces a server-side subscription and its stream
// position, as SubscribeResult does for a client's.
type SubscribePush struct {
	Recoverable bool   `json:"recoverable,omitempty"`
	Epoch       string `json:"epoch,omitempty"`
	Offset      uint64 `json:"offset,omitempty"`
	Positioned  bool   `json:"positioned,omitempty"`
}

// SubRefreshResult is the reply to "sub_refresh": the subscription now
// expires TTL seconds from now.
type SubRefreshResult struct {
	Expires bool   `json:"expires,omitempty"`
	TTL     uint32 `json:"ttl,omitempty"`
}

// RefreshResult is the reply to "refresh": the connection now expires TTL
// seconds from now.
type RefreshResult struct {
	Client  string `json:"client"`
	Version string `json:"version,omitempty"`
	Expires bool   `json:"expires,omitempty"`
	TTL     uint32 `json:"ttl,omitempty"`
}

// ConnectResult is the reply to "connect".
type ConnectResult struct {
	Client  string          `json:"client"`
	Version string          `json:"version,omitempty"`
	Expires bool            `json:"expires,omitempty"`
	TTL     uint32          `json:"ttl,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	// Ping is the server ping interval in seconds; Pong asks the client to
	// answer each ping.
	Ping uint32 `json:"ping,omitempty"`
	Pong bool   `json:"pong,omitempty"`
	Node string `json:"node,omitempty"`
}

// SubscribeResult is the reply to "subscribe".
type SubscribeResult struct {
	// Expires and TTL: the subscription token's expiry (seconds left).
	Expires       bool          `json:"expires,omitempty"`
	TTL           uint32        `json:"ttl,omitempty"`
	Recoverable   bool          `json:"recoverable,omitempty"`
	Epoch         string        `json:"epoch,omitempty"`
	Offset        uint64        `json:"offset,omitempty"`
	Positioned    bool          `json:"positioned,omitempty"`
	Recovered     bool          `json:"recovered,omitempty"`
	WasRecovering bool          `json:"was_recovering,omitempty"`
	Publications  []Publication `json:"publications,omitempty"`
	// Delta says fossil deltas were negotiated: every publication's data
	// (and a map's state entries') is then a JSON string (the payload
	// text, or a patch if delta).
	Delta bool `json:"delta,omitempty"`
	// ID is the channel's number for channel compaction (subscribe flag
	// 1): pushes then carry "id" instead of "channel".
	ID uint32 `json:"id,omitempty"`
	// Map subscriptions: Type echoes the request's, Phase is the phase
	// this reply belongs to (PhaseLive: subscribed), Cursor the next
	// state page's ("" after the last), State the page's entries.
	Type   int32         `json:"type,omitempty"`
	Phase  int32         `json:"phase,omitempty"`
	Cursor string        `json:"cursor,omitempty"`
	State  []Publication `json:"state,omitempty"`
}

// HistoryResult is the reply to "history": the publications asked for and
// the stream's current position.
type HistoryResult struct {
	Publications []Publication `json:"publications,omitempty"`
	Epoch        string        `json:"epoch,omitempty"`
	Offset       uint64        `json:"offset,omitempty"`
}

// PresenceResult is the reply to "presence": the channel's subscribers
// by client id.
type PresenceResult struct {
	Presence map[string]ClientInfo `json:"presence"`
}

// ClientInfo is one subscriber in a presence reply.
type ClientInfo struct {
	User   string `json:"user"`
	Client string `json:"client"`
}

// PresenceStatsResult is the reply to "presence_stats".
type PresenceStatsResult struct {
	NumClients uint32 `json:"num_clients"`
	NumUsers   uint32 `json:"num_users"`
}

// RPCResult is the reply to "rpc".
type RPCResult struct {
	Data json.RawMessage `json:"data,omitempty"`
}

// Publication is a channel update as the client sees it.
type Publication struct {
	Data   json.RawMessage   `json:"data"`
	Offset uint64            `json:"offset,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
	// Key and Removed: a map entry's key, and that the publication
	// removes it.
	Key     string `json:"key,omitempty"`
	Removed bool   `json:"removed,omitempty"`
	// Delta: Data is a Fossil patch to the previous value (of the key,
	// in a map), set only for a subscription that negotiated deltas.
	Delta bool `json:"delta,omitempty"`
	// Binary: Data is not known to be JSON (see Codec.Accepts); never
	// encoded.
	Binary bool `json:"-"`
}
