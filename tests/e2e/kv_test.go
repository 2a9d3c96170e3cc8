package e2e

import (
	"fmt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The KV tests drive the server through the Go client. Each starts a fresh
// single-member server, whose store is at revision 1, so every revision below
// is exact. The expectations are etcd v3.7.3's behaviour (checked with
// E2E_SERVER_BINARY=etcd); the "Compat:" comments name the etcd rule.

// kv is the part of a KeyValue the tests compare.
type kv struct {
	key, value           string
	create, mod, version int64
	lease                int64
}

func kvsOf(kvs []*mvccpb.KeyValue) []kv {
	out := []kv{}
	for _, x := range kvs {
		out = append(out, kv{string(x.Key), string(x.Value), x.CreateRevision, x.ModRevision, x.Version, x.Lease})
	}
	return out
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := []string{}
	for _, x := range kvs {
		out = append(out, string(x.Key))
	}
	return out
}

func mustPut(t testing.TB, cli *clientv3.Client, key, val string, rev int64) {
	t.Helper()
	resp, err := cli.Put(testCtx(t), key, val)
	require.NoError(t, err)
	require.Equal(t, rev, resp.Header.Revision, "revision of put %q", key)
}

func currentRev(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(testCtx(t), "e2e-rev-probe")
	require.NoError(t, err)
	return resp.Header.Revision
}

func TestKVRevisions(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)

	get, err := cli.Get(ctx, "foo")
	require.NoError(t, err)
	require.Equal(t, int64(1), get.Header.Revision, "a fresh store is at revision 1")
	require.Zero(t, get.Count)
	require.Empty(t, get.Kvs)
	h := get.Header
	require.NotZero(t, h.ClusterId)
	require.NotZero(t, h.MemberId)
	require.NotZero(t, h.RaftTerm)

	put, err := cli.Put(ctx, "foo", "v1")
	require.NoError(t, err)
	require.Equal(t, int64(2), put.Header.Revision)
	require.Equal(t, h.ClusterId, put.Header.ClusterId)
	require.Equal(t, h.MemberId, put.Header.MemberId)
	require.Equal(t, h.RaftTerm, put.Header.RaftTerm)

	mustPut(t, cli, "foo", "v2", 3)
	get, err = cli.Get(ctx, "foo")
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v2", 2, 3, 2, 0}}, kvsOf(get.Kvs))
	require.Equal(t, int64(3), get.Header.Revision)

	// Compat: a delete that deletes nothing does not create a revision.
	del, err := cli.Delete(ctx, "nokey")
	require.NoError(t, err)
	require.Zero(t, del.Deleted)
	require.Equal(t, int64(3), del.Header.Revision)

	del, err = cli.Delete(ctx, "foo")
	require.NoError(t, err)
	require.Equal(t, int64(1), del.Deleted)
	require.Equal(t, int64(4), del.Header.Revision)

	// Compat: version resets on delete; a new generation gets a new
	// create_revision.
	mustPut(t, cli, "foo", "v3", 5)
	get, err = cli.Get(ctx, "foo")
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v3", 5, 5, 1, 0}}, kvsOf(get.Kvs))
	get, err = cli.Get(ctx, "foo", clientv3.WithRev(3))
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v2", 2, 3, 2, 0}}, kvsOf(get.Kvs), "history of the old generation")
	require.Equal(t, int64(5), get.Header.Revision, "header revision is the current one, not the read one")
	get, err = cli.Get(ctx, "foo", clientv3.WithRev(4))
	require.NoError(t, err)
	require.Empty(t, get.Kvs, "deleted at revision 4")

	// A read-only txn does not create a revision.
	txn, err := cli.Txn(ctx).Then(clientv3.OpGet("foo")).Commit()
	require.NoError(t, err)
	require.Equal(t, int64(5), txn.Header.Revision)

	// All writes of one txn share one revision.
	txn, err = cli.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("b", "2"), clientv3.OpDelete("foo")).Commit()
	require.NoError(t, err)
	require.True(t, txn.Succeeded)
	require.Equal(t, int64(6), txn.Header.Revision)
	get, err = cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, []kv{{"a", "1", 6, 6, 1, 0}, {"b", "2", 6, 6, 1, 0}}, kvsOf(get.Kvs))

	// A failed txn without failure ops writes nothing.
	txn, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "nope")).Then(clientv3.OpPut("a", "x")).Commit()
	require.NoError(t, err)
	require.False(t, txn.Succeeded)
	require.Empty(t, txn.Responses)
	require.Equal(t, int64(6), txn.Header.Revision)

	txn, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "nope")).
		Then(clientv3.OpPut("a", "x")).Else(clientv3.OpPut("b", "3")).Commit()
	require.NoError(t, err)
	require.False(t, txn.Succeeded)
	require.Equal(t, int64(7), txn.Header.Revision)
	require.Equal(t, int64(7), txn.Responses[0].GetResponsePut().Header.Revision)

	// A txn whose only write deletes nothing does not create a revision.
	txn, err = cli.Txn(ctx).Then(clientv3.OpDelete("nokey")).Commit()
	require.NoError(t, err)
	require.Equal(t, int64(7), txn.Header.Revision)
	require.Zero(t, txn.Responses[0].GetResponseDeleteRange().Deleted)

	// Writing the same value again is a new revision and a new version.
	mustPut(t, cli, "a", "1", 8)
	get, err = cli.Get(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, []kv{{"a", "1", 6, 8, 2, 0}}, kvsOf(get.Kvs))
	require.Equal(t, h.ClusterId, get.Header.ClusterId)
	require.Equal(t, h.MemberId, get.Header.MemberId)
}

