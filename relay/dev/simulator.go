package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// SimConfig configures the odds and scores simulator.
type SimConfig struct {
	// Rate is market updates per second across all matches; each also
	// updates its match channel (match:…, all markets of the match).
	Rate float64
	// Matches is how many matches are in play.
	Matches int
	// MoveProb is the chance that one selection's price moves in an update.
	MoveProb float64
	// GoalProb is the chance per update that a score event happens in the
	// updated match; markets of that match are suspended for SuspendFor.
	GoalProb   float64
	SuspendFor time.Duration
	// PopUpEvery: this often one match opens its sport's pop-up market (a
	// new key of the match's map, which the board shows without a reload)
	// or, if open, closes it with a Kafka tombstone. 0: never.
	PopUpEvery time.Duration
	Seed       uint64
}

// DefaultSimConfig is a lively but light feed: 36 matches, 40 updates/s,
// a market opening or closing every 5 s.
func DefaultSimConfig() SimConfig {
	return SimConfig{Rate: 40, Matches: 36, MoveProb: 0.4, GoalProb: 0.01, SuspendFor: 3 * time.Second, PopUpEvery: 5 * time.Second, Seed: 1}
}

// Selection is one outcome of a market with its decimal odds.
type Selection struct {
	ID   string  `json:"id"`
	Name string  `json:"name"`
	Odds float64 `json:"odds"`
	prob float64
}

// MarketUpdate is the JSON value of an odds record.
type MarketUpdate struct {
	Match      string      `json:"match"`
	Sport      string      `json:"sport"`
	League     string      `json:"league"`
	Home       string      `json:"home"`
	Away       string      `json:"away"`
	Market     string      `json:"market"`
	Status     string      `json:"status"` // "open" or "suspended"
	Selections []Selection `json:"selections"`
	Seq        uint64      `json:"seq"`
	TS         int64       `json:"ts"` // unix milliseconds at production
}

// MatchUpdate is the JSON value of a match channel record
// (match:<sport>:<league>:<match>): every market of the match and the
// score in one message, as a match page shows them. It is produced after
// each change of the match, alongside the per-market record.
type MatchUpdate struct {
	Match   string        `json:"match"`
	Sport   string        `json:"sport"`
	League  string        `json:"league"`
	Home    string        `json:"home"`
	Away    string        `json:"away"`
	Score   [2]int        `json:"score"`
	Markets []MatchMarket `json:"markets"`
	Seq     uint64        `json:"seq"`
	TS      int64         `json:"ts"`
}

// MatchMarket is one market inside a MatchUpdate.
type MatchMarket struct {
	Market     string      `json:"market"`
	Status     string      `json:"status"`
	Selections []Selection `json:"selections"`
}

// ScoreUpdate is the JSON value of a scores record.
type ScoreUpdate struct {
	Match  string `json:"match"`
	Sport  string `json:"sport"`
	League string `json:"league"`
	Home   string `json:"home"`
	Away   string `json:"away"`
	Score  [2]int `json:"score"`
	Event  string `json:"event"`
	Clock  string `json:"clock"`
	Seq    uint64 `json:"seq"`
	TS     int64  `json:"ts"`
}

type market struct {
	channel  string
	update   MarketUpdate
	reopenAt time.Time
}

type match struct {
	id, sport, league, home, away string
	score                         [2]int
	started                       time.Time
	markets                       []*market // open ones; Run's goroutine only
	popUp                         *market   // opened and closed in play (SimConfig.PopUpEvery)
	channels                      []string  // of every market, the pop-up's included; never changes
	scoreChannel, matchChannel    string
	scoreSeq, matchSeq            uint64
}

// Simulator produces the feed into Kafka.
type Simulator struct {
	cfg     SimConfig
	client  *kgo.Client
	log     *slog.Logger
	rng     *rand.Rand
	matches []*match
}

