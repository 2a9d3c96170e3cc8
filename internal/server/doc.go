// Package server wires a member to the network and manages its lifecycle
// (New, Run, graceful stop on context cancel). It holds no business logic:
// requests go to package api, state to package member.
//
// Each client URL gets one TCP listener that serves gRPC (HTTP/2) and the
// HTTP endpoints (/health, /livez, /readyz, /version, /metrics) on the same
// port, as etcd does, by looking at the first bytes of each connection.
package server
