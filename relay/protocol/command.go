package protocol

import "encoding/json"

// Command is one client command. Exactly one method field is set, except in
// a pong, which has none and no ID.
type Command struct {
	ID            uint32              `json:"id,omitempty"`
	Connect       *ConnectRequest     `json:"connect,omitempty"`
	Subscribe     *SubscribeRequest   `json:"subscribe,omitempty"`
	Unsubscribe   *UnsubscribeRequest `json:"unsubscribe,omitempty"`
	RPC           *RPCRequest         `json:"rpc,omitempty"`
	Ping          *struct{}           `json:"ping,omitempty"`
	Publish       *struct{}           `json:"publish,omitempty"`
	Presence      *ChannelRequest     `json:"presence,omitempty"`
	PresenceStats *ChannelRequest     `json:"presence_stats,omitempty"`
	History       *HistoryRequest     `json:"history,omitempty"`
	Send          *struct{}           `json:"send,omitempty"`
	Refresh       *RefreshRequest     `json:"refresh,omitempty"`
	SubRefresh    *SubRefreshRequest  `json:"sub_refresh,omitempty"`
}

// ConnectRequest is the "connect" command.
type ConnectRequest struct {
	Token   string                      `json:"token,omitempty"`
	Data    json.RawMessage             `json:"data,omitempty"`
	Subs    map[string]SubscribeRequest `json:"subs,omitempty"`
	Name    string                      `json:"name,omitempty"`
	Version string                      `json:"version,omitempty"`
}

// SubscribeRequest is the "subscribe" command.
type SubscribeRequest struct {
	Channel     string          `json:"channel"`
	Token       string          `json:"token,omitempty"`
	Recover     bool            `json:"recover,omitempty"`
	Epoch       string          `json:"epoch,omitempty"`
	Offset      uint64          `json:"offset,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	Positioned  bool            `json:"positioned,omitempty"`
	Recoverable bool            `json:"recoverable,omitempty"`
	JoinLeave   bool            `json:"join_leave,omitempty"`
	Delta       string          `json:"delta,omitempty"`
	// Flag is a bit set; FlagChannelCompaction asks for pushes that carry
	// the channel's numeric id instead of its name.
	Flag int64 `json:"flag,omitempty"`
	// Type is SubscribeTypeMap for a map subscription (0: a stream);
	// Phase, Cursor and Limit page it (docs/protocol.md, "Map
	// subscriptions").
	Type   int32  `json:"type,omitempty"`
	Phase  int32  `json:"phase,omitempty"`
	Cursor string `json:"cursor,omitempty"`
	Limit  int32  `json:"limit,omitempty"`
	// TF is the client's tag filter (Centrifugo's "tf"): the subscription
	// gets only the publications whose tags it matches (package
	// relay/tagfilter validates and evaluates it).
	TF *FilterNode `json:"tf,omitempty"`
}

// FilterNode is one node of a tag filter tree, as client.proto has it: a
// leaf (Op "") compares the tag Key by Cmp with Val or Vals; an inner
// node (Op "and", "or", "not") combines Nodes. The codecs decode it as
// sent; relay/tagfilter checks it.
type FilterNode struct {
	Op    string       `json:"op,omitempty"`
	Key   string       `json:"key,omitempty"`
	Cmp   string       `json:"cmp,omitempty"`
	Val   string       `json:"val,omitempty"`
	Vals  []string     `json:"vals,omitempty"`
	Nodes []FilterNode `json:"nodes,omitempty"`
	// TooDeep: the Protobuf decoder stopped here, MaxFilterDecodeDepth
	// levels down, without decoding the node's children.
	TooDeep bool `json:"-"`
	// TooLarge: the decoder stopped here, the tree having more than
	// MaxFilterDecodeNodes nodes or MaxFilterDecodeStrings strings; the
	// rest is not decoded.
	TooLarge bool `json:"-"`
}

// MaxFilterDecodeDepth bounds the recursion of the Protobuf decoder in a
// filter tree; deeper nodes are left undecoded and marked TooDeep (the
// filter is then refused: relay/tagfilter allows far less). JSON's
// nesting is bounded by encoding/json.
const MaxFilterDecodeDepth = 32

// MaxFilterDecodeNodes and MaxFilterDecodeStrings bound what either
// codec builds of one filter tree, whatever the message's size: a node
// costs about 120 bytes decoded and 2 on the wire (an empty child in
// Protobuf, "{}," in JSON), so a 128 KiB message of them would otherwise
// become 5–8 MB. Past either bound the tree is cut and marked TooLarge
// (the filter is then refused: relay/tagfilter allows far less). What a
// tree may hold decoded: about 256 × 120 B + 4,096 × 16 B string headers
// and the strings' bytes, which the message bounds.
const (
	MaxFilterDecodeNodes   = 256
	MaxFilterDecodeStrings = 4096
)

// Subscription types and map phases.
const (
	SubscribeTypeStream = 0
	SubscribeTypeMap    = 1

	PhaseLive   = 0
	PhaseStream = 1
	PhaseState  = 2
)

// HistoryRequest is the "history" command: a channel's publications,
// oldest first (newest first if Reverse), after Since if set, at most Limit
// (0: none, only the stream's position; negative: all the node keeps).
type HistoryRequest struct {
	Channel string          `json:"channel"`
	Limit   int32           `json:"limit,omitempty"`
	Since   *StreamPosition `json:"since,omitempty"`
	Reverse bool            `json:"reverse,omitempty"`
}

// StreamPosition is a place in a channel's stream.
type StreamPosition struct {
	Offset uint64 `json:"offset,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
}

// Subscribe flags.
const (
	FlagChannelCompaction = 1
)

// RefreshRequest is the "refresh" command: a new connection token before
// the current one expires.
type RefreshRequest struct {
	Token string `json:"token"`
}

// SubRefreshRequest is the "sub_refresh" command: a new subscription
// token for a channel before the current one expires.
type SubRefreshRequest struct {
	Channel string `json:"channel"`
	Token   string `json:"token"`
}

// ChannelRequest is a command whose only parameter is a channel:
// unsubscribe, presence, presence_stats.
type ChannelRequest struct {
	Channel string `json:"channel"`
}

// UnsubscribeRequest is the "unsubscribe" command.
type UnsubscribeRequest = ChannelRequest

// RPCRequest is the "rpc" command.
type RPCRequest struct {
	Method string          `json:"method"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// Method names the command's method, "" for a pong.
func (c *Command) Method() string {
	switch {
	case c.Connect != nil:
		return "connect"
	case c.Subscribe != nil:
		return "subscribe"
	case c.Unsubscribe != nil:
		return "unsubscribe"
	case c.RPC != nil:
		return "rpc"
	case c.Ping != nil:
		return "ping"
	case c.Publish != nil:
		return "publish"
	case c.Presence != nil:
		return "presence"
	case c.PresenceStats != nil:
		return "presence_stats"
	case c.History != nil:
		return "history"
	case c.Send != nil:
		return "send"
	case c.Refresh != nil:
		return "refresh"
	case c.SubRefresh != nil:
		return "sub_refresh"
	}
	return ""
}

// IsPong reports whether c is the client's pong: an empty command.
func (c *Command) IsPong() bool { return c.ID == 0 && c.Method() == "" }
