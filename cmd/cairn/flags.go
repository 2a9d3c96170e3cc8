package main

// Flag parsing for the cairn server: etcd's flag names and meanings, mapped
// into config.Server.
//
// Every etcd v3.7 server flag is accepted, so an etcd manifest runs by
// swapping the binary name. Each flag is in one of three categories (see
// flagSpecs):
//
//   - implemented: mapped into config.Server;
//   - no effect: accepted; a warning is returned when it is set to a value
//     other than etcd's default (the setting tunes something cairn does not
//     have, such as bbolt, or asks for what cairn always does);
//   - refused: the feature is not built yet, and running without it would be
//     unsafe or would silently break what the operator asked for (TLS, quota,
//     discovery, ...). Setting one to a value other than etcd's default makes
//     parseFlags fail, so cairn refuses to start instead.
//
// Sources, highest precedence first: command line, CAIRN_<FLAG>, ETCD_<FLAG>
// (FLAG upper-cased, dashes as underscores). With --config-file (or
// CAIRN_CONFIG_FILE / ETCD_CONFIG_FILE) the YAML file is the only source, as
// in etcd, and other flags and environment variables are ignored with a
// warning.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/failpoint"
)

// errUnsupported marks a setting that asks for a feature this build of cairn
// does not have yet. Test with errors.Is.
var errUnsupported = errors.New("not supported yet by this build of cairn")

// errUnsetAdvertiseClientURLs is etcd's error (embed.ErrUnsetAdvertiseClientURLsFlag),
// byte for byte, for a listen URL set without the URL to advertise.
var errUnsetAdvertiseClientURLs = errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")

// maxElectionMs is etcd's upper bound on --election-timeout (embed.maxElectionMs).
const maxElectionMs = 50000

// envPrefixes are the environment variable prefixes that mirror flags, in
// precedence order.
var envPrefixes = []string{"CAIRN_", "ETCD_"}

// parseFlags turns cairn's command line and environment into a validated
// server configuration.
//
// warnings are messages for the operator (flags that have no effect,
// ignored environment variables); the caller logs them. done is true when
// --help or --version printed their output to stdout and cairn should exit 0.
func parseFlags(args []string, environ []string, stdout io.Writer) (cfg config.Server, warnings []string, done bool, err error) {
	p := newFlagParser()
	if err := p.fs.Parse(normalizeArgs(p.fs, args)); err != nil {
		return cfg, nil, false, fmt.Errorf("%w (run cairn --help)", err)
	}
	if extra := p.fs.Args(); len(extra) > 0 {
		return cfg, nil, false, fmt.Errorf("%q is not a valid flag (run cairn --help)", extra[0])
	}
	if p.help {
		writeHelp(stdout)
		return cfg, nil, true, nil
	}
	if p.version {
		writeVersion(stdout)
		return cfg, nil, true, nil
	}

	env, envWarnings := parseEnviron(p.fs, environ)
	warnings = append(warnings, envWarnings...)

	configFile, configKey := p.fs.Lookup("config-file").Value.String(), ""
	if configFile == "" {
		configFile, configKey = env.lookup("config-file")
	}
	if configFile != "" {
		ignored := p.changedExcept("config-file")
		for _, k := range env.keys {
			if k != configKey {
				ignored = append(ignored, k)
			}
		}
		if len(ignored) > 0 {
			warnings = append(warnings, fmt.Sprintf(
				"configuration loaded from %s; as in etcd, other command-line flags and environment variables are ignored: %s",
				configFile, strings.Join(ignored, ", ")))
		}
		fp := newFlagParser()
		fileWarnings, err := fp.loadConfigFile(configFile)
		warnings = append(warnings, fileWarnings...)
		if err != nil {
			return cfg, warnings, false, err
		}
		cfg, buildWarnings, err := fp.build(true)
		return cfg, append(warnings, buildWarnings...), false, err
	}

	envSetWarnings, err := p.applyEnv(env)
	warnings = append(warnings, envSetWarnings...)
	if err != nil {
		return cfg, warnings, false, err
	}
	cfg, buildWarnings, err := p.build(false)
	return cfg, append(warnings, buildWarnings...), false, err
}

