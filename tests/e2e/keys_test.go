package e2e

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestKVKeyBytes pins the order and range semantics of keys that contain
// 0x00 and 0xFF bytes, next to keys that are their prefixes: keys are
// compared as plain byte strings, whatever encoding a server stores them in.
func TestKVKeyBytes(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)

	keys := []string{
		"a\xff\xff", "a", "a\x00\xff", "b", "a\x01", "\x00", "a\x00", "\xff", "a\xff", "a\x00\x00", "\x00\x00", "a\x00\x01",
	}
	for i, k := range keys {
		// The value is binary too: every byte value, the key, and the index.
		val := string([]byte{0, 0xff, 0x80, byte(i)}) + k
		mustPut(t, cli, k, val, int64(i+2))
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted) // Go compares strings bytewise, as etcd does
	rev := int64(len(keys) + 1)
	revOf := func(k string) int64 { return int64(slices.Index(keys, k) + 2) }

	between := func(from, to string) []string { // sorted keys in [from, to); to "" = no end
		var out []string
		for _, k := range sorted {
			if k >= from && (to == "" || k < to) {
				out = append(out, k)
			}
		}
		return out
	}
	withPrefix := func(p string) []string {
		var out []string
		for _, k := range sorted {
			if strings.HasPrefix(k, p) {
				out = append(out, k)
			}
		}
		return out
	}

	tests := []struct {
		name string
		key  string
		opts []clientv3.OpOption
		want []string
	}{
		{"single a", "a", nil, []string{"a"}},
		{"single a00", "a\x00", nil, []string{"a\x00"}},
		{"single 00", "\x00", nil, []string{"\x00"}},
		{"single ff", "\xff", nil, []string{"\xff"}},
		{"everything", "", []clientv3.OpOption{clientv3.WithPrefix()}, sorted},
		{"prefix a", "a", []clientv3.OpOption{clientv3.WithPrefix()}, withPrefix("a")},
		{"prefix a00", "a\x00", []clientv3.OpOption{clientv3.WithPrefix()}, withPrefix("a\x00")},
		{"prefix aff", "a\xff", []clientv3.OpOption{clientv3.WithPrefix()}, withPrefix("a\xff")},
		{"prefix 00", "\x00", []clientv3.OpOption{clientv3.WithPrefix()}, withPrefix("\x00")},
		{"prefix ff", "\xff", []clientv3.OpOption{clientv3.WithPrefix()}, withPrefix("\xff")},
		{"range a to a01", "a", []clientv3.OpOption{clientv3.WithRange("a\x01")}, between("a", "a\x01")},
		{"range a00 to a0001", "a\x00", []clientv3.OpOption{clientv3.WithRange("a\x00\x01")}, between("a\x00", "a\x00\x01")},
		{"range 00 to a", "\x00", []clientv3.OpOption{clientv3.WithRange("a")}, between("\x00", "a")},
		{"from a00", "a\x00", []clientv3.OpOption{clientv3.WithFromKey()}, between("a\x00", "")},
		{"from 00", "\x00", []clientv3.OpOption{clientv3.WithFromKey()}, sorted},
		{"from aff", "a\xff", []clientv3.OpOption{clientv3.WithFromKey()}, between("a\xff", "")},
		{"descending", "", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}, reversed(sorted)},
		{"limit", "a", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(3)}, withPrefix("a")[:3]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cli.Get(ctx, tt.key, tt.opts...)
			require.NoError(t, err)
			require.Equal(t, quoteAll(tt.want), quoteAll(keysOf(resp.Kvs)))
			for _, x := range resp.Kvs {
				i := slices.Index(keys, string(x.Key))
				require.Equal(t, string([]byte{0, 0xff, 0x80, byte(i)})+string(x.Key), string(x.Value), "value of %q", x.Key)
				require.Equal(t, revOf(string(x.Key)), x.ModRevision, "mod_revision of %q", x.Key)
			}
		})
	}

	// Overwrite a key and its prefix-extended neighbours, then read the
	// old revision: the history of "a" must not mix with that of "a\x00".
	for i, k := range []string{"a", "a\x00", "a\x00\x00", "a"} {
		mustPut(t, cli, k, fmt.Sprintf("new%d", i), rev+int64(i)+1)
	}
	resp, err := cli.Get(ctx, "a", clientv3.WithRange("a\x01"), clientv3.WithRev(rev))
	require.NoError(t, err)
	require.Equal(t, quoteAll(between("a", "a\x01")), quoteAll(keysOf(resp.Kvs)))
	for _, x := range resp.Kvs {
		require.Equal(t, int64(1), x.Version, "%q at revision %d", x.Key, rev)
	}
	resp, err = cli.Get(ctx, "a", clientv3.WithRange("a\x01"))
	require.NoError(t, err)
	require.Equal(t, []kv{
		{"a", "new3", revOf("a"), rev + 4, 3, 0},
		{"a\x00", "new1", revOf("a\x00"), rev + 2, 2, 0},
		{"a\x00\x00", "new2", revOf("a\x00\x00"), rev + 3, 2, 0},
		{"a\x00\x01", kvValue(keys, "a\x00\x01"), revOf("a\x00\x01"), revOf("a\x00\x01"), 1, 0},
		{"a\x00\xff", kvValue(keys, "a\x00\xff"), revOf("a\x00\xff"), revOf("a\x00\xff"), 1, 0},
	}, kvsOf(resp.Kvs))

	// Deleting a prefix deletes exactly the keys that have it.
	del, err := cli.Delete(ctx, "a\x00", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, int64(len(withPrefix("a\x00"))), del.Deleted)
	resp, err = cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	require.NoError(t, err)
	var left []string
	for _, k := range sorted {
		if !strings.HasPrefix(k, "a\x00") {
			left = append(left, k)
		}
	}
	require.Equal(t, quoteAll(left), quoteAll(keysOf(resp.Kvs)))
}

