package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Scenario is a checked-in load test: named steps run one after the other
// against one deployment (bench/scenarios/*.yaml; docs/benchmarks.md).
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// URL and Brokers default to edgerelay dev's; edgebench run flags
	// override them. URL is one relay's WebSocket endpoint or, for a
	// cluster, several: a YAML list or a comma-separated string (see
	// FanoutConfig.URLs for how connections are spread).
	URL     URLList  `yaml:"url"`
	Brokers []string `yaml:"brokers"`
	Topic   string   `yaml:"topic"`
	Steps   []Step   `yaml:"steps"`
}

// Step is one fan-out run: its clients, its feed, and what counts as a
// pass.
type Step struct {
	Name      string        `yaml:"name"`
	Conns     int           `yaml:"conns"`
	Procs     int           `yaml:"procs"`
	Channels  int           `yaml:"channels"`
	Stalled   float64       `yaml:"stalled"`  // fraction of clients that stop reading
	Ramp      float64       `yaml:"ramp"`     // connections/s per worker (0: unlimited)
	Rate      float64       `yaml:"rate"`     // feed records/s
	Size      int           `yaml:"size"`     // feed value bytes
	Duration  time.Duration `yaml:"duration"` // feed duration
	Delta     bool          `yaml:"delta"`    // clients subscribe with fossil delta
	Deflate   bool          `yaml:"deflate"`  // clients offer permessage-deflate
	Protobuf  bool          `yaml:"protobuf"` // clients speak the Protobuf encoding
	Priority  int           `yaml:"priority_every"`
	AllowSkip bool          `yaml:"allow_skips"` // conflation expected: skipped updates do not fail the step
	// ReconnectEvery: every client drops its socket and reconnects at once,
	// this often (a reconnect storm); 0: never.
	ReconnectEvery time.Duration `yaml:"reconnect_every"`
	// The subscription mix: channels per client, the share of them on the
	// hottest tenth of channels, and the shares of clients with delta,
	// with deflate and speaking Protobuf.
	ChannelsPerClient int     `yaml:"channels_per_client"`
	Popular           float64 `yaml:"popular"`
	DeltaShare        float64 `yaml:"delta_share"`
	DeflateShare      float64 `yaml:"deflate_share"`
	ProtobufShare     float64 `yaml:"protobuf_share"`
	// Matches > 0: a realistic odds and scores feed of that many matches
	// (channels is then the feed's), prices moving with chance move.
	Matches int     `yaml:"matches"`
	Move    float64 `yaml:"move"`
}