func TestKVRange(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	// a=33 (create 4, mod 7, version 2), b=1 (5, 5, 1), c=222 (6, 9, 3),
	// foo=bar2 (2, 3, 2): no ties on value, create or mod revision.
	for i, p := range [][2]string{{"foo", "bar"}, {"foo", "bar2"}, {"a", "3"}, {"b", "1"}, {"c", "2"}, {"a", "33"}, {"c", "22"}, {"c", "222"}} {
		mustPut(t, cli, p[0], p[1], int64(i+2))
	}
	all := []kv{{"a", "33", 4, 7, 2, 0}, {"b", "1", 5, 5, 1, 0}, {"c", "222", 6, 9, 3, 0}, {"foo", "bar2", 2, 3, 2, 0}}

	tests := []struct {
		name  string
		key   string
		opts  []clientv3.OpOption
		keys  []string // expected keys in order; kvs compared in full when nil
		kvs   []kv
		more  bool
		count int64
	}{
		{name: "single", key: "a", kvs: all[:1], count: 1},
		{name: "single missing", key: "nokey", kvs: []kv{}, count: 0},
		{name: "prefix", key: "c", opts: []clientv3.OpOption{clientv3.WithPrefix()}, kvs: all[2:3], count: 1},
		{name: "everything", key: "", opts: []clientv3.OpOption{clientv3.WithPrefix()}, kvs: all, count: 4},
		{name: "from key", key: "b", opts: []clientv3.OpOption{clientv3.WithFromKey()}, kvs: all[1:], count: 3},
		{name: "range end excluded", key: "a", opts: []clientv3.OpOption{clientv3.WithRange("c")}, kvs: all[:2], count: 2},
		{name: "serializable", key: "a", opts: []clientv3.OpOption{clientv3.WithRange("c"), clientv3.WithSerializable()}, kvs: all[:2], count: 2},
		// Compat: count is the size of the whole range, whatever the limit.
		{name: "limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(2)}, kvs: all[:2], more: true, count: 4},
		{name: "limit exact", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(4)}, kvs: all, count: 4},
		{name: "limit above", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(5)}, kvs: all, count: 4},
		{name: "count only", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithCountOnly()}, kvs: []kv{}, count: 4},
		{name: "count only limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithCountOnly(), clientv3.WithLimit(1)}, kvs: []kv{}, count: 4},
		{name: "keys only", key: "a", opts: []clientv3.OpOption{clientv3.WithRange("c"), clientv3.WithKeysOnly()},
			kvs: []kv{{"a", "", 4, 7, 2, 0}, {"b", "", 5, 5, 1, 0}}, count: 2},
		{name: "keys only sort by value", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortAscend)},
			kvs: []kv{{"b", "", 5, 5, 1, 0}, {"c", "", 6, 9, 3, 0}, {"a", "", 4, 7, 2, 0}, {"foo", "", 2, 3, 2, 0}}, count: 4},
		// Compat: the revision filters drop kvs but not count.
		{name: "min mod", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMinModRev(6)}, keys: []string{"a", "c"}, count: 4},
		{name: "max mod", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMaxModRev(5)}, keys: []string{"b", "foo"}, count: 4},
		{name: "min create", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMinCreateRev(5)}, keys: []string{"b", "c"}, count: 4},
		{name: "max create", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMaxCreateRev(4)}, keys: []string{"a", "foo"}, count: 4},
		{name: "mod and create filters", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMinModRev(4), clientv3.WithMaxCreateRev(4)}, keys: []string{"a"}, count: 4},
		{name: "min and max mod", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMinModRev(5), clientv3.WithMaxModRev(7)}, keys: []string{"a", "b"}, count: 4},
		{name: "filter then limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMinModRev(6), clientv3.WithLimit(1)}, keys: []string{"a"}, more: true, count: 4},
		{name: "filter within limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithMinModRev(6), clientv3.WithLimit(2)}, keys: []string{"a", "c"}, count: 4},
		{name: "sort key ascend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}, keys: []string{"a", "b", "c", "foo"}, count: 4},
		{name: "sort key descend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}, keys: []string{"foo", "c", "b", "a"}, count: 4},
		{name: "sort key descend limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(2)}, keys: []string{"foo", "c"}, more: true, count: 4},
		{name: "last key", key: "", opts: clientv3.WithLastKey(), keys: []string{"foo"}, more: true, count: 4},
		{name: "sort value ascend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortAscend)}, keys: []string{"b", "c", "a", "foo"}, count: 4},
		{name: "sort value descend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend)}, keys: []string{"foo", "a", "c", "b"}, count: 4},
		{name: "sort value none means ascend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortNone)}, keys: []string{"b", "c", "a", "foo"}, count: 4},
		{name: "sort create ascend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}, keys: []string{"foo", "a", "b", "c"}, count: 4},
		{name: "sort create descend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend)}, keys: []string{"c", "b", "a", "foo"}, count: 4},
		{name: "first create", key: "", opts: clientv3.WithFirstCreate(), keys: []string{"foo"}, more: true, count: 4},
		{name: "sort mod ascend", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend)}, keys: []string{"foo", "b", "a", "c"}, count: 4},
		{name: "sort mod descend limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(2)}, keys: []string{"c", "a"}, more: true, count: 4},
		{name: "sort version ascend", key: "a", opts: []clientv3.OpOption{clientv3.WithRange("foo"), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortAscend)}, keys: []string{"b", "a", "c"}, count: 3},
		{name: "sort version descend", key: "a", opts: []clientv3.OpOption{clientv3.WithRange("foo"), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortDescend)}, keys: []string{"c", "a", "b"}, count: 3},
		{name: "sort with filter and limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithMaxModRev(7), clientv3.WithLimit(2)}, keys: []string{"a", "b"}, more: true, count: 4},
		{name: "old revision", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithRev(5)},
			kvs: []kv{{"a", "3", 4, 4, 1, 0}, {"b", "1", 5, 5, 1, 0}, {"foo", "bar2", 2, 3, 2, 0}}, count: 3},
		{name: "old revision count only", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithRev(6), clientv3.WithCountOnly()}, kvs: []kv{}, count: 4},
		{name: "old revision limit", key: "a", opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithRev(3), clientv3.WithLimit(1)},
			kvs: []kv{{"foo", "bar2", 2, 3, 2, 0}}, count: 1},
		{name: "current revision", key: "c", opts: []clientv3.OpOption{clientv3.WithRev(9)}, kvs: all[2:3], count: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cli.Get(ctx, tt.key, tt.opts...)
			require.NoError(t, err)
			require.Equal(t, int64(9), resp.Header.Revision)
			if tt.keys != nil {
				require.Equal(t, tt.keys, keysOf(resp.Kvs))
			} else {
				require.Equal(t, tt.kvs, kvsOf(resp.Kvs))
			}
			require.Equal(t, tt.more, resp.More, "more")
			require.Equal(t, tt.count, resp.Count, "count")
		})
	}
}

func TestKVPrevKV(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)

	put, err := cli.Put(ctx, "k1", "v1", clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Nil(t, put.PrevKv, "no previous version")
	put, err = cli.Put(ctx, "k1", "v2", clientv3.WithPrevKV())
	require.NoError(t, err)
	require.NotNil(t, put.PrevKv)
	require.Equal(t, []kv{{"k1", "v1", 2, 2, 1, 0}}, kvsOf([]*mvccpb.KeyValue{put.PrevKv}))
	put, err = cli.Put(ctx, "k1", "v3")
	require.NoError(t, err)
	require.Nil(t, put.PrevKv, "not asked for")

	del, err := cli.Delete(ctx, "k1", clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Equal(t, int64(5), del.Header.Revision)
	require.Equal(t, int64(1), del.Deleted)
	require.Equal(t, []kv{{"k1", "v3", 2, 4, 3, 0}}, kvsOf(del.PrevKvs))

	del, err = cli.Delete(ctx, "k1", clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Zero(t, del.Deleted)
	require.Empty(t, del.PrevKvs)

	for i, k := range []string{"p/3", "p/1", "p/2", "q"} {
		mustPut(t, cli, k, "x"+k, int64(6+i))
	}
	del, err = cli.Delete(ctx, "p/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Equal(t, int64(10), del.Header.Revision)
	require.Equal(t, int64(3), del.Deleted)
	require.Equal(t, []kv{{"p/1", "xp/1", 7, 7, 1, 0}, {"p/2", "xp/2", 8, 8, 1, 0}, {"p/3", "xp/3", 6, 6, 1, 0}}, kvsOf(del.PrevKvs), "in key order")

	del, err = cli.Delete(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, int64(1), del.Deleted)
	require.Empty(t, del.PrevKvs, "not asked for")

	// In a txn the prev_kv of a put sees the txn's own earlier writes.
	txn, err := cli.Txn(ctx).Then(
		clientv3.OpPut("t", "1", clientv3.WithPrevKV()),
		clientv3.OpGet("t"),
		clientv3.OpDelete("q", clientv3.WithPrevKV()),
	).Commit()
	require.NoError(t, err)
	require.Equal(t, int64(12), txn.Header.Revision)
	require.Nil(t, txn.Responses[0].GetResponsePut().PrevKv)
	require.Equal(t, []kv{{"t", "1", 12, 12, 1, 0}}, kvsOf(txn.Responses[1].GetResponseRange().Kvs), "a read after a write in one txn sees it")
	require.Zero(t, txn.Responses[2].GetResponseDeleteRange().Deleted)
}

func TestKVTxnCompares(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	mustPut(t, cli, "k1", "v1", 2)
	mustPut(t, cli, "k2", "v2", 3)
	mustPut(t, cli, "k2", "v22", 4)
	mustPut(t, cli, "k3", "v3", 5)

	C := clientv3.Compare
	tests := []struct {
		name string
		cmps []clientv3.Cmp
		want bool
	}{
		{"value equal", []clientv3.Cmp{C(clientv3.Value("k1"), "=", "v1")}, true},
		{"value equal false", []clientv3.Cmp{C(clientv3.Value("k1"), "=", "v2")}, false},
		{"value not equal", []clientv3.Cmp{C(clientv3.Value("k1"), "!=", "v2")}, true},
		{"value greater", []clientv3.Cmp{C(clientv3.Value("k2"), ">", "v2")}, true},
		{"value less", []clientv3.Cmp{C(clientv3.Value("k2"), "<", "v3")}, true},
		{"value less false", []clientv3.Cmp{C(clientv3.Value("k2"), "<", "v2")}, false},
		{"version", []clientv3.Cmp{C(clientv3.Version("k2"), "=", 2)}, true},
		{"version greater", []clientv3.Cmp{C(clientv3.Version("k2"), ">", 1)}, true},
		{"version less false", []clientv3.Cmp{C(clientv3.Version("k2"), "<", 2)}, false},
		{"create", []clientv3.Cmp{C(clientv3.CreateRevision("k2"), "=", 3)}, true},
		{"create not equal", []clientv3.Cmp{C(clientv3.CreateRevision("k2"), "!=", 4)}, true},
		{"mod", []clientv3.Cmp{C(clientv3.ModRevision("k2"), "=", 4)}, true},
		{"mod less", []clientv3.Cmp{C(clientv3.ModRevision("k1"), "<", 3)}, true},
		{"mod greater false", []clientv3.Cmp{C(clientv3.ModRevision("k1"), ">", 2)}, false},
		{"lease none", []clientv3.Cmp{C(clientv3.LeaseValue("k1"), "=", 0)}, true},
		// Compat: a missing key compares as an empty KeyValue, except VALUE,
		// which is false whatever the operator.
		{"missing version 0", []clientv3.Cmp{C(clientv3.Version("nokey"), "=", 0)}, true},
		{"missing create 0", []clientv3.Cmp{C(clientv3.CreateRevision("nokey"), "=", 0)}, true},
		{"missing mod 0", []clientv3.Cmp{C(clientv3.ModRevision("nokey"), "=", 0)}, true},
		{"missing mod greater", []clientv3.Cmp{C(clientv3.ModRevision("nokey"), ">", 0)}, false},
		{"missing lease 0", []clientv3.Cmp{C(clientv3.LeaseValue("nokey"), "=", 0)}, true},
		{"missing value equal empty", []clientv3.Cmp{C(clientv3.Value("nokey"), "=", "")}, false},
		{"missing value not equal", []clientv3.Cmp{C(clientv3.Value("nokey"), "!=", "x")}, false},
		// Compat: a compare with a range end must hold for every key in it.
		{"range version", []clientv3.Cmp{C(clientv3.Version("k").WithPrefix(), ">", 0)}, true},
		{"range value all", []clientv3.Cmp{C(clientv3.Value("k").WithPrefix(), ">", "v0")}, true},
		{"range value one differs", []clientv3.Cmp{C(clientv3.Value("k").WithPrefix(), "=", "v1")}, false},
		{"range mod", []clientv3.Cmp{C(clientv3.ModRevision("k").WithPrefix(), "<", 6)}, true},
		{"range mod one fails", []clientv3.Cmp{C(clientv3.ModRevision("k").WithPrefix(), "<", 5)}, false},
		{"range explicit end", []clientv3.Cmp{C(clientv3.ModRevision("k1").WithRange("k3"), "<", 5)}, true},
		{"empty range version", []clientv3.Cmp{C(clientv3.Version("x").WithPrefix(), "=", 0)}, true},
		{"empty range value", []clientv3.Cmp{C(clientv3.Value("x").WithPrefix(), "=", "")}, false},
		{"all must hold", []clientv3.Cmp{C(clientv3.Value("k1"), "=", "v1"), C(clientv3.Version("k2"), "=", 1)}, false},
		{"all hold", []clientv3.Cmp{C(clientv3.Value("k1"), "=", "v1"), C(clientv3.Version("k2"), "=", 2), C(clientv3.ModRevision("nokey"), "=", 0)}, true},
		{"no compares", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn, err := cli.Txn(ctx).If(tt.cmps...).Then(clientv3.OpGet("k1")).Else(clientv3.OpGet("k2")).Commit()
			require.NoError(t, err)
			require.Equal(t, tt.want, txn.Succeeded)
			require.Equal(t, int64(5), txn.Header.Revision)
			require.Len(t, txn.Responses, 1)
			want := "k2"
			if tt.want {
				want = "k1"
			}
			require.Equal(t, []string{want}, keysOf(txn.Responses[0].GetResponseRange().Kvs))
		})
	}
}

func TestKVTxnNested(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	mustPut(t, cli, "k1", "v1", 2)
	mustPut(t, cli, "k2", "v2", 3)

	C := clientv3.Compare
	txn, err := cli.Txn(ctx).If(C(clientv3.Value("k1"), "=", "v1")).Then(
		clientv3.OpPut("n1", "x"),
		clientv3.OpTxn(
			[]clientv3.Cmp{C(clientv3.Version("k2"), "=", 99)},
			[]clientv3.Op{clientv3.OpPut("n2", "then")},
			[]clientv3.Op{
				clientv3.OpPut("n3", "else"),
				clientv3.OpGet("n", clientv3.WithPrefix()),
				clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("n4", "deep"), clientv3.OpDelete("k2", clientv3.WithPrevKV())}, nil),
			}),
		clientv3.OpGet("", clientv3.WithPrefix()),
	).Else(clientv3.OpPut("never", "x")).Commit()
	require.NoError(t, err)
	require.True(t, txn.Succeeded)
	require.Equal(t, int64(4), txn.Header.Revision)
	require.Len(t, txn.Responses, 3)
	require.Equal(t, int64(4), txn.Responses[0].GetResponsePut().Header.Revision)

	inner := txn.Responses[1].GetResponseTxn()
	require.NotNil(t, inner)
	require.False(t, inner.Succeeded)
	require.Len(t, inner.Responses, 3)
	require.NotNil(t, inner.Responses[0].GetResponsePut())
	require.Equal(t, []kv{{"n1", "x", 4, 4, 1, 0}, {"n3", "else", 4, 4, 1, 0}}, kvsOf(inner.Responses[1].GetResponseRange().Kvs))
	deep := inner.Responses[2].GetResponseTxn()
	require.NotNil(t, deep)
	require.True(t, deep.Succeeded)
	require.Len(t, deep.Responses, 2)
	require.NotNil(t, deep.Responses[0].GetResponsePut())
	del := deep.Responses[1].GetResponseDeleteRange()
	require.Equal(t, int64(1), del.Deleted)
	require.Equal(t, []kv{{"k2", "v2", 3, 3, 1, 0}}, kvsOf(del.PrevKvs))

	require.Equal(t, []kv{{"k1", "v1", 2, 2, 1, 0}, {"n1", "x", 4, 4, 1, 0}, {"n3", "else", 4, 4, 1, 0}, {"n4", "deep", 4, 4, 1, 0}},
		kvsOf(txn.Responses[2].GetResponseRange().Kvs), "the last read sees every write of the txn")

	get, err := cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, int64(4), get.Header.Revision)
	require.Equal(t, []string{"k1", "n1", "n3", "n4"}, keysOf(get.Kvs))
}

func TestKVErrors(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	mustPut(t, cli, "k1", "v1", 2)
	mustPut(t, cli, "k2", "v2", 3)

	puts := func(prefix string, n int) []clientv3.Op {
		ops := make([]clientv3.Op, n)
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("%s%03d", prefix, i), "v")
		}
		return ops
	}
	cmps := func(n int) []clientv3.Cmp {
		c := make([]clientv3.Cmp, n)
		for i := range c {
			c[i] = clientv3.Compare(clientv3.Version(fmt.Sprintf("c%03d", i)), "=", 0)
		}
		return c
	}
	txn := func(ifs []clientv3.Cmp, then, els []clientv3.Op) error {
		_, err := cli.Txn(ctx).If(ifs...).Then(then...).Else(els...).Commit()
		return err
	}
	put, del, get := clientv3.OpPut, clientv3.OpDelete, clientv3.OpGet
	nested := func(then, els []clientv3.Op) clientv3.Op { return clientv3.OpTxn(nil, then, els) }

	tests := []struct {
		name string
		do   func(int64) error
		want error // nil: must succeed
	}{
		{"put empty key", func(int64) error { _, err := cli.Put(ctx, "", "v"); return err }, rpctypes.ErrEmptyKey},
		{"get empty key", func(int64) error { _, err := cli.Get(ctx, ""); return err }, rpctypes.ErrEmptyKey},
		{"delete empty key", func(int64) error { _, err := cli.Delete(ctx, ""); return err }, rpctypes.ErrEmptyKey},
		{"txn put empty key", func(int64) error { return txn(nil, []clientv3.Op{put("", "v")}, nil) }, rpctypes.ErrEmptyKey},
		{"txn compare empty key", func(int64) error {
			return txn([]clientv3.Cmp{clientv3.Compare(clientv3.Version(""), "=", 0)}, nil, nil)
		}, rpctypes.ErrEmptyKey},
		{"nested txn get empty key", func(int64) error { return txn(nil, []clientv3.Op{nested([]clientv3.Op{get("")}, nil)}, nil) }, rpctypes.ErrEmptyKey},

		// Compat: at most --max-txn-ops (128) compares, success or failure
		// ops each; a nested txn gets what its parent leaves.
		{"128 ops", func(int64) error { return txn(cmps(128), puts("a", 128), puts("b", 128)) }, nil},
		{"129 success ops", func(int64) error { return txn(nil, puts("a", 129), nil) }, rpctypes.ErrTooManyOps},
		{"129 failure ops", func(int64) error { return txn(nil, nil, puts("a", 129)) }, rpctypes.ErrTooManyOps},
		{"129 compares", func(int64) error { return txn(cmps(129), nil, nil) }, rpctypes.ErrTooManyOps},
		{"nested within budget", func(int64) error {
			return txn(nil, append(puts("a", 99), nested(puts("n", 28), nil)), nil)
		}, nil},
		{"nested over budget", func(int64) error {
			return txn(nil, append(puts("a", 99), nested(puts("n", 29), nil)), nil)
		}, rpctypes.ErrTooManyOps},

		// Compat: no key may be written twice on one path through a txn
		// (etcd api/v3rpc/key.go checkIntervals).
		{"put twice", func(int64) error { return txn(nil, []clientv3.Op{put("d", "1"), put("d", "2")}, nil) }, rpctypes.ErrDuplicateKey},
		{"put twice in failure", func(int64) error { return txn(nil, nil, []clientv3.Op{put("d", "1"), put("d", "2")}) }, rpctypes.ErrDuplicateKey},
		{"put and delete", func(int64) error { return txn(nil, []clientv3.Op{put("d", "1"), del("d")}, nil) }, rpctypes.ErrDuplicateKey},
		{"delete then put", func(int64) error { return txn(nil, []clientv3.Op{del("d"), put("d", "1")}, nil) }, rpctypes.ErrDuplicateKey},
		{"delete range covers put", func(int64) error {
			return txn(nil, []clientv3.Op{put("dx", "1"), del("d", clientv3.WithPrefix())}, nil)
		}, rpctypes.ErrDuplicateKey},
		{"overlapping deletes", func(int64) error {
			return txn(nil, []clientv3.Op{del("d"), del("d", clientv3.WithPrefix())}, nil)
		}, nil},
		{"same key in success and failure", func(int64) error {
			return txn(nil, []clientv3.Op{put("d", "1")}, []clientv3.Op{put("d", "2")})
		}, nil},
		{"put and get", func(int64) error { return txn(nil, []clientv3.Op{put("d", "1"), get("d")}, nil) }, nil},
		{"outer put and nested put", func(int64) error {
			return txn(nil, []clientv3.Op{put("d", "1"), nested([]clientv3.Op{put("d", "2")}, nil)}, nil)
		}, rpctypes.ErrDuplicateKey},
		{"outer delete and nested put", func(int64) error {
			return txn(nil, []clientv3.Op{del("d"), nested([]clientv3.Op{put("d", "2")}, nil)}, nil)
		}, rpctypes.ErrDuplicateKey},
		{"nested delete and outer put", func(int64) error {
			return txn(nil, []clientv3.Op{put("d", "1"), nested([]clientv3.Op{del("d")}, nil)}, nil)
		}, rpctypes.ErrDuplicateKey},
		{"nested success and failure", func(int64) error {
			return txn(nil, []clientv3.Op{nested([]clientv3.Op{put("d", "1")}, []clientv3.Op{put("d", "2")})}, nil)
		}, nil},
		{"two nested txns", func(int64) error {
			return txn(nil, []clientv3.Op{nested([]clientv3.Op{put("d", "1")}, nil), nested([]clientv3.Op{put("d", "2")}, nil)}, nil)
		}, rpctypes.ErrDuplicateKey},

		// Compat: ignore_value / ignore_lease need the key and exclude a
		// value / lease in the same request.
		{"ignore value missing key", func(int64) error { _, err := cli.Put(ctx, "nokey", "", clientv3.WithIgnoreValue()); return err }, rpctypes.ErrKeyNotFound},
		{"ignore lease missing key", func(int64) error { _, err := cli.Put(ctx, "nokey", "v", clientv3.WithIgnoreLease()); return err }, rpctypes.ErrKeyNotFound},
		{"txn ignore value missing key", func(int64) error {
			return txn(nil, []clientv3.Op{put("d", "1"), put("nokey", "", clientv3.WithIgnoreValue())}, nil)
		}, rpctypes.ErrKeyNotFound},
		{"ignore value with value", func(int64) error { _, err := cli.Put(ctx, "k1", "v", clientv3.WithIgnoreValue()); return err }, rpctypes.ErrValueProvided},
		{"ignore lease with lease", func(int64) error {
			_, err := cli.Put(ctx, "k1", "v", clientv3.WithIgnoreLease(), clientv3.WithLease(123))
			return err
		}, rpctypes.ErrLeaseProvided},
		{"unknown lease", func(int64) error { _, err := cli.Put(ctx, "k1", "v", clientv3.WithLease(123)); return err }, rpctypes.ErrLeaseNotFound},

		{"future revision", func(cur int64) error { _, err := cli.Get(ctx, "k1", clientv3.WithRev(cur+1)); return err }, rpctypes.ErrFutureRev},
		{"txn future revision", func(int64) error { return txn(nil, []clientv3.Op{get("k1", clientv3.WithRev(1000))}, nil) }, rpctypes.ErrFutureRev},
		{"compact future revision", func(cur int64) error { _, err := cli.Compact(ctx, cur+1); return err }, rpctypes.ErrFutureRev},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := currentRev(t, cli)
			err := tt.do(before)
			if tt.want == nil {
				require.NoError(t, err)
				// Clean up what a successful txn wrote so later cases see the
				// same store.
				_, err = cli.Delete(ctx, "a", clientv3.WithRange("e"))
				require.NoError(t, err)
				_, err = cli.Delete(ctx, "n", clientv3.WithPrefix())
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			require.Equal(t, before, currentRev(t, cli), "a rejected request writes nothing")
		})
	}

	// None of the rejected requests left a trace.
	get2, err := cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, []kv{{"k1", "v1", 2, 2, 1, 0}, {"k2", "v2", 3, 3, 1, 0}}, kvsOf(get2.Kvs))
}

