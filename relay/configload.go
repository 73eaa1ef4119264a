package relay

// Loading a Config and reporting what is wrong with it in the terms of the
// configuration, not of Go: every problem at once, each naming the YAML path
// of the setting and where its value came from.
//
// The file is parsed into a yaml.Node tree and walked alongside the Config
// by reflection over the yaml tags, so every key's line is known and any key
// added to a config struct is read, checked and located with no extra code.
// Values that cannot be read (unknown keys, wrong types) keep their default
// and become problems; LoadConfig goes on. Environment variables and flags
// are set by YAML path too. Validate then joins those problems with the
// validators', whose errors each start with the YAML path ("kafka.brokers:
// at least one ..."): it looks the path up to name the file line, variable
// or flag that set the value.

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// LoadConfig starts from DefaultConfig, reads the YAML file at path (if path
// is not empty), then applies environment variables named
// EDGERELAY_<YAML_PATH> (for example EDGERELAY_KAFKA_BROKERS=a:9092,b:9092
// or EDGERELAY_WEBSOCKET_PING_INTERVAL=15s). Its error is only for a file
// that cannot be read or parsed as YAML. What cannot be used (an unknown
// key, a value of the wrong type) keeps its default and is reported by
// Validate, with everything else wrong: callers apply flags (SetFlag), then
// call Validate. EDGERELAY_ variables that name no setting are returned, for
// a warning (Kubernetes injects EDGERELAY_PORT and the like for a Service
// named edgerelay).
func LoadConfig(path string, environ []string) (Config, []string, error) {
	if path == "" {
		return loadConfig("", nil, environ)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), nil, fmt.Errorf("config: %w", err)
	}
	return loadConfig(path, raw, environ)
}

// loadConfig is LoadConfig with the file's contents in raw (name is used
// in messages; raw nil: no file).
func loadConfig(name string, raw []byte, environ []string) (Config, []string, error) {
	cfg := DefaultConfig()
	o := &configOrigin{sources: map[string]source{}}
	cfg.origin = o
	if raw != nil {
		if err := o.readFile(name, raw, &cfg); err != nil {
			return cfg, nil, err
		}
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "EDGERELAY_") {
			env[k] = v
		}
	}
	eachSetting(reflect.ValueOf(&cfg).Elem(), "", func(path string, v reflect.Value) {
		name := "EDGERELAY_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
		if s, ok := env[name]; ok {
			delete(env, name)
			o.set(v, path, s, source{name: name})
		}
	})
	unknown := make([]string, 0, len(env))
	for k := range env {
		unknown = append(unknown, k)
	}
	sort.Strings(unknown)
	cfg.Node = DefaultNode(cfg.Node)
	return cfg, unknown, nil
}

// SetFlag sets the setting at YAML path (such as "kafka.brokers") from the
// value of the command-line flag named flag, read as an environment
// variable's would be; a problem with it, then or in Validate, names the
// flag. Copies of c share where their values came from. A path that names
// no setting panics: it is a programming error.
func (c *Config) SetFlag(flag, path, value string) {
	if c.origin == nil {
		c.origin = &configOrigin{sources: map[string]source{}}
	}
	found := false
	eachSetting(reflect.ValueOf(c).Elem(), "", func(p string, v reflect.Value) {
		if p == path {
			found = true
			c.origin.set(v, path, value, source{name: "flag " + flag})
		}
	})
	if !found {
		panic("relay: SetFlag: no setting " + path)
	}
}

// Validate reports every problem with c at once: those LoadConfig and
// SetFlag met, then every invalid value. The error has one problem a line,
// "<where>: <yaml path>: <message>", where is "relay.yaml:12" for a value
// from the file (problems in line order come first), the variable or flag
// that set it, or nothing for a default or a value set in code.
func (c *Config) Validate() error {
	return c.origin.report(c.validateValues())
}

// configOrigin is where each value of a Config came from and the problems
// met reading them.
type configOrigin struct {
	// sources maps YAML paths (websocket.ping_interval, ingest.topics[1])
	// to where they were last set.
	sources  map[string]source
	problems []problem
}

// source is where a value came from: "relay.yaml:12" (line 12),
// "EDGERELAY_LISTEN", "flag --listen".
type source struct {
	name string
	line int // in the file; 0 otherwise
}

