// Package robustness owns Cairn's robustness suite: real cairn processes
// (1 or 3 members on 127.X.Y.x) under concurrent clientv3 traffic while a
// nemesis injects faults (kill -9, SIGSTOP, network partitions, latency
// and connection drops through a TCP proxy between members, member
// replacement, snapshot catch-up, crash points inside the server), with
// every operation recorded and the history checked afterwards:
// linearizability with porcupine, watch guarantees, no lost acknowledged
// write, and equal revision, compact revision and HashKV on every member.
//
// It must never leave a process behind (every member runs in its own
// process group, killed at cleanup), never wait on a bare sleep, and never
// report a violation it cannot show: a failing run keeps its history, the
// porcupine visualisation and the members' logs in a directory it prints.
//
// Knobs (environment variables):
//
//	ROBUSTNESS_SERVER_BINARY=/tmp/anchors/bin/etcd  run against another server (real etcd)
//	ROBUSTNESS_LONG=1              run the long matrix (every fault x every traffic kind)
//	ROBUSTNESS_DURATION=10s        traffic duration of one long-matrix run
//	ROBUSTNESS_SEED=1234           fix the random seed (printed by every run)
//	ROBUSTNESS_KEEP=1              keep every run's directory, not only failing ones
//	ROBUSTNESS_SERVER_RACE=0       build cairn without -race (faster long runs)
//
// See docs/robustness.md.
package robustness
