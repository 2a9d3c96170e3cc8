package mvcc

import "go.etcd.io/etcd/api/v3/mvccpb"

// Latest returns the newest live version of key as this txn sees it (nil
// if none). During an apply batch it reads the batch's overlay and the DB,
// never the batch itself, so it works on an unindexed batch.
func (t *WriteTxn) Latest(key []byte) (*mvccpb.KeyValue, error) {
	return t.latest(key, true)
}

// DeleteKey deletes one key if it is live and returns the deleted version
// (nil if there was none). Like Latest it does not read the batch, so a
// lease revocation, which deletes known keys one by one, does not force
// the whole apply batch to be indexed.
func (t *WriteTxn) DeleteKey(key []byte) (*mvccpb.KeyValue, error) {
	prev, err := t.latest(key, true)
	if err != nil || prev == nil {
		return nil, err
	}
	t.stage(key, record{tombstone: true})
	if a := t.s.apply; a != nil && a.collect {
		a.events = append(a.events, &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: key, ModRevision: t.begin + 1}, PrevKv: prev})
	}
	return prev, nil
}
