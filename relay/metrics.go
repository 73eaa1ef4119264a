package relay

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgerelay/edgerelay/fanout"
	"github.com/edgerelay/edgerelay/relay/engine"
	"github.com/edgerelay/edgerelay/relay/ingest"
)

// metrics are the relay's Prometheus collectors, on a registry of their own
// (no global state). docs/operations.md lists them.
type metrics struct {
	reg        *prometheus.Registry
	namespaces namespaceLabels // per-namespace label values, bounded

	connections     prometheus.Gauge
	accepted        *prometheus.CounterVec // by encoding
	disconnects     *prometheus.CounterVec
	protocolErrors  *prometheus.CounterVec
	framesOut       prometheus.Counter
	bytesOut        prometheus.Counter
	deliveryLatency prometheus.Histogram
	ingestAge       prometheus.Histogram
	conflated       prometheus.Counter
	// overload (docs/protocol.md, "Conflation")
	overloadConflated  *prometheus.CounterVec
	overloadConflatedN atomic.Uint64 // the same, all namespaces (for the heartbeat's log)
	writeWait          prometheus.Histogram
	writeWaitMax       prometheus.Gauge
	slowDisconnects    prometheus.Counter
	acceptErrors       *prometheus.CounterVec
	handshakeErrors    prometheus.Counter
	restRateLimited    prometheus.Counter
	commandsRefused    prometheus.Counter
	notJSON            prometheus.Counter
	connectionsRefused *prometheus.CounterVec
	deltaEncode        prometheus.Histogram
	patchesSkipped     prometheus.Counter
	tagFiltered        prometheus.Counter // deliveries a tag filter skipped (tagfilter.go)
	bytesByVariant     *prometheus.CounterVec
	formBytes          [fanout.MaxForms]prometheus.Counter // by form (frame.go); nil for forms never written

	betsReceived prometheus.Counter
	bets         *prometheus.CounterVec
	betAck       prometheus.Histogram
	betReply     prometheus.Histogram
	betsInFlight prometheus.Gauge
	authFailures *prometheus.CounterVec

	kafkaRecords *prometheus.CounterVec
	kafkaSkipped *prometheus.CounterVec
	kafkaLag     *prometheus.GaugeVec
	// The partition watch and Kafka errors (ingest.HealthHooks).
	kafkaRecordAge *prometheus.GaugeVec
	kafkaRecreated *prometheus.CounterVec
	kafkaErrors    *prometheus.CounterVec
	// Broker reachability as ingest's probe sees it (ingest.ProbeHooks).
	kafkaReachable   prometheus.Gauge
	kafkaProbeErrors prometheus.Counter
}

// Commit is the source revision the binary was built from, set at build
// time with -ldflags "-X github.com/edgerelay/edgerelay/relay.Commit=...";
// unset, it is the revision the Go toolchain stamped (vcs.revision, with
// "-dirty" for a modified tree), else "unknown". Version (server.go) is set
// the same way.
var Commit = "unknown"

func init() {
	if Commit != "unknown" {
		return
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		Commit = rev + dirty
	}
}

// BuildInfo is what edgerelay version prints and edgerelay_build_info
// carries: the stamped version and commit, and the Go release.
func BuildInfo() (version, commit, goVersion string) {
	return Version, Commit, runtime.Version()
}

var (
	_ ingest.Hooks       = (*metrics)(nil)
	_ ingest.ProbeHooks  = (*metrics)(nil)
	_ ingest.HealthHooks = (*metrics)(nil)
	_ engine.Hooks       = (*metrics)(nil)
)