var leagues = []struct {
	sport, league string
	teams         []string
	markets       [][]string // market id, selection ids...
	popUp         []string   // the market opened and closed in play
}{
	// 18 teams each: the default 36 matches are 9 per league, so no team
	// plays two matches at once and no fixture appears twice.
	{"football", "epl", []string{"Arsenal", "Chelsea", "Liverpool", "Everton", "Spurs", "Villa", "Newcastle", "Brighton", "Fulham", "Wolves", "Brentford", "Leeds",
		"Man City", "Man Utd", "West Ham", "Palace", "Forest", "Burnley"},
		footballMarkets, footballPopUp},
	{"football", "laliga", []string{"Madrid", "Barcelona", "Atletico", "Sevilla", "Betis", "Valencia", "Villarreal", "Bilbao",
		"Sociedad", "Girona", "Osasuna", "Celta", "Getafe", "Mallorca", "Alaves", "Rayo", "Espanyol", "Levante"},
		footballMarkets, footballPopUp},
	{"tennis", "atp", []string{"Alcaraz", "Sinner", "Djokovic", "Zverev", "Medvedev", "Rune", "Fritz", "Ruud",
		"Rublev", "de Minaur", "Dimitrov", "Paul", "Tsitsipas", "Shelton", "Hurkacz", "Tiafoe", "Musetti", "Draper"},
		[][]string{{"winner", "home", "away"}, {"set-1", "home", "away"}, {"set-2", "home", "away"}, {"games-22.5", "over", "under"},
			{"set-betting", "2-0", "2-1", "1-2", "0-2"}, {"tiebreak", "yes", "no"}},
		[]string{"next-game", "home", "away"}},
	{"basketball", "nba", []string{"Celtics", "Lakers", "Nuggets", "Bucks", "Knicks", "Suns", "Heat", "Warriors",
		"76ers", "Mavericks", "Clippers", "Cavaliers", "Thunder", "Grizzlies", "Kings", "Pelicans", "Hawks", "Magic"},
		[][]string{{"moneyline", "home", "away"}, {"spread-5.5", "home", "away"}, {"total-220.5", "over", "under"},
			{"q1-total-55.5", "over", "under"}, {"ht-moneyline", "home", "away"}},
		[]string{"next-basket", "home", "away"}},
}

// footballMarkets is a live football match's usual board.
var footballMarkets = [][]string{
	{"1x2", "home", "draw", "away"}, {"double-chance", "home-draw", "home-away", "draw-away"},
	{"ou-1.5", "over", "under"}, {"ou-2.5", "over", "under"}, {"ou-3.5", "over", "under"},
	{"btts", "yes", "no"}, {"next-goal", "home", "none", "away"}, {"ht-1x2", "home", "draw", "away"},
}

var footballPopUp = []string{"next-corner", "home", "away"}

// NewSimulator builds the matches and a producer to brokers.
func NewSimulator(brokers []string, cfg SimConfig, log *slog.Logger) (*Simulator, error) {
	if cfg.Rate <= 0 || cfg.Matches <= 0 || cfg.PopUpEvery < 0 {
		return nil, fmt.Errorf("dev: simulator rate and matches must be positive, pop_up_every not negative")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("edgerelay-dev-simulator"), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return nil, err
	}
	s := &Simulator{cfg: cfg, client: cl, log: log, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))}
	// Each league's teams are shuffled and paired off in order, so a
	// fixture appears once (until a league runs out of teams: then a
	// fresh shuffle pairs them again).
	draws := make([][]string, len(leagues))
	for i := 0; i < cfg.Matches; i++ {
		li := i % len(leagues)
		lg := leagues[li]
		if len(draws[li]) < 2 {
			draws[li] = slices.Clone(lg.teams)
			s.rng.Shuffle(len(draws[li]), func(a, b int) { draws[li][a], draws[li][b] = draws[li][b], draws[li][a] })
		}
		home, away := draws[li][0], draws[li][1]
		draws[li] = draws[li][2:]
		m := &match{id: fmt.Sprintf("match-%d", 100+i), sport: lg.sport, league: lg.league, home: home, away: away, started: time.Now()}
		m.scoreChannel = fmt.Sprintf("scores:%s:%s:%s", m.sport, m.league, m.id)
		m.matchChannel = fmt.Sprintf("match:%s:%s:%s", m.sport, m.league, m.id)
		for _, mk := range lg.markets {
			m.markets = append(m.markets, s.newMarket(m, mk))
		}
		m.popUp = s.newMarket(m, lg.popUp)
		for _, mk := range append(m.markets, m.popUp) {
			m.channels = append(m.channels, mk.channel)
		}
		s.matches = append(s.matches, m)
	}
	return s, nil
}