// problem is one thing wrong with a configuration.
type problem struct {
	source
	path string // YAML path; "" when the problem is the file's
	msg  string
	// unread: the value could not be read and the setting kept its
	// default.
	unread bool
}

func (p problem) String() string {
	var b strings.Builder
	for _, s := range []string{p.name, p.path} {
		if s != "" {
			b.WriteString(s)
			b.WriteString(": ")
		}
	}
	b.WriteString(p.msg)
	return b.String()
}

// configError lists every problem of a configuration, one a line (the
// first maxListedProblems): those from the file in line order, then the
// others by path.
type configError []problem

// maxListedProblems bounds the lines of a configError.
const maxListedProblems = 100

func (e configError) Error() string {
	var lines []string
	for _, p := range e[:min(len(e), maxListedProblems)] {
		lines = append(lines, p.String())
	}
	if len(e) > maxListedProblems {
		lines = append(lines, fmt.Sprintf("(and %d more problems)", len(e)-maxListedProblems))
	}
	return strings.Join(lines, "\n")
}

// report returns the problems met loading (o may be nil) and those of the
// validators' errors (each "<yaml path>: <message>"), sorted, or nil.
func (o *configOrigin) report(invalid error) error {
	var ps configError
	if o != nil {
		ps = append(ps, o.problems...)
	}
	// A value that could not be read kept its default: what validation
	// says of it or of what it holds would be noise.
	unread := map[string]bool{}
	for _, p := range ps {
		unread[p.path] = unread[p.path] || p.unread && p.path != ""
	}
	for _, err := range flatten(invalid) {
		p := problem{msg: err.Error()}
		if path, msg, ok := strings.Cut(p.msg, ": "); ok && yamlPathRE.MatchString(path) {
			p.path, p.msg = path, msg
		}
		if !slices.ContainsFunc(ancestors(p.path), func(a string) bool { return unread[a] }) {
			p.source = o.sourceOf(p.path)
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if (a.line == 0) != (b.line == 0) {
			return a.line != 0
		}
		if a.line != b.line {
			return a.line < b.line
		}
		if a.path != b.path {
			return a.path < b.path
		}
		return a.msg < b.msg
	})
	return slices.Compact(ps) // an alias used twice repeats its problems
}

var yamlPathRE = regexp.MustCompile(`^[a-z0-9_]+(\[[0-9]+\]|\.[a-z0-9_]+)*$`)

// sourceOf says where the value at path came from: its own source, or else
// that of the list item holding it (a required key missing from the item
// is blamed on the item) or of the variable or flag that set the whole
// list, or nothing.
func (o *configOrigin) sourceOf(path string) source {
	if o == nil {
		return source{}
	}
	for _, p := range ancestors(path) {
		if s, ok := o.sources[p]; ok && (p == path || strings.HasSuffix(p, "]") || s.line == 0) {
			return s
		}
	}
	return source{}
}

// ancestors lists path and the settings that hold it, innermost first:
// ingest.topics[1].name, ingest.topics[1], ingest.topics, ingest.
func ancestors(path string) []string {
	var as []string
	for p := path; p != ""; p = p[:max(0, strings.LastIndexAny(p, ".["))] {
		as = append(as, p)
	}
	return as
}

// flatten lists the errors joined (errors.Join, at any depth) in err.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// set parses s into v (the setting at path) for a variable or flag, and
// records that src set it, or the problem.
func (o *configOrigin) set(v reflect.Value, path, s string, src source) {
	for p := range o.sources { // the file's list items are gone
		if strings.HasPrefix(p, path+"[") || strings.HasPrefix(p, path+".") {
			delete(o.sources, p)
		}
	}
	o.sources[path] = src
	if err := setFromString(v, s); err != nil {
		o.problems = append(o.problems, problem{source: src, path: path, msg: err.Error(), unread: true})
	}
}

// eachSetting calls fn with every setting under struct v that is not a
// struct itself, and its YAML path under prefix.
func eachSetting(v reflect.Value, prefix string, fn func(path string, v reflect.Value)) {
	for _, f := range yamlFields(v.Type()) {
		fv := v.Field(f.index)
		if p := joinPath(prefix, f.key); fv.Kind() == reflect.Struct && !isLeaf(fv.Type()) {
			eachSetting(fv, p, fn)
		} else {
			fn(p, fv)
		}
	}
}

type yamlField struct {
	key   string
	index int
}

