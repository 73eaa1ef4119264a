package relay_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edgerelay/edgerelay/relay/ingest"
)

// TestBinaryPayloads: a "payload: binary" topic's values reach Protobuf
// clients byte for byte; JSON clients get them while they are JSON
// (compacted), and are closed with 3506 on one that is not, while the
// Protobuf client on the same channel keeps receiving.
func TestBinaryPayloads(t *testing.T) {
	kafka := newKafka(t, kfake.SeedTopics(1, "raw"))
	cfg := testConfig(kafka.ListenAddrs())
	cfg.Ingest.Topics = append(cfg.Ingest.Topics, ingest.Topic{Name: "raw", Payload: "binary"})
	r := startRelay(t, cfg)
	prod := newProducer(t, kafka.ListenAddrs())
	const binCh, jsonCh = "raw:bin", "raw:json"
	binary := "\x00\x01\xff not JSON \n"
	r.waitCached(t, binCh, produce(t, prod, "raw", binCh, binary))
	r.waitCached(t, jsonCh, produce(t, prod, "raw", jsonCh, "{\"a\":\n 1}"))

	pb := dialProtobuf(t, r.url())
	pb.connect()
	pb.send(command(2, 5, pbStr(nil, 1, binCh)), command(3, 5, pbStr(nil, 1, jsonCh)))
	for _, want := range []string{binary, "{\"a\":\n 1}"} {
		if rep := pb.mustNext(); rep.Subscribe == nil || len(rep.Subscribe.Pubs) != 1 || string(rep.Subscribe.Pubs[0].Data) != want {
			t.Fatalf("Protobuf subscribe reply %+v, want data %q unchanged", rep, want)
		}
	}

	t.Run("REST", func(t *testing.T) {
		for ch, want := range map[string]string{binCh: `"b64data":"` + base64.StdEncoding.EncodeToString([]byte(binary)) + `"`, jsonCh: `"data":{"a":1}`} {
			if code, body := r.get(t, "/v1/channels/"+ch); code != 200 || !strings.Contains(body, want) {
				t.Errorf("GET %s: %d %s, want %s", ch, code, body, want)
			}
		}
	})

	t.Run("JSON client, non-JSON cached value", func(t *testing.T) {
		c := dial(t, r.url())
		c.connect()
		c.send(`{"id":2,"subscribe":{"channel":"` + binCh + `"}}`)
		c.expectClose(3506)
	})

	j := dial(t, r.url())
	j.connect()
	j.send(`{"id":2,"subscribe":{"channel":"` + jsonCh + `"}}`)
	rep := j.mustNext()
	sub, _ := rep["subscribe"].(map[string]any)
	pubs, _ := sub["publications"].([]any)
	if len(pubs) != 1 || pubs[0].(map[string]any)["data"].(map[string]any)["a"] != 1.0 {
		t.Fatalf("JSON subscribe reply %v", rep)
	}
	produce(t, prod, "raw", jsonCh, "{\"a\":\n 2}")
	if _, data, _, ok := pubOf(j.mustNext()); !ok || data["a"] != 2.0 {
		t.Fatalf("JSON client got %v, want a=2 (compacted JSON)", data)
	}
	if p := pb.mustNext(); p.Push == nil || string(p.Push.Pub.Data) != "{\"a\":\n 2}" {
		t.Fatalf("Protobuf push %+v", p)
	}
	produce(t, prod, "raw", jsonCh, binary)
	j.expectClose(3506)
	if p := pb.mustNext(); p.Push == nil || string(p.Push.Pub.Data) != binary {
		t.Fatalf("Protobuf push %+v, want the bytes unchanged", p)
	}
	if _, body := r.get(t, "/metrics"); metric(body, "edgerelay_publications_not_json_total") < 2 {
		t.Errorf("not counted:\n%s", grep(body, "not_json"))
	}
}