// flagParser is one parse: a fresh flag set with etcd's defaults, plus where
// each set value came from.
type flagParser struct {
	fs *pflag.FlagSet
	// origin names the source of a flag's value when it was not the command
	// line, e.g. `environment variable CAIRN_DATA_DIR`; messages cite it.
	origin map[string]string
	// fileRefusals are config-file entries that map to no single flag but ask
	// for a feature this build lacks (discovery-config, some TLS keys).
	fileRefusals []error
	help         bool
	version      bool
}

func newFlagParser() *flagParser {
	p := &flagParser{
		fs:     pflag.NewFlagSet("cairn", pflag.ContinueOnError),
		origin: map[string]string{},
	}
	p.fs.SetOutput(io.Discard) // errors are returned, help is ours
	p.fs.Usage = func() {}
	p.fs.SortFlags = false
	for _, s := range flagSpecs {
		f := p.fs.VarPF(s.value(), s.name, "", s.help)
		switch f.Value.(type) {
		case *boolValue, *ignoredValue:
			f.NoOptDefVal = "true" // --flag alone means --flag=true, as with Go's flag package
		}
	}
	p.fs.BoolVarP(&p.help, "help", "h", false, "Show the help.")
	p.fs.BoolVar(&p.version, "version", false, "Print the version and exit.")
	return p
}

// normalizeArgs rewrites etcd's single-dash long flags (-name x, which Go's
// flag package accepts) to pflag's --name x. Values are never rewritten.
func normalizeArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f != nil && !strings.HasPrefix(a, "--") {
			a = "-" + a
		}
		out = append(out, a)
		if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			out = append(out, args[i]) // the flag's value, kept verbatim
		}
	}
	return out
}

// changedExcept lists the flags set so far (as --name), except the given ones.
func (p *flagParser) changedExcept(except ...string) []string {
	var out []string
	p.fs.Visit(func(f *pflag.Flag) {
		if !slices.Contains(except, f.Name) {
			out = append(out, "--"+f.Name)
		}
	})
	return out
}

// mirrored reports whether a flag has CAIRN_/ETCD_ environment forms.
func mirrored(name string) bool { return name != "help" && name != "version" }

// environment holds the CAIRN_* and ETCD_* variables that name a flag.
type environment struct {
	vars map[string]string // key -> value, non-empty values only
	keys []string          // keys in environ order
}

func envKey(prefix, flag string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// parseEnviron picks the variables that mirror flags out of environ and
// warns about other CAIRN_/ETCD_ variables, as etcd warns about unrecognized
// ETCD_ variables.
func parseEnviron(fs *pflag.FlagSet, environ []string) (environment, []string) {
	known := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		if mirrored(f.Name) {
			for _, prefix := range envPrefixes {
				known[envKey(prefix, f.Name)] = true
			}
		}
	})
	env := environment{vars: map[string]string{}}
	var warnings []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		var prefix string
		for _, pr := range envPrefixes {
			if strings.HasPrefix(k, pr) {
				prefix = pr
			}
		}
		if prefix == "" {
			continue
		}
		if _, dup := env.vars[k]; dup {
			continue // the first occurrence wins, as with os.Getenv
		}
		switch {
		case known[k]:
			if v != "" { // etcd ignores empty variables too
				env.vars[k] = v
				env.keys = append(env.keys, k)
			}
		case k == failpoint.EnvVar:
			// Read by package failpoint itself (test builds of the
			// robustness suite); it announces itself on stderr.
		case k == prefix+"VERSION" || k == prefix+"HELP":
			warnings = append(warnings, fmt.Sprintf("environment variable %s is ignored: --%s is a command, not a setting",
				k, strings.ToLower(strings.TrimPrefix(k, prefix))))
		default:
			warnings = append(warnings, fmt.Sprintf("unrecognized environment variable %s is ignored: cairn has no flag --%s",
				k, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, prefix), "_", "-"))))
		}
	}
	return env, warnings
}

