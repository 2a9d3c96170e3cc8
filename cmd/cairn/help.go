package main

// The flag table (every etcd v3.7 server flag, by category) and the --help
// and --version output generated from it.

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairnkv/cairn/internal/config"
)

// flagKind is what cairn does with a flag.
type flagKind uint8

const (
	// kindImplemented flags are mapped into config.Server.
	kindImplemented flagKind = iota
	// kindNoEffect flags are accepted; set to a value other than etcd's
	// default they produce a warning ("flag --x has no effect in cairn: why").
	kindNoEffect
	// kindRefused flags ask for a feature not built yet whose absence would be
	// unsafe or would silently break what was asked; set to a value other than
	// etcd's default they make parseFlags fail.
	kindRefused
)

// flagSpec is one etcd server flag.
type flagSpec struct {
	name  string
	value func() pflag.Value // a fresh value holding etcd's default
	kind  flagKind
	// group is the --help section of an implemented flag (etcd's grouping).
	group string
	// help is the usage text of an implemented flag; for the others, why it
	// has no effect or what is missing, completing "has no effect in cairn: "
	// or "is not supported yet by this build of cairn: ".
	help string
	// helpDefault replaces the value's default in --help.
	helpDefault string
	// same lists values that behave as the default (etcd's flag default is
	// 0 for some settings whose effective default is a number).
	same []string
	// asks, when set, decides whether a set value asks for anything;
	// otherwise any value other than the default does.
	asks func(pflag.Value) bool
}

// Shared reasons, also used for config-file keys that have no flag.
const (
	whyClientTLS = "client TLS is not built yet, so cairn would serve clients in plaintext"
	whyPeerTLS   = "peer TLS is not built yet, so cairn would talk to its peers in plaintext"
	whyDiscovery = "cluster discovery is not built yet; list the members with --initial-cluster"
)

func strV(def string) func() pflag.Value { return func() pflag.Value { return &stringValue{v: def} } }
func boolV(def bool) func() pflag.Value  { return func() pflag.Value { return &boolValue{v: def} } }
func uintV(def uint64, bits int) func() pflag.Value {
	return func() pflag.Value { return &uintValue{v: def, bits: bits} }
}
func intV(def int64, bits int) func() pflag.Value {
	return func() pflag.Value { return &intValue{v: def, bits: bits} }
}
func durV(def time.Duration) func() pflag.Value {
	return func() pflag.Value { return &durationValue{v: def} }
}
func listV(def ...string) func() pflag.Value {
	return func() pflag.Value { return &listValue{v: slices.Clone(def)} }
}
func enumV(def string, allowed ...string) func() pflag.Value {
	return func() pflag.Value { return &enumValue{v: def, allowed: allowed} }
}
func ignoredV() pflag.Value { return &ignoredValue{} }
func gatesV() pflag.Value   { return &gatesValue{} }

// allowsAll reports whether a --cors or --host-whitelist value allows every
// origin or host (etcd: empty or "*"), which is what cairn does.
func allowsAll(v pflag.Value) bool {
	l := v.(*listValue).v
	return len(l) == 0 || slices.Contains(l, "*")
}

// flagSpecs lists every etcd v3.7 server flag (etcd's server/etcdmain/help.go
// and embed/config.go), with etcd's defaults, in etcd's help order.
var flagSpecs = buildFlagSpecs(config.Defaults())

