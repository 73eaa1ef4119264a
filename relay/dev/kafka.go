package dev

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Topics are the topics dev mode creates, with their partition counts.
var Topics = map[string]int32{"odds": 6, "scores": 3, "bets": 6, "results": 3}

// StartKafka starts an embedded single-broker Kafka on 127.0.0.1:port
// (port 0 picks a free one). With dataDir set, topics and records survive a
// restart.
func StartKafka(port int, dataDir string) (*kfake.Cluster, error) {
	opts := []kfake.Opt{kfake.Ports(port), kfake.ClusterID("edgerelay-dev")}
	for t, n := range Topics {
		opts = append(opts, kfake.SeedTopics(n, t))
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("dev: port %d is in use (another edgerelay dev or Kafka?); pick another with --kafka-port, or 0 for any: %w", port, err)
		}
		return nil, fmt.Errorf("dev: starting embedded Kafka: %w", err)
	}
	return c, nil
}