// lookup returns the value for a flag by precedence (CAIRN_ over ETCD_) and
// the variable it came from.
func (e environment) lookup(flag string) (value, key string) {
	for _, prefix := range envPrefixes {
		k := envKey(prefix, flag)
		if v, ok := e.vars[k]; ok {
			return v, k
		}
	}
	return "", ""
}

// applyEnv sets every flag not given on the command line from its
// environment form. A variable shadowed by the command line or by a CAIRN_
// variable is reported (etcd refuses to start on the former; cairn warns).
func (p *flagParser) applyEnv(env environment) ([]string, error) {
	var warnings []string
	var err error
	p.fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || !mirrored(f.Name) {
			return
		}
		value, key := env.lookup(f.Name)
		if key == "" {
			return
		}
		for _, prefix := range envPrefixes {
			other := envKey(prefix, f.Name)
			v, set := env.vars[other]
			switch {
			case !set:
			case f.Changed:
				warnings = append(warnings, fmt.Sprintf("environment variable %s is ignored: --%s is set on the command line", other, f.Name))
			case other != key && v != value:
				warnings = append(warnings, fmt.Sprintf("environment variable %s is ignored: %s takes precedence", other, key))
			}
		}
		if f.Changed {
			return
		}
		if serr := p.fs.Set(f.Name, value); serr != nil {
			err = fmt.Errorf("environment variable %s: %w", key, serr)
			return
		}
		p.origin[f.Name] = "environment variable " + key
	})
	return warnings, err
}

// flagRef names a flag in a message, with its source unless it was the
// command line.
func (p *flagParser) flagRef(name string) string {
	if o := p.origin[name]; o != "" {
		return fmt.Sprintf("--%s (set by %s)", name, o)
	}
	return "--" + name
}

// asks reports whether a no-effect or refused flag asks for something: it
// was set, to a value other than etcd's default (or the spec's own test).
func (p *flagParser) asks(s flagSpec) bool {
	f := p.fs.Lookup(s.name)
	if !f.Changed {
		return false
	}
	if s.asks != nil {
		return s.asks(f.Value)
	}
	v := f.Value.String()
	return v != f.DefValue && !slices.Contains(s.same, v)
}

func (p *flagParser) value(name string) pflag.Value {
	f := p.fs.Lookup(name)
	if f == nil {
		panic("cairn: flag --" + name + " is not registered")
	}
	return f.Value
}

func (p *flagParser) str(name string) string    { return p.value(name).String() }
func (p *flagParser) uint(name string) uint64   { return p.value(name).(*uintValue).v }
func (p *flagParser) list(name string) []string { return slices.Clone(p.value(name).(*listValue).v) }
func (p *flagParser) changed(name string) bool  { return p.fs.Lookup(name).Changed }