func kvValue(keys []string, k string) string {
	return string([]byte{0, 0xff, 0x80, byte(slices.Index(keys, k))}) + k
}

func reversed(in []string) []string {
	out := slices.Clone(in)
	slices.Reverse(out)
	return out
}

// quoteAll makes byte keys readable in failure messages.
func quoteAll(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%q", k)
	}
	return out
}

// TestKVLargeValues checks values up to the request limit and the error
// beyond it.
func TestKVLargeValues(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	mustPut(t, cli, "big", string(big), 2)
	resp, err := cli.Get(ctx, "big")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.True(t, bytes.Equal(big, resp.Kvs[0].Value), "1 MiB value read back differs")

	// Compat: a request above --max-request-bytes (default 1.5 MiB) but
	// within gRPC's limit (that plus 512 KiB) is ErrRequestTooLarge.
	tooBig := bytes.Repeat([]byte("x"), 1<<20+600<<10) // 1.6 MiB
	_, err = cli.Put(ctx, "too-big", string(tooBig))
	require.ErrorIs(t, err, rpctypes.ErrRequestTooLarge)
	require.Equal(t, int64(2), currentRev(t, cli))

	mustPut(t, cli, "empty", "", 3)
	resp, err = cli.Get(ctx, "empty")
	require.NoError(t, err)
	require.Equal(t, []kv{{"empty", "", 3, 3, 1, 0}}, kvsOf(resp.Kvs))
}

// TestKVPaginate lists in pages at one revision while writes go on, as the
// Kubernetes API server does: the pages must add up to the store as it was
// at that revision.
func TestKVPaginate(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)

	const n = 250
	ops := make([]clientv3.Op, 0, 100)
	flush := func() {
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
		ops = ops[:0]
	}
	for i := range n {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/pods/ns/pod-%04d", i), fmt.Sprint(i)))
		if len(ops) == cap(ops) {
			flush()
		}
	}
	flush()

	first, err := cli.Get(ctx, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithLimit(40))
	require.NoError(t, err)
	listRev := first.Header.Revision
	require.Equal(t, int64(n), first.Count)
	require.True(t, first.More)
	got := keysOf(first.Kvs)
	last := first.Kvs[len(first.Kvs)-1].Key
	end := clientv3.GetPrefixRangeEnd("/registry/pods/")
	for i := 0; ; i++ {
		// Writes between pages: new keys, updates and deletes, inside the
		// listed range, all after listRev.
		_, err := cli.Put(ctx, fmt.Sprintf("/registry/pods/ns/pod-%04d-new", i*10), "new")
		require.NoError(t, err)
		_, err = cli.Delete(ctx, fmt.Sprintf("/registry/pods/ns/pod-%04d", i*20+5))
		require.NoError(t, err)

		page, err := cli.Get(ctx, string(last)+"\x00", clientv3.WithRange(end), clientv3.WithLimit(40), clientv3.WithRev(listRev))
		require.NoError(t, err)
		got = append(got, keysOf(page.Kvs)...)
		if !page.More {
			break
		}
		last = page.Kvs[len(page.Kvs)-1].Key
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("/registry/pods/ns/pod-%04d", i))
	}
	require.Equal(t, want, got)
}