// yamlFields lists the settings of struct type t: the fields with a yaml
// tag other than "-".
func yamlFields(t reflect.Type) []yamlField {
	var fs []yamlField
	for i := 0; i < t.NumField(); i++ {
		if key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); key != "" && key != "-" {
			fs = append(fs, yamlField{key, i})
		}
	}
	return fs
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

var (
	durationType    = reflect.TypeOf(time.Duration(0))
	byteSizeType    = reflect.TypeOf(ByteSize(0))
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textType        = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// isLeaf says whether a value of type t is read from one scalar (or by its
// own UnmarshalYAML), not walked key by key.
func isLeaf(t reflect.Type) bool {
	if pt := reflect.PointerTo(t); pt.Implements(unmarshalerType) || pt.Implements(textType) {
		return true
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return false
	case reflect.Slice:
		return t.Elem().Kind() == reflect.Uint8
	}
	return true
}

// want names what a value of type t is written as.
func want(t reflect.Type) string {
	switch t {
	case durationType:
		return "a duration (e.g. 300ms, 15s, 1m30s)"
	case byteSizeType:
		return "a byte size (e.g. 65536, 64KiB, 1MiB)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a finite number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	}
	return "a value"
}

// setFromString parses an environment variable's or a flag's value into
// v: lists of strings are comma-separated.
func setFromString(v reflect.Value, s string) error {
	bad := fmt.Errorf("%s is not %s", quote(s), want(v.Type()))
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return bad
		}
		v.SetInt(int64(d))
		return nil
	case v.Type() == byteSizeType:
		b, err := ParseByteSize(s)
		if err != nil {
			return bad
		}
		v.SetInt(int64(b))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return bad
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return bad
		}
		v.SetInt(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil || !finite(f) {
			return bad
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errors.New("cannot be set from the environment or a flag; use the config file")
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return errors.New("cannot be set from the environment or a flag; use the config file")
	}
	return nil
}

// finite: not NaN or an infinity, which no setting means.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// maxFileNodes bounds the keys and values a file may hold, counting each
// use of an alias anew (aliases of aliases grow exponentially).
const maxFileNodes = 1 << 16

// fileReader walks a parsed file alongside a Config.
type fileReader struct {
	*configOrigin
	file   string
	nodes  int // visited so far
	fields map[reflect.Type][]yamlField
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// readFile reads the YAML document raw into cfg: problems are recorded,
// the error is for YAML that does not parse.
func (o *configOrigin) readFile(name string, raw []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil
	} else if err != nil {
		return configError{syntaxProblem(name, err)}
	}
	r := &fileReader{configOrigin: o, file: name, fields: map[reflect.Type][]yamlField{}}
	if len(doc.Content) > 0 {
		r.value(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		r.problem(&next, "", "a second YAML document (---): the configuration is one document")
	case !errors.Is(err, io.EOF):
		o.problems = append(o.problems, syntaxProblem(name, err))
	}
	return nil
}

// syntaxProblem is the problem of a file yaml.v3 cannot parse.
func syntaxProblem(name string, err error) problem {
	p := problem{source: source{name: name}, msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		p.line, _ = strconv.Atoi(m[1])
		p.name, p.msg = fmt.Sprintf("%s:%d", name, p.line), err.Error()[len(m[0]):]
	}
	return p
}

func (r *fileReader) at(n *yaml.Node) source {
	return source{name: fmt.Sprintf("%s:%d", r.file, n.Line), line: n.Line}
}

func (r *fileReader) problem(n *yaml.Node, path, format string, args ...any) {
	r.problems = append(r.problems, problem{source: r.at(n), path: path, msg: fmt.Sprintf(format, args...), unread: true})
}

// spend counts k more values read, and says whether that is still within
// maxFileNodes (reporting, once, when it is not).
func (r *fileReader) spend(n *yaml.Node, path string, k int) bool {
	if r.nodes >= maxFileNodes {
		return false
	}
	if r.nodes += k; r.nodes >= maxFileNodes {
		r.problem(n, path, "more than %d values (aliases count each time they are used); the rest is not read", maxFileNodes)
		return false
	}
	return true
}

// value reads node n into v, the setting at path.
func (r *fileReader) value(n *yaml.Node, v reflect.Value, path string) {
	if !r.spend(n, path, 1) {
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	t := v.Type()
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		switch t.Kind() { // as yaml.v3 does: null empties these, leaves the rest
		case reflect.Slice, reflect.Map, reflect.Pointer, reflect.Interface:
			v.Set(reflect.Zero(t))
		}
		return
	}
	if isLeaf(t) {
		r.leaf(n, v, path)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		r.value(n, v.Elem(), path)
	case reflect.Struct:
		r.mapping(n, v, path)
	case reflect.Slice:
		r.list(n, v, path)
	case reflect.Map:
		r.dict(n, v, path)
	}
}

// leaf reads a scalar with yaml.v3, or whatever node t's own
// UnmarshalYAML or UnmarshalText takes.
func (r *fileReader) leaf(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	pt := reflect.PointerTo(t)
	// Known: the message is ours; otherwise the type's own.
	known := t == durationType || t == byteSizeType || !(pt.Implements(unmarshalerType) || pt.Implements(textType) || t.Kind() == reflect.Interface)
	if n.Kind != yaml.ScalarNode && known {
		r.problem(n, path, "want %s, not %s", want(t), describe(n))
		return
	}
	nv := reflect.New(t)
	err := n.Decode(nv.Interface())
	switch k := t.Kind(); {
	case err != nil:
	case n.ShortTag() == "!!float" && k >= reflect.Int && k <= reflect.Uintptr:
		err = errors.New("yaml.v3 truncates floats into integers")
	case (k == reflect.Float32 || k == reflect.Float64) && !finite(nv.Elem().Float()):
		err = errors.New("no setting takes NaN or infinity")
	}
	if err != nil {
		msg := fmt.Sprintf("%s is not %s", quote(n.Value), want(t))
		if !known {
			msg = yamlLineRE.ReplaceAllString(strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), "unmarshal errors:\n  "), "")
		}
		r.problem(n, path, "%s", msg)
		return
	}
	v.Set(nv.Elem())
}