// build checks the categories and maps the parsed flags into config.Server.
// fromFile selects etcd's config-file semantics, which differ in one rule
// (see errUnsetAdvertiseClientURLs).
func (p *flagParser) build(fromFile bool) (config.Server, []string, error) {
	var warnings []string
	var refusals []error
	if err := p.checkAutoCompaction(); err != nil {
		return config.Server{}, nil, err
	}
	for _, s := range flagSpecs {
		if s.kind == kindImplemented || !p.asks(s) {
			continue
		}
		switch s.kind {
		case kindNoEffect:
			warnings = append(warnings, fmt.Sprintf("flag %s has no effect in cairn: %s", p.flagRef(s.name), s.help))
		case kindRefused:
			refusals = append(refusals, fmt.Errorf("flag %s is %w: %s; refusing to start rather than run without it",
				p.flagRef(s.name), errUnsupported, s.help))
		}
	}
	gates := effectiveGates(p.value("feature-gates").(*gatesValue).set)
	for _, g := range featureGates {
		v, ok := gates[g.name]
		if !ok || v == g.def || g.implemented {
			continue
		}
		if g.refuseWhenOn && v {
			refusals = append(refusals, fmt.Errorf("flag %s: feature gate %s=true is %w: %s; refusing to start rather than run without it",
				p.flagRef("feature-gates"), g.name, errUnsupported, g.why))
			continue
		}
		warnings = append(warnings, fmt.Sprintf("flag %s: feature gate %s=%t has no effect in cairn: %s",
			p.flagRef("feature-gates"), g.name, v, g.why))
	}
	refusals = append(refusals, p.fileRefusals...)
	if len(refusals) > 0 {
		return config.Server{}, warnings, errors.Join(refusals...)
	}

	d := config.Defaults()
	cfg := d
	cfg.Name = p.str("name")
	cfg.DataDir = p.str("data-dir")
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn" // etcd: ${name}.etcd
	}
	cfg.ListenClientURLs = p.list("listen-client-urls")
	cfg.AdvertiseClientURLs = p.list("advertise-client-urls")
	if !fromFile && p.changed("listen-client-urls") && !p.changed("advertise-client-urls") {
		// Compat: etcd drops the default advertise URL once the listen URL is
		// set on the command line or in the environment, and then refuses.
		return config.Server{}, warnings, errUnsetAdvertiseClientURLs
	}
	cfg.ListenPeerURLs = p.list("listen-peer-urls")
	cfg.InitialAdvertisePeerURLs = p.list("initial-advertise-peer-urls")
	cfg.InitialCluster = p.str("initial-cluster")
	if cfg.InitialCluster == "" {
		// Compat: etcd's InitialClusterFromName, one name=url per advertised peer URL.
		parts := make([]string, len(cfg.InitialAdvertisePeerURLs))
		for i, u := range cfg.InitialAdvertisePeerURLs {
			parts[i] = cfg.Name + "=" + u
		}
		cfg.InitialCluster = strings.Join(parts, ",")
	}
	cfg.InitialClusterState = p.str("initial-cluster-state")
	cfg.InitialClusterToken = p.str("initial-cluster-token")
	cfg.SnapshotCount = p.uint("snapshot-count")
	cfg.SnapshotCatchUpEntries = p.uint("snapshot-catchup-entries")
	cfg.EnablePprof = p.value("enable-pprof").String() == "true"
	cfg.WatchProgressNotifyInterval = p.value("watch-progress-notify-interval").(*durationValue).v

	hb, el := p.uint("heartbeat-interval"), p.uint("election-timeout")
	switch {
	// Compat: etcd's checks and messages (embed.Config.Validate), in its order.
	case hb == 0:
		return config.Server{}, warnings, fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", hb)
	case el == 0:
		return config.Server{}, warnings, fmt.Errorf("--election-timeout must be >0 (set to %dms)", el)
	case hb > el/5: // 5*hb > el without overflow
		return config.Server{}, warnings, fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", el, hb)
	case el > maxElectionMs:
		return config.Server{}, warnings, fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", el, maxElectionMs)
	}
	cfg.HeartbeatInterval = time.Duration(hb) * time.Millisecond
	cfg.ElectionTimeout = time.Duration(el) * time.Millisecond

	cfg.MaxRequestBytes = uint(p.uint("max-request-bytes"))
	cfg.MaxTxnOps = uint(p.uint("max-txn-ops"))
	cfg.LogLevel = p.str("log-level")
	cfg.LogFormat = p.str("log-format")
	cfg.LogOutputs = nil
	for _, o := range p.list("log-outputs") {
		if o == "default" { // etcd: stderr, or journald under systemd
			o = strings.Join(d.LogOutputs, ",")
		}
		if !slices.Contains(cfg.LogOutputs, o) {
			cfg.LogOutputs = append(cfg.LogOutputs, o)
		}
	}
	if len(gates) > 0 {
		cfg.FeatureGates = gates
	}

	if err := cfg.Validate(); err != nil {
		return config.Server{}, warnings, err
	}
	// Compat: etcd binds only to IP addresses (or localhost) and advertises
	// only host:port URLs (embed checkBindURLs, checkHostURLs).
	for _, set := range []struct {
		flag string
		urls []string
		bind bool
	}{
		{"--listen-client-urls", cfg.ListenClientURLs, true},
		{"--listen-peer-urls", cfg.ListenPeerURLs, true},
		{"--advertise-client-urls", cfg.AdvertiseClientURLs, false},
		{"--initial-advertise-peer-urls", cfg.InitialAdvertisePeerURLs, false},
	} {
		if err := checkHostPorts(set.flag, set.urls, set.bind); err != nil {
			return config.Server{}, warnings, err
		}
	}
	return cfg, warnings, nil
}