// newMarket is market mk (id, selection ids...) of match m, open.
func (s *Simulator) newMarket(m *match, mk []string) *market {
	u := MarketUpdate{Match: m.id, Sport: m.sport, League: m.league, Home: m.home, Away: m.away, Market: mk[0], Status: "open"}
	for _, sel := range mk[1:] {
		name := sel
		switch sel {
		case "home":
			name = m.home
		case "away":
			name = m.away
		}
		u.Selections = append(u.Selections, Selection{ID: sel, Name: name, prob: 0.2 + s.rng.Float64()})
	}
	s.price(&u)
	return &market{channel: fmt.Sprintf("odds:%s:%s:%s:%s", m.sport, m.league, m.id, mk[0]), update: u}
}

// price turns the selections' relative weights into decimal odds with a 5 %
// bookmaker margin.
func (s *Simulator) price(u *MarketUpdate) {
	total := 0.0
	for _, sel := range u.Selections {
		total += sel.prob
	}
	for i := range u.Selections {
		p := u.Selections[i].prob / total * 1.05
		u.Selections[i].Odds = math.Max(1.01, math.Min(100, math.Round(100/p)/100))
	}
}

// Markets returns the simulator's market channels (odds:…), pop-up
// markets included: the channels dev mode's bookmaker takes bets on, whose
// matches the board shows.
func (s *Simulator) Markets() []string {
	var out []string
	for _, m := range s.matches {
		out = append(out, m.channels...)
	}
	return out
}

// Scores returns the simulator's score channels (scores:…).
func (s *Simulator) Scores() []string {
	var out []string
	for _, m := range s.matches {
		out = append(out, m.scoreChannel)
	}
	return out
}

// Run produces one snapshot of every market and score, then updates at
// cfg.Rate until ctx is done. It closes the producer when it returns.
func (s *Simulator) Run(ctx context.Context) error {
	defer s.client.Close()
	for _, m := range s.matches {
		s.produceScore(ctx, m, "kickoff")
		for _, mk := range m.markets {
			s.produceMarket(ctx, m, mk, false)
		}
		s.produceMatch(ctx, m, false)
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / s.cfg.Rate))
	defer t.Stop()
	var popUps <-chan time.Time
	if s.cfg.PopUpEvery > 0 {
		p := time.NewTicker(s.cfg.PopUpEvery)
		defer p.Stop()
		popUps = p.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-popUps:
			s.popUp(ctx)
		case <-t.C:
			s.step(ctx)
		}
	}
}

// popUp opens a random match's pop-up market, or closes it with a
// tombstone (a Kafka record with a null value: the map entry goes).
func (s *Simulator) popUp(ctx context.Context) {
	m := s.matches[s.rng.IntN(len(s.matches))]
	if i := slices.Index(m.markets, m.popUp); i >= 0 {
		m.markets = slices.Delete(m.markets, i, i+1)
		s.produce(ctx, "odds", m.id, m.popUp.channel, nil, true)
	} else {
		m.popUp.update.Status = "open"
		s.move(m.popUp, 1)
		m.markets = append(m.markets, m.popUp)
		s.produceMarket(ctx, m, m.popUp, true)
	}
	s.produceMatch(ctx, m, true)
}

