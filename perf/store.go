package perf

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
)

// isPostgres reports whether a bench store setting names PostgreSQL.
func isPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// storeName is how the results name the bridge's store.
func (c Config) storeName() string {
	if isPostgres(c.Store) {
		return "PostgreSQL"
	}
	return "SQLite"
}

// bridgeStore returns the BRIDGE_STORE of a new bridge: a SQLite file of
// its own in the run's directory, or a schema of its own in the
// PostgreSQL database of Config.Store, created here and dropped when the
// run ends, so each bridge starts on an empty store as on SQLite.
func (r *runner) bridgeStore(ctx context.Context, name string) (string, error) {
	if !isPostgres(r.cfg.Store) {
		return "sqlite:" + r.dir + "/" + name + ".db", nil
	}
	u, err := url.Parse(r.cfg.Store)
	if err != nil {
		return "", fmt.Errorf("bench: the store URL: %w", err)
	}
	schema := "bench_" + strings.ReplaceAll(name, "-", "_") + "_" + strconv.FormatUint(rand.Uint64()%1e12, 36)
	if err := r.pgExec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", err
	}
	r.schemas = append(r.schemas, schema)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// dropSchemas drops the schemas bridgeStore made.
func (r *runner) dropSchemas() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range r.schemas {
		if err := r.pgExec(ctx, "DROP SCHEMA "+s+" CASCADE"); err != nil {
			r.logf("%v", err)
		}
	}
}

// pgExec runs one statement on Config.Store's database.
func (r *runner) pgExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, r.cfg.Store)
	if err != nil {
		return fmt.Errorf("bench: connecting to the store: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("bench: %s: %w", strings.SplitN(sql, " ", 3)[:2], err)
	}
	return nil
}

// auditWaitName says what a successful read waits for under the bridge's
// BRIDGE_AUDIT_WAIT and BRIDGE_AUDIT_JOURNAL (docs/configuration.md): its
// audit record's commit, its append to the journal, or its place in the
// audit writer's queue.
func (c Config) auditWaitName() string {
	// The bridge's own rule (auditjournal.Dir), on the kind of store it
	// gets: "on" names a directory, and "" is SQLite.
	setting, dsn := c.AuditJournal, c.Store
	if setting == "on" {
		setting = "journal"
	}
	if dsn == "" {
		dsn = "sqlite:bridge.db"
	}
	journal := auditjournal.Dir(setting, dsn) != ""
	switch {
	case c.AuditWait == "commit", c.AuditWait == "auto" && !journal && isPostgres(c.Store):
		return "its audit record's commit"
	case journal && (c.AuditWait == "queue" || c.AuditWait == "auto"):
		return "its audit record's append to the journal"
	case c.AuditWait == "queue", c.AuditWait == "auto":
		return "its audit record's place in the queue"
	}
	return "BRIDGE_AUDIT_WAIT=" + c.AuditWait
}

// auditJournal is the BRIDGE_AUDIT_JOURNAL of the bridge named name.
func (r *runner) auditJournal(name string) string {
	if r.cfg.AuditJournal == "on" {
		return filepath.Join(r.dir, name+"-audit-journal")
	}
	return r.cfg.AuditJournal
}
