package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every expected output in this file is what etcdctl v3.7.3 prints against
// etcd v3.7.3 on a fresh single-member cluster (checked with
// E2E_SERVER_BINARY=etcd). A fresh store is at revision 1, and each step's
// comment gives the revision it leaves the store at.

// ctlStep is one etcdctl invocation and what it must print. Steps of one
// table run in order against one server, so later steps see earlier writes.
type ctlStep struct {
	name  string
	args  []string
	stdin string

	// Exactly one of the following describes stdout.
	stdout string // exact
	// json is compared with JSONEq after dropping the member-specific
	// header fields cluster_id, member_id and raft_term at any depth.
	json string
	// fields is -w fields output without its ClusterID, MemberID and
	// RaftTerm lines.
	fields string

	err  string // exact last stderr line ("Error: ..."); stdout must be empty
	code int    // exit code; 1 when err is set and code is 0
}

func runCtlSteps(t *testing.T, s *server, steps []ctlStep) {
	t.Helper()
	for i, st := range steps {
		name := fmt.Sprintf("%02d_%s", i, st.name)
		t.Run(name, func(t *testing.T) {
			r := s.etcdctl(t, st.stdin, st.args...)
			cmdline := "etcdctl " + strings.Join(st.args, " ")
			if st.err != "" {
				code := st.code
				if code == 0 {
					code = 1
				}
				require.Equal(t, code, r.code, "%s: exit code; stderr:\n%s", cmdline, r.stderr)
				require.Equal(t, st.err, r.errLine(), "%s: last stderr line", cmdline)
				require.Empty(t, r.stdout, "%s: stdout", cmdline)
				return
			}
			require.Equal(t, st.code, r.code, "%s: exit code; stderr:\n%s", cmdline, r.stderr)
			switch {
			case st.json != "":
				require.JSONEq(t, st.json, stripMemberFields(t, r.stdout), "%s: stdout:\n%s", cmdline, r.stdout)
			case st.fields != "":
				require.Equal(t, st.fields, stripFieldsLines(r.stdout), "%s: stdout:\n%s", cmdline, r.stdout)
			default:
				require.Equal(t, st.stdout, r.stdout, "%s: stdout", cmdline)
			}
		})
	}
}

// memberSpecific are the header fields that differ between two servers (and
// between two etcd runs).
var memberSpecific = map[string]bool{"cluster_id": true, "member_id": true, "raft_term": true}