// keyChecker returns a function that requires key to be exactly want.
func keyChecker(t *testing.T, cli *clientv3.Client, key string) func(want kv) {
	return func(want kv) {
		t.Helper()
		get, err := cli.Get(testCtx(t), key)
		require.NoError(t, err)
		require.Equal(t, []kv{want}, kvsOf(get.Kvs))
	}
}

func TestKVIgnoreValue(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	check := keyChecker(t, cli, "k")
	mustPut(t, cli, "k", "v1", 2)

	// Compat: ignore_value keeps the value, ignore_lease the (absent)
	// lease; either is a new revision and version.
	put, err := cli.Put(ctx, "k", "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Equal(t, int64(3), put.Header.Revision)
	require.Equal(t, []kv{{"k", "v1", 2, 2, 1, 0}}, kvsOf([]*mvccpb.KeyValue{put.PrevKv}))
	check(kv{"k", "v1", 2, 3, 2, 0})

	put, err = cli.Put(ctx, "k", "v2", clientv3.WithIgnoreLease())
	require.NoError(t, err)
	require.Equal(t, int64(4), put.Header.Revision)
	check(kv{"k", "v2", 2, 4, 3, 0})

	put, err = cli.Put(ctx, "k", "", clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease())
	require.NoError(t, err)
	require.Equal(t, int64(5), put.Header.Revision)
	check(kv{"k", "v2", 2, 5, 4, 0})

	txn, err := cli.Txn(ctx).Then(clientv3.OpPut("k", "", clientv3.WithIgnoreValue()), clientv3.OpGet("k")).Commit()
	require.NoError(t, err)
	require.Equal(t, int64(6), txn.Header.Revision)
	require.Equal(t, []kv{{"k", "v2", 2, 6, 5, 0}}, kvsOf(txn.Responses[1].GetResponseRange().Kvs))

	// The key must exist, also after a delete.
	_, err = cli.Delete(ctx, "k") // 7
	require.NoError(t, err)
	_, err = cli.Put(ctx, "k", "", clientv3.WithIgnoreValue())
	require.ErrorIs(t, err, rpctypes.ErrKeyNotFound)
	_, err = cli.Put(ctx, "k", "v", clientv3.WithIgnoreLease())
	require.ErrorIs(t, err, rpctypes.ErrKeyNotFound)
	require.Equal(t, int64(7), currentRev(t, cli))
}

func TestKVLease(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	check := keyChecker(t, cli, "k")

	lease, err := cli.Grant(ctx, 600)
	if status.Code(err) == codes.Unimplemented {
		// The Lease service lands with issue 5; until then this pins
		// only that the server says so instead of misbehaving.
		t.Skip("server has no Lease service yet")
	}
	require.NoError(t, err)
	id := int64(lease.ID)
	put, err := cli.Put(ctx, "k", "v1", clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	require.Equal(t, int64(2), put.Header.Revision)
	check(kv{"k", "v1", 2, 2, 1, id})
	for _, c := range []struct {
		cmp  clientv3.Cmp
		want bool
	}{
		{clientv3.Compare(clientv3.LeaseValue("k"), "=", lease.ID), true},
		{clientv3.Compare(clientv3.LeaseValue("k"), "!=", lease.ID), false},
		{clientv3.Compare(clientv3.LeaseValue("k"), ">", 0), true},
	} {
		txn, err := cli.Txn(ctx).If(c.cmp).Commit()
		require.NoError(t, err)
		require.Equal(t, c.want, txn.Succeeded, "lease compare %v", c.cmp)
	}

	// Compat: ignore_lease keeps the lease and takes the new value.
	put, err = cli.Put(ctx, "k", "v2", clientv3.WithIgnoreLease(), clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Equal(t, int64(3), put.Header.Revision)
	require.Equal(t, []kv{{"k", "v1", 2, 2, 1, id}}, kvsOf([]*mvccpb.KeyValue{put.PrevKv}))
	check(kv{"k", "v2", 2, 3, 2, id})

	// Compat: ignore_value keeps the value; without ignore_lease the lease
	// is the request's (none), so the key is detached.
	put, err = cli.Put(ctx, "k", "", clientv3.WithIgnoreValue())
	require.NoError(t, err)
	require.Equal(t, int64(4), put.Header.Revision)
	check(kv{"k", "v2", 2, 4, 3, 0})

	_, err = cli.Put(ctx, "k", "", clientv3.WithIgnoreValue(), clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	check(kv{"k", "v2", 2, 5, 4, id})

	put, err = cli.Put(ctx, "k", "", clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease())
	require.NoError(t, err)
	require.Equal(t, int64(6), put.Header.Revision)
	check(kv{"k", "v2", 2, 6, 5, id})

	txn, err := cli.Txn(ctx).Then(clientv3.OpPut("k", "v3", clientv3.WithIgnoreLease())).Commit()
	require.NoError(t, err)
	require.Equal(t, int64(7), txn.Header.Revision)
	check(kv{"k", "v3", 2, 7, 6, id})

	_, err = cli.Put(ctx, "k", "v4")
	require.NoError(t, err)
	check(kv{"k", "v4", 2, 8, 7, 0})
}

func TestKVCompact(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	for i := 1; i <= 4; i++ {
		mustPut(t, cli, "foo", fmt.Sprintf("v%d", i), int64(i+1)) // revisions 2..5
	}
	mustPut(t, cli, "bar", "x", 6)

	getRev := func(rev int64) ([]kv, error) {
		resp, err := cli.Get(ctx, "foo", clientv3.WithRev(rev))
		if err != nil {
			return nil, err
		}
		return kvsOf(resp.Kvs), nil
	}

	comp, err := cli.Compact(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, int64(6), comp.Header.Revision, "compaction is not a write")

	_, err = getRev(2)
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	got, err := getRev(3)
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v2", 2, 3, 2, 0}}, got, "the compaction revision itself stays readable")
	_, err = getRev(7)
	require.ErrorIs(t, err, rpctypes.ErrFutureRev)

	// Compat: compacting at or below the compacted revision is ErrCompacted;
	// above the current revision ErrFutureRev.
	_, err = cli.Compact(ctx, 3)
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	_, err = cli.Compact(ctx, 2)
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	_, err = cli.Compact(ctx, 7)
	require.ErrorIs(t, err, rpctypes.ErrFutureRev)

	_, err = cli.Compact(ctx, 5, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	_, err = getRev(4)
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	_, err = cli.Txn(ctx).Then(clientv3.OpGet("foo", clientv3.WithRev(4))).Commit()
	require.ErrorIs(t, err, rpctypes.ErrCompacted, "a read in a txn is checked too")
	got, err = getRev(5)
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v4", 2, 5, 4, 0}}, got)

	// The history that survives is intact: count at revision 5 is one key.
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(5))
	require.NoError(t, err)
	require.Equal(t, int64(1), resp.Count)
	resp, err = cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, int64(6), resp.Header.Revision)
	require.Equal(t, []kv{{"bar", "x", 6, 6, 1, 0}, {"foo", "v4", 2, 5, 4, 0}}, kvsOf(resp.Kvs))

	// Compacting at the current revision is allowed; writes continue.
	_, err = cli.Compact(ctx, 6, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	_, err = getRev(5)
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	del, err := cli.Delete(ctx, "bar", clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Equal(t, int64(7), del.Header.Revision)
	require.Equal(t, []kv{{"bar", "x", 6, 6, 1, 0}}, kvsOf(del.PrevKvs))
	mustPut(t, cli, "foo", "v5", 8)
	got, err = getRev(8)
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v5", 2, 8, 5, 0}}, got)
	got, err = getRev(7)
	require.NoError(t, err)
	require.Equal(t, []kv{{"foo", "v4", 2, 5, 4, 0}}, got)
}