// checkHostPorts checks that each URL has host:port; with bind, that the host
// is an IP address or localhost.
func checkHostPorts(flag string, urls []string, bind bool) error {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("%s: invalid URL %q: %w", flag, s, err)
		}
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			continue
		}
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return fmt.Errorf("%s: URL %q must be host:port: %w", flag, s, err)
		}
		switch {
		case host == "":
			return fmt.Errorf("%s: URL %q has an empty host", flag, s)
		case bind && host != "localhost" && net.ParseIP(host) == nil:
			return fmt.Errorf("%s: expected an IP address or localhost in URL %q for binding, got %q", flag, s, host)
		}
	}
	return nil
}

// checkAutoCompaction validates --auto-compaction-retention against
// --auto-compaction-mode (etcd: periodic takes hours or a duration, revision
// a revision count); a non-zero retention is then refused by its spec.
func (p *flagParser) checkAutoCompaction() error {
	v := p.str("auto-compaction-retention")
	if _, err := strconv.ParseUint(v, 10, 63); err == nil {
		return nil
	}
	if p.str("auto-compaction-mode") == "periodic" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			return nil
		}
	}
	return fmt.Errorf("invalid %s %q: with --auto-compaction-mode=%s it must be %s",
		p.flagRef("auto-compaction-retention"), v, p.str("auto-compaction-mode"),
		map[string]string{
			"periodic": `a number of hours or a duration such as "30m"`,
			"revision": "a number of revisions",
		}[p.str("auto-compaction-mode")])
}

// retentionIsZero reports whether an --auto-compaction-retention value turns
// auto compaction off ("0", "0h", "0s", ...).
func retentionIsZero(v string) bool {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n == 0
	}
	d, err := time.ParseDuration(v)
	return err == nil && d == 0
}

// configFileLegacyKeys are keys in etcd's sample config file that etcd 3.7
// silently ignores (the v2 proxy is gone); cairn warns instead of failing.
var configFileLegacyKeys = []string{
	"proxy", "proxy-failure-wait", "proxy-refresh-interval",
	"proxy-dial-timeout", "proxy-write-timeout", "proxy-read-timeout",
}

// configFileSections maps etcd's nested config-file sections to flags. An
// empty flag name means the key has no flag; setting it is refused as the
// section's feature.
var configFileSections = map[string]struct {
	keys map[string]string
	why  string // refusal text for keys without a flag
}{
	"client-transport-security": {
		keys: map[string]string{
			"cert-file": "cert-file", "key-file": "key-file",
			"client-cert-file": "client-cert-file", "client-key-file": "client-key-file",
			"client-cert-auth": "client-cert-auth", "trusted-ca-file": "trusted-ca-file",
			"auto-tls": "auto-tls", "allowed-hostname": "client-cert-allowed-hostname",
			"allowed-cn": "", "skip-client-san-verification": "",
		},
		why: whyClientTLS,
	},
	"peer-transport-security": {
		keys: map[string]string{
			"cert-file": "peer-cert-file", "key-file": "peer-key-file",
			"client-cert-file": "peer-client-cert-file", "client-key-file": "peer-client-key-file",
			"client-cert-auth": "peer-client-cert-auth", "trusted-ca-file": "peer-trusted-ca-file",
			"auto-tls": "peer-auto-tls", "allowed-cn": "peer-cert-allowed-cn",
			"allowed-hostname":             "peer-cert-allowed-hostname",
			"skip-client-san-verification": "peer-skip-client-san-verification",
		},
		why: whyPeerTLS,
	},
	"socket-options": {
		keys: map[string]string{"reuse-port": "socket-reuse-port", "reuse-address": "socket-reuse-address"},
	},
}

