package sqlstore

import (
	"context"
	"database/sql"
	"sync"
)

// stmtCache keeps the read pool's prepared statements of hot queries by
// their text, so that a query of a shape seen before is not parsed and
// planned again: preparing was a quarter of an index-served page's store
// CPU on SQLite (the statement is prepared once per pooled connection,
// database/sql keeps it there). Query texts carry no values, only the
// shape of a search, so the cache stays small; past stmtCacheMax shapes
// it starts again empty.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

const stmtCacheMax = 256

// query runs query (in the engine's placeholders) in r's read
// transaction through a cached statement of db; outside a transaction,
// or when preparing fails, it runs it as is.
func (c *stmtCache) query(ctx context.Context, db *sql.DB, r q, query string, args ...any) (*sql.Rows, error) {
	tx, ok := r.q.(*sql.Tx)
	if !ok {
		return r.q.QueryContext(ctx, query, args...)
	}
	st, err := c.prepared(ctx, db, query)
	if err != nil {
		return tx.QueryContext(ctx, query, args...)
	}
	return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
}

func (c *stmtCache) prepared(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	if c.m == nil || len(c.m) >= stmtCacheMax {
		c.closeLocked()
		c.m = map[string]*sql.Stmt{}
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
	return nil
}

func (c *stmtCache) closeLocked() {
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}
