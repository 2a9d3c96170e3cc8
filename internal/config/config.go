// Package config owns the server configuration: one struct with a documented
// field per setting, its defaults and its validation. It is a leaf: it imports
// nothing from Cairn, and it never reads flags, env vars or files itself (that
// is cmd/cairn's job) so that tests can build a Server config in plain Go.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// EtcdVersion is the etcd API version Cairn implements and reports as the
// etcd server and cluster version (clients gate features on it).
const EtcdVersion = "3.7.3"

// CairnVersion is Cairn's own release version, reported beside EtcdVersion.
const CairnVersion = "0.1.0"

// Server is the whole configuration of one cairn member.
type Server struct {
	// Name is the human-readable member name (etcd --name).
	Name string
	// DataDir holds the member's Pebble database (etcd --data-dir).
	DataDir string

	// ListenClientURLs are the URLs the client gRPC+HTTP server listens on.
	ListenClientURLs []string
	// AdvertiseClientURLs are the client URLs published to the cluster.
	AdvertiseClientURLs []string
	// ListenPeerURLs are the URLs the peer server listens on.
	ListenPeerURLs []string
	// InitialAdvertisePeerURLs are this member's peer URLs as published at bootstrap.
	InitialAdvertisePeerURLs []string
	// InitialCluster is "name=peerURL,..." for bootstrapping.
	InitialCluster string
	// InitialClusterState is "new" or "existing".
	InitialClusterState string
	// InitialClusterToken seeds the cluster and member IDs.
	InitialClusterToken string

	// SnapshotCount is the number of applied requests after which the raft
	// log is compacted. Requests, as etcd counts them (one per entry there);
	// cairn merges concurrent proposals into one entry.
	SnapshotCount uint64
	// SnapshotCatchUpEntries is the number of requests that stay in the raft
	// log after it is compacted, so a follower slightly behind catches up
	// from the log, not a snapshot.
	SnapshotCatchUpEntries uint64
	// HeartbeatInterval is the raft heartbeat period.
	HeartbeatInterval time.Duration
	// ElectionTimeout is the raft election timeout.
	ElectionTimeout time.Duration

	// MaxRequestBytes caps the size of one client request (etcd default 1.5 MiB).
	MaxRequestBytes uint
	// MaxTxnOps caps the number of operations in one Txn (etcd default 128).
	MaxTxnOps uint

	// WatchProgressNotifyInterval is how often idle watchers that asked
	// for progress notifications get one.
	WatchProgressNotifyInterval time.Duration

	// EnablePprof serves Go's profiler at /debug/pprof/ on the client URLs.
	EnablePprof bool

	// LogLevel is debug, info, warn, error, panic or fatal.
	LogLevel string
	// LogFormat is json or console.
	LogFormat string
	// LogOutputs are "stderr", "stdout" or file paths.
	LogOutputs []string

	// FeatureGates holds the etcd server feature gates the operator set
	// (--feature-gates, with AllAlpha/AllBeta expanded to the gates they
	// cover), by etcd's gate name. A gate absent from the map, and every gate
	// when the map is nil, keeps etcd's default.
	FeatureGates map[string]bool
}

// Defaults returns the configuration `cairn` runs with when given no flags:
// a one-member cluster on 127.0.0.1:2379/2380 with data in ./default.cairn.
func Defaults() Server {
	return Server{
		Name:                        "default",
		DataDir:                     "default.cairn",
		ListenClientURLs:            []string{"http://localhost:2379"},
		AdvertiseClientURLs:         []string{"http://localhost:2379"},
		ListenPeerURLs:              []string{"http://localhost:2380"},
		InitialAdvertisePeerURLs:    []string{"http://localhost:2380"},
		InitialCluster:              "default=http://localhost:2380",
		InitialClusterState:         "new",
		InitialClusterToken:         "etcd-cluster",
		SnapshotCount:               10000,
		SnapshotCatchUpEntries:      5000,
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             1000 * time.Millisecond,
		MaxRequestBytes:             1572864,
		MaxTxnOps:                   128,
		WatchProgressNotifyInterval: 10 * time.Minute,
		LogLevel:                    "info",
		LogFormat:                   "json",
		LogOutputs:                  []string{"stderr"},
		FeatureGates:                nil, // every gate at etcd's default
	}
}