// loadConfigFile sets flags from an etcd-style YAML config file: keys are
// flag names; URL lists are comma-separated strings (YAML lists work too);
// durations are integer nanoseconds as in etcd, or strings such as "10m";
// TLS settings may be nested under client-transport-security and
// peer-transport-security as in etcd. Unknown keys are an error.
func (p *flagParser) loadConfigFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config-file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil // empty file: every default
	}
	root := resolveAlias(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: expected a mapping of flag names to values", path)
	}
	var warnings []string
	var problems []string
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i].Value, resolveAlias(root.Content[i+1])
		if seen[key] {
			problems = append(problems, fmt.Sprintf("key %q appears more than once", key))
			continue
		}
		seen[key] = true
		if section, ok := configFileSections[key]; ok {
			problems = append(problems, p.loadSection(key, val, section.keys, section.why)...)
			continue
		}
		switch {
		case key == "discovery-config":
			if !nodeIsEmpty(val) {
				p.fileRefusals = append(p.fileRefusals, fmt.Errorf("config file key %q is %w: %s; refusing to start rather than run without it",
					key, errUnsupported, whyDiscovery))
			}
			continue
		case slices.Contains(configFileLegacyKeys, key):
			if !nodeIsEmpty(val) && val.Value != "off" {
				warnings = append(warnings, fmt.Sprintf("config file key %q has no effect in cairn: the v2 proxy was removed from etcd, which ignores it too", key))
			}
			continue
		case key == "config-file" || !mirrored(key):
			problems = append(problems, fmt.Sprintf("key %q cannot be set in a config file", key))
			continue
		case p.fs.Lookup(key) == nil:
			problems = append(problems, fmt.Sprintf("unknown key %q (keys are etcd's flag names, such as data-dir)", key))
			continue
		}
		if err := p.setFromNode(key, key, val); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return warnings, fmt.Errorf("config file %s: %s", path, strings.Join(problems, "; "))
	}
	return warnings, nil
}

// loadSection sets the flags behind one nested config-file section.
func (p *flagParser) loadSection(section string, val *yaml.Node, keys map[string]string, why string) []string {
	if nodeIsEmpty(val) {
		return nil
	}
	if val.Kind != yaml.MappingNode {
		return []string{fmt.Sprintf("key %q must be a mapping", section)}
	}
	var problems []string
	for i := 0; i+1 < len(val.Content); i += 2 {
		sub, v := val.Content[i].Value, resolveAlias(val.Content[i+1])
		full := section + "." + sub
		name, ok := keys[sub]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("unknown key %q", full))
		case name == "":
			if !nodeIsEmpty(v) {
				p.fileRefusals = append(p.fileRefusals, fmt.Errorf("config file key %q is %w: %s; refusing to start rather than run without it",
					full, errUnsupported, why))
			}
		default:
			if err := p.setFromNode(name, full, v); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	return problems
}