// LoadScenario reads and checks a scenario file; unknown keys are errors.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	sc := &Scenario{URL: URLList{"ws://127.0.0.1:8000/connection/websocket"}, Brokers: []string{"127.0.0.1:9092"}, Topic: "odds"}
	if err := dec.Decode(sc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var errs []string
	if sc.Name == "" || len(sc.Steps) == 0 {
		errs = append(errs, "name and at least one step are required")
	}
	for i, s := range sc.Steps {
		where := fmt.Sprintf("steps[%d] (%s)", i, s.Name)
		switch {
		case s.Name == "":
			errs = append(errs, where+": name is required")
		case s.Procs < 1 || s.Conns < s.Procs:
			errs = append(errs, where+": need procs >= 1 and conns >= procs")
		case (s.Channels < 1 && s.Matches < 1) || s.Rate <= 0 || s.Duration <= 0:
			errs = append(errs, where+": need channels >= 1 (or matches >= 1), rate > 0, duration > 0")
		case s.Stalled < 0 || s.Stalled >= 1:
			errs = append(errs, where+": stalled is a fraction in [0, 1)")
		case s.Popular < 0 || s.Popular > 1 || s.DeltaShare < 0 || s.DeltaShare > 1 || s.DeflateShare < 0 || s.DeflateShare > 1 ||
			s.ProtobufShare < 0 || s.ProtobufShare > 1:
			errs = append(errs, where+": popular, delta_share, deflate_share and protobuf_share are fractions in [0, 1]")
		case s.Matches == 0 && s.ChannelsPerClient > s.Channels:
			errs = append(errs, where+": channels_per_client cannot exceed channels")
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", path, strings.Join(errs, "; "))
	}
	return sc, nil
}

// StepResult is one step's report and verdict.
type StepResult struct {
	Step    Step    `json:"step"`
	Report  *Report `json:"report"`
	Verdict string  `json:"verdict"` // "PASS" or the reasons it failed
}

// RunScenario runs every step and returns their results; a step that
// cannot run at all (no relay, no broker) stops the scenario with an error.
func RunScenario(ctx context.Context, sc *Scenario, log io.Writer) ([]StepResult, error) {
	var out []StepResult
	for _, s := range sc.Steps {
		channels := s.Channels
		if s.Matches > 0 { // the odds feed's channels, as the step's table row says
			channels = len(NewOddsFeed(s.Matches, s.Move, 1).Channels())
		}
		fmt.Fprintf(log, "edgebench: %s/%s: %d clients, %d channels, %.0f records/s for %v\n", sc.Name, s.Name, s.Conns, channels, s.Rate, s.Duration)
		size := s.Size
		if size == 0 {
			size = 300
		}
		fc := FanoutConfig{Brokers: sc.Brokers, Topic: sc.Topic, Conns: s.Conns, Procs: s.Procs,
			Channels: s.Channels, Stalled: s.Stalled, Ramp: s.Ramp, Rate: s.Rate, Size: size, Duration: s.Duration,
			Delta: s.Delta, Deflate: s.Deflate, Protobuf: s.Protobuf, PriorityEvery: s.Priority, ReconnectEvery: s.ReconnectEvery,
			ChannelsPerClient: s.ChannelsPerClient, Popular: s.Popular, DeltaShare: s.DeltaShare, DeflateShare: s.DeflateShare,
			ProtobufShare: s.ProtobufShare, Matches: s.Matches, Move: s.Move}
		fc.SetURLs(sc.URL)
		rep, err := RunFanout(ctx, fc, log)
		if err != nil {
			return out, fmt.Errorf("%s: %w", s.Name, err)
		}
		r := StepResult{Step: s, Report: rep, Verdict: "PASS"}
		if err := rep.Verdict(s.AllowSkip); err != nil {
			r.Verdict = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

// ScenarioMarkdown renders the results as one table, a row per step.
func ScenarioMarkdown(results []StepResult) string {
	var b strings.Builder
	b.WriteString("| step | conns | channels | rate/s | mode | deliveries/s | p50 | p99 | max | skipped | duplicates | out of order | priority | final values | reconnects (p99) | relay B/conn idle | relay CPU s | relay age p99 | verdict |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		rep := r.Report
		reconnects := unmeasured
		if rc := &rep.Clients.Reconnect; rc.N > 0 || rep.Clients.ReconnectFailed > 0 {
			reconnects = fmt.Sprintf("%d (%v), %d failed", rc.N, rc.Quantile(0.99), rep.Clients.ReconnectFailed)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %s | %.0f | %v | %v | %v | %.1f%% | %d | %d | %d/%d | %d/%d | %s | %s | %.1f | %s | %s |\n",
			r.Step.Name, rep.Clients.Connected, rep.Config.Channels, r.Step.Rate, rep.mode(), rep.DeliveriesPerS, rep.P50, rep.P99, rep.Max,
			rep.Skipped*100, rep.Clients.Duplicates, rep.Clients.OutOfOrder, rep.PriorityRead, rep.PriorityExpected,
			rep.FinalCorrect, rep.FinalExpected, reconnects, rep.idleCell(), rep.RelayCPUSeconds, rep.ageCell(rep.RelayAgeP99), r.Verdict)
	}
	for _, r := range results { // cluster steps: per relay
		if t := r.Report.NodesMarkdown(); t != "" {
			fmt.Fprintf(&b, "\n%s, per relay:\n%s", r.Step.Name, t)
		}
	}
	return b.String()
}

// URLList is one or more relay WebSocket endpoints. In YAML it is a
// string (comma-separated for several) or a list of strings.
type URLList []string

// UnmarshalYAML reads a string or a list of strings, each checked by
// ParseURLs.
func (l *URLList) UnmarshalYAML(n *yaml.Node) error {
	var parts []string
	switch n.Kind {
	case yaml.ScalarNode:
		parts = []string{n.Value}
	case yaml.SequenceNode:
		if err := n.Decode(&parts); err != nil {
			return err
		}
	default:
		return fmt.Errorf("line %d: url: a string or a list of strings", n.Line)
	}
	urls, err := ParseURLs(strings.Join(parts, ","))
	if err != nil {
		return fmt.Errorf("line %d: url: %w", n.Line, err)
	}
	*l = urls
	if len(*l) == 0 {
		return fmt.Errorf("line %d: url: empty", n.Line)
	}
	return nil
}

// ParseURLs splits a comma-separated list of relay WebSocket endpoints
// (spaces around commas allowed); each must be a ws:// or wss:// URL with
// a host, and none may repeat.
func ParseURLs(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		switch {
		case err != nil:
			return nil, err
		case u.Scheme != "ws" && u.Scheme != "wss" || u.Host == "":
			return nil, fmt.Errorf("%q: want ws://host:port/path or wss://…", p)
		case seen[p]:
			return nil, fmt.Errorf("%q listed twice", p)
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

// SetURLs points the run at one relay (URL) or, with several, a cluster
// (URL the first, URLs all of them).
func (c *FanoutConfig) SetURLs(urls []string) {
	c.URL, c.URLs = urls[0], nil
	if len(urls) > 1 {
		c.URLs = urls
	}
}
