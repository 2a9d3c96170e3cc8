package config

import "testing"

func TestPeerLocalAddr(t *testing.T) {
	for _, tc := range []struct {
		gate bool
		urls []string
		want string
	}{
		{gate: false, urls: []string{"http://10.0.0.1:2380"}, want: ""},
		{gate: true, urls: []string{"http://10.0.0.1:2380"}, want: "10.0.0.1"},
		// Unlike etcd, loopback addresses count.
		{gate: true, urls: []string{"http://127.0.0.3:2380"}, want: "127.0.0.3"},
		{gate: true, urls: []string{"http://localhost:2380", "http://0.0.0.0:2380", "http://[::1]:2380"}, want: "::1"},
		{gate: true, urls: []string{"http://infra1.example.com:2380"}, want: ""},
	} {
		c := Defaults()
		c.InitialAdvertisePeerURLs = tc.urls
		if tc.gate {
			c.FeatureGates = map[string]bool{GateSetMemberLocalAddr: true}
		}
		if got := c.PeerLocalAddr(); got != tc.want {
			t.Errorf("gate %v, urls %v: PeerLocalAddr() = %q, want %q", tc.gate, tc.urls, got, tc.want)
		}
	}
}
