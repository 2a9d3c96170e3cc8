package membership

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// Compat: these are the IDs real etcd v3.7.3 reports for its defaults
// (--name default, --initial-advertise-peer-urls http://localhost:2380,
// --initial-cluster-token etcd-cluster): member 8e9e05c52164694d in
// cluster cdf818194e3a8c32.
func TestIDsMatchEtcd(t *testing.T) {
	ms, err := ParseInitialCluster("default=http://localhost:2380", "etcd-cluster")
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, "8e9e05c52164694d", fmt.Sprintf("%x", ms[0].ID))
	require.Equal(t, "cdf818194e3a8c32", fmt.Sprintf("%x", ComputeClusterID([]uint64{ms[0].ID})))
}

func TestClusterIDIgnoresOrder(t *testing.T) {
	require.Equal(t, ComputeClusterID([]uint64{3, 1, 2}), ComputeClusterID([]uint64{1, 2, 3}))
	require.NotEqual(t, ComputeClusterID([]uint64{1, 2}), ComputeClusterID([]uint64{1, 2, 3}))
}

func TestParseInitialCluster(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int
		err      string
	}{
		{name: "three", in: "a=http://h:1,b=http://h:2,c=http://h:3", want: 3},
		{name: "two urls for one member", in: "a=http://h:1,a=http://h:11,b=http://h:2", want: 2},
		{name: "missing url", in: "a=", err: "not name=peerURL"},
		{name: "no equals", in: "a", err: "not name=peerURL"},
		{name: "bad url", in: "a=::nope", err: "not a valid peer URL"},
		{name: "empty", in: "", err: "empty"},
		{name: "same urls twice", in: "a=http://h:1,b=http://h:1", err: "same peer URLs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ParseInitialCluster(tc.in, "tok")
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Len(t, ms, tc.want)
		})
	}
}