// Validate reports the first problem with the configuration, naming the
// setting by its flag name so operators can find it.
func (c *Server) Validate() error {
	if c.Name == "" {
		return errors.New("--name must not be empty")
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	for _, set := range []struct {
		flag string
		urls []string
	}{
		{"--listen-client-urls", c.ListenClientURLs},
		{"--advertise-client-urls", c.AdvertiseClientURLs},
		{"--listen-peer-urls", c.ListenPeerURLs},
		{"--initial-advertise-peer-urls", c.InitialAdvertisePeerURLs},
	} {
		if len(set.urls) == 0 {
			return fmt.Errorf("%s must name at least one URL", set.flag)
		}
		for _, u := range set.urls {
			if err := checkURL(u); err != nil {
				return fmt.Errorf("%s: %w", set.flag, err)
			}
		}
	}
	switch c.InitialClusterState {
	case "new", "existing":
	default:
		return fmt.Errorf("--initial-cluster-state must be \"new\" or \"existing\", got %q", c.InitialClusterState)
	}
	if c.HeartbeatInterval <= 0 {
		return errors.New("--heartbeat-interval must be positive")
	}
	if c.ElectionTimeout < 5*c.HeartbeatInterval {
		return fmt.Errorf("--election-timeout[%v] should be at least 5 times as --heartbeat-interval[%v]", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.SnapshotCount == 0 {
		return errors.New("--snapshot-count must be positive")
	}
	if c.MaxRequestBytes == 0 {
		return errors.New("--max-request-bytes must be positive")
	}
	if c.MaxTxnOps == 0 {
		return errors.New("--max-txn-ops must be positive")
	}
	return nil
}

// GateSetMemberLocalAddr is etcd's feature gate that makes a member dial
// its peers from a chosen local address (see PeerLocalAddr).
const GateSetMemberLocalAddr = "SetMemberLocalAddr"

// PeerLocalAddr returns the IP address peer connections are dialed from,
// or "" to let the OS choose. With the SetMemberLocalAddr feature gate on,
// it is the host of the first InitialAdvertisePeerURLs entry that is an IP
// address (not a name) and not unspecified (0.0.0.0, ::).
//
// Difference from etcd (embed.Config.InferLocalAddr): etcd also skips
// loopback addresses; cairn accepts them. All of 127.0.0.0/8 is loopback
// on Linux, so members advertised at 127.0.0.2, 127.0.0.3, ... on one
// machine dial from distinct source addresses and a proxy between them
// can tell who a connection comes from (tests/robustness relies on it).
// With a single loopback address per host the result is the same as the
// OS's choice, so accepting loopback costs nothing in production.
func (c *Server) PeerLocalAddr() string {
	if !c.FeatureGates[GateSetMemberLocalAddr] {
		return ""
	}
	for _, s := range c.InitialAdvertisePeerURLs {
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		addr, err := netip.ParseAddr(u.Hostname())
		if err != nil || addr.IsUnspecified() {
			continue
		}
		return addr.String()
	}
	return ""
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs" {
		return fmt.Errorf("URL %q must use http or https", s)
	}
	if u.Scheme == "https" || u.Scheme == "unixs" {
		return fmt.Errorf("URL %q uses TLS, which this build of cairn does not support yet; refusing to start rather than serve without it", s)
	}
	if u.Host == "" || strings.Contains(u.Host, "/") {
		return fmt.Errorf("URL %q has no host:port", s)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("URL %q must not have a path", s)
	}
	return nil
}