func buildFlagSpecs(d config.Server) []flagSpec {
	const (
		member     = "Member"
		clustering = "Clustering"
		logging    = "Logging"
	)
	ms := func(t time.Duration) uint64 { return uint64(t / time.Millisecond) }
	notConfigurable := "not configurable in this build"
	specs := []flagSpec{
		// Member.
		{name: "name", value: strV(d.Name), group: member,
			help: "Human-readable name for this member."},
		{name: "data-dir", value: strV(""), group: member, helpDefault: "${name}.cairn",
			help: "Path to the data directory (cairn's Pebble database). etcd's default is ${name}.etcd; cairn's differs so the two never share a directory."},
		{name: "wal-dir", value: strV(""), kind: kindNoEffect,
			help: "cairn keeps the raft log in its Pebble database under --data-dir; there is no separate WAL directory"},
		{name: "snapshot-count", value: uintV(d.SnapshotCount, 64), group: member,
			help: "Number of applied requests after which the raft log is truncated behind a snapshot (etcd's unit: one request per entry; cairn merges concurrent requests into one entry and still counts requests)."},
		{name: "snapshot-catchup-entries", value: uintV(d.SnapshotCatchUpEntries, 64), group: member,
			help: "Number of requests kept in the raft log after it is truncated, so slow followers catch up without a snapshot."},
		{name: "heartbeat-interval", value: uintV(ms(d.HeartbeatInterval), 64), group: member,
			help: "Time (in milliseconds) of a heartbeat interval."},
		{name: "election-timeout", value: uintV(ms(d.ElectionTimeout), 64), group: member,
			help: "Time (in milliseconds) for an election to timeout: at least 5 times --heartbeat-interval, at most " + strconv.Itoa(maxElectionMs) + "."},
		{name: "initial-election-tick-advance", value: boolV(true), kind: kindNoEffect,
			help: "fast-forwarding election ticks at boot is " + notConfigurable},
		{name: "listen-peer-urls", value: listV(d.ListenPeerURLs...), group: member,
			help: "List of URLs to listen on for peer traffic."},
		{name: "listen-client-urls", value: listV(d.ListenClientURLs...), group: member,
			help: "List of URLs to listen on for client gRPC and HTTP traffic. Setting it requires --advertise-client-urls, as in etcd."},
		{name: "listen-client-http-urls", value: listV(), kind: kindRefused,
			help: "separate HTTP-only client listeners are not built yet, so cairn would not listen on these URLs"},
		{name: "max-snapshots", value: uintV(5, strconv.IntSize), kind: kindNoEffect,
			help: "cairn keeps no snapshot files (raft snapshots are Pebble snapshots streamed on demand); deprecated in etcd 3.6"},
		{name: "max-wals", value: uintV(5, strconv.IntSize), kind: kindNoEffect,
			help: "cairn keeps no WAL files; the raft log lives in Pebble and is truncated after --snapshot-count entries"},
		{name: "memory-mlock", value: boolV(false), kind: kindNoEffect,
			help: "cairn does not mmap its database as bbolt does, so there are no pages to lock in RAM"},
		{name: "quota-backend-bytes", value: intV(0, 64), kind: kindRefused,
			asks: func(v pflag.Value) bool { return v.(*intValue).v > 0 }, // etcd: <0 disables the quota
			help: "backend quota enforcement (the NOSPACE alarm at the quota) is not built yet, so the database could outgrow the quota unnoticed"},
		{name: "backend-bbolt-freelist-type", value: enumV("map", "map", "array"), kind: kindNoEffect,
			help: "cairn stores data in Pebble, not bbolt"},
		{name: "backend-batch-interval", value: durV(0), kind: kindNoEffect,
			help: "cairn commits one Pebble batch per raft Ready rather than batching backend transactions by time"},
		{name: "backend-batch-limit", value: intV(0, strconv.IntSize), kind: kindNoEffect,
			help: "cairn commits one Pebble batch per raft Ready rather than batching backend transactions by count"},
		{name: "max-txn-ops", value: uintV(uint64(d.MaxTxnOps), strconv.IntSize), group: member,
			help: "Maximum number of operations permitted in a transaction."},
		{name: "max-request-bytes", value: uintV(uint64(d.MaxRequestBytes), strconv.IntSize), group: member,
			help: "Maximum client request size in bytes the server will accept."},
		{name: "max-concurrent-streams", value: uintV(math.MaxUint32, 32), kind: kindNoEffect,
			help: "the gRPC stream limit is " + notConfigurable},
		{name: "grpc-keepalive-min-time", value: durV(5 * time.Second), kind: kindNoEffect,
			help: "gRPC keepalive is " + notConfigurable},
		{name: "grpc-keepalive-interval", value: durV(2 * time.Hour), kind: kindNoEffect,
			help: "gRPC keepalive is " + notConfigurable},
		{name: "grpc-keepalive-timeout", value: durV(20 * time.Second), kind: kindNoEffect,
			help: "gRPC keepalive is " + notConfigurable},
		{name: "socket-reuse-port", value: boolV(false), kind: kindNoEffect,
			help: "SO_REUSEPORT on listeners is " + notConfigurable},
		{name: "socket-reuse-address", value: boolV(false), kind: kindNoEffect,
			help: "Go already sets SO_REUSEADDR on listening sockets"},
		{name: "enable-grpc-gateway", value: boolV(true), kind: kindNoEffect,
			help: "the JSON gateway at /v3/ cannot be turned off in this build"},
		{name: "raft-read-timeout", value: durV(5 * time.Second), kind: kindNoEffect,
			help: "cairn's peer transport is gRPC streams, not etcd's rafthttp connections"},
		{name: "raft-write-timeout", value: durV(5 * time.Second), kind: kindNoEffect,
			help: "cairn's peer transport is gRPC streams, not etcd's rafthttp connections"},
		{name: "feature-gates", value: gatesV, group: member,
			help: "Comma-separated Gate=true|false pairs: etcd's server feature gates. AllAlpha and AllBeta set every alpha or beta gate. cairn accepts:"},

		// Clustering.
		{name: "initial-advertise-peer-urls", value: listV(d.InitialAdvertisePeerURLs...), group: clustering,
			help: "List of this member's peer URLs to advertise to the rest of the cluster."},
		{name: "initial-cluster", value: strV(""), group: clustering, helpDefault: d.InitialCluster,
			help: "Initial cluster configuration for bootstrapping: name=peerURL,... When unset, ${name}=URL for each of --initial-advertise-peer-urls, as in etcd."},
		{name: "initial-cluster-state", value: enumV(d.InitialClusterState, "new", "existing"), group: clustering,
			help: "Initial cluster state ('new' when bootstrapping a new cluster or 'existing' when adding new members to an existing cluster). After successful initialization, the flag is ignored on restarts."},
		{name: "initial-cluster-token", value: strV(d.InitialClusterToken), group: clustering,
			help: "Initial cluster token for the cluster during bootstrap. Specifying this protects you from unintended cross-cluster interaction when running multiple clusters."},
		{name: "advertise-client-urls", value: listV(d.AdvertiseClientURLs...), group: clustering,
			help: "List of this member's client URLs to advertise to the public. Clients parse these URLs to connect to the cluster."},
		{name: "discovery", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-token", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-endpoints", value: listV(), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-dial-timeout", value: durV(2 * time.Second), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-request-timeout", value: durV(5 * time.Second), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-keepalive-time", value: durV(2 * time.Second), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-keepalive-timeout", value: durV(6 * time.Second), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-insecure-transport", value: boolV(true), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-insecure-skip-tls-verify", value: boolV(false), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-cert", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-key", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-cacert", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-user", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-password", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-fallback", value: enumV("exit", "exit", "proxy"), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-proxy", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-srv", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "discovery-srv-name", value: strV(""), kind: kindRefused, help: whyDiscovery},
		{name: "strict-reconfig-check", value: boolV(true), kind: kindNoEffect,
			help: "the quorum check on membership changes is " + notConfigurable},
		{name: "pre-vote", value: boolV(true), kind: kindNoEffect,
			help: "cairn always runs raft with PreVote and CheckQuorum"},
		{name: "auto-compaction-retention", value: strV("0"), kind: kindRefused,
			asks: func(v pflag.Value) bool { return !retentionIsZero(v.String()) },
			help: "auto compaction is not built yet, so old revisions would pile up unnoticed; compact with cairnctl compaction"},
		{name: "auto-compaction-mode", value: enumV("periodic", "periodic", "revision"), kind: kindNoEffect,
			help: "auto compaction is not built yet (see --auto-compaction-retention)"},
		{name: "v2-deprecation", value: enumV("write-only", "write-only", "write-only-skip-check", "write-only-drop-data", "gone"), kind: kindNoEffect,
			help: "cairn has no v2 store; etcd 3.7 ignores this flag too"},

		// Security.
		{name: "cert-file", value: strV(""), kind: kindRefused, help: whyClientTLS},
		{name: "key-file", value: strV(""), kind: kindRefused, help: whyClientTLS},
		{name: "client-cert-auth", value: boolV(false), kind: kindRefused, help: whyClientTLS},
		{name: "client-cert-file", value: strV(""), kind: kindRefused, help: whyClientTLS},
		{name: "client-key-file", value: strV(""), kind: kindRefused, help: whyClientTLS},
		{name: "client-crl-file", value: strV(""), kind: kindRefused, help: whyClientTLS},
		{name: "client-cert-allowed-hostname", value: listV(), kind: kindRefused, help: whyClientTLS},
		{name: "trusted-ca-file", value: strV(""), kind: kindRefused, help: whyClientTLS},
		{name: "auto-tls", value: boolV(false), kind: kindRefused, help: whyClientTLS},
		{name: "peer-cert-file", value: strV(""), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-key-file", value: strV(""), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-client-cert-auth", value: boolV(false), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-client-cert-file", value: strV(""), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-client-key-file", value: strV(""), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-trusted-ca-file", value: strV(""), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-cert-allowed-cn", value: listV(), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-cert-allowed-hostname", value: listV(), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-auto-tls", value: boolV(false), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-crl-file", value: strV(""), kind: kindRefused, help: whyPeerTLS},
		{name: "peer-skip-client-san-verification", value: boolV(false), kind: kindRefused, help: whyPeerTLS},
		{name: "self-signed-cert-validity", value: uintV(1, strconv.IntSize), kind: kindRefused,
			help: "TLS is not built yet, so cairn would serve in plaintext"},
		{name: "cipher-suites", value: listV(), kind: kindRefused,
			help: "TLS is not built yet, so cairn would serve in plaintext"},
		{name: "tls-min-version", value: enumV("TLS1.2", "TLS1.2", "TLS1.3"), kind: kindRefused,
			help: "TLS is not built yet, so cairn would serve in plaintext"},
		{name: "tls-max-version", value: enumV("", "", "TLS1.2", "TLS1.3"), kind: kindRefused,
			help: "TLS is not built yet, so cairn would serve in plaintext"},
		{name: "cors", value: listV("*"), kind: kindRefused,
			asks: func(v pflag.Value) bool { return !allowsAll(v) },
			help: "restricting CORS origins is not built yet, so the restriction would not be enforced"},
		{name: "host-whitelist", value: listV("*"), kind: kindRefused,
			asks: func(v pflag.Value) bool { return !allowsAll(v) },
			help: "checking HTTP Host headers (etcd's DNS-rebinding defence) is not built yet, so the restriction would not be enforced"},

		// Auth.
		{name: "auth-token", value: strV("simple"), kind: kindNoEffect,
			help: "the auth token provider is " + notConfigurable},
		{name: "bcrypt-cost", value: uintV(10, strconv.IntSize), kind: kindNoEffect,
			help: "the bcrypt cost is " + notConfigurable},
		{name: "auth-token-ttl", value: uintV(300, strconv.IntSize), kind: kindNoEffect,
			help: "the auth token TTL is " + notConfigurable},

		// Profiling and monitoring.
		{name: "enable-pprof", value: boolV(false), group: logging,
			help: "Enable runtime profiling data via HTTP server. Address is at client URL + \"/debug/pprof/\"."},
		{name: "metrics", value: enumV("basic", "basic", "extensive"), kind: kindNoEffect,
			help: "the level of metrics detail is " + notConfigurable},
		{name: "listen-metrics-urls", value: listV(), kind: kindRefused,
			help: "separate metrics and health listeners are not built yet, so cairn would not listen on these URLs and probes against them would fail"},

		// Logging.
		{name: "logger", value: enumV("zap", "zap"), group: logging,
			help: "Only 'zap', as in etcd."},
		{name: "log-outputs", value: listV("default"), group: logging,
			help: "'stdout', 'stderr' or file paths, comma-separated. 'default' means stderr."},
		{name: "log-level", value: enumV(d.LogLevel, "debug", "info", "warn", "error", "panic", "fatal"), group: logging,
			help: "Configures log level. Only supports debug, info, warn, error, panic, or fatal."},
		{name: "log-format", value: enumV(d.LogFormat, "json", "console"), group: logging,
			help: "Configures log format. Only supports json, console."},
		{name: "enable-log-rotation", value: boolV(false), kind: kindRefused,
			help: "log rotation is not built yet, so the log file would grow without bound"},
		{name: "log-rotation-config-json", value: strV(`{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`), kind: kindNoEffect,
			help: "log rotation is not built yet (see --enable-log-rotation)"},
		{name: "warning-unary-request-duration", value: durV(300 * time.Millisecond), kind: kindNoEffect,
			help: "slow-request warning thresholds are " + notConfigurable},

		// Distributed tracing.
		{name: "enable-distributed-tracing", value: boolV(false), kind: kindNoEffect,
			help: "distributed tracing is not built yet"},
		{name: "distributed-tracing-address", value: strV("localhost:4317"), kind: kindNoEffect,
			help: "distributed tracing is not built yet"},
		{name: "distributed-tracing-service-name", value: strV("etcd"), kind: kindNoEffect,
			help: "distributed tracing is not built yet"},
		{name: "distributed-tracing-instance-id", value: strV(""), kind: kindNoEffect,
			help: "distributed tracing is not built yet"},
		{name: "distributed-tracing-sampling-rate", value: intV(0, strconv.IntSize), kind: kindNoEffect,
			help: "distributed tracing is not built yet"},

		// Features.
		{name: "corrupt-check-time", value: durV(0), kind: kindRefused,
			help: "periodic corruption checks between members are not built yet"},
		{name: "compact-hash-check-time", value: durV(time.Minute), kind: kindNoEffect,
			help: "compaction hash checks (feature gate CompactHashCheck) are not built yet"},
		{name: "compaction-batch-limit", value: intV(0, strconv.IntSize), same: []string{"1000"}, kind: kindNoEffect,
			help: "cairn's MVCC compaction sizes its own bounded batches"},
		{name: "compaction-sleep-interval", value: durV(0), same: []string{"10ms"}, kind: kindNoEffect,
			help: "cairn's MVCC compaction paces its own bounded batches"},
		{name: "watch-progress-notify-interval", value: durV(d.WatchProgressNotifyInterval), group: member,
			help: "Duration of periodic watch progress notifications."},
		{name: "warning-apply-duration", value: durV(100 * time.Millisecond), kind: kindNoEffect,
			help: "slow-apply warning thresholds are " + notConfigurable},
		{name: "bootstrap-defrag-threshold-megabytes", value: uintV(0, strconv.IntSize), kind: kindNoEffect,
			help: "cairn never needs defragmentation: Pebble reclaims space online"},
		{name: "max-learners", value: intV(1, strconv.IntSize), kind: kindNoEffect,
			help: "the learner limit is " + notConfigurable},
		{name: "downgrade-check-time", value: durV(5 * time.Second), kind: kindNoEffect,
			help: "cluster downgrades are not built yet"},

		// Unsafe features.
		{name: "force-new-cluster", value: boolV(false), kind: kindRefused,
			help: "forcing a new one-member cluster out of existing data is not built yet"},
		{name: "unsafe-no-fsync", value: boolV(false), kind: kindNoEffect,
			help: "cairn always fsyncs the raft log before acknowledging a write"},

		{name: "config-file", value: strV(""), group: "Configuration",
			help: "Path to a YAML configuration file whose keys are the flag names above, as etcd's. When given, other flags and environment variables are ignored."},
	}
	// v2-era flags that etcd 3.7 still accepts and ignores (etcdmain.ignored).
	for _, name := range []string{
		"cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
		"max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
		"retry-interval", "snapshot", "v", "vv",
	} {
		specs = append(specs, flagSpec{name: name, value: ignoredV, kind: kindNoEffect,
			help: "a v2-era flag that etcd 3.7 ignores too"})
	}
	return specs
}

// writeVersion prints --version: cairn's version and the etcd API version it
// reports to clients.
func writeVersion(w io.Writer) {
	fmt.Fprintf(w, "cairn Version: %s\n", config.CairnVersion)
	fmt.Fprintf(w, "etcd Version: %s\n", config.EtcdVersion)
	fmt.Fprintf(w, "Go Version: %s\n", runtime.Version())
	fmt.Fprintf(w, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
}

const helpUsage = `Usage:

  cairn [flags]
    Start a cairn server: an etcd v3 compatible, strongly consistent
    key-value store.
    Flags have etcd's names and meanings; an etcd command line runs unchanged.

  cairn --version
    Show the version of cairn and of the etcd API it implements.

  cairn -h | --help
    Show this help.

  cairn --config-file PATH
    Read the configuration from a YAML file whose keys are the flag names below.
    Note that if a configuration file is provided, other command line flags and
    environment variables are ignored. As in etcd, TLS keys may be nested under
    client-transport-security and peer-transport-security, and durations may be
    integer nanoseconds; cairn also accepts strings such as "10m".

Environment:
  Every flag can also be set as CAIRN_<FLAG> or ETCD_<FLAG>, upper case with
  underscores (CAIRN_DATA_DIR=/var/lib/cairn). Command-line flags win over
  CAIRN_ variables, which win over ETCD_ variables.
`

// writeHelp prints --help, generated from flagSpecs and featureGates.
func writeHelp(w io.Writer) {
	var b strings.Builder
	b.WriteString(helpUsage)
	for _, group := range []string{"Member", "Clustering", "Logging", "Configuration"} {
		fmt.Fprintf(&b, "\n%s:\n", group)
		for _, s := range flagSpecs {
			if s.kind != kindImplemented || s.group != group {
				continue
			}
			def := s.value().String()
			if s.helpDefault != "" {
				def = s.helpDefault
			}
			fmt.Fprintf(&b, "  --%s '%s'\n%s", s.name, def, wrap(s.help, "    "))
			if s.name == "feature-gates" {
				for _, g := range featureGates {
					stage := "BETA"
					if g.alpha {
						stage = "ALPHA"
					}
					what := "no effect: " + g.why
					switch {
					case g.refuseWhenOn:
						what = "refused when true: " + g.why
					case g.implemented:
						what = g.why
					}
					fmt.Fprintf(&b, "      %s=true|false (%s - default=%t)\n%s", g.name, stage, g.def, wrap(what+".", "        "))
				}
			}
		}
	}
	writeKind(&b, kindNoEffect, "Accepted for compatibility with etcd, no effect in cairn (a warning is logged\nwhen one is set to a value other than etcd's default):")
	writeKind(&b, kindRefused, "Not supported yet by this build (cairn refuses to start when one is set to a\nvalue other than etcd's default, rather than run without the feature):")
	_, _ = io.WriteString(w, b.String())
}

// writeKind lists the flags of one kind, one entry per run of flags that
// share a reason.
func writeKind(b *strings.Builder, kind flagKind, title string) {
	fmt.Fprintf(b, "\n%s\n", title)
	var names []string
	for i, s := range flagSpecs {
		if s.kind != kind {
			continue
		}
		names = append(names, "--"+s.name)
		next := i + 1
		for next < len(flagSpecs) && flagSpecs[next].kind != kind {
			next++
		}
		if next < len(flagSpecs) && flagSpecs[next].help == s.help {
			continue
		}
		b.WriteString(wrap(strings.Join(names, ", "), "  "))
		b.WriteString(wrap(s.help+".", "    "))
		names = nil
	}
}

// helpWidth is the column --help wraps at.
const helpWidth = 80

// wrap fills text into lines of at most helpWidth columns (a longer word
// stays whole), each starting with indent and ending with a newline.
func wrap(text, indent string) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len(line)+1+len(word) > helpWidth {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}
