// Package e2e holds end-to-end tests that drive built binaries over real
// sockets: the cairn server (built with -race), etcdctl (the pinned Go tool
// dependency) and the Go clientv3.
//
// The tests run under plain `go test ./...` (no build tag). TestMain builds
// both binaries once into a temporary directory. Two environment variables
// change what is tested:
//
//	E2E_SERVER_BINARY=/path/to/etcd   run every test against another server,
//	                                  e.g. a real etcd (the oracle: every
//	                                  expected output here is what etcd v3.7.3
//	                                  prints; any difference in cairn is a bug)
//	E2E_ETCDCTL_BINARY=/path/to/etcdctl  use a prebuilt etcdctl
//
// For example, with /work/shared/anchors/build.sh having built etcd:
//
//	E2E_SERVER_BINARY=/tmp/anchors/bin/etcd go test ./tests/e2e/
//
// Every server is started with etcd's flag names on free 127.0.0.1 ports and
// a fresh data directory under t.TempDir. Readiness is the log line
// "ready to serve client requests" followed by a successful linearizable
// read; nothing waits on a bare sleep. Server logs go to files under
// t.TempDir and are printed when a test fails; a log that contains a data
// race report fails the test.
package e2e