// mapping reads a mapping into struct v: merge keys (<<) first, then the
// mapping's own keys, which win.
func (r *fileReader) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		r.problem(n, path, "want a mapping, not %s", describe(n))
		return
	}
	if !r.spend(n, path, len(n.Content)/2) { // keys too: unknown ones are not read, but reported
		return
	}
	fields, ok := r.fields[v.Type()]
	if !ok {
		fields = yamlFields(v.Type())
		r.fields[v.Type()] = fields
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() == "!!merge" {
			r.merge(n.Content[i+1], v, path)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			continue
		}
		p := joinPath(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			r.problem(k, p, "set twice (first at line %d, which is used)", line)
			r.problems[len(r.problems)-1].unread = false
			continue
		}
		seen[k.Value] = k.Line
		f := slices.IndexFunc(fields, func(f yamlField) bool { return f.key == k.Value })
		if f < 0 {
			r.problem(k, p, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		r.sources[p] = r.at(k)
		r.value(val, v.Field(fields[f].index), p)
	}
}

func (r *fileReader) merge(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		r.value(n, v, path)
		return
	}
	for i := len(n.Content) - 1; i >= 0; i-- { // earlier ones win
		r.value(n.Content[i], v, path)
	}
}

func (r *fileReader) list(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		r.problem(n, path, "want a list, not %s", describe(n))
		return
	}
	if !r.spend(n, path, len(n.Content)) {
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		r.sources[p] = r.at(item)
		r.value(item, s.Index(i), p)
	}
	v.Set(s)
}

// dict reads a mapping into a map with string keys, each value read as a
// setting of its own.
func (r *fileReader) dict(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	if n.Kind != yaml.MappingNode || t.Key().Kind() != reflect.String {
		r.problem(n, path, "want %s, not %s", want(t), describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		p := joinPath(path, k.Value)
		r.sources[p] = r.at(k)
		e := reflect.New(t.Elem()).Elem()
		r.value(n.Content[i+1], e, p)
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
	}
}

// describe names what node n holds, for "want X, not Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return quote(n.Value)
}

// quote quotes s for a message, cut to 64 bytes.
func quote(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// suggest returns " (did you mean k?)" for the known key k nearest to key,
// if one is near enough to be a typo of it.
func suggest(key string, fields []yamlField) string {
	best, bestDist := "", len(key)/3+2
	for _, f := range fields {
		if len(key) > 64 {
			break
		}
		if d := editDistance(key, f.key); d < bestDist {
			best, bestDist = f.key, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
