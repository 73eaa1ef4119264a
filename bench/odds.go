package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
)

// OddsFeed generates a realistic odds and scores feed: matches across
// sports, each with its markets (bench:odds:<sport>:<league>:<match>:<market>)
// and a score channel (bench:scores:<sport>:<league>:<match>), in the bench:
// namespace so a run against dev mode never lands on its board or its
// bookmaker's markets (odds:…, scores:…). Most records move
// a fraction of a market's prices; some suspend or reopen a market, some
// are score events — both priority. The first tenth of the matches (the
// big games) get half the updates. Every value carries the feed's "seq"
// and "t" so edgebench clients can check order and latency.
//
// Not safe for concurrent use.
type OddsFeed struct {
	move     float64
	rng      *rand.Rand
	channels []string
	markets  []oddsMarket // index: channel index (scores channels have no market)
	matches  [][]int      // per match: its channel indexes, score channel first
	score    [][2]int
}

type oddsMarket struct {
	match, market string
	selections    []string
	odds          []float64
	suspended     bool
}

var oddsSports = []struct {
	sport, league string
	markets       [][]string
}{
	{"football", "epl", [][]string{{"1x2", "home", "draw", "away"}, {"ou-2.5", "over", "under"}, {"btts", "yes", "no"}, {"next-goal", "home", "none", "away"}}},
	{"tennis", "atp", [][]string{{"winner", "home", "away"}, {"set-1", "home", "away"}, {"games-22.5", "over", "under"}}},
	{"basketball", "nba", [][]string{{"moneyline", "home", "away"}, {"spread-5.5", "home", "away"}, {"total-220.5", "over", "under"}}},
}

// NewOddsFeed builds matches matches; move is the chance that each price
// of a market moves in an update (at least one always does).
func NewOddsFeed(matches int, move float64, seed uint64) *OddsFeed {
	f := &OddsFeed{move: move, rng: rand.New(rand.NewPCG(seed, seed^0x0dd5))}
	for m := range matches {
		sp := oddsSports[m%len(oddsSports)]
		id := "m-" + strconv.Itoa(m+1)
		var idx []int
		idx = append(idx, len(f.channels))
		f.channels = append(f.channels, fmt.Sprintf("bench:scores:%s:%s:%s", sp.sport, sp.league, id))
		f.markets = append(f.markets, oddsMarket{match: id})
		for _, mk := range sp.markets {
			om := oddsMarket{match: id, market: mk[0], selections: mk[1:]}
			for range om.selections {
				om.odds = append(om.odds, 1.2+f.rng.Float64()*4)
			}
			idx = append(idx, len(f.channels))
			f.channels = append(f.channels, fmt.Sprintf("bench:odds:%s:%s:%s:%s", sp.sport, sp.league, id, mk[0]))
			f.markets = append(f.markets, om)
		}
		f.matches = append(f.matches, idx)
		f.score = append(f.score, [2]int{})
	}
	return f
}

// Channels is every channel the feed produces to.
func (f *OddsFeed) Channels() []string { return f.channels }

// Next picks the next record's channel and makes its value (seq and t
// first); prio marks suspensions, reopenings and score events.
func (f *OddsFeed) Next(seq func(ci int) int64, t int64) (ci int, value []byte, prio bool) {
	m := f.rng.IntN(len(f.matches))
	if big := max(len(f.matches)/10, 1); f.rng.Float64() < 0.5 {
		m = f.rng.IntN(big)
	}
	idx := f.matches[m]
	switch r := f.rng.Float64(); {
	case r < 0.005: // a goal, a break, a basket run
		ci = idx[0]
		f.score[m][f.rng.IntN(2)]++
		return ci, fmt.Appendf(nil, `{"seq":%d,"t":%d,"p":1,"match":%q,"score":[%d,%d]}`, seq(ci), t, f.markets[ci].match, f.score[m][0], f.score[m][1]), true
	case r < 0.015: // suspend or reopen one market
		ci = idx[1+f.rng.IntN(len(idx)-1)]
		f.markets[ci].suspended = !f.markets[ci].suspended
		return ci, f.marketValue(ci, seq(ci), t, true), true
	}
	ci = idx[1+f.rng.IntN(len(idx)-1)]
	mk := &f.markets[ci]
	if !mk.suspended {
		moved := false
		for i := range mk.odds {
			if f.rng.Float64() < f.move {
				mk.odds[i] = math.Max(1.01, mk.odds[i]*(1+(f.rng.Float64()-0.5)*0.1))
				moved = true
			}
		}
		if !moved {
			i := f.rng.IntN(len(mk.odds))
			mk.odds[i] = math.Max(1.01, mk.odds[i]*(1+(f.rng.Float64()-0.5)*0.1))
		}
	}
	return ci, f.marketValue(ci, seq(ci), t, false), false
}

func (f *OddsFeed) marketValue(ci int, seq, t int64, prio bool) []byte {
	mk := &f.markets[ci]
	b := fmt.Appendf(nil, `{"seq":%d,"t":%d,`, seq, t)
	if prio {
		b = append(b, `"p":1,`...)
	}
	status := "open"
	if mk.suspended {
		status = "suspended"
	}
	b = fmt.Appendf(b, `"match":%q,"market":%q,"status":%q,"selections":[`, mk.match, mk.market, status)
	for i, s := range mk.selections {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":%q,"odds":%.2f}`, s, mk.odds[i])
	}
	return append(b, "]}"...)
}