// stripMemberFields re-encodes JSON output without the member-specific
// header fields.
func stripMemberFields(t testing.TB, out string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), "stdout is not JSON: %q", out)
	var strip func(any)
	strip = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if memberSpecific[k] {
					delete(v, k)
					continue
				}
				strip(e)
			}
		case []any:
			for _, e := range v {
				strip(e)
			}
		}
	}
	strip(v)
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func stripFieldsLines(out string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(out, "\n") {
		if strings.HasPrefix(line, `"ClusterID" : `) || strings.HasPrefix(line, `"MemberID" : `) ||
			strings.HasPrefix(line, `"RaftTerm" : `) {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestEtcdctlPutGet(t *testing.T) {
	s := startServer(t)
	// After the puts: a=33 (create 4, mod 7, version 2), b=1 (5, 5, 1),
	// c=222 (6, 9, 3), foo=bar2 (2, 3, 2). No two keys tie on value,
	// create or mod revision, so every sort below has one right answer.
	runCtlSteps(t, s, []ctlStep{
		{name: "put", args: []string{"put", "foo", "bar"}, stdout: "OK\n"},                                 // rev 2
		{name: "put prev-kv", args: []string{"put", "foo", "bar2", "--prev-kv"}, stdout: "OK\nfoo\nbar\n"}, // rev 3
		{name: "put a", args: []string{"put", "a", "3"}, stdout: "OK\n"},                                   // rev 4
		{name: "put b", args: []string{"put", "b", "1"}, stdout: "OK\n"},                                   // rev 5
		{name: "put c", args: []string{"put", "c", "2"}, stdout: "OK\n"},                                   // rev 6
		{name: "put a prev-kv", args: []string{"put", "a", "33", "--prev-kv"}, stdout: "OK\na\n3\n"},       // rev 7
		{name: "put c again", args: []string{"put", "c", "22"}, stdout: "OK\n"},                            // rev 8
		{name: "put c prev-kv", args: []string{"put", "c", "222", "--prev-kv"}, stdout: "OK\nc\n22\n"},     // rev 9
		{name: "put new key prev-kv", args: []string{"put", "d", "4", "--prev-kv"}, stdout: "OK\n"},        // rev 10
		{name: "del d", args: []string{"del", "d"}, stdout: "1\n"},                                         // rev 11
		{name: "get", args: []string{"get", "foo"}, stdout: "foo\nbar2\n"},
		{name: "get missing", args: []string{"get", "nokey"}, stdout: ""},
		{name: "get serializable", args: []string{"get", "foo", "--consistency", "s"}, stdout: "foo\nbar2\n"},
		{name: "get prefix", args: []string{"get", "a", "--prefix"}, stdout: "a\n33\n"},
		{name: "get from-key", args: []string{"get", "a", "--from-key"}, stdout: "a\n33\nb\n1\nc\n222\nfoo\nbar2\n"},
		{name: "get range", args: []string{"get", "a", "c"}, stdout: "a\n33\nb\n1\n"},
		{name: "get all limit", args: []string{"get", "", "--prefix", "--limit", "2"}, stdout: "a\n33\nb\n1\n"},
		{name: "get rev", args: []string{"get", "foo", "--rev", "2"}, stdout: "foo\nbar\n"},
		{name: "get rev before create", args: []string{"get", "a", "--rev", "3"}, stdout: ""},
		{name: "get rev deleted key", args: []string{"get", "d", "--rev", "10"}, stdout: "d\n4\n"},
		{name: "get rev after delete", args: []string{"get", "d", "--rev", "11"}, stdout: ""},
		{name: "get rev prefix", args: []string{"get", "", "--prefix", "--rev", "6"}, stdout: "a\n3\nb\n1\nc\n2\nfoo\nbar2\n"},
		{name: "keys-only", args: []string{"get", "a", "--from-key", "--keys-only"}, stdout: "a\n\nb\n\nc\n\nfoo\n\n"},
		{name: "print-value-only", args: []string{"get", "a", "--from-key", "--print-value-only"}, stdout: "33\n1\n222\nbar2\n"},
		{name: "count-only", args: []string{"get", "a", "--from-key", "--count-only", "-w", "fields"},
			fields: "\"Revision\" : 11\n\"More\" : false\n\"Count\" : 4\n"},
		{name: "limit fields", args: []string{"get", "a", "--from-key", "--limit", "1", "-w", "fields"},
			fields: "\"Revision\" : 11\n\"Key\" : \"a\"\n\"CreateRevision\" : 4\n\"ModRevision\" : 7\n\"Version\" : 2\n" +
				"\"Value\" : \"33\"\n\"Lease\" : 0\n\"More\" : true\n\"Count\" : 4\n"},
		{name: "order descend", args: []string{"get", "a", "--from-key", "--order", "DESCEND"}, stdout: "foo\nbar2\nc\n222\nb\n1\na\n33\n"},
		{name: "order descend key", args: []string{"get", "a", "--from-key", "--order", "DESCEND", "--sort-by", "KEY"}, stdout: "foo\nbar2\nc\n222\nb\n1\na\n33\n"},
		{name: "sort value", args: []string{"get", "a", "--from-key", "--sort-by", "VALUE"}, stdout: "b\n1\nc\n222\na\n33\nfoo\nbar2\n"},
		{name: "sort value descend", args: []string{"get", "a", "--from-key", "--sort-by", "VALUE", "--order", "DESCEND"}, stdout: "foo\nbar2\na\n33\nc\n222\nb\n1\n"},
		{name: "sort create", args: []string{"get", "a", "--from-key", "--sort-by", "CREATE", "--order", "ASCEND"}, stdout: "foo\nbar2\na\n33\nb\n1\nc\n222\n"},
		{name: "sort create descend", args: []string{"get", "a", "--from-key", "--sort-by", "CREATE", "--order", "DESCEND"}, stdout: "c\n222\nb\n1\na\n33\nfoo\nbar2\n"},
		{name: "sort modify", args: []string{"get", "a", "--from-key", "--sort-by", "MODIFY"}, stdout: "foo\nbar2\nb\n1\na\n33\nc\n222\n"},
		{name: "sort modify descend limit", args: []string{"get", "a", "--from-key", "--sort-by", "MODIFY", "--order", "DESCEND", "--limit", "2"}, stdout: "c\n222\na\n33\n"},
		{name: "sort version", args: []string{"get", "a", "foo", "--sort-by", "VERSION"}, stdout: "b\n1\na\n33\nc\n222\n"},
		{name: "sort version descend", args: []string{"get", "a", "foo", "--sort-by", "VERSION", "--order", "DESCEND"}, stdout: "c\n222\na\n33\nb\n1\n"},
		{name: "min-mod-rev", args: []string{"get", "a", "--from-key", "--min-mod-rev", "6"}, stdout: "a\n33\nc\n222\n"},
		{name: "max-mod-rev", args: []string{"get", "a", "--from-key", "--max-mod-rev", "5"}, stdout: "b\n1\nfoo\nbar2\n"},
		{name: "min-create-rev", args: []string{"get", "a", "--from-key", "--min-create-rev", "5"}, stdout: "b\n1\nc\n222\n"},
		{name: "max-create-rev", args: []string{"get", "a", "--from-key", "--max-create-rev", "4"}, stdout: "a\n33\nfoo\nbar2\n"},
		{name: "json", args: []string{"get", "foo", "-w", "json"},
			json: `{"header":{"revision":11},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFyMg=="}],"count":1}`},
		{name: "json missing", args: []string{"get", "nokey", "-w", "json"}, json: `{"header":{"revision":11}}`},
		{name: "json limit", args: []string{"get", "a", "--from-key", "--limit", "1", "-w", "json"},
			json: `{"header":{"revision":11},"kvs":[{"key":"YQ==","create_revision":4,"mod_revision":7,"version":2,"value":"MzM="}],"more":true,"count":4}`},
		{name: "json keys-only", args: []string{"get", "b", "--keys-only", "-w", "json"},
			json: `{"header":{"revision":11},"kvs":[{"key":"Yg==","create_revision":5,"mod_revision":5,"version":1}],"count":1}`},
		{name: "json rev", args: []string{"get", "", "--prefix", "--rev", "4", "-w", "json"},
			json: `{"header":{"revision":11},"kvs":[{"key":"YQ==","create_revision":4,"mod_revision":4,"version":1,"value":"Mw=="},` +
				`{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFyMg=="}],"count":2}`},
		{name: "put json", args: []string{"put", "foo", "bar3", "-w", "json"}, json: `{"header":{"revision":12}}`},
		{name: "put prev-kv json", args: []string{"put", "foo", "bar4", "--prev-kv", "-w", "json"},
			json: `{"header":{"revision":13},"prev_kv":{"key":"Zm9v","create_revision":2,"mod_revision":12,"version":3,"value":"YmFyMw=="}}`},
		{name: "get after json puts", args: []string{"get", "foo", "-w", "fields"},
			fields: "\"Revision\" : 13\n\"Key\" : \"foo\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 13\n\"Version\" : 4\n" +
				"\"Value\" : \"bar4\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"},
	})
}

func TestEtcdctlDel(t *testing.T) {
	s := startServer(t)
	runCtlSteps(t, s, []ctlStep{
		{name: "put a", args: []string{"put", "a", "1"}, stdout: "OK\n"},     // rev 2
		{name: "put b", args: []string{"put", "b", "2"}, stdout: "OK\n"},     // rev 3
		{name: "put p/1", args: []string{"put", "p/1", "x"}, stdout: "OK\n"}, // rev 4
		{name: "put p/2", args: []string{"put", "p/2", "y"}, stdout: "OK\n"}, // rev 5
		{name: "put z1", args: []string{"put", "z1", "1"}, stdout: "OK\n"},   // rev 6
		{name: "put z2", args: []string{"put", "z2", "2"}, stdout: "OK\n"},   // rev 7
		{name: "del missing", args: []string{"del", "nokey"}, stdout: "0\n"}, // no new revision
		{name: "del missing prev-kv", args: []string{"del", "nokey", "--prev-kv"}, stdout: "0\n"},
		{name: "del", args: []string{"del", "a"}, stdout: "1\n"},                                                          // rev 8
		{name: "del prefix prev-kv", args: []string{"del", "p/", "--prefix", "--prev-kv"}, stdout: "2\np/1\nx\np/2\ny\n"}, // rev 9
		{name: "del from-key", args: []string{"del", "z", "--from-key"}, stdout: "2\n"},                                   // rev 10
		{name: "del prev-kv json", args: []string{"del", "b", "--prev-kv", "-w", "json"}, // rev 11
			json: `{"header":{"revision":11},"deleted":1,"prev_kvs":[{"key":"Yg==","create_revision":3,"mod_revision":3,"version":1,"value":"Mg=="}]}`},
		{name: "del missing json", args: []string{"del", "b", "-w", "json"}, json: `{"header":{"revision":11}}`},
		{name: "empty", args: []string{"get", "", "--prefix", "--count-only", "-w", "fields"},
			fields: "\"Revision\" : 11\n\"More\" : false\n\"Count\" : 0\n"},
		{name: "history kept", args: []string{"get", "", "--prefix", "--rev", "8"}, stdout: "b\n2\np/1\nx\np/2\ny\nz1\n1\nz2\n2\n"},
		{name: "put k1", args: []string{"put", "k1", "1"}, stdout: "OK\n"},                               // rev 12
		{name: "put k2", args: []string{"put", "k2", "2"}, stdout: "OK\n"},                               // rev 13
		{name: "put k3", args: []string{"put", "k3", "3"}, stdout: "OK\n"},                               // rev 14
		{name: "del range", args: []string{"del", "k1", "k3", "--prev-kv"}, stdout: "2\nk1\n1\nk2\n2\n"}, // rev 15
		{name: "range end excluded", args: []string{"get", "k", "--prefix"}, stdout: "k3\n3\n"},
		{name: "recreate", args: []string{"put", "a", "again"}, stdout: "OK\n"}, // rev 16
		{name: "recreated version", args: []string{"get", "a", "-w", "json"},
			json: `{"header":{"revision":16},"kvs":[{"key":"YQ==","create_revision":16,"mod_revision":16,"version":1,"value":"YWdhaW4="}],"count":1}`},
	})
}

func TestEtcdctlTxn(t *testing.T) {
	s := startServer(t)
	tooMany := "\n"
	for i := range 129 {
		tooMany += fmt.Sprintf("put k%d v\n", i)
	}
	tooMany += "\n\n"
	runCtlSteps(t, s, []ctlStep{
		{name: "put foo", args: []string{"put", "foo", "bar"}, stdout: "OK\n"}, // rev 2
		{name: "put c", args: []string{"put", "c", "3"}, stdout: "OK\n"},       // rev 3
		{name: "value equal: success", args: []string{"txn"}, // rev 4
			stdin:  "value(\"foo\") = \"bar\"\n\nput foo txn1\nget c\n\nput foo failed\n\n",
			stdout: "SUCCESS\n\nOK\n\nc\n3\n"},
		{name: "value equal: failure", args: []string{"txn"}, // rev 5
			stdin:  "value(\"foo\") = \"bar\"\n\nput foo txn1\nget c\n\nput foo failed\n\n",
			stdout: "FAILURE\n\nOK\n"},
		{name: "mod version create", args: []string{"txn"}, // rev 6
			stdin:  "mod(\"foo\") > \"0\"\nversion(\"c\") = \"1\"\ncreate(\"c\") = \"3\"\n\ndel c\nget foo\n\nput x y\n\n",
			stdout: "SUCCESS\n\n1\n\nfoo\nfailed\n"},
		{name: "absent key mod is 0", args: []string{"txn", "-w", "json"}, // rev 7
			stdin: "mod(\"nokey\") = \"0\"\n\nput k1 v1\n\n\n",
			json:  `{"header":{"revision":7},"succeeded":true,"responses":[{"Response":{"response_put":{"header":{"revision":7}}}}]}`},
		{name: "absent key create is 0", args: []string{"txn"},
			stdin:  "create(\"nokey\") > \"0\"\n\nput k1 v1\n\nget k1\n\n",
			stdout: "FAILURE\n\nk1\nv1\n"},
		// Compat: a VALUE compare on a missing key is false whatever the
		// operator (etcd server/etcdserver/txn/txn.go).
		{name: "absent key value equal empty", args: []string{"txn"},
			stdin:  "value(\"nokey\") = \"\"\n\nput x 1\n\nput y 1\n\n", // rev 8
			stdout: "FAILURE\n\nOK\n"},
		{name: "absent key value not equal", args: []string{"txn"},
			stdin:  "value(\"nokey\") != \"a\"\n\nput x 1\n\nput y 2\n\n", // rev 9
			stdout: "FAILURE\n\nOK\n"},
		{name: "less and not equal", args: []string{"txn"},
			stdin:  "mod(\"k1\") < \"100\"\nversion(\"y\") != \"1\"\n\nget y\n\n\n",
			stdout: "SUCCESS\n\ny\n2\n"},
		{name: "no compares", args: []string{"txn"}, // rev 10
			stdin:  "\nput k2 v2\nget --prefix k\n\n\n",
			stdout: "SUCCESS\n\nOK\n\nk1\nv1\nk2\nv2\n"},
		{name: "delete prefix prev-kv", args: []string{"txn"}, // rev 11
			stdin:  "\ndel --prefix k --prev-kv\n\n\n",
			stdout: "SUCCESS\n\n2\nk1\nv1\nk2\nv2\n"},
		{name: "delete missing", args: []string{"txn"},
			stdin:  "\ndel nokey\n\n\n",
			stdout: "SUCCESS\n\n0\n"},
		{name: "read-only txn keeps revision", args: []string{"get", "foo", "-w", "json"},
			json: `{"header":{"revision":11},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":3,"value":"ZmFpbGVk"}],"count":1}`},
		{name: "duplicate key", args: []string{"txn"},
			stdin: "version(\"k1\") != \"5\"\n\nput k1 v1\nput k1 v2\n\n\n",
			err:   "Error: etcdserver: duplicate key given in txn request"},
		{name: "too many ops", args: []string{"txn"}, stdin: tooMany,
			err: "Error: etcdserver: too many operations in txn request"},
		{name: "errors left no trace", args: []string{"get", "k", "--prefix", "--count-only", "-w", "fields"},
			fields: "\"Revision\" : 11\n\"More\" : false\n\"Count\" : 0\n"},
	})
}

func TestEtcdctlCompaction(t *testing.T) {
	s := startServer(t)
	const (
		errCompacted = "Error: etcdserver: mvcc: required revision has been compacted"
		errFuture    = "Error: etcdserver: mvcc: required revision is a future revision"
	)
	runCtlSteps(t, s, []ctlStep{
		{name: "put 1", args: []string{"put", "foo", "v1"}, stdout: "OK\n"},  // rev 2
		{name: "put 2", args: []string{"put", "foo", "v2"}, stdout: "OK\n"},  // rev 3
		{name: "put 3", args: []string{"put", "foo", "v3"}, stdout: "OK\n"},  // rev 4
		{name: "put 4", args: []string{"put", "foo", "v4"}, stdout: "OK\n"},  // rev 5
		{name: "put bar", args: []string{"put", "bar", "x"}, stdout: "OK\n"}, // rev 6
		{name: "compact", args: []string{"compaction", "3"}, stdout: "compacted revision 3\n"},
		{name: "below compacted", args: []string{"get", "foo", "--rev", "2"}, err: errCompacted},
		{name: "at compacted", args: []string{"get", "foo", "--rev", "3"}, stdout: "foo\nv2\n"},
		{name: "above compacted", args: []string{"get", "foo", "--rev", "4"}, stdout: "foo\nv3\n"},
		{name: "compact again same", args: []string{"compaction", "3"}, err: errCompacted},
		{name: "compact older", args: []string{"compaction", "2"}, err: errCompacted},
		{name: "compact future", args: []string{"compaction", "100"}, err: errFuture},
		{name: "compact physical", args: []string{"compaction", "5", "--physical"}, stdout: "compacted revision 5\n"},
		{name: "below second compaction", args: []string{"get", "foo", "--rev", "4"}, err: errCompacted},
		{name: "prefix below compaction", args: []string{"get", "", "--prefix", "--rev", "3"}, err: errCompacted},
		{name: "at second compaction", args: []string{"get", "", "--prefix", "--rev", "5"}, stdout: "foo\nv4\n"},
		{name: "future rev", args: []string{"get", "foo", "--rev", "7"}, err: errFuture},
		{name: "compaction keeps revision", args: []string{"get", "foo", "-w", "json"},
			json: `{"header":{"revision":6},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":4,"value":"djQ="}],"count":1}`},
		{name: "put after compaction", args: []string{"put", "foo", "v5", "--prev-kv", "-w", "json"}, // rev 7
			json: `{"header":{"revision":7},"prev_kv":{"key":"Zm9v","create_revision":2,"mod_revision":5,"version":4,"value":"djQ="}}`},
		{name: "version continues", args: []string{"get", "foo", "-w", "json"},
			json: `{"header":{"revision":7},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":7,"version":5,"value":"djU="}],"count":1}`},
		{name: "current rev", args: []string{"get", "bar", "--rev", "7"}, stdout: "bar\nx\n"},
	})
}

func TestEtcdctlErrors(t *testing.T) {
	s := startServer(t)
	runCtlSteps(t, s, []ctlStep{
		{name: "future rev on fresh store", args: []string{"get", "foo", "--rev", "2"},
			err: "Error: etcdserver: mvcc: required revision is a future revision"},
		{name: "get empty key", args: []string{"get", ""}, err: "Error: etcdserver: key is not provided"},
		{name: "put empty key", args: []string{"put", "", "v"}, err: "Error: etcdserver: key is not provided"},
		{name: "del empty key", args: []string{"del", ""}, err: "Error: etcdserver: key is not provided"},
		{name: "ignore-value with value", args: []string{"put", "foo", "--ignore-value", "bar"},
			err: "Error: put command needs only 1 argument when 'ignore-value' is set", code: 128},
		{name: "ignore-value missing key", args: []string{"put", "nokey", "--ignore-value"}, err: "Error: etcdserver: key not found"},
		{name: "ignore-lease missing key", args: []string{"put", "nokey", "v", "--ignore-lease"}, err: "Error: etcdserver: key not found"},
		{name: "unknown lease", args: []string{"put", "k", "v", "--lease=123"}, err: "Error: etcdserver: requested lease not found"},
		{name: "no write so far", args: []string{"get", "", "--prefix", "-w", "json"}, json: `{"header":{"revision":1}}`},
		{name: "put", args: []string{"put", "foo", "v1"}, stdout: "OK\n"},                            // rev 2
		{name: "ignore-value", args: []string{"put", "foo", "--ignore-value"}, stdout: "OK\n"},       // rev 3
		{name: "ignore-lease", args: []string{"put", "foo", "v2", "--ignore-lease"}, stdout: "OK\n"}, // rev 4
		{name: "after ignore flags", args: []string{"get", "foo", "--rev", "3", "-w", "json"},
			json: `{"header":{"revision":4},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"djE="}],"count":1}`},
		{name: "after ignore-lease", args: []string{"get", "foo", "-w", "json"},
			json: `{"header":{"revision":4},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":4,"version":3,"value":"djI="}],"count":1}`},
	})
}

func TestEtcdctlEndpointAndMember(t *testing.T) {
	s := startServer(t)
	r := s.etcdctl(t, "", "put", "foo", "bar") // rev 2
	require.Equal(t, 0, r.code, r.stderr)

	// member list -w json gives the member ID every other output must agree on.
	r = s.etcdctl(t, "", "member", "list", "-w", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var ml struct {
		Header struct {
			ClusterID uint64 `json:"cluster_id"`
			MemberID  uint64 `json:"member_id"`
			RaftTerm  uint64 `json:"raft_term"`
		} `json:"header"`
		Members []struct {
			ID         uint64   `json:"ID"`
			Name       string   `json:"name"`
			PeerURLs   []string `json:"peerURLs"`
			ClientURLs []string `json:"clientURLs"`
			IsLearner  bool     `json:"isLearner"`
		} `json:"members"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ml), r.stdout)
	require.NotZero(t, ml.Header.ClusterID, r.stdout)
	require.NotZero(t, ml.Header.MemberID, r.stdout)
	require.NotZero(t, ml.Header.RaftTerm, r.stdout)
	require.Len(t, ml.Members, 1, r.stdout)
	m := ml.Members[0]
	require.Equal(t, ml.Header.MemberID, m.ID, r.stdout)
	require.Equal(t, s.name, m.Name)
	require.Equal(t, []string{s.peerURL()}, m.PeerURLs)
	require.Equal(t, []string{s.clientURL()}, m.ClientURLs)
	require.False(t, m.IsLearner)
	id := hexID(m.ID)

	t.Run("member list", func(t *testing.T) {
		r := s.etcdctl(t, "", "member", "list")
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, fmt.Sprintf("%s, started, %s, %s, %s, false\n", id, s.name, s.peerURL(), s.clientURL()), r.stdout)
	})

	t.Run("endpoint status", func(t *testing.T) {
		r := s.etcdctl(t, "", "endpoint", "status")
		require.Equal(t, 0, r.code, r.stderr)
		require.True(t, strings.HasSuffix(r.stdout, "\n") && strings.Count(r.stdout, "\n") == 1, "one line: %q", r.stdout)
		f := strings.Split(strings.TrimSuffix(r.stdout, "\n"), ", ")
		// endpoint, ID, version, storage version, db size, in use, % not in
		// use, quota, is leader, is learner, raft term, raft index, raft
		// applied index, errors, downgrade target version, downgrade enabled
		require.Len(t, f, 16, r.stdout)
		require.Equal(t, s.endpoint, f[0])
		require.Equal(t, id, f[1])
		require.Regexp(t, `^3\.7\.\d+$`, f[2], "etcd version reported")
		require.Equal(t, []string{"true", "false"}, f[8:10], "is leader, is learner")
		term, index, applied := atoi(t, f[10]), atoi(t, f[11]), atoi(t, f[12])
		require.Positive(t, term)
		require.Positive(t, applied)
		require.LessOrEqual(t, applied, index)
		require.Equal(t, []string{"", "", "false"}, f[13:16], "errors, downgrade target, downgrade enabled")
	})

	t.Run("endpoint status json", func(t *testing.T) {
		r := s.etcdctl(t, "", "endpoint", "status", "-w", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var st []struct {
			Endpoint string `json:"Endpoint"`
			Status   struct {
				Header struct {
					ClusterID uint64 `json:"cluster_id"`
					MemberID  uint64 `json:"member_id"`
					Revision  int64  `json:"revision"`
					RaftTerm  uint64 `json:"raft_term"`
				} `json:"header"`
				Version          string   `json:"version"`
				DBSize           int64    `json:"dbSize"`
				DBSizeInUse      int64    `json:"dbSizeInUse"`
				Leader           uint64   `json:"leader"`
				RaftIndex        uint64   `json:"raftIndex"`
				RaftTerm         uint64   `json:"raftTerm"`
				RaftAppliedIndex uint64   `json:"raftAppliedIndex"`
				Errors           []string `json:"errors"`
				IsLearner        bool     `json:"isLearner"`
			} `json:"Status"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
		require.Len(t, st, 1, r.stdout)
		got := st[0]
		require.Equal(t, s.endpoint, got.Endpoint)
		require.Equal(t, ml.Header.ClusterID, got.Status.Header.ClusterID)
		require.Equal(t, m.ID, got.Status.Header.MemberID)
		require.Equal(t, int64(2), got.Status.Header.Revision)
		require.Regexp(t, `^3\.7\.\d+$`, got.Status.Version)
		require.Positive(t, got.Status.DBSize)
		require.LessOrEqual(t, got.Status.DBSizeInUse, got.Status.DBSize)
		require.Equal(t, m.ID, got.Status.Leader, "a single member leads")
		require.Positive(t, got.Status.RaftTerm)
		require.Equal(t, got.Status.Header.RaftTerm, got.Status.RaftTerm)
		require.Positive(t, got.Status.RaftAppliedIndex)
		require.LessOrEqual(t, got.Status.RaftAppliedIndex, got.Status.RaftIndex)
		require.Empty(t, got.Status.Errors)
		require.False(t, got.Status.IsLearner)
	})

	t.Run("endpoint health", func(t *testing.T) {
		r := s.etcdctl(t, "", "endpoint", "health")
		require.Equal(t, 0, r.code, r.stderr)
		require.Regexp(t, "^"+regexp.QuoteMeta(s.endpoint)+` is healthy: successfully committed proposal: took = \S+\n$`, r.stdout)
	})

	t.Run("endpoint health json", func(t *testing.T) {
		r := s.etcdctl(t, "", "endpoint", "health", "-w", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var h []struct {
			Endpoint string `json:"endpoint"`
			Health   bool   `json:"health"`
			Took     string `json:"took"`
			Error    string `json:"error"`
		}
		require.NoError(t, json.Unmarshal(bytes.TrimSpace([]byte(r.stdout)), &h), r.stdout)
		require.Len(t, h, 1)
		require.Equal(t, s.endpoint, h[0].Endpoint)
		require.True(t, h[0].Health, r.stdout)
		require.NotEmpty(t, h[0].Took)
		require.Empty(t, h[0].Error)
	})
}

func atoi(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err, "not a number: %q", s)
	return n
}
