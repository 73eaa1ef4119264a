package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/protocol"
	"github.com/edgerelay/edgerelay/relay/tagfilter"
)

// Tag filters (docs/protocol.md, "Tag filters"): a subscribe's "tf" is
// checked by relay/tagfilter and set on the subscription's sink, which
// drops the updates it does not match before taking any frame: the
// filter decides whether a subscriber gets the frame encoded once for
// all, never what the frame holds. Replies (recovery, the latest value,
// map pages) are filtered here with the same filter.

// maxFilterScan bounds the publications one subscribe reply runs a filter
// over (a filter may cost microseconds, and the reply is built under the
// channel's lock): a recovery that missed more is answered as if the
// history did not reach back so far, and the latest-value fallback looks
// at the newest maxFilterScan publications only.
const maxFilterScan = 1000

// countedFilter counts what its filter skips (tag_filter_skipped_total).
type countedFilter struct {
	f       *tagfilter.Filter
	skipped prometheus.Counter
}

func (c countedFilter) Match(tags map[string]string) bool {
	if c.f.Match(tags) {
		return true
	}
	c.skipped.Inc()
	return false
}

// tagFilter compiles req's tag filter, replying 107 with what is wrong if
// it is invalid or past a bound. A request without one gets a nil filter.
func (c *session) tagFilter(id uint32, req *protocol.SubscribeRequest) (fanout.Filter, bool) {
	if req.TF == nil {
		return nil, true
	}
	f, err := tagfilter.Compile(req.TF)
	if err != nil {
		c.replyError(id, protocol.ErrBadRequest.WithMessage(err.Error()))
		return nil, false
	}
	return countedFilter{f, c.srv.metrics.tagFiltered}, true
}

// passes reports whether p gets through f (nil: no filter). A map entry's
// removal always does, as at delivery (engine.Sink.SetFilter).
func passes(f fanout.Filter, p *fanout.Publication) bool {
	return f == nil || p.Removed || f.Match(p.Tags)
}

// filtered returns the publications of pubs f passes: pubs itself
// without a filter, else a new slice.
func filtered(f fanout.Filter, pubs []*fanout.Publication) []*fanout.Publication {
	if f == nil {
		return pubs
	}
	out := make([]*fanout.Publication, 0, len(pubs))
	for _, p := range pubs {
		if passes(f, p) {
			out = append(out, p)
		}
	}
	return out
}

// newestPassing is the newest publication of st that f passes: the
// cached value, else the newest in the history (of its newest
// maxFilterScan); nil if none.
func newestPassing(f fanout.Filter, st *fanout.State) *fanout.Publication {
	if st.Last != nil && passes(f, st.Last) {
		return st.Last
	}
	for i := len(st.History) - 1; i >= max(0, len(st.History)-maxFilterScan); i-- {
		if p := st.History[i]; p != st.Last && passes(f, p) {
			return p
		}
	}
	return nil
}
