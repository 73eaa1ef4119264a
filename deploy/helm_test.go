package deploy_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgerelay/edgerelay/relay"
)

// The Helm chart (deploy/helm/edgerelay) rendered by helm template, with
// Helm built from source by scripts/helm, and checked against the relay:
// its configuration loader, its routes and its drain rules.

const chart = "helm/edgerelay"

var (
	helmOnce sync.Once
	helmErr  error
)

// helm runs scripts/helm with args. Where Helm cannot be built (no Go
// module proxy), the test is skipped and says so; with CI set it fails.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	helmOnce.Do(func() {
		if out, err := exec.Command("../scripts/helm", "version").CombinedOutput(); err != nil {
			helmErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if helmErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("scripts/helm (go install helm.sh/helm/v3/cmd/helm) could not build Helm, and CI is set: %v", helmErr)
		}
		t.Skipf("SKIPPED, the Helm chart is NOT checked: scripts/helm could not build Helm (%v). In CI (CI=true) this fails.", helmErr)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("../scripts/helm", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

// render runs helm template with the --set assignments given and returns
// the objects by kind/name.
func render(t *testing.T, sets ...string) map[string]*k8sObject {
	t.Helper()
	out, err := helm(t, templateArgs(sets...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, out)
}

func templateArgs(sets ...string) []string {
	args := []string{"template", "edgerelay", chart, "--namespace", "relays", "--kube-version", "1.30.0"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

func decodeObjects(t *testing.T, manifests string) map[string]*k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	out := map[string]*k8sObject{}
	for {
		o := new(k8sObject)
		if err := dec.Decode(o); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("helm template output: %v", err)
		}
		if o.Kind == "" {
			continue
		}
		key := o.Kind + "/" + o.Metadata.Name
		if out[key] != nil {
			t.Errorf("%s rendered twice", key)
		}
		out[key] = o
	}
	return out
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
}

func (o *k8sObject) decode(t *testing.T, v any) {
	t.Helper()
	if o == nil {
		t.Fatalf("object not rendered")
	}
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s/%s: %v", o.Kind, o.Metadata.Name, err)
	}
}

type probe struct {
	HTTPGet struct {
		Path   string `yaml:"path"`
		Port   string `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
}

type container struct {
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef *struct {
				Name     string `yaml:"name"`
				Key      string `yaml:"key"`
				Optional bool   `yaml:"optional"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	LivenessProbe  probe `yaml:"livenessProbe"`
	ReadinessProbe probe `yaml:"readinessProbe"`
	StartupProbe   probe `yaml:"startupProbe"`
	Lifecycle      struct {
		PreStop struct {
			Sleep struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int  `yaml:"terminationGracePeriodSeconds"`
	EnableServiceLinks            bool `yaml:"enableServiceLinks"`
	SecurityContext               struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type deploymentSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
}

type serviceSpec struct {
	ClusterIP                string            `yaml:"clusterIP"`
	PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string `yaml:"selector"`
	Ports                    []struct {
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"`
		Protocol   string `yaml:"protocol"`
	} `yaml:"ports"`
}

// chartValues are the defaults of values.yaml the tests compare with.
type chartValues struct {
	Capacity struct {
		Connections int `yaml:"connections"`
		CacheMiB    int `yaml:"cacheMiB"`
	} `yaml:"capacity"`
	Drain struct {
		LBDelay         int  `yaml:"lbDelay"`
		Period          int  `yaml:"period"`
		RelayKeys       bool `yaml:"relayKeys"`
		ShutdownTimeout int  `yaml:"shutdownTimeout"`
		Margin          int  `yaml:"margin"`
	} `yaml:"drain"`
	Secret struct {
		Env []struct {
			Key       string `yaml:"key"`
			SecretKey string `yaml:"secretKey"`
			Optional  bool   `yaml:"optional"`
		} `yaml:"env"`
	} `yaml:"secret"`
}

func defaultValues(t *testing.T) chartValues {
	t.Helper()
	var v chartValues
	if err := yaml.Unmarshal(readFile(t, chart+"/values.yaml"), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// chartRelay is what one rendering means to the relay: the pod spec and
// the configuration the relay loads from the ConfigMap and the env.
type chartRelay struct {
	pod     podSpec
	c       container
	cfg     relay.Config
	loadErr error
}

// mounted names the volume the container sees file at: "configMap <name>",
// "secret <name>" or "".
func (r chartRelay) mounted(file string) string {
	for _, m := range r.c.VolumeMounts {
		if filepath.Dir(file) != m.MountPath {
			continue
		}
		for _, v := range r.pod.Volumes {
			switch {
			case v.Name != m.Name:
			case v.ConfigMap.Name != "":
				return "configMap " + v.ConfigMap.Name
			case v.Secret.SecretName != "":
				return "secret " + v.Secret.SecretName
			}
		}
	}
	return ""
}

var testGossipKey = base64.StdEncoding.EncodeToString(make([]byte, 32))

// loadRendered loads the ConfigMap's relay.yaml with the container's env
// the way the kubelet would give it: POD_IP substituted, Secret values
// filled in (the gossip key a valid one, others placeholders).
func loadRendered(t *testing.T, objs map[string]*k8sObject) chartRelay {
	t.Helper()
	var dep deploymentSpec
	objs["Deployment/edgerelay"].decode(t, &dep)
	r := chartRelay{pod: dep.Template.Spec}
	if len(r.pod.Containers) != 1 {
		t.Fatalf("%d containers", len(r.pod.Containers))
	}
	r.c = r.pod.Containers[0]
	cm := objs["ConfigMap/edgerelay"]
	if cm == nil || r.mounted("/etc/edgerelay/relay.yaml") != "configMap edgerelay" {
		t.Fatalf("ConfigMap edgerelay not rendered or not mounted at /etc/edgerelay (%+v)", r.pod.Volumes)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	os.WriteFile(path, []byte(cm.Data["relay.yaml"]), 0o644)
	var env []string
	for _, e := range r.c.Env {
		v := strings.ReplaceAll(e.Value, "$(POD_IP)", "10.0.0.5")
		if ref := e.ValueFrom.SecretKeyRef; ref != nil {
			v = "secret-" + ref.Key + "-0123456789abcdef0123456789abcdef"
			if ref.Key == "gossip-key" {
				v = testGossipKey
			}
		}
		env = append(env, e.Name+"="+v)
	}
	cfg, unknown, err := relay.LoadConfig(path, env)
	if err == nil && len(unknown) > 0 {
		err = fmt.Errorf("env names no setting: %v", unknown)
	}
	if err == nil {
		err = cfg.Validate()
	}
	r.cfg, r.loadErr = cfg, err
	return r
}

func TestHelmChart(t *testing.T) {
	objs := render(t)
	for _, want := range []string{"ConfigMap/edgerelay", "Deployment/edgerelay", "Service/edgerelay",
		"Service/edgerelay-gossip", "PodDisruptionBudget/edgerelay"} {
		if objs[want] == nil {
			t.Errorf("no %s", want)
		}
	}
	for key := range objs {
		if strings.HasPrefix(key, "ServiceMonitor/") || strings.HasPrefix(key, "Secret/") {
			t.Errorf("%s rendered by default", key)
		}
	}
	r := loadRendered(t, objs)
	if r.loadErr != nil {
		t.Fatalf("the relay refuses the ConfigMap relay.yaml with the Deployment's env: %v", r.loadErr)
	}
	cfg, c, pod := r.cfg, r.c, r.pod
	if !slices.Equal(c.Args, []string{"serve", "--config", "/etc/edgerelay/relay.yaml"}) {
		t.Errorf("args %v", c.Args)
	}
	if pod.EnableServiceLinks || !pod.SecurityContext.RunAsNonRoot {
		t.Errorf("enableServiceLinks %v, runAsNonRoot %v", pod.EnableServiceLinks, pod.SecurityContext.RunAsNonRoot)
	}
	// Ports agree with listen and cluster.bind.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	_, listenPort, _ := net.SplitHostPort(cfg.Listen)
	_, gossipPort, _ := net.SplitHostPort(cfg.Cluster.Bind)
	if fmt.Sprint(ports["http"]) != listenPort || fmt.Sprint(ports["gossip-tcp"]) != gossipPort || fmt.Sprint(ports["gossip-udp"]) != gossipPort {
		t.Errorf("container ports %v; listen %s, cluster.bind %s", ports, cfg.Listen, cfg.Cluster.Bind)
	}
	if cfg.Cluster.Advertise != "10.0.0.5:"+gossipPort {
		t.Errorf("cluster.advertise %q, want the pod IP and the gossip port", cfg.Cluster.Advertise)
	}
	for name, p := range map[string]probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}[name]
		if p.HTTPGet.Port != "http" || p.HTTPGet.Path != want || p.HTTPGet.Scheme != "HTTP" {
			t.Errorf("%s probe %+v, want HTTP %s on port http", name, p.HTTPGet, want)
		}
	}

	// Secrets: every secretKeyRef names the chart's Secret and a key that
	// secret.env lists, and lands in the relay setting it is meant for.
	v := defaultValues(t)
	refs := map[string]string{} // env name -> Secret key
	for _, e := range c.Env {
		if ref := e.ValueFrom.SecretKeyRef; ref != nil {
			if ref.Name != "edgerelay" {
				t.Errorf("%s from Secret %q, want edgerelay", e.Name, ref.Name)
			}
			refs[e.Name] = ref.Key
		}
	}
	if len(refs) != len(v.Secret.Env) {
		t.Errorf("secretKeyRefs %v, values secret.env %+v", refs, v.Secret.Env)
	}
	for _, s := range v.Secret.Env {
		name := "EDGERELAY_" + strings.ToUpper(strings.ReplaceAll(s.Key, ".", "_"))
		if refs[name] != s.SecretKey {
			t.Errorf("secret.env %s: env %s from key %q, want %q", s.Key, name, refs[name], s.SecretKey)
		}
	}
	if cfg.Cluster.SecretKey != testGossipKey || len(cfg.Auth.HMACSecrets) != 1 || !strings.HasPrefix(cfg.Kafka.SASL.Password, "secret-kafka-sasl-password") ||
		!strings.HasPrefix(cfg.HTTP.OperatorToken, "secret-operator-token") {
		t.Errorf("Secret env did not reach cluster.secret_key, auth.hmac_secrets, kafka.sasl.password, http.operator_token: %q %q %q %q",
			cfg.Cluster.SecretKey, cfg.Auth.HMACSecrets, cfg.Kafka.SASL.Password, cfg.HTTP.OperatorToken)
	}

	// Drain: the relay waits lb_delay itself (no preStop sleep), and the
	// grace period covers shutdown_timeout (which holds lb_delay + period)
	// and the margin.
	pre := c.Lifecycle.PreStop.Sleep.Seconds
	if !v.Drain.RelayKeys || pre != 0 || cfg.ShutdownTimeout != time.Duration(v.Drain.ShutdownTimeout)*time.Second ||
		cfg.Cluster.Drain.LBDelay != time.Duration(v.Drain.LBDelay)*time.Second || cfg.Cluster.Drain.Period != time.Duration(v.Drain.Period)*time.Second {
		t.Errorf("preStop %ds, shutdown_timeout %v, cluster.drain %+v; values drain %+v", pre, cfg.ShutdownTimeout, cfg.Cluster.Drain, v.Drain)
	}
	checkGrace(t, pod.TerminationGracePeriodSeconds, pre, cfg, v.Drain.LBDelay, v.Drain.Period, v.Drain.Margin)

	// Resources: requests set, and the memory request covers the cache
	// bound and the measured user-space memory per connection
	// (docs/performance.md: at most 1,180 B per idle subscribed connection).
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req["cpu"] == "" || lim["cpu"] != "" {
		t.Errorf("resources %+v: want a CPU request and no CPU limit", c.Resources)
	}
	memReq, memLim := quantity(t, req["memory"]), quantity(t, lim["memory"])
	if floor := int64(cfg.Channels.MaxCachedBytes) + int64(v.Capacity.Connections)*1180; memReq < floor || memLim < memReq {
		t.Errorf("memory request %s (limit %s) below cache bound + connections x 1,180 B = %d", req["memory"], lim["memory"], floor)
	}
	if cfg.WebSocket.MaxConnections != v.Capacity.Connections || int64(cfg.Channels.MaxCachedBytes) != int64(v.Capacity.CacheMiB)<<20 {
		t.Errorf("websocket.max_connections %d, channels.max_cached_bytes %d; values capacity %+v", cfg.WebSocket.MaxConnections, cfg.Channels.MaxCachedBytes, v.Capacity)
	}

	// The headless Service is the cluster seed.
	var gossip, client serviceSpec
	objs["Service/edgerelay-gossip"].decode(t, &gossip)
	objs["Service/edgerelay"].decode(t, &client)
	if gossip.ClusterIP != "None" || !gossip.PublishNotReadyAddresses {
		t.Errorf("gossip Service: clusterIP %q, publishNotReadyAddresses %v", gossip.ClusterIP, gossip.PublishNotReadyAddresses)
	}
	protos := map[string]bool{}
	for _, p := range gossip.Ports {
		if fmt.Sprint(p.Port) != gossipPort || ports[p.TargetPort] == 0 {
			t.Errorf("gossip Service port %+v", p)
		}
		protos[p.Protocol] = true
	}
	if !protos["TCP"] || !protos["UDP"] {
		t.Errorf("gossip Service needs TCP and UDP: %v", protos)
	}
	if want := "edgerelay-gossip.relays.svc.cluster.local:" + gossipPort; !slices.Equal(cfg.Cluster.Seeds, []string{want}) {
		t.Errorf("cluster.seeds %v, want [%s] (the headless Service)", cfg.Cluster.Seeds, want)
	}
	if len(client.Ports) != 1 || ports[client.Ports[0].TargetPort] == 0 {
		t.Errorf("client Service ports %+v", client.Ports)
	}
	// Both Services and the PDB select exactly the pods.
	var dep deploymentSpec
	objs["Deployment/edgerelay"].decode(t, &dep)
	var pdb struct {
		MaxUnavailable int `yaml:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	}
	objs["PodDisruptionBudget/edgerelay"].decode(t, &pdb)
	for what, sel := range map[string]map[string]string{"gossip Service": gossip.Selector, "client Service": client.Selector,
		"PodDisruptionBudget": pdb.Selector.MatchLabels, "Deployment": dep.Selector.MatchLabels} {
		if len(sel) == 0 || !selects(sel, dep.Template.Metadata.Labels) {
			t.Errorf("%s selector %v does not select the pods %v", what, sel, dep.Template.Metadata.Labels)
		}
	}
	if pdb.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %d", pdb.MaxUnavailable)
	}

	// The rendered configuration runs: a relay with it (on loopback, with
	// a kfake broker and no seeds to resolve) answers the probes 200.
	k := newKafka(t)
	run := cfg
	run.Listen, run.Kafka.Brokers = "127.0.0.1:0", k.ListenAddrs()
	run.Cluster.Bind, run.Cluster.Advertise, run.Cluster.Seeds = "127.0.0.1:0", "", nil
	run.Ingest.ProbeInterval = 100 * time.Millisecond
	run.Cluster.Drain.LBDelay, run.Cluster.Drain.Period = 0, 0 // stop at once (relay/drain_test.go times drains)
	tr := startRelay(t, run)
	checkFor(t, 20*time.Second, func() error {
		for _, path := range []string{c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path, c.StartupProbe.HTTPGet.Path} {
			if code, body := tr.get(t, path); code != 200 {
				return fmt.Errorf("%s: %d %s", path, code, body)
			}
		}
		return nil
	})
}

// checkGrace: terminationGracePeriodSeconds holds the preStop sleep, then
// shutdown_timeout, then the margin, and so lbDelay + period + margin; and
// shutdown_timeout holds lb_delay + period.
func checkGrace(t *testing.T, grace, preStop int, cfg relay.Config, lbDelay, period, margin int) {
	t.Helper()
	sec := time.Second
	g := time.Duration(grace) * sec
	if g < time.Duration(preStop)*sec+cfg.ShutdownTimeout+time.Duration(margin)*sec {
		t.Errorf("terminationGracePeriodSeconds %d < preStop %ds + shutdown_timeout %v + margin %ds", grace, preStop, cfg.ShutdownTimeout, margin)
	}
	if g < time.Duration(lbDelay+period+margin)*sec || cfg.ShutdownTimeout < time.Duration(lbDelay+period)*sec {
		t.Errorf("terminationGracePeriodSeconds %d, shutdown_timeout %v: want >= lbDelay %ds + period %ds (+ margin %ds)", grace, cfg.ShutdownTimeout, lbDelay, period, margin)
	}
	if margin < 5 {
		t.Errorf("margin %ds leaves no time to stop ingest after the drain", margin)
	}
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// quantity parses the Kubernetes quantities the chart writes: 711Mi, 2Gi,
// in bytes; CPU in millicores: 1500m, and 2 (cores) as 2000.
func quantity(t *testing.T, q string) int64 {
	t.Helper()
	mult := int64(1)
	if !strings.HasSuffix(q, "i") {
		mult = 1000
	}
	for suf, m := range map[string]int64{"m": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if s, ok := strings.CutSuffix(q, suf); ok {
			q, mult = s, m
		}
	}
	n, err := strconv.ParseInt(q, 10, 64)
	if err != nil {
		t.Fatalf("quantity %q: %v", q, err)
	}
	return n * mult
}

// TestHelmChartDrain renders the drain settings both ways: as
// cluster.drain.lb_delay / period in the relay configuration (the
// default), and as a preStop sleep for relay images from before the drain
// keys (drain.relayKeys false), where the keys are not rendered.
func TestHelmChartDrain(t *testing.T) {
	for _, tc := range []struct {
		name                           string
		relayKeys                      bool
		lbDelay, period, shutdown, mar int
	}{
		{"preStop", false, 5, 10, 20, 10},
		{"preStop-long", false, 15, 0, 45, 5},
		{"relayKeys", true, 5, 10, 20, 10},
		{"relayKeys-long", true, 10, 60, 75, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, fmt.Sprintf("drain.relayKeys=%v,drain.lbDelay=%d,drain.period=%d,drain.shutdownTimeout=%d,drain.margin=%d",
				tc.relayKeys, tc.lbDelay, tc.period, tc.shutdown, tc.mar))
			r := loadRendered(t, objs)
			raw := objs["ConfigMap/edgerelay"].Data["relay.yaml"]
			var rendered struct {
				Cluster struct {
					Drain map[string]string `yaml:"drain"`
				} `yaml:"cluster"`
			}
			if err := yaml.Unmarshal([]byte(raw), &rendered); err != nil {
				t.Fatal(err)
			}
			if r.loadErr != nil {
				t.Fatalf("relay refuses the configuration: %v", r.loadErr)
			}
			pre := r.c.Lifecycle.PreStop.Sleep.Seconds
			if !tc.relayKeys {
				if rendered.Cluster.Drain != nil || pre != tc.lbDelay {
					t.Errorf("cluster.drain %v rendered, preStop sleep %ds; want none and %ds", rendered.Cluster.Drain, pre, tc.lbDelay)
				}
				// A relay that has the keys uses its defaults after the
				// sleep: they fit too (Validate checked shutdown_timeout).
				if def := relay.DefaultConfig().Cluster.Drain; r.cfg.Cluster.Drain != def {
					t.Errorf("cluster.drain %+v, want the relay's defaults %+v", r.cfg.Cluster.Drain, def)
				}
				checkGrace(t, r.pod.TerminationGracePeriodSeconds, pre, r.cfg, tc.lbDelay, tc.period, tc.mar)
				return
			}
			want := map[string]string{"lb_delay": fmt.Sprintf("%ds", tc.lbDelay), "period": fmt.Sprintf("%ds", tc.period)}
			if !reflect.DeepEqual(rendered.Cluster.Drain, want) || pre != 0 {
				t.Errorf("cluster.drain %v, preStop sleep %ds; want %v and no sleep", rendered.Cluster.Drain, pre, want)
			}
			if d := r.cfg.Cluster.Drain; d.LBDelay != time.Duration(tc.lbDelay)*time.Second || d.Period != time.Duration(tc.period)*time.Second {
				t.Errorf("relay read cluster.drain %+v", d)
			}
			checkGrace(t, r.pod.TerminationGracePeriodSeconds, 0, r.cfg, tc.lbDelay, tc.period, tc.mar)
		})
	}
}

// TestHelmChartRefuses: values that would break the pod spec's agreement
// with the relay, or are not values of the chart, fail at helm template
// (by the templates or values.schema.json), naming the value.
func TestHelmChartRefuses(t *testing.T) {
	for set, want := range map[string]string{
		"config.listen=:9000":                 "config.listen is set by the chart",
		"config.cluster.seeds[0]=a:1":         "config.cluster.seeds is set by the chart",
		"config.cluster.secret_key=abc":       "config.cluster.secret_key comes from the Secret",
		"config.websocket.max_connections=10": "capacity.connections",
		"config.tls.cert_file=/x":             "config.tls is set by the chart",
		"drain.shutdownTimeout=10":            "drain.shutdownTimeout 10 is less than drain.lbDelay + drain.period",
		"drain.lbDelay=2.5":                   "at '/drain/lbDelay': got string, want integer", // values.schema.json
		"drain.margin=-1":                     "at '/drain/margin': minimum",
		"capacty.connections=5":               "additional properties 'capacty' not allowed",
	} {
		_, err := helm(t, templateArgs(set)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v, want an error with %q", set, err, want)
		}
	}
}

// TestHelmChartOptions: the ServiceMonitor, a chart-made Secret, explicit
// resources and the capacity knobs.
func TestHelmChartOptions(t *testing.T) {
	objs := render(t, "serviceMonitor.enabled=true", "secret.create=true", "secret.data.gossip-key="+testGossipKey)
	var sm struct {
		JobLabel string `yaml:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	}
	objs["ServiceMonitor/edgerelay"].decode(t, &sm)
	client, gossip := objs["Service/edgerelay"].Metadata.Labels, objs["Service/edgerelay-gossip"].Metadata.Labels
	if len(sm.Endpoints) != 1 || sm.Endpoints[0].Port != "http" || sm.Endpoints[0].Path != "/metrics" ||
		!selects(sm.Selector.MatchLabels, client) || selects(sm.Selector.MatchLabels, gossip) || client[sm.JobLabel] != "edgerelay" {
		t.Errorf("ServiceMonitor %+v: want /metrics on port http of the client Service only, job edgerelay", sm)
	}
	sec := objs["Secret/edgerelay"]
	if sec == nil || sec.StringData["gossip-key"] != testGossipKey {
		t.Fatalf("Secret edgerelay not rendered from secret.data: %+v", sec)
	}
	// Every Secret key a pod needs (not optional) is in the Secret.
	for _, e := range loadRendered(t, objs).c.Env {
		if ref := e.ValueFrom.SecretKeyRef; ref != nil && !ref.Optional {
			if _, ok := sec.StringData[ref.Key]; !ok || ref.Name != sec.Metadata.Name {
				t.Errorf("%s needs key %q of Secret %q; the chart's Secret %q has %v", e.Name, ref.Key, ref.Name, sec.Metadata.Name, sec.StringData)
			}
		}
	}

	// TLS on the relay: the certificate files come from the Secret's
	// volume, and the probes and the scrape speak HTTPS.
	tlsObjs := render(t, "tls.secretName=relay-tls", "serviceMonitor.enabled=true")
	tr := loadRendered(t, tlsObjs)
	if tr.loadErr != nil {
		t.Fatalf("with tls.secretName: %v", tr.loadErr)
	}
	for _, f := range []string{tr.cfg.TLS.CertFile, tr.cfg.TLS.KeyFile} {
		if tr.mounted(f) != "secret relay-tls" {
			t.Errorf("tls file %q is not in the volume of Secret relay-tls (%+v)", f, tr.pod.Volumes)
		}
	}
	for _, p := range []probe{tr.c.LivenessProbe, tr.c.ReadinessProbe, tr.c.StartupProbe} {
		if p.HTTPGet.Scheme != "HTTPS" {
			t.Errorf("probe %+v with TLS on the listener", p.HTTPGet)
		}
	}
	var tsm struct {
		Endpoints []struct {
			Scheme string `yaml:"scheme"`
		} `yaml:"endpoints"`
	}
	tlsObjs["ServiceMonitor/edgerelay"].decode(t, &tsm)
	if len(tsm.Endpoints) != 1 || tsm.Endpoints[0].Scheme != "https" {
		t.Errorf("ServiceMonitor endpoints %+v with TLS on the listener", tsm.Endpoints)
	}

	// A file setting from a mounted Secret (extraVolumes, extraVolumeMounts).
	kt := loadRendered(t, render(t, "extraVolumes[0].name=kafka-tls", "extraVolumes[0].secret.secretName=kafka-client-tls",
		"extraVolumeMounts[0].name=kafka-tls", "extraVolumeMounts[0].mountPath=/etc/kafka-tls",
		"config.kafka.tls.enabled=true", "config.kafka.tls.ca_file=/etc/kafka-tls/ca.crt"))
	if kt.loadErr != nil || kt.mounted(kt.cfg.Kafka.TLS.CAFile) != "secret kafka-client-tls" {
		t.Errorf("kafka.tls.ca_file %q not mounted from Secret kafka-client-tls (%v; %+v)", kt.cfg.Kafka.TLS.CAFile, kt.loadErr, kt.pod.Volumes)
	}

	// Another release in another namespace: the names, the seed and the
	// Secret follow the release.
	out, err := helm(t, "template", "blue", chart, "--namespace", "prod", "--kube-version", "1.30.0")
	if err != nil {
		t.Fatal(err)
	}
	blue := decodeObjects(t, out)
	var bdep deploymentSpec
	blue["Deployment/blue-edgerelay"].decode(t, &bdep)
	if cm := blue["ConfigMap/blue-edgerelay"]; cm == nil || blue["Service/blue-edgerelay-gossip"] == nil ||
		!strings.Contains(cm.Data["relay.yaml"], "- blue-edgerelay-gossip.prod.svc.cluster.local:7946\n") {
		t.Errorf("release blue in prod: objects %v", slices.Sorted(maps.Keys(blue)))
	}
	for _, e := range bdep.Template.Spec.Containers[0].Env {
		if ref := e.ValueFrom.SecretKeyRef; ref != nil && ref.Name != "blue-edgerelay" {
			t.Errorf("release blue: %s from Secret %q", e.Name, ref.Name)
		}
	}

	// Resources grow with capacity; explicit resources are taken as they are.
	small := loadRendered(t, render(t, "capacity.connections=10000", "capacity.deliveriesPerSecond=50000"))
	big := loadRendered(t, render(t, "capacity.connections=200000", "capacity.deliveriesPerSecond=800000"))
	if small.loadErr != nil || big.loadErr != nil {
		t.Fatalf("%v; %v", small.loadErr, big.loadErr)
	}
	if s, b := small.c.Resources.Requests, big.c.Resources.Requests; quantity(t, s["memory"]) >= quantity(t, b["memory"]) || quantity(t, s["cpu"]) >= quantity(t, b["cpu"]) ||
		big.cfg.WebSocket.MaxConnections != 200000 {
		t.Errorf("requests %v for 10,000 connections, %v for 200,000 (max_connections %d)", s, b, big.cfg.WebSocket.MaxConnections)
	}
	fixed := loadRendered(t, render(t, "resources.requests.cpu=2", "resources.requests.memory=3Gi", "resources.limits.memory=4Gi"))
	if r := fixed.c.Resources; r.Requests["cpu"] != "2" || r.Requests["memory"] != "3Gi" || r.Limits["memory"] != "4Gi" || len(r.Limits) != 1 {
		t.Errorf("explicit resources became %+v", r)
	}
}