func (s *Simulator) step(ctx context.Context) {
	now := time.Now()
	m := s.matches[s.rng.IntN(len(s.matches))]
	reopened := false
	for _, mk := range m.markets {
		if mk.update.Status == "suspended" && now.After(mk.reopenAt) {
			mk.update.Status = "open"
			s.move(mk, 1) // reopen with fresh prices
			s.produceMarket(ctx, m, mk, true)
			reopened = true
		}
	}
	if reopened {
		s.produceMatch(ctx, m, true)
	}
	if s.rng.Float64() < s.cfg.GoalProb {
		side := s.rng.IntN(2)
		m.score[side]++
		s.produceScore(ctx, m, "score")
		for _, mk := range m.markets {
			mk.update.Status = "suspended"
			mk.reopenAt = now.Add(s.cfg.SuspendFor)
			s.produceMarket(ctx, m, mk, true)
		}
		s.produceMatch(ctx, m, true)
		return
	}
	mk := m.markets[s.rng.IntN(len(m.markets))]
	if mk.update.Status != "open" {
		return
	}
	s.move(mk, s.cfg.MoveProb)
	s.produceMarket(ctx, m, mk, false)
	s.produceMatch(ctx, m, false)
}

// move walks each selection's weight with probability prob.
func (s *Simulator) move(mk *market, prob float64) {
	moved := false
	for i := range mk.update.Selections {
		if s.rng.Float64() < prob {
			sel := &mk.update.Selections[i]
			sel.prob = math.Max(0.02, sel.prob*(1+(s.rng.Float64()-0.5)*0.12))
			moved = true
		}
	}
	if !moved {
		sel := &mk.update.Selections[s.rng.IntN(len(mk.update.Selections))]
		sel.prob *= 1 + (s.rng.Float64()-0.5)*0.12
	}
	s.price(&mk.update)
}

func (s *Simulator) produceMarket(ctx context.Context, m *match, mk *market, priority bool) {
	mk.update.Seq++
	mk.update.TS = time.Now().UnixMilli()
	s.produce(ctx, "odds", m.id, mk.channel, mk.update, priority)
}

func (s *Simulator) produceMatch(ctx context.Context, m *match, priority bool) {
	m.matchSeq++
	u := MatchUpdate{Match: m.id, Sport: m.sport, League: m.league, Home: m.home, Away: m.away, Score: m.score,
		Seq: m.matchSeq, TS: time.Now().UnixMilli()}
	for _, mk := range m.markets {
		u.Markets = append(u.Markets, MatchMarket{Market: mk.update.Market, Status: mk.update.Status, Selections: mk.update.Selections})
	}
	s.produce(ctx, "odds", m.id, m.matchChannel, u, priority)
}

func (s *Simulator) produceScore(ctx context.Context, m *match, event string) {
	m.scoreSeq++
	mins := int(time.Since(m.started).Minutes()) % 90
	s.produce(ctx, "scores", m.id, m.scoreChannel, ScoreUpdate{
		Match: m.id, Sport: m.sport, League: m.league, Home: m.home, Away: m.away, Score: m.score, Event: event,
		Clock: fmt.Sprintf("%d'", mins+1), Seq: m.scoreSeq, TS: time.Now().UnixMilli(),
	}, true)
}

// produce writes v as JSON to channel; a nil v is a tombstone.
func (s *Simulator) produce(ctx context.Context, topic, key, channel string, v any, priority bool) {
	var value []byte
	if v != nil {
		var err error
		if value, err = json.Marshal(v); err != nil {
			panic(err) // our own plain structs
		}
	}
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Headers: []kgo.RecordHeader{{Key: "channel", Value: []byte(channel)}}}
	if priority {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "priority", Value: []byte("1")})
	}
	s.client.Produce(ctx, r, func(r *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			s.log.Warn("simulator produce failed", "topic", topic, "err", err)
		}
	})
}
