package member

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns the raft loop's and the applier's metrics (etcd's
// names), for registration.
func (m *Member) Collectors() []prometheus.Collector {
	return append(m.node.Collectors(), m.applier.Collectors()...)
}

// PendingProposals returns the number of this member's proposals waiting
// to be applied.
func (m *Member) PendingProposals() int {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	return len(m.waits)
}
