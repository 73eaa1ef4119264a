// Package fanout holds edgerelay's channels and hands each channel update to
// the subscribers of that channel.
//
// # Model
//
// A channel is named by segments joined with ':' (for example
// "odds:football:epl:match-123:1x2"). The Hub keeps, per channel, the latest
// Publication (the last-value cache) and the set of Subscribers. Publish
// replaces the cached value and, if the channel has subscribers, hands one
// Update to each of them. Each subscriber picks the Form it needs (plain,
// delta patch, compressed: forms are the Encoder's business); each form is
// encoded on first use, once per update (twice at most when two goroutines
// ask at the same moment, see Update), and the same Frame goes to every
// subscriber that wants that form. Subscribe registers a
// subscriber and reports the cached value in one step, so a subscriber sees
// the cached value first and then every later update, with nothing lost and
// nothing repeated in between.
//
// A Publication may carry Tags; a subscriber may take only some
// publications by them (a Filter, which the subscriber applies: the Hub
// delivers every update to every subscriber of the channel).
//
// With Config.HistorySize a channel also keeps its latest publications, in
// offset order: those published and those Appended (superseded before
// publishing, by conflation). Subscribe hands the history over with the
// cached value (State), and State.Since says what a client holding a
// position missed, or that the history no longer reaches back to it.
//
// Memory is bounded by Config.MaxChannels (channels holding a value) and
// Config.MaxCachedBytes (cached values and history). When either is exceeded, or a channel has had no
// subscriber and no update for Config.IdleTTL, idle channels (no
// subscribers), least recently active first, are evicted. Channels with
// subscribers are never evicted: their number is bounded by connections
// times subscriptions per connection; a channel with neither a value nor a
// subscriber is removed at once. Evictions are counted in Stats.
//
// Maps (Config.Maps, maps.go): a channel may also be an entry of a map
// channel, a keyed collection of the channels below it. Publish sets the
// entry too, PublishRemoval (a Kafka tombstone) removes it, and map
// subscribers (SubscribeMap) get each change as an Update whose
// Publication has the map's name and the entry's Key. A map pages its
// entries by key and answers "what changed since this position" from its
// entries themselves, each once (a compacted log), bounded by
// Config.MaxMaps, MaxMapEntries and MaxMapBytes.
//
// # Concurrency
//
// All Hub methods are safe for concurrent use. Publishes to one channel are
// serialised by that channel's lock; publishes to different channels only
// share a shard's read lock while the channel is looked up. Subscriber.Deliver
// and the callback given to Subscribe run with the channel's lock held: they
// must not block and must not call back into the Hub. A subscriber may keep
// an Update and encode its forms later from another goroutine (Update.Frame
// is safe for concurrent use), so the Encoder must be too.
//
// Lock order: shard.mu, then channel.mu; maps' registry lock, then a
// map's. A map's lock is never taken with a channel's held (Publish
// releases the channel first). Deliver to a map's subscribers runs with
// the map's lock held, under the same rules.
//
// This package imports nothing but the standard library (a test enforces
// it), so it can be tested and benchmarked without Kafka or a network.
package fanout