func newMetrics(hub *fanout.Hub, ready func() bool) *metrics {
	reg := prometheus.NewRegistry()
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "edgerelay", Name: name, Help: help}
	}
	m := &metrics{
		reg:            reg,
		connections:    prometheus.NewGauge(prometheus.GaugeOpts(f("connections", "Open client WebSocket connections."))),
		accepted:       prometheus.NewCounterVec(prometheus.CounterOpts(f("connections_accepted_total", "WebSocket connections accepted, by encoding (json, protobuf).")), []string{"encoding"}),
		disconnects:    prometheus.NewCounterVec(prometheus.CounterOpts(f("disconnects_total", "Connections closed by the server, by close code.")), []string{"code"}),
		protocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts(f("protocol_errors_total", "Error replies and protocol violations, by error code or kind.")), []string{"code"}),
		framesOut:      prometheus.NewCounter(prometheus.CounterOpts(f("frames_written_total", "WebSocket frames written to clients (pushes, replies, pings)."))),
		bytesOut:       prometheus.NewCounter(prometheus.CounterOpts(f("bytes_written_total", "Bytes written to client sockets."))),
		deliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "edgerelay", Name: "delivery_latency_seconds",
			Help:    "Time from the Kafka record timestamp to the socket write of a publication push.",
			Buckets: latencyBuckets,
		}),
		ingestAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "edgerelay", Name: "ingest_age_seconds",
			Help:    "Per fetched Kafka batch, the age of its newest record (now minus the record timestamp) as ingest hands the batch to the hub: the part of delivery_latency_seconds spent before fan-out.",
			Buckets: latencyBuckets,
		}),
		conflated: prometheus.NewCounter(prometheus.CounterOpts(f("conflated_total", "Queued publications replaced by a newer one of the same channel for a slow client: queue past websocket.soft_queue_bytes, or socket full for overload.conflate_after."))),
		overloadConflated: prometheus.NewCounterVec(prometheus.CounterOpts(f("updates_conflated_total",
			"Channel updates skipped because the node fell behind (overload.conflate_after), by channel namespace and stage: hub (a later record of the channel came in the same Kafka batch) or connection (replaced in a connection's write queue).")), []string{"namespace", "stage"}),
		writeWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "edgerelay", Name: "write_wait_seconds",
			Help:    "Time a connection with something to send waited for a writer: the fan-out queue's age.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5}}),
		writeWaitMax:       prometheus.NewGauge(prometheus.GaugeOpts(f("write_wait_max_seconds", "Longest write wait in the last heartbeat period; past overload.unready_after /readyz answers 503."))),
		slowDisconnects:    prometheus.NewCounter(prometheus.CounterOpts(f("slow_disconnects_total", "Connections closed as slow (3008): queue past websocket.max_queue_bytes, or no write progress for websocket.stall_timeout."))),
		acceptErrors:       prometheus.NewCounterVec(prometheus.CounterOpts(f("accept_errors_total", "Failed accepts, by reason (file_limit: EMFILE/ENFILE); each pauses accepting briefly.")), []string{"reason"}),
		handshakeErrors:    prometheus.NewCounter(prometheus.CounterOpts(f("handshake_errors_total", "WebSocket upgrades refused or failed."))),
		connectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts(f("connections_refused_total", "WebSocket upgrades refused with 503 before the handshake, by reason: node_limit, address_limit, address_rate.")), []string{"reason"}),
		commandsRefused:    prometheus.NewCounter(prometheus.CounterOpts(f("commands_refused_total", "Client commands refused past websocket.commands_per_second (error 111, or the 3013 close)."))),
		notJSON:            prometheus.NewCounter(prometheus.CounterOpts(f("publications_not_json_total", "Updates of payload: binary topics that are not JSON, for a JSON client (which is closed with 3506)."))),
		restRateLimited:    prometheus.NewCounter(prometheus.CounterOpts(f("http_rate_limited_total", "/v1/ requests refused with 429: past http.rate_per_address."))),
		deltaEncode: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "edgerelay", Name: "delta_encode_seconds",
			Help:    "Time to encode the delta variants of one update (once per update, for channels with delta subscribers).",
			Buckets: []float64{1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3}}),
		patchesSkipped: prometheus.NewCounter(prometheus.CounterOpts(f("delta_patches_skipped_total", "Updates sent in full to delta subscribers because the patch was not smaller (or not valid UTF-8)."))),
		tagFiltered:    prometheus.NewCounter(prometheus.CounterOpts(f("tag_filter_skipped_total", "Publications not delivered to a subscriber because its tag filter did not match them (live and in subscribe replies)."))),
		bytesByVariant: prometheus.NewCounterVec(prometheus.CounterOpts(f("publication_bytes_written_total", "Bytes of publication pushes written, by encoding (json, protobuf), variant (full, delta_full, delta_patch) and compression (none, deflate).")), []string{"encoding", "variant", "compression"}),
		betsReceived:   prometheus.NewCounter(prometheus.CounterOpts(f("bets_received_total", "rpc bet commands received."))),
		bets:           prometheus.NewCounterVec(prometheus.CounterOpts(f("bets_total", "Bets answered, by result: accepted, duplicate (a retry answered from memory), or the rejection reason.")), []string{"result"}),
		betAck: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "edgerelay", Name: "bet_kafka_ack_seconds", Help: "Time from producing a bet to Kafka's acknowledgement.",
			Buckets: latencyBuckets}),
		betReply: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "edgerelay", Name: "bet_reply_seconds",
			Help:    "Time from a bet's command being read to its reply being queued for the connection's writer: validation, Kafka's acknowledgement and the wait for the callback, for every bet the desk answered.",
			Buckets: latencyBuckets}),
		betsInFlight: prometheus.NewGauge(prometheus.GaugeOpts(f("bets_in_flight", "Bets produced and not yet acknowledged by Kafka."))),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts(f("auth_failures_total", "Connect tokens refused, by reason: no_token, expired, invalid.")), []string{"reason"}),
		kafkaRecords: prometheus.NewCounterVec(prometheus.CounterOpts(f("kafka_records_total", "Kafka records consumed, by topic.")), []string{"topic"}),
		kafkaSkipped: prometheus.NewCounterVec(prometheus.CounterOpts(f("kafka_records_skipped_total", "Kafka records not published, by topic and reason.")), []string{"topic", "reason"}),
		kafkaLag: prometheus.NewGaugeVec(prometheus.GaugeOpts(f("kafka_lag_records",
			"Records between the next offset to consume and the partition's committed end offset (last stable offset): after each fetch with records, and every ingest.lag_interval (so it keeps rising while ingest is stuck).")), []string{"topic", "partition"}),
		kafkaRecordAge: prometheus.NewGaugeVec(prometheus.GaugeOpts(f("kafka_last_record_age_seconds",
			"Now minus the timestamp of the last record consumed from the partition, every ingest.lag_interval: rises while ingest is stuck, and on a partition nobody produces to.")), []string{"topic", "partition"}),
		kafkaRecreated: prometheus.NewCounterVec(prometheus.CounterOpts(f("kafka_topic_recreated_total",
			"Topics found deleted and created again while consumed (a new topic ID); each is read afresh from ingest.start under a new epoch.")), []string{"topic"}),
		kafkaErrors: prometheus.NewCounterVec(prometheus.CounterOpts(f("kafka_errors_total",
			"Failed Kafka operations of ingest, by op: connect (dial, TLS, SASL), fetch (errors a fetch returned), list_offsets (the lag watch).")), []string{"op"}),
		kafkaReachable: prometheus.NewGauge(prometheus.GaugeOpts(f("kafka_reachable",
			"1 when a Kafka broker answered the last reachability probe (ingest.probe_interval), 0 otherwise (from start until one answers)."))),
		kafkaProbeErrors: prometheus.NewCounter(prometheus.CounterOpts(f("kafka_probe_errors_total",
			"Kafka reachability probes that no broker answered (one per ingest.probe_interval while Kafka is unreachable)."))),
	}
	version, commit, goVersion := BuildInfo()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts(f("build_info", "Always 1; the labels say which build runs: version and commit stamped at build time, Go release.")),
		[]string{"version", "commit", "go"})
	buildInfo.WithLabelValues(version, commit, goVersion).Set(1)
	for _, enc := range []fanout.Form{0, formProtobuf} {
		encoding := formCodec(enc).Encoding().String()
		for kind, variant := range map[fanout.Form]string{engine.FormPlain: "full", engine.FormDeltaFull: "delta_full", engine.FormPatch: "delta_patch"} {
			for _, compact := range []fanout.Form{0, formCompact} {
				f := enc | kind | compact
				m.formBytes[f] = m.bytesByVariant.WithLabelValues(encoding, variant, "none")
				m.formBytes[f|engine.FormDeflate] = m.bytesByVariant.WithLabelValues(encoding, variant, "deflate")
			}
		}
	}
	// Pre-create every accept_errors_total reason so the series shows at 0
	// before the first failure (docs/operations.md lists it).
	for _, reason := range []string{"file_limit", "memory", "other"} {
		m.acceptErrors.WithLabelValues(reason)
	}
	for _, op := range ingest.ErrorOps {
		m.kafkaErrors.WithLabelValues(string(op))
	}
	stat := func(get func(fanout.Stats) float64) func() float64 {
		return func() float64 { return get(hub.Stats()) }
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connections, m.accepted, m.disconnects, m.protocolErrors, m.framesOut, m.bytesOut, m.deliveryLatency, m.ingestAge,
		m.conflated, m.overloadConflated, m.writeWait, m.writeWaitMax, m.slowDisconnects, m.acceptErrors, m.handshakeErrors, m.restRateLimited, m.commandsRefused, m.connectionsRefused, m.notJSON, m.deltaEncode, m.patchesSkipped, m.tagFiltered, m.bytesByVariant,
		m.kafkaRecords, m.kafkaSkipped, m.kafkaLag, m.kafkaRecordAge, m.kafkaRecreated, m.kafkaErrors, m.kafkaReachable, m.kafkaProbeErrors, buildInfo,
		m.betsReceived, m.bets, m.betAck, m.betReply, m.betsInFlight, m.authFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("subscriptions", "Channel subscriptions of open connections.")), stat(func(s fanout.Stats) float64 { return float64(s.Subscriptions) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("channels", "Channels held in the registry.")), stat(func(s fanout.Stats) float64 { return float64(s.Channels) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("channels_cached", "Channels holding a cached last value (bounded by channels.max_channels).")), stat(func(s fanout.Stats) float64 { return float64(s.CachedChannels) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("channel_cache_bytes", "Bytes held by cached last publications.")), stat(func(s fanout.Stats) float64 { return float64(s.CachedBytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(f("publications_total", "Publications received by the hub.")), stat(func(s fanout.Stats) float64 { return float64(s.Publications) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(f("deliveries_total", "Publication pushes handed to connections.")), stat(func(s fanout.Stats) float64 { return float64(s.Deliveries) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(f("channels_evicted_idle_total", "Channels evicted after channels.idle_ttl without subscribers or updates.")), stat(func(s fanout.Stats) float64 { return float64(s.EvictedIdle) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(f("channels_evicted_capacity_total", "Idle channels evicted to stay under channels.max_channels or max_cached_bytes.")), stat(func(s fanout.Stats) float64 { return float64(s.EvictedCap) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("maps", "Map channels holding entries on this node (bounded by channels.maps.max_maps).")), mapStat(hub, func(s fanout.MapStats) float64 { return float64(s.Maps) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("map_entries", "Live entries of all maps.")), mapStat(hub, func(s fanout.MapStats) float64 { return float64(s.Entries) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("map_bytes", "Bytes charged to maps (each bounded by channels.maps.max_bytes).")), mapStat(hub, func(s fanout.MapStats) float64 { return float64(s.Bytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("maps_full", "Maps that passed channels.maps.max_entries or max_bytes (they refuse subscribers).")), mapStat(hub, func(s fanout.MapStats) float64 { return float64(s.FullMaps) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(f("map_entries_refused_total", "New map entries refused because their map was full.")), mapStat(hub, func(s fanout.MapStats) float64 { return float64(s.Refused) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts(f("maps_refused_total", "Maps not created because channels.maps.max_maps was reached.")), mapStat(hub, func(s fanout.MapStats) float64 { return float64(s.NoRoom) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("ready", "1 when /readyz reports ready.")), func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
	)
	return m
}

// latencyBuckets cover a push's age, from Kafka to the socket: finer
// between 10 and 50 ms, where one burst of fan-out to a few thousand
// subscribers ends (docs/performance.md, tail latency), and around the
// 100 ms that matters for odds.
var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .015, .02, .025, .03, .04, .05, .075, .1, .15, .2, .25, .5, 1, 2.5, 5, 10}

func (m *metrics) OnRecord(topic string, _ int32) { m.kafkaRecords.WithLabelValues(topic).Inc() }

func (m *metrics) OnSkip(topic string, reason ingest.SkipReason) {
	m.kafkaSkipped.WithLabelValues(topic, string(reason)).Inc()
}

func (m *metrics) OnLag(topic string, partition int32, lag int64, age time.Duration) {
	m.kafkaLag.WithLabelValues(topic, strconv.Itoa(int(partition))).Set(float64(lag))
	m.ingestAge.Observe(age.Seconds())
}

// OnPosition is the lag watch's view of a partition (ingest.HealthHooks).
func (m *metrics) OnPosition(topic string, partition int32, lag int64, last time.Time) {
	p := strconv.Itoa(int(partition))
	m.kafkaLag.WithLabelValues(topic, p).Set(float64(lag))
	if !last.IsZero() {
		m.kafkaRecordAge.WithLabelValues(topic, p).Set(time.Since(last).Seconds())
	}
	m.kafkaRecreated.WithLabelValues(topic) // shown at 0, so that increase() sees the first
}

func (m *metrics) OnTopicRecreated(topic string) { m.kafkaRecreated.WithLabelValues(topic).Inc() }

func (m *metrics) OnKafkaError(op ingest.ErrorOp) { m.kafkaErrors.WithLabelValues(string(op)).Inc() }

// OnProbe is ingest's reachability probe result (ingest.ProbeHooks).
func (m *metrics) OnProbe(err error) {
	if err != nil {
		m.kafkaReachable.Set(0)
		m.kafkaProbeErrors.Inc()
		return
	}
	m.kafkaReachable.Set(1)
}

func codeLabel(code uint16) string { return strconv.Itoa(int(code)) }

func (m *metrics) OnConflated(channel string) {
	m.overloadConflated.WithLabelValues(m.namespaces.of(channel, true), "hub").Inc()
	m.overloadConflatedN.Add(1)
}

// The engine's hooks (engine.Hooks).

func (m *metrics) OnClose(code uint16, cause engine.CloseCause) {
	label := codeLabel(code)
	if cause == engine.CloseEcho {
		label = "client" // the client picked the code
	}
	m.disconnects.WithLabelValues(label).Inc()
	if cause == engine.CloseSlow {
		m.slowDisconnects.Inc()
	}
}

func (m *metrics) OnQueueConflated(n int, behind bool) {
	if behind {
		m.overloadConflatedN.Add(uint64(n))
		return
	}
	m.conflated.Add(float64(n))
}

func (m *metrics) OnWriteWait(d time.Duration) { m.writeWait.Observe(d.Seconds()) }

func (m *metrics) OnWrite(n int, frames []*fanout.Frame, now time.Time) {
	m.bytesOut.Add(float64(n))
	m.framesOut.Add(float64(len(frames)))
	for _, f := range frames {
		if f.Pub != nil {
			m.formBytes[f.Form].Add(float64(len(f.Bytes)))
			if !f.Pub.Time.IsZero() {
				m.deliveryLatency.Observe(now.Sub(f.Pub.Time).Seconds())
			}
		}
	}
}

func mapStat(hub *fanout.Hub, get func(fanout.MapStats) float64) func() float64 {
	return func() float64 { return get(hub.MapStats()) }
}