// setFromNode sets flag name from a YAML value found under key.
func (p *flagParser) setFromNode(name, key string, n *yaml.Node) error {
	f := p.fs.Lookup(name)
	var s string
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil // "key:" with no value leaves the default, as in etcd
		}
		s = n.Value
		if _, ok := f.Value.(*enumValue); ok && s == "" {
			return nil // etcd: an empty initial-cluster-state means "new"
		}
		if _, ok := f.Value.(*durationValue); ok && n.Tag == "!!int" {
			// Compat: etcd's config file takes durations as integer nanoseconds.
			ns, err := strconv.ParseInt(n.Value, 0, 64)
			if err != nil {
				return fmt.Errorf("key %q: invalid duration %q: %w", key, n.Value, err)
			}
			s = time.Duration(ns).String()
		}
	case yaml.SequenceNode:
		if _, ok := f.Value.(*listValue); !ok {
			return fmt.Errorf("key %q takes a single value, not a list", key)
		}
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			item = resolveAlias(item)
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("key %q: list items must be plain values", key)
			}
			items = append(items, item.Value)
		}
		s = strings.Join(items, ",")
	default:
		return fmt.Errorf("key %q takes a value, not a mapping", key)
	}
	if err := p.fs.Set(name, s); err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	p.origin[name] = fmt.Sprintf("config file key %q", key)
	return nil
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// nodeIsEmpty reports whether a YAML value sets nothing: null, "", false, or
// collections of those.
func nodeIsEmpty(n *yaml.Node) bool {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Tag == "!!null" || n.Value == "" || n.Tag == "!!bool" && n.Value == "false"
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if !nodeIsEmpty(c) {
				return false
			}
		}
		return true
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			if !nodeIsEmpty(n.Content[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// gateSpec is one etcd server feature gate (server/features/etcd_features.go)
// and what cairn does with it.
type gateSpec struct {
	name  string
	def   bool
	alpha bool // else beta
	// refuseWhenOn: the gate enables a protection cairn has not built;
	// enabling it makes cairn refuse to start.
	refuseWhenOn bool
	// implemented: cairn does what the gate says (config.Server reads it
	// from FeatureGates); setting it logs no warning, and why says what
	// it does.
	implemented bool
	why         string
}

// featureGates are etcd v3.7's server feature gates, in etcd's order.
var featureGates = []gateSpec{
	{name: "StopGRPCServiceOnDefrag", alpha: true,
		why: "defragmentation in cairn is an online Pebble compaction; serving never stops"},
	{name: "TxnModeWriteWithSharedBuffer", def: true,
		why: "it tunes bbolt's read buffer; cairn stores data in Pebble"},
	{name: "InitialCorruptCheck", alpha: true, refuseWhenOn: true,
		why: "the corruption check at startup is not built yet"},
	{name: "CompactHashCheck", alpha: true, refuseWhenOn: true,
		why: "the leader's periodic check of followers' compaction hashes is not built yet"},
	{name: "LeaseCheckpoint", alpha: true,
		why: "cairn always checkpoints remaining lease TTLs through raft"},
	{name: "LeaseCheckpointPersist", alpha: true,
		why: "cairn always persists lease TTL checkpoints"},
	{name: "SetMemberLocalAddr", alpha: true, implemented: true,
		why: "when true, peer connections are dialed from the host of the first --initial-advertise-peer-urls entry that is an IP address; unlike etcd, a loopback IP counts (so that members on 127.0.0.x can be told apart)"},
	{name: "FastLeaseKeepAlive", def: true,
		why: "lease keep-alive is not configurable in this build"},
	{name: "PriorityRequest", alpha: true,
		why: "request priorities under overload are not configurable in this build"},
}

// Special gates of etcd's featuregate package that set every alpha or beta gate.
const (
	gateAllAlpha = "AllAlpha"
	gateAllBeta  = "AllBeta"
)

func knownGate(name string) bool {
	if name == gateAllAlpha || name == gateAllBeta {
		return true
	}
	return slices.ContainsFunc(featureGates, func(g gateSpec) bool { return g.name == name })
}

// effectiveGates expands AllAlpha/AllBeta: the result holds every gate the
// operator set, directly or through them. A gate's own setting wins over
// AllAlpha/AllBeta, as in etcd. nil when nothing was set.
func effectiveGates(set map[string]bool) map[string]bool {
	var out map[string]bool
	for _, g := range featureGates {
		v, ok := set[g.name]
		if !ok {
			all := gateAllBeta
			if g.alpha {
				all = gateAllAlpha
			}
			v, ok = set[all]
		}
		if ok {
			if out == nil {
				out = map[string]bool{}
			}
			out[g.name] = v
		}
	}
	return out
}

// Flag values. Each Set validates and each String is canonical, so a value
// differs from its default exactly when String differs from Flag.DefValue.

type stringValue struct{ v string }

func (s *stringValue) Set(x string) error { s.v = x; return nil }
func (s *stringValue) String() string     { return s.v }
func (s *stringValue) Type() string       { return "string" }

// enumValue is a string restricted to a set of values.
type enumValue struct {
	v       string
	allowed []string
}

func (e *enumValue) Set(x string) error {
	if !slices.Contains(e.allowed, x) {
		quoted := make([]string, len(e.allowed))
		for i, a := range e.allowed {
			quoted[i] = strconv.Quote(a)
		}
		return fmt.Errorf("must be one of %s", strings.Join(quoted, ", "))
	}
	e.v = x
	return nil
}
func (e *enumValue) String() string { return e.v }
func (e *enumValue) Type() string   { return "string" }

type boolValue struct{ v bool }

func (b *boolValue) Set(x string) error {
	v, err := strconv.ParseBool(x)
	if err != nil {
		return errors.New("must be true or false")
	}
	b.v = v
	return nil
}
func (b *boolValue) String() string { return strconv.FormatBool(b.v) }
func (b *boolValue) Type() string   { return "bool" }

type uintValue struct {
	v    uint64
	bits int
}

func (u *uintValue) Set(x string) error {
	v, err := strconv.ParseUint(x, 0, u.bits)
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("out of range (at most %d)", uint64(1)<<u.bits-1)
	}
	if err != nil {
		return errors.New("must be a non-negative integer")
	}
	u.v = v
	return nil
}
func (u *uintValue) String() string { return strconv.FormatUint(u.v, 10) }
func (u *uintValue) Type() string   { return "uint" }

type intValue struct {
	v    int64
	bits int
}

func (n *intValue) Set(x string) error {
	v, err := strconv.ParseInt(x, 0, n.bits)
	if errors.Is(err, strconv.ErrRange) {
		return errors.New("out of range")
	}
	if err != nil {
		return errors.New("must be an integer")
	}
	n.v = v
	return nil
}
func (n *intValue) String() string { return strconv.FormatInt(n.v, 10) }
func (n *intValue) Type() string   { return "int" }

type durationValue struct{ v time.Duration }

func (d *durationValue) Set(x string) error {
	v, err := time.ParseDuration(x)
	if err != nil {
		return errors.New(`must be a duration such as "500ms" or "5m"`)
	}
	d.v = v
	return nil
}
func (d *durationValue) String() string { return d.v.String() }
func (d *durationValue) Type() string   { return "duration" }

// listValue is a comma-separated list; like etcd's list flags, a later Set
// replaces the list, blanks are dropped and duplicates removed.
type listValue struct{ v []string }

func (l *listValue) Set(x string) error {
	l.v = nil
	for _, s := range strings.Split(x, ",") {
		s = strings.TrimSpace(s)
		if s != "" && !slices.Contains(l.v, s) {
			l.v = append(l.v, s)
		}
	}
	return nil
}
func (l *listValue) String() string { return strings.Join(l.v, ",") }
func (l *listValue) Type() string   { return "strings" }

// ignoredValue is etcd's IgnoredFlag: a v2-era flag etcd accepts and ignores.
type ignoredValue struct{ v string }

func (g *ignoredValue) Set(x string) error { g.v = x; return nil }
func (g *ignoredValue) String() string     { return g.v }
func (g *ignoredValue) Type() string       { return "ignored" }

// gatesValue is --feature-gates: "Gate=true,Gate2=false". Like etcd's, a
// later Set adds to the earlier ones.
type gatesValue struct{ set map[string]bool }

func (g *gatesValue) Set(x string) error {
	add := map[string]bool{}
	for _, kv := range strings.Split(x, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok {
			return fmt.Errorf("missing bool value for %s (want %s=true or %s=false)", k, k, k)
		}
		if !knownGate(k) {
			return fmt.Errorf("unrecognized feature gate %q (known gates: %s)", k, strings.Join(gateNames(), ", "))
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid value of %s=%s: must be true or false", k, v)
		}
		add[k] = b
	}
	if g.set == nil {
		g.set = map[string]bool{}
	}
	for k, v := range add {
		g.set[k] = v
	}
	return nil
}

func (g *gatesValue) String() string {
	keys := make([]string, 0, len(g.set))
	for k := range g.set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + strconv.FormatBool(g.set[k])
	}
	return strings.Join(keys, ",")
}
func (g *gatesValue) Type() string { return "mapStringBool" }

func gateNames() []string {
	names := []string{gateAllAlpha, gateAllBeta}
	for _, g := range featureGates {
		names = append(names, g.name)
	}
	return names
}
