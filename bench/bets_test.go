package bench

import (
	"io"
	"testing"
	"time"

	"github.com/edgerelay/edgerelay/relay"
)

// TestBets runs small bet storms against an in-process relay: with room
// every bet is accepted and timed; with a per-user rate limit below the
// storm's rate the report counts the 1003 rejections and is not OK.
func TestBets(t *testing.T) {
	for _, tt := range []struct {
		name        string
		ratePerUser float64
		burst       int
		ok          bool
	}{
		{"accepted", 100, 100, true}, // room for a client's delayed bets to bunch up
		{"rate limited", 1, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kafka := newKafka(t)
			cfg := relay.DefaultConfig()
			cfg.Kafka.Brokers = kafka.ListenAddrs()
			cfg.Ingest.Topics = cfg.Ingest.Topics[:1]
			cfg.Auth.HMACSecrets = []string{"bench-test-secret-of-32-bytes-or-more"}
			cfg.Bets.RatePerUser, cfg.Bets.BurstPerUser = tt.ratePerUser, tt.burst
			_, addr := startRelay(t, cfg)
			rep, err := RunBets(t.Context(), BetsConfig{URL: "ws://" + addr + "/connection/websocket", Brokers: kafka.ListenAddrs(),
				Topic: "odds", Market: "odds:bench:test:1x2", Conns: 10, Rate: 100, Duration: time.Second, Drain: 5 * time.Second,
				Secret: cfg.Auth.HMACSecrets[0], Watch: "odds:", WatchPerClient: 1}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", rep)
			if rep.OK() != tt.ok || rep.Connected != 10 || rep.Sent != 100 || rep.Unanswered != 0 {
				t.Fatalf("report %s", rep.Markdown())
			}
			if tt.ok && (rep.Latency.N != 100 || rep.P99 <= 0) {
				t.Fatalf("latency not recorded: %+v", rep.Latency)
			}
			// The relay's own histograms, read around the run: both saw the
			// bets, and the replies were not all faster than the acks.
			for _, h := range [][3]time.Duration{{rep.KafkaAckP50, rep.KafkaAckP99, rep.KafkaAckMax}, {rep.RelayReplyP50, rep.RelayReplyP99, rep.RelayReplyMax}} {
				if tt.ok && (h[0] <= 0 || h[0] > h[1] || h[1] > h[2]) {
					t.Fatalf("relay histogram not read (p50, p99, max): %v", h)
				}
			}
			var n uint64
			for _, sec := range rep.Seconds {
				n += sec.Accepted
				if sec.Accepted > 0 && (sec.P99 <= 0 || sec.P99 > sec.Max || sec.Max > rep.Max) {
					t.Fatalf("second %+v against the run's max %v", sec, rep.Max)
				}
			}
			if n != rep.Accepted || len(rep.Seconds) == 0 || rep.Start == 0 {
				t.Fatalf("timeline holds %d of %d accepted bets: %+v", n, rep.Accepted, rep.Seconds)
			}
			if tt.ok && rep.RelayReplyMax < rep.KafkaAckP50 {
				t.Fatalf("replies (max %v) faster than Kafka's acks (p50 %v)", rep.RelayReplyMax, rep.KafkaAckP50)
			}
			if !tt.ok && rep.Rejected["1003"] == 0 {
				t.Fatalf("rate limit rejections not counted: %v", rep.Rejected)
			}
		})
	}
}
