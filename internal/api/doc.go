// Package api serves the etcd v3 gRPC services (KV, Maintenance, Cluster)
// on top of a member. It owns request validation, with the same checks and
// the same errors as etcd, and is the ONE place where internal errors are
// mapped to gRPC statuses, with messages byte-identical to etcd's rpctypes
// (clients match errors by their text).
//
// It never touches storage directly and never blocks the applier.
package api
